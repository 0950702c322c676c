"""Tests for recipes/export_tflite.py: SavedModel without the classes, TFLite routes, quantization.

Conversion is slow, so each module-scoped fixture converts once. Routes that can abort the
process ("LLVM ERROR") run in a child process, restarted after each abort, so an abort is
an outcome; the same child first serves the SavedModels without the recipe's classes.
"""

import contextlib
import io
import json
import signal
import textwrap
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes import export_tflite
from recipes.export_tflite import (
    QUANTIZATIONS,
    ROUTES,
    AvgPool2d,
    Reorg,
    build_model,
    convert_to_tflite,
    default_route,
    make_interpreter,
    run_tflite,
    sample_inputs,
    save_saved_model,
    serve_saved_model,
)
from tests.child_process import run_python
from tests.layer_contract import run_keras_layer_test

# The bounds the recipe states, and the errors measured on all 26 release lines from Keras
# 2.12 to 3.15 (float32 1.6e-7 on TensorFlow 2.20, 2.1e-7 elsewhere; outputs' largest
# magnitude 0.19). An error is asserted below its bound and within a factor of 3 of the
# measured value, a band wide enough for other CPUs' kernels.
ERROR_BOUNDS = {"float32": 1e-5, "float16": 2e-4, "int8": 1e-2}
MEASURED_ERRORS = {"float32": 2.1e-7, "float16": 4.5e-5, "int8": 1.8e-3}
SAVED_MODEL_METHODS = ("tf.saved_model.save", "model.export")


def quiet_run(content, inputs, interpreter="tf.lite"):
    """run_tflite without tf.lite.Interpreter's deprecation notice (asserted on its own)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_tflite(content, inputs, interpreter)


@pytest.fixture(scope="module")
def model_inputs_expected():
    model = build_model()
    inputs = sample_inputs(16)
    return model, inputs, model(inputs).numpy()


@pytest.fixture(scope="module")
def converted(model_inputs_expected):
    """{quantization: flatbuffer bytes}, through the recipe's default route."""
    model, _, _ = model_inputs_expected
    representative = {"int8": sample_inputs(8, seed=1)}
    return {
        quantization: convert_to_tflite(model, quantization, representative.get(quantization))
        for quantization in QUANTIZATIONS
    }


@pytest.fixture(scope="module")
def saved_models(model_inputs_expected, tmp_path_factory):
    """{method: directory}: the model saved by `tf.saved_model.save` and by `model.export`."""
    model = model_inputs_expected[0]
    directory = tmp_path_factory.mktemp("saved_models")
    return {
        method: save_saved_model(model, str(directory / method), method)
        for method in SAVED_MODEL_METHODS
    }


# --- One child process: serving without the classes, then the routes that may abort --------

CHILD_SERVES_THEN_CONVERTS = textwrap.dedent(
    """
    import json
    import pathlib
    import sys

    import numpy as np
    import tensorflow as tf

    job = json.loads(sys.argv[1])
    if job["saved_models"]:
        inputs = np.load(job["inputs"])
        outputs = []
        for directory in job["saved_models"]:
            serve = tf.saved_model.load(directory).signatures["serving_default"]
            [name] = serve.structured_input_signature[1]
            [output] = serve(**{name: tf.constant(inputs)}).values()
            outputs.append(output.numpy())
        # The recipe is not imported yet, so serving could not have used its classes.
        imported = sorted(name for name in sys.modules if name.startswith("recipes"))
        np.savez(job["served"], *outputs)
        print("SERVED, recipe modules imported: " + json.dumps(imported), flush=True)

    from tensorflow import keras
    from recipes.export_tflite import build_model, convert_to_tflite

    for route in job["routes"]:
        print("CONVERTING " + route, flush=True)
        keras.backend.clear_session()
        content = convert_to_tflite(build_model(), route=route)
        pathlib.Path(job["directory"], route + ".tflite").write_bytes(content)
    """
)


def child_death(completed):
    """(outcome, line) for a child that ended early: ("SIGABRT: LLVM ERROR", the line LLVM
    printed on stderr) when the converter aborted it, else its signal or its exception."""
    lines = completed.stderr.strip().splitlines()
    if completed.returncode < 0:
        signal_name = signal.Signals(-completed.returncode).name
        printed = [line.strip() for line in lines if "LLVM ERROR" in line]
        return (f"{signal_name}: LLVM ERROR", printed[0]) if printed else (signal_name, None)
    return f"exception: {lines[-1]}", lines[-1]


@pytest.fixture(scope="module")
def child_run(saved_models, model_inputs_expected, tmp_path_factory):
    """What a child process did: served both SavedModels, then converted the other routes.

    {"served_line": its report, "served": outputs, "routes": {route: (outcome, flatbuffer
    or None)}, "printed": {route: the line that says why the child ended}}. A route that
    aborts the child ends it, and a new child goes on with the routes after it: a stack
    where nothing aborts starts one child, not three.
    """
    _, inputs, _ = model_inputs_expected
    directory = tmp_path_factory.mktemp("child")
    np.save(directory / "inputs.npy", inputs)
    job = {
        "inputs": str(directory / "inputs.npy"),
        "served": str(directory / "served.npz"),
        "saved_models": [saved_models[method] for method in SAVED_MODEL_METHODS],
        "directory": str(directory),
        "routes": [route for route in ROUTES if route != default_route()],
    }
    result = {"served_line": None, "served": None, "routes": {}, "printed": {}}
    while job["routes"]:
        completed = run_python(CHILD_SERVES_THEN_CONVERTS, json.dumps(job))
        lines = completed.stdout.splitlines()
        if job["saved_models"]:
            result["served_line"] = next((x for x in lines if x.startswith("SERVED")), None)
            result["served"] = np.load(job["served"]) if result["served_line"] else None
        started = [x.removeprefix("CONVERTING ") for x in lines if x.startswith("CONVERTING ")]
        for route in started:
            path = directory / f"{route}.tflite"
            if path.exists():
                result["routes"][route] = ("converted", path.read_bytes())
        if completed.returncode == 0:
            assert started == job["routes"], completed.stdout
            break
        # Only a conversion may end the child early, never serving or an import.
        assert started, completed.stderr[-3000:]
        outcome, result["printed"][started[-1]] = child_death(completed)
        result["routes"][started[-1]] = (outcome, None)
        remaining = job["routes"][job["routes"].index(started[-1]) + 1 :]
        job = {**job, "saved_models": [], "routes": remaining}
    return result


def test_saved_models_serve_keras_outputs_in_a_process_without_the_classes(
    model_inputs_expected, saved_models, child_run
):
    _, inputs, expected = model_inputs_expected
    assert child_run["served_line"].endswith("recipe modules imported: []")
    for index, method in enumerate(SAVED_MODEL_METHODS):
        served = child_run["served"][f"arr_{index}"]
        np.testing.assert_allclose(served, expected, atol=1e-6, rtol=0)
        # The recipe's helper, in this process, serves the same outputs.
        np.testing.assert_allclose(
            serve_saved_model(saved_models[method], inputs), expected, atol=1e-6, rtol=0
        )


def test_saved_model_loads_as_a_plain_trackable_not_a_keras_layer(saved_models):
    """tf.saved_model.load revives TensorFlow objects only; the classes are never called."""
    for method in SAVED_MODEL_METHODS:
        loaded = tf.saved_model.load(saved_models[method])
        assert not isinstance(loaded, keras.layers.Layer)
        assert type(loaded).__module__.startswith("tensorflow.")
        assert "serving_default" in loaded.signatures


# --- Conversion routes ----------------------------------------------------------------------


def classify_converted(content, inputs, expected):
    """'works', 'wrong outputs: READ_VARIABLE' or the invoke error of a converted model."""
    outputs = []
    outcome = outcome_of(lambda: outputs.append(quiet_run(content, inputs)), ["READ_VARIABLE"])
    if outcome != "works":
        return outcome
    if np.abs(outputs[0] - expected).max() <= ERROR_BOUNDS["float32"]:
        return "works"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content)
    operators = {op["op_name"] for op in interpreter._get_ops_details()}
    # The weights were not frozen into constants: nothing initializes the variables.
    return "wrong outputs: READ_VARIABLE" if "READ_VARIABLE" in operators else "wrong outputs"


@pytest.fixture(scope="module")
def route_outcomes(model_inputs_expected, converted, child_run):
    """{route: outcome}: the default route converted in this process, the others in a child."""
    _, inputs, expected = model_inputs_expected
    outcomes = {default_route(): classify_converted(converted["float32"], inputs, expected)}
    for route, (outcome, content) in child_run["routes"].items():
        outcomes[route] = classify_converted(content, inputs, expected) if content else outcome
    return outcomes


# With Keras 3 the TensorFlow release decides, not the Keras one. Probed pairs (each Keras on
# two TensorFlows, both outcomes as this table predicts): Keras 3.4.1 on TF 2.16.2 aborts and
# 3.3.3 on 2.17.1 converts by from_keras_model; 3.7.0 on 2.17.1 aborts and 3.6.0 on 2.18.1
# raises READ_VARIABLE by the other two; 3.12.4 on 2.19.1 raises and 3.11.3 on 2.20.0 gives
# wrong outputs.
KERAS3_VARIABLE_ROUTES = {
    "keras<3": "works",
    "keras>=3 and tf<2.18": "SIGABRT: LLVM ERROR",
    "keras>=3 and tf>=2.18,<2.20": "RuntimeError: READ_VARIABLE",
    "keras>=3 and tf>=2.20": "wrong outputs: READ_VARIABLE",
}
ROUTE_SPLITS = {
    "from_keras_model": {
        "keras<3": "works",
        "keras>=3 and tf<2.17": "SIGABRT: LLVM ERROR",
        "keras>=3 and tf>=2.17": "works",
    },
    "tf.saved_model.save": KERAS3_VARIABLE_ROUTES,
    "model.export": {"keras<3": "works", "keras>=3": "works"},
    "from_concrete_functions": KERAS3_VARIABLE_ROUTES,
}


@pytest.mark.parametrize("route", ROUTES)
def test_tflite_conversion_route_outcome_depends_on_the_stack(
    route, route_outcomes, child_run, version_split
):
    version_split(
        f"TFLite conversion via {route}, float32", route_outcomes[route], ROUTE_SPLITS[route]
    )
    if route_outcomes[route] == "SIGABRT: LLVM ERROR":
        # The line LLVM printed on stderr before aborting, as the recipe quotes it.
        assert child_run["printed"][route] == "LLVM ERROR: Failed to infer result type(s)."


def test_default_route_converts_and_matches_keras_on_every_stack(route_outcomes):
    assert route_outcomes[default_route()] == "works"


def test_model_export_format_litert_depends_on_the_keras_version(
    model_inputs_expected, tmp_path, version_split
):
    """Keras' own LiteRT export: a .tflite file from 3.13, silently a directory before 3.8."""
    model, inputs, expected = model_inputs_expected
    path = tmp_path / "model.tflite"
    with contextlib.redirect_stdout(io.StringIO()):  # "Saved artifact at ..."
        outcome = outcome_of(
            lambda: model.export(str(path), format="litert"),
            ["unexpected keyword argument 'format'", "Unrecognized format=litert"],
        )
    if outcome == "works" and path.is_dir():
        outcome = f"writes a SavedModel directory: {sorted(x.name for x in path.iterdir())}"
    elif outcome == "works":
        outcome = classify_converted(path.read_bytes(), inputs, expected)
    version_split(
        "model.export(path, format='litert')",
        outcome,
        {
            "keras<3": "TypeError: unexpected keyword argument 'format'",
            "keras>=3,<3.8": "writes a SavedModel directory: "
            "['assets', 'fingerprint.pb', 'saved_model.pb', 'variables']",
            "keras>=3.8,<3.13": "ValueError: Unrecognized format=litert",
            "keras>=3.13": "works",
        },
    )


# --- Quantization ---------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_converted_model_stays_within_its_error_bound(
    quantization, converted, model_inputs_expected
):
    _, inputs, expected = model_inputs_expected
    assert 0.15 < np.abs(expected).max() < 0.25
    error = np.abs(quiet_run(converted[quantization], inputs) - expected).max()
    print(f"{quantization}: max error {error:.2e}, {len(converted[quantization])} bytes")
    assert error <= ERROR_BOUNDS[quantization]
    assert MEASURED_ERRORS[quantization] / 3 < error < MEASURED_ERRORS[quantization] * 3


def test_quantization_error_grows_float32_float16_int8(converted, model_inputs_expected):
    _, inputs, expected = model_inputs_expected
    errors = [
        np.abs(quiet_run(converted[quantization], inputs) - expected).max()
        for quantization in QUANTIZATIONS
    ]
    assert errors[0] < errors[1] < errors[2]


def test_quantization_shrinks_the_file_within_measured_ratios(converted):
    sizes = {quantization: len(content) for quantization, content in converted.items()}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    # Weights are 2x and 4x smaller; the flatbuffer's fixed part keeps the ratios above 0.5
    # and 0.25. The 26 release lines from Keras 2.12 to 3.15 measured float16 0.545-0.557
    # and int8 0.399-0.406 of float32's 47,736-48,160 bytes; the recipe states these bands.
    assert 0.54 <= sizes["float16"] / sizes["float32"] <= 0.56
    assert 0.39 <= sizes["int8"] / sizes["float32"] <= 0.41
    assert 47_000 <= sizes["float32"] <= 49_000


def tensor_dtypes(content):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=content)
    return {np.dtype(detail["dtype"]).name for detail in interpreter.get_tensor_details()}


def test_quantized_files_hold_float16_and_int8_weights_with_float_inputs(converted):
    assert "float16" not in tensor_dtypes(converted["float32"])
    assert "float16" in tensor_dtypes(converted["float16"])
    assert "int8" in tensor_dtypes(converted["int8"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=converted["int8"])
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32


# --- The interpreter ------------------------------------------------------------------------


INTERPRETER_WARNING_FRAGMENTS = ("tf.lite.Interpreter is deprecated", "Please use the LiteRT")


def interpreter_outcome(content):
    """'works', or the warning class and fragment of tf.lite.Interpreter's LiteRT notice."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = outcome_of(lambda: tf.lite.Interpreter(model_content=content))
    if outcome != "works":
        return outcome
    for caught_warning in caught:
        message = str(caught_warning.message)
        found = [fragment for fragment in INTERPRETER_WARNING_FRAGMENTS if fragment in message]
        if "ai_edge_litert" in message:
            return f"{caught_warning.category.__name__}: {found[0] if found else message}"
    return "works"


def test_tf_lite_interpreter_points_to_litert_from_tf_2_18(
    converted, model_inputs_expected, version_split
):
    observed = interpreter_outcome(converted["float32"])
    version_split(
        "tf.lite.Interpreter(model_content=...)",
        observed,
        {
            "tf<2.18": "works",
            "tf>=2.18,<2.19": "UserWarning: Please use the LiteRT",
            "tf>=2.19": "UserWarning: tf.lite.Interpreter is deprecated",
        },
    )
    # Warned or not, it still runs the model.
    _, inputs, expected = model_inputs_expected
    outputs = quiet_run(converted["float32"], inputs, "tf.lite")
    np.testing.assert_allclose(outputs, expected, atol=ERROR_BOUNDS["float32"], rtol=0)


def test_auto_interpreter_is_litert_when_installed_else_tf_lite(converted, model_inputs_expected):
    """The five stacks' envs lack ai_edge_litert; tests_torch/ covers the installed side."""
    _, inputs, expected = model_inputs_expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = make_interpreter(converted["float32"], "auto")
    outputs = quiet_run(converted["float32"], inputs, "auto")
    np.testing.assert_allclose(outputs, expected, atol=ERROR_BOUNDS["float32"], rtol=0)
    if export_tflite.litert_interpreter is None:
        assert isinstance(interpreter, tf.lite.Interpreter)
        with pytest.raises(ValueError, match=r"interpreter='litert'"):
            run_tflite(converted["float32"], inputs, "litert")
    else:
        assert isinstance(interpreter, export_tflite.litert_interpreter.Interpreter)


# --- Bad input ------------------------------------------------------------------------------


@pytest.fixture
def converter_must_not_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the converter ran before the arguments were checked")

    monkeypatch.setattr(export_tflite, "_converter", refuse)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantization": "int4"}, r"quantization='int4'"),
        ({"quantization": "float64"}, r"quantization='float64'"),
        ({"route": "from_onnx"}, r"route='from_onnx'"),
        ({"quantization": "int8"}, r"representative_data=None"),
        (
            {"quantization": "int8", "representative_data": np.zeros((2, 8, 8, 3))},
            r"representative_data shape=\(2, 8, 8, 3\)",
        ),
        (
            {"quantization": "int8", "representative_data": np.zeros((8, 8, 4))},
            r"representative_data shape=\(8, 8, 4\)",
        ),
        (
            {"quantization": "int8", "representative_data": np.zeros((0, 8, 8, 4))},
            r"representative_data shape=\(0, 8, 8, 4\)",
        ),
        (
            {"quantization": "float16", "representative_data": np.zeros((2, 8, 8, 4))},
            r"representative_data .*quantization='float16'",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them_before_conversion(
    kwargs, message, model_inputs_expected, converter_must_not_run
):
    model, _, _ = model_inputs_expected
    with pytest.raises(ValueError, match=message):
        convert_to_tflite(model, **kwargs)


def test_representative_data_accepts_lists_and_float64(model_inputs_expected, monkeypatch):
    """Checked, then handed to the converter as float32 samples of shape (1, 8, 8, 4)."""
    model, _, _ = model_inputs_expected
    seen = []

    class RecordingConverter:
        def __init__(self):
            self.target_spec = type("Spec", (), {})()

        def convert(self):
            seen.extend(self.representative_dataset())
            return b"converted"

    monkeypatch.setattr(export_tflite, "_converter", lambda *args: RecordingConverter())
    samples = sample_inputs(3).astype("float64")
    assert convert_to_tflite(model, "int8", samples.tolist()) == b"converted"
    assert [sample.shape for [sample] in seen] == [(1, 8, 8, 4)] * 3
    assert all(sample.dtype == np.float32 for [sample] in seen)


@pytest.mark.parametrize(
    "make_layer, message",
    [
        (lambda: export_tflite.Reorg(block_size=1), r"block_size=1"),
        (lambda: export_tflite.Reorg(block_size=2.0), r"block_size=2.0"),
        (lambda: export_tflite.AvgPool2d(kernel_size=0), r"kernel_size=0"),
        (lambda: export_tflite.AvgPool2d(stride=True), r"stride=True"),
        (lambda: export_tflite.AvgPool2d(padding=-1), r"padding=-1"),
    ],
)
def test_bad_layer_arguments_raise_value_error_naming_them(make_layer, message):
    with pytest.raises(ValueError, match=message):
        make_layer()


def test_avg_pool2d_counts_zero_padding_like_pytorch_count_include_pad():
    """On ones, a corner window holds 4 real values of 9: PyTorch gives 4/9, Keras "same" 1."""
    pooled = export_tflite.AvgPool2d(3, 1, 1)(np.ones((1, 4, 4, 2), "float32")).numpy()
    np.testing.assert_allclose(pooled[0, 0, 0], [4 / 9] * 2, rtol=1e-6)
    np.testing.assert_allclose(pooled[0, 0, 1], [6 / 9] * 2, rtol=1e-6)
    np.testing.assert_allclose(pooled[0, 1, 1], [1.0] * 2, rtol=1e-6)


def test_layers_accept_numpy_integers_and_round_trip_their_config():
    reorg = export_tflite.Reorg(block_size=np.int64(2))
    pool = export_tflite.AvgPool2d(np.int32(3), np.int64(1), np.int8(1))
    assert export_tflite.Reorg.from_config(reorg.get_config()).block_size == 2
    restored = export_tflite.AvgPool2d.from_config(pool.get_config())
    assert (restored.kernel_size, restored.stride, restored.padding) == (3, 1, 1)


def test_unknown_saved_model_method_and_interpreter_raise_value_error(
    model_inputs_expected, tmp_path
):
    model, inputs, _ = model_inputs_expected
    with pytest.raises(ValueError, match=r"method='h5'"):
        save_saved_model(model, str(tmp_path / "m"), "h5")
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match=r"interpreter='onnxruntime'"):
        run_tflite(b"", inputs, "onnxruntime")


def numpy_space_to_depth(x, block):
    """NHWC space-to-depth: each block x block patch becomes block * block * C channels."""
    batch, height, width, channels = x.shape
    patches = x.reshape(batch, height // block, block, width // block, block, channels)
    return patches.transpose(0, 1, 3, 2, 4, 5).reshape(
        batch, height // block, width // block, block * block * channels
    )


def numpy_avg_pool_count_include_pad(x, kernel, stride, pad):
    padded = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    rows = (padded.shape[1] - kernel) // stride + 1
    cols = (padded.shape[2] - kernel) // stride + 1
    out = np.empty((x.shape[0], rows, cols, x.shape[3]), x.dtype)
    for i in range(rows):
        for j in range(cols):
            window = padded[:, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
            out[:, i, j] = window.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize(
    "layer_class, kwargs, reference",
    [
        (Reorg, {"block_size": 2}, lambda x: numpy_space_to_depth(x, 2)),
        (
            AvgPool2d,
            {"kernel_size": 3, "stride": 2, "padding": 1},
            lambda x: numpy_avg_pool_count_include_pad(x, 3, 2, 1),
        ),
    ],
)
def test_custom_layers_pass_keras_own_layer_harness_against_numpy(
    layer_class, kwargs, reference, observe
):
    inputs = np.random.default_rng(7).normal(size=(2, 6, 6, 3)).astype("float32")
    expected = reference(inputs)
    np.testing.assert_allclose(np.asarray(layer_class(**kwargs)(inputs)), expected, atol=1e-6)
    run_keras_layer_test(layer_class, kwargs, inputs, expected, {layer_class.__name__: layer_class})
    observe(f"export_tflite's {layer_class.__name__} in Keras' own layer harness", "passes")
