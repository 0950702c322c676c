"""Tests for recipes/export_tflite.py with LiteRT installed; run by the `torch` tox env only.

That env (TensorFlow 2.21, Keras 3.15) also has ai-edge-litert, the optional extra the recipe
prefers: `ai_edge_litert.interpreter.Interpreter` runs the files `convert_to_tflite` writes,
with exactly the outputs of `tf.lite.Interpreter` and within the recipe's bounds of Keras.
"""

import warnings

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert_interpreter

from recipes import export_tflite
from recipes.export_tflite import (
    QUANTIZATIONS,
    build_model,
    convert_to_tflite,
    make_interpreter,
    run_tflite,
    sample_inputs,
)
from tests.test_export_tflite import ERROR_BOUNDS, quiet_run


@pytest.fixture(scope="module")
def converted_inputs_expected():
    model, inputs = build_model(), sample_inputs(16)
    representative = {"int8": sample_inputs(8, seed=1)}
    converted = {
        quantization: convert_to_tflite(model, quantization, representative.get(quantization))
        for quantization in QUANTIZATIONS
    }
    return converted, inputs, model(inputs).numpy()


def test_recipe_finds_litert_and_auto_picks_it(converted_inputs_expected):
    converted, _, _ = converted_inputs_expected
    assert export_tflite.litert_interpreter is litert_interpreter
    interpreter = make_interpreter(converted["float32"], "auto")
    assert isinstance(interpreter, litert_interpreter.Interpreter)


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_litert_outputs_equal_tf_lite_and_stay_within_the_bound_of_keras(
    quantization, converted_inputs_expected
):
    converted, inputs, expected = converted_inputs_expected
    litert_outputs = run_tflite(converted[quantization], inputs, "litert")
    # Named explicitly: with LiteRT installed, "auto" is LiteRT itself.
    tf_lite_outputs = quiet_run(converted[quantization], inputs, "tf.lite")
    np.testing.assert_array_equal(litert_outputs, tf_lite_outputs)
    assert np.abs(litert_outputs - expected).max() <= ERROR_BOUNDS[quantization]


def test_litert_interpreter_does_not_warn_where_tf_lite_does(converted_inputs_expected):
    converted, _, _ = converted_inputs_expected
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        litert_interpreter.Interpreter(model_content=converted["float32"])
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    with pytest.warns(UserWarning, match="tf.lite.Interpreter is deprecated"):
        run_tflite(converted["float32"], np.zeros((1, 8, 8, 4), "float32"), "tf.lite")
