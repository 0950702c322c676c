"""One contract for custom layers: Keras' own layer harness, then ours.

`check_layer_contract` runs, for one layer configuration and one input batch:

- Keras' own harness, the one its built-in layers must pass (`run_keras_layer_test`):
  build, symbolic and eager calls, output shape, config and serialization round trips, a
  training step, Sequential use (Keras 2) or mixed precision (Keras 3);
- the layer computes `expected` eagerly and inside Functional, Sequential and subclassed
  models, its output shape matches `compute_output_shape`, its config round-trips;
- each model saves and loads to identical predictions, from `.keras` and legacy `.h5`, both
  with `custom_objects=` and inside `keras.utils.custom_object_scope`. The routes some stacks
  refuse are asserted per release range with the `version_split` fixture.
"""

import importlib
import warnings

import numpy as np
import tensorflow as tf
from tensorflow import keras

from conftest import KERAS, USES_TF_KERAS, in_range, outcome_of

HDF5_NEEDS_FUNCTIONAL = "requires the model to be a Functional model or a Sequential model"


class SingleLayerModel(keras.Model):
    """The smallest subclassed model: one layer, called in `call`, saveable by config."""

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.inner = layer

    def call(self, inputs):
        return self.inner(inputs)

    def get_config(self):
        return {"layer": keras.layers.serialize(self.inner)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(keras.layers.deserialize(config["layer"], custom_objects=custom_objects))


def keras_harness_module():
    """The private module that holds Keras' own layer test on this stack.

    Named here once: the pins are exact, and each of these moved between releases.
    """
    if USES_TF_KERAS:
        name = "tf_keras.src.testing_infra.test_utils"
    elif KERAS.major >= 3:
        name = "keras.src.testing.test_case"
    elif in_range("keras<2.13"):
        name = "keras.testing_infra.test_utils"
    else:
        name = "keras.src.testing_infra.test_utils"
    return importlib.import_module(name)


def run_keras_layer_test(layer_class, kwargs, inputs, expected, custom_objects):
    """Keras' harness: `TestCase.run_layer_test` on Keras 3, `layer_test` on Keras 2.

    It compares outputs with its own tolerance (1e-6 absolute); pass `expected=None` to
    leave the values to our contract.
    """
    harness = keras_harness_module()
    with warnings.catch_warnings():
        # The harness fits a layer without weights from a generator; Keras says so.
        warnings.filterwarnings("ignore", message="The model does not have any trainable")
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        _run_harness(harness, layer_class, kwargs, inputs, expected, custom_objects)


def _run_harness(harness, layer_class, kwargs, inputs, expected, custom_objects):
    if KERAS.major >= 3:
        # run_layer_test is a method of Keras' unittest-based TestCase; "runTest" is the
        # method name unittest accepts for a case built outside a test runner.
        class KerasTestCase(harness.TestCase):
            def runTest(self):
                pass

        KerasTestCase().run_layer_test(
            layer_class,
            init_kwargs=dict(kwargs),
            input_data=inputs,
            # The harness compares type(expected_output) with the layer's eager output.
            expected_output=None if expected is None else tf.convert_to_tensor(expected),
            custom_objects=custom_objects,
        )
    else:
        harness.layer_test(
            layer_class,
            kwargs=dict(kwargs),
            input_data=inputs,
            expected_output=expected,
            custom_objects=custom_objects,
        )


def build_models(layer_class, kwargs, input_shape):
    """{"functional" | "sequential" | "subclassed": a model holding one fresh layer}."""
    symbolic = keras.Input(input_shape)
    return {
        "functional": keras.Model(symbolic, layer_class(**kwargs)(symbolic)),
        "sequential": keras.Sequential([keras.Input(input_shape), layer_class(**kwargs)]),
        "subclassed": SingleLayerModel(layer_class(**kwargs)),
    }


def _assert_loaded_copy(loaded, model, layer_class, inputs, predicted):
    assert isinstance(loaded.layers[-1], layer_class), type(loaded.layers[-1])
    assert loaded.layers[-1].get_config() == model.layers[-1].get_config()
    np.testing.assert_array_equal(loaded.predict(inputs, verbose=0), predicted)


def round_trip(model, path, layer_class, inputs, custom_objects, predicted):
    """Saves `model` to `path`; returns (save outcome, outcome of loading with the argument).

    `predicted` is `model.predict(inputs)`, computed once: each loaded copy must match it.

    Loading inside `keras.utils.custom_object_scope` is asserted to work wherever saving did.
    """
    with warnings.catch_warnings():
        # Keras 2 warns that .h5 is legacy: testing that format is the point here.
        warnings.filterwarnings("ignore", message=".*HDF5 file.*considered legacy")
        saved = outcome_of(lambda: model.save(path), fragments=[HDF5_NEEDS_FUNCTIONAL])
    if saved != "works":
        return saved, None
    with keras.utils.custom_object_scope(custom_objects):
        _assert_loaded_copy(keras.models.load_model(path), model, layer_class, inputs, predicted)

    def load_with_argument():
        loaded = keras.models.load_model(path, custom_objects=custom_objects)
        _assert_loaded_copy(loaded, model, layer_class, inputs, predicted)

    return saved, outcome_of(load_with_argument, fragments=["Unknown layer"])


def check_saving(models, predictions, layer_class, inputs, tmp_path, version_split):
    """Every model kind, saved as `.keras` and legacy `.h5`, loads back by both routes to
    `predictions[kind]`, the kind's own predictions before saving."""
    custom_objects = {layer_class.__name__: layer_class, "SingleLayerModel": SingleLayerModel}
    outcomes = {
        (kind, extension): round_trip(
            model,
            str(tmp_path / f"{layer_class.__name__}-{kind}.{extension}"),
            layer_class,
            inputs,
            custom_objects,
            predictions[kind],
        )
        for kind, model in models.items()
        for extension in ("keras", "h5")
    }
    for kind in ("functional", "sequential"):
        assert outcomes[kind, "keras"] == ("works", "works"), outcomes
        assert outcomes[kind, "h5"][0] == "works", outcomes
    # Keras 2 saves only Functional and Sequential models to HDF5, and Keras 2.12 writes
    # "m.keras" as HDF5 too.
    refused = f"NotImplementedError: {HDF5_NEEDS_FUNCTIONAL}"
    subclassed_keras_saved, subclassed_keras_loaded = outcomes["subclassed", "keras"]
    version_split(
        "saving a subclassed model that holds a custom layer as `.keras`",
        subclassed_keras_saved,
        {"keras<2.13": refused, "keras>=2.13": "works"},
    )
    assert subclassed_keras_loaded in (None, "works"), outcomes
    version_split(
        "saving a subclassed model that holds a custom layer as legacy `.h5`",
        outcomes["subclassed", "h5"][0],
        {"keras<3": refused, "keras>=3": "works"},
    )
    # Loading legacy .h5 with the argument: the same outcome for every kind that saved.
    h5_by_argument = {
        loaded
        for (_, extension), (_, loaded) in outcomes.items()
        if extension == "h5" and loaded is not None
    }
    assert len(h5_by_argument) == 1, outcomes
    version_split(
        "`load_model(legacy .h5, custom_objects=...)` of a model holding a custom layer",
        h5_by_argument.pop(),
        # Keras 3.0 to 3.2 call the .h5 loader with the path alone (tox -e boundaries).
        {"keras<3": "works", "keras>=3,<3.3": "ValueError: Unknown layer", "keras>=3.3": "works"},
    )


def check_layer_contract(layer_class, kwargs, inputs, expected, tmp_path, version_split, atol=0.0):
    """The whole contract for `layer_class(**kwargs)` on `inputs` (NumPy, batch first).

    `expected` is what the layer must compute; `version_split` is the conftest fixture.
    Returns the Functional model, for further checks by the caller.
    """
    custom_objects = {layer_class.__name__: layer_class}
    harness_expected = expected if atol <= 1e-6 else None
    run_keras_layer_test(layer_class, kwargs, inputs, harness_expected, custom_objects)

    layer = layer_class(**kwargs)
    eager = np.asarray(layer(inputs))
    np.testing.assert_allclose(eager, expected, atol=atol, rtol=0)
    assert tuple(layer.compute_output_shape(inputs.shape)) == expected.shape

    config = layer.get_config()
    assert layer_class.from_config(config).get_config() == config

    models = build_models(layer_class, kwargs, inputs.shape[1:])
    predictions = {kind: model.predict(inputs, verbose=0) for kind, model in models.items()}
    for predicted in predictions.values():
        np.testing.assert_allclose(predicted, expected, atol=atol, rtol=0)
    check_saving(models, predictions, layer_class, inputs, tmp_path, version_split)
    return models["functional"]
