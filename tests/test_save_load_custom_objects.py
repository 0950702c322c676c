"""Tests for recipes/save_load_custom_objects.py: formats, loading routes, Keras 2 files."""

import json
import pathlib
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.save_load_custom_objects import (
    Scale,
    WeightedSquaredError,
    keras2_config_for_this_keras,
    load_keras2_archive,
    load_model_with_custom_objects,
    small_model,
)
from tests.fixtures.make_keras2_fixtures import fixture_values

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
Y = np.ones((4, 2), np.float32)


class PlainScale(Scale):
    """Scale under a name no registry knows: it loads only with custom_objects."""


def plain_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, PlainScale(0.5, name="plain")(keras.layers.Dense(2)(inputs)))
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    return model


def assert_same_weights(model, other):
    for got, want in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


# --- Exact round trips -----------------------------------------------------------------------


def saved_and_loaded(tmp_path, suffix):
    model = small_model()
    model.train_on_batch(X, Y)
    path = tmp_path / f"model.{suffix}"
    model.save(str(path))
    loaded = load_model_with_custom_objects(path)
    assert_same_weights(loaded, model)
    assert isinstance(loaded.get_layer("scale"), Scale) and loaded.get_layer("scale").initial == 0.5
    assert isinstance(loaded.loss, WeightedSquaredError) and loaded.loss.weight == 2.0
    model.train_on_batch(X, Y)
    return model, loaded


def test_keras_round_trip_resumes_training_identically(tmp_path, observe):
    model, loaded = saved_and_loaded(tmp_path, "keras")
    loaded.train_on_batch(X, Y)
    assert_same_weights(loaded, model)
    observe("model.save('.keras') then one more train step", "identical to the original")


def test_legacy_h5_round_trip_resumes_training_on_keras_2_and_fails_on_keras_3(
    tmp_path, version_split
):
    model, loaded = saved_and_loaded(tmp_path, "h5")
    observed = outcome_of(
        lambda: loaded.train_on_batch(X, Y),
        ["Unknown variable", "numpy() is only available when eager execution"],
    )
    if observed == "works":
        same = all(map(np.array_equal, loaded.get_weights(), model.get_weights()))
        observed = "identical to the original" if same else "differs"
    version_split(
        "model.save('.h5') then one more train step",
        observed,
        {
            "keras<3": "identical to the original",
            "keras>=3,<3.7": "ValueError: Unknown variable",
            "keras>=3.7,<3.13": "NotImplementedError: numpy() is only available when eager "
            "execution",
            "keras>=3.13": "ValueError: Unknown variable",
        },
    )


def test_compile_false_loads_for_inference_without_optimizer(tmp_path, observe):
    model = small_model()
    path = tmp_path / "model.keras"
    model.save(str(path))
    loaded = load_model_with_custom_objects(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    assert getattr(loaded, "loss", None) is None
    observe("load_model(compile=False)", "predicts identically, no loss")


# --- Loading routes ------------------------------------------------------------------------------


def test_custom_objects_ignored_for_legacy_h5_on_keras_3_0_to_3_2(tmp_path, version_split, observe):
    path = tmp_path / "plain.h5"
    plain_model().save(str(path))
    observed = outcome_of(
        lambda: keras.models.load_model(str(path), custom_objects={"PlainScale": PlainScale}),
        ["Unknown layer"],
    )
    version_split(
        "load_model(legacy .h5, custom_objects=...) for an unregistered layer",
        observed,
        {"keras<3": "works", "keras>=3,<3.3": "ValueError: Unknown layer", "keras>=3.3": "works"},
    )
    loaded = load_model_with_custom_objects(path, {"PlainScale": PlainScale})
    assert isinstance(loaded.get_layer("plain"), PlainScale)
    observe("load_model(legacy .h5) inside custom_object_scope", "loads")


@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_registered_classes_load_without_custom_objects(tmp_path, suffix, observe):
    model = small_model()
    path = tmp_path / f"model.{suffix}"
    model.save(str(path))
    loaded = keras.models.load_model(str(path))
    assert isinstance(loaded.get_layer("scale"), Scale)
    assert isinstance(loaded.loss, WeightedSquaredError) and loaded.loss.weight == 2.0
    observe(f"load_model(.{suffix}) of registered classes without custom_objects", "loads")


# --- Files written by Keras 2.15 -----------------------------------------------------------------


FIXTURE_ERRORS = [
    "but received 0 variables",
    "Unrecognized keyword arguments passed to DepthwiseConv2D",
    "Could not deserialize class 'Functional'",
]
KERAS3_GROUPS = "TypeError: Unrecognized keyword arguments passed to DepthwiseConv2D"
KNOWN_FIXTURE_OUTCOMES = {
    "keras2_depthwise.h5": {"keras<3": "works", "keras>=3": KERAS3_GROUPS},
    "keras2_depthwise.keras": {
        "keras<2.13": "TypeError: Could not deserialize class 'Functional'",
        "keras>=2.13,<2.15": "ValueError: but received 0 variables",
        "keras>=2.15,<3": "works",
        "keras>=3": "TypeError: Could not deserialize class 'Functional'",
    },
}


@pytest.mark.parametrize("name", ["keras2_depthwise.h5", "keras2_depthwise.keras"])
def test_keras_2_15_depthwise_files_load_on_every_stack(name, version_split):
    path = FIXTURES / name
    loaded = []
    observed = outcome_of(
        lambda: loaded.append(keras.models.load_model(str(path), compile=False)),
        FIXTURE_ERRORS,
    )
    if observed == "works":
        [model] = loaded
        for index, array in enumerate(model.get_weights()):
            np.testing.assert_array_equal(array, fixture_values(array.shape, offset=index))
    version_split(
        f"load_model(Keras 2.15 {name}) with DepthwiseConv2D",
        observed,
        KNOWN_FIXTURE_OUTCOMES[name],
    )
    # With DepthwiseConv2DFromKeras2 under custom_object_scope Keras 3 loads the legacy
    # .h5; the .keras still names Keras 2's module keras.src.engine.functional.
    loaded.clear()
    observed = outcome_of(
        lambda: loaded.append(load_model_with_custom_objects(path, compile=False)),
        FIXTURE_ERRORS,
    )
    if observed == "works":
        for index, array in enumerate(loaded[0].get_weights()):
            np.testing.assert_array_equal(array, fixture_values(array.shape, offset=index))
    version_split(
        f"load_model_with_custom_objects(Keras 2.15 {name}) with DepthwiseConv2D",
        observed,
        {
            **KNOWN_FIXTURE_OUTCOMES[name],
            "keras>=3": "works"
            if name.endswith(".h5")
            else "TypeError: Could not deserialize class 'Functional'",
        },
    )


def expected_outputs(stem):
    """The inputs and predictions the fixture script recorded with Keras 2.15."""
    with np.load(FIXTURES / f"{stem}_expected.npz") as recorded:
        return recorded["x"], recorded["y"]


def predicts_like_keras_2_15(model, stem):
    x, y = expected_outputs(stem)
    np.testing.assert_array_equal(model.predict(x, verbose=0), y)


def loaded_by(load, path):
    """(outcome of load(path), the model or None)."""
    loaded = []
    observed = outcome_of(lambda: loaded.append(load(path)), FIXTURE_ERRORS)
    return observed, (loaded[0] if loaded else None)


def test_keras_2_15_depthwise_archive_config_names_a_private_keras_2_module(version_split):
    with zipfile.ZipFile(FIXTURES / "keras2_depthwise.keras") as archive:
        raw_config = archive.read("config.json")
        assert json.loads(archive.read("metadata.json"))["keras_version"] == "2.15.0"
    config = json.loads(raw_config)
    assert config["module"] == "keras.src.engine.functional"
    [depthwise] = [layer for layer in config["config"]["layers"] if layer["name"] == "depthwise"]
    assert depthwise["config"]["groups"] == 1
    observed = outcome_of(lambda: keras.Model.from_config(config["config"]), FIXTURE_ERRORS)
    version_split(
        "keras.Model.from_config(config.json of the Keras 2.15 DepthwiseConv2D archive)",
        observed,
        {"keras<3": "works", "keras>=3": KERAS3_GROUPS},
    )
    # from_config may consume its argument, so the fix starts from the file again.
    fixed = keras2_config_for_this_keras(json.loads(raw_config))
    assert "module" not in fixed and "groups" not in str(fixed)
    assert keras.Model.from_config(fixed["config"]).count_params() == 18 + 2 + 18 + 1


KERAS2_ARCHIVE_ROUTE = {
    "keras<2.15": "ValueError: but received 0 variables",
    "keras>=2.15": "works",
}


@pytest.mark.parametrize("stem", ["keras2_depthwise", "keras2_lstm"])
def test_load_keras2_archive_loads_keras_2_15_archives_from_2_15_on(stem, version_split):
    observed, model = loaded_by(load_keras2_archive, FIXTURES / f"{stem}.keras")
    if model is not None:
        predicts_like_keras_2_15(model, stem)
    version_split(f"load_keras2_archive(Keras 2.15 {stem}.keras)", observed, KERAS2_ARCHIVE_ROUTE)


LSTM_ERRORS = [
    "Could not interpret initializer identifier",
    "Unrecognized keyword arguments passed to LSTM",
    "Could not deserialize class 'Functional'",
    "but received 0 variables",
]
KNOWN_LSTM_OUTCOMES = {
    "keras2_lstm.h5": {
        "keras<3": "works",
        "keras>=3,<3.4": "ValueError: Could not interpret initializer identifier",
        "keras>=3.4": "ValueError: Unrecognized keyword arguments passed to LSTM",
    },
    "keras2_lstm.keras": KNOWN_FIXTURE_OUTCOMES["keras2_depthwise.keras"],
}


@pytest.mark.parametrize("name", ["keras2_lstm.h5", "keras2_lstm.keras"])
def test_keras_2_15_lstm_files_per_stack(name, version_split):
    path = FIXTURES / name
    loaded = []
    observed = outcome_of(
        lambda: loaded.append(keras.models.load_model(str(path), compile=False)), LSTM_ERRORS
    )
    if loaded:
        predicts_like_keras_2_15(loaded[0], "keras2_lstm")
    version_split(f"load_model(Keras 2.15 {name}) with LSTM", observed, KNOWN_LSTM_OUTCOMES[name])


def test_keras_3_0_to_3_3_cannot_read_the_orthogonal_initializer_keras_2_writes(version_split):
    with zipfile.ZipFile(FIXTURES / "keras2_lstm.keras") as archive:
        config = archive.read("config.json").decode()
    assert '"time_major": false' in config and '"class_name": "Orthogonal"' in config
    observed = outcome_of(
        lambda: keras.initializers.get({"class_name": "Orthogonal", "config": {"gain": 1.0}}),
        LSTM_ERRORS,
    )
    version_split(
        "keras.initializers.get({'class_name': 'Orthogonal'})",
        observed,
        {
            "keras<3": "works",
            "keras>=3,<3.4": "ValueError: Could not interpret initializer identifier",
            "keras>=3.4": "works",
        },
    )


def test_keras_2_15_lstm_h5_loads_everywhere_through_the_compatible_objects(observe):
    model = load_model_with_custom_objects(FIXTURES / "keras2_lstm.h5", compile=False)
    predicts_like_keras_2_15(model, "keras2_lstm")
    observe("load_model_with_custom_objects(Keras 2.15 keras2_lstm.h5)", "exact predictions")


def test_keras_2_15_depthwise_files_predict_like_keras_2_15_where_they_load(observe):
    model = load_model_with_custom_objects(FIXTURES / "keras2_depthwise.h5", compile=False)
    predicts_like_keras_2_15(model, "keras2_depthwise")
    observe("load_model_with_custom_objects(Keras 2.15 keras2_depthwise.h5)", "exact predictions")


def bidirectional_lstm_model():
    """tensorflow/tensorflow#65395: Input (17, 4) -> Bidirectional(LSTM(4))."""
    inputs = keras.Input((17, 4))
    return keras.Model(inputs, keras.layers.Bidirectional(keras.layers.LSTM(4))(inputs))


def test_bidirectional_lstm_keras_round_trip_on_the_same_stack(tmp_path, version_split):
    model = bidirectional_lstm_model()
    path = tmp_path / "bidirectional.keras"
    model.save(str(path))
    observed, loaded = loaded_by(lambda p: keras.models.load_model(str(p)), path)
    if loaded is not None:
        assert_same_weights(loaded, model)
    version_split(
        "Bidirectional(LSTM) saved to .keras and loaded by the same Keras",
        observed,
        {
            "keras<3": "works",
            "keras>=3,<3.3": "ValueError: but received 0 variables",
            "keras>=3.3": "works",
        },
    )


def test_default_custom_objects_change_nothing_for_a_keras_file_of_the_same_stack(
    tmp_path, observe
):
    sequence, image = keras.Input((4, 3)), keras.Input((5, 5, 2))
    hidden = keras.layers.LSTM(2, return_sequences=True)(sequence)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(2))(hidden)
    flat = keras.layers.Flatten()(keras.layers.DepthwiseConv2D(3)(image))
    model = keras.Model([sequence, image], keras.layers.Concatenate()([hidden, flat]))
    x = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 4, 3), np.ones((1, 5, 5, 2))]
    path = tmp_path / "same_stack.keras"
    model.save(str(path))
    plain, plain_model = loaded_by(lambda p: keras.models.load_model(str(p)), path)
    helper, helper_model = loaded_by(load_model_with_custom_objects, path)
    assert helper == plain
    if helper_model is not None:
        classes = {type(layer).__name__ for layer in helper_model.layers}
        assert {"LSTM", "Bidirectional", "DepthwiseConv2D"} <= classes
        expected = model.predict(x, verbose=0)
        np.testing.assert_array_equal(helper_model.predict(x, verbose=0), expected)
        np.testing.assert_array_equal(plain_model.predict(x, verbose=0), expected)
    observe("load_model_with_custom_objects(same-stack .keras with LSTM)", "same as load_model")


# --- Bad input -----------------------------------------------------------------------------------


def test_bad_arguments_raise_a_value_error_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"path='missing\.keras'"):
        load_model_with_custom_objects("missing.keras")
    path = tmp_path / "model.keras"
    small_model().save(str(path))
    with pytest.raises(ValueError, match=r"custom_objects=\['Scale'\]"):
        load_model_with_custom_objects(path, ["Scale"])
    with pytest.raises(ValueError, match=r"initial=nan"):
        Scale(float("nan"))
    with pytest.raises(ValueError, match=r"path='missing\.keras'"):
        load_keras2_archive("missing.keras")
    with pytest.raises(ValueError, match=r"custom_objects=\['Scale'\]"):
        load_keras2_archive(FIXTURES / "keras2_lstm.keras", ["Scale"])
    sequential = tmp_path / "sequential.keras"
    with zipfile.ZipFile(sequential, "w") as archive:
        archive.writestr("config.json", json.dumps({"class_name": "Sequential", "config": {}}))
    with pytest.raises(ValueError, match=r"class_name='Sequential'"):
        load_keras2_archive(sequential)
    with pytest.raises(ValueError, match=r"weight=-1"):
        WeightedSquaredError(weight=-1)
    assert Scale(np.float32(2.0)).initial == 2.0


# --- SavedModel ----------------------------------------------------------------------------------


def test_model_export_after_predict_writes_a_savedmodel_serving_the_same_predictions(
    tmp_path, version_split
):
    model = small_model()
    expected = model.predict(X, verbose=0)
    directory = str(tmp_path / "exported")
    observed = outcome_of(lambda: model.export(directory), ["Failed to add concrete function"])
    if observed == "works":
        restored = tf.saved_model.load(directory)
        np.testing.assert_allclose(restored.serve(X).numpy(), expected, rtol=1e-6)
    version_split(
        "model.export(directory) after model.predict",
        observed,
        {"keras<2.13": "KeyError: Failed to add concrete function", "keras>=2.13": "works"},
    )
    reloaded = "nothing exported"
    if observed == "works":
        reloaded = outcome_of(
            lambda: load_model_with_custom_objects(directory, compile=False),
            ["File format not supported"],
        )
    version_split(
        "load_model(exported SavedModel directory)",
        reloaded,
        {
            "keras<2.13": "nothing exported",
            "keras>=2.13,<3": "works",
            "keras>=3": "ValueError: File format not supported",
        },
    )
    has_tfsm_layer = hasattr(keras.layers, "TFSMLayer")
    if has_tfsm_layer and observed == "works":
        layer = keras.layers.TFSMLayer(directory, call_endpoint="serve")
        np.testing.assert_allclose(np.asarray(layer(X)), expected, rtol=1e-6)
    version_split(
        "keras.layers.TFSMLayer reloads an exported SavedModel",
        "works" if has_tfsm_layer else "absent",
        {"keras<3": "absent", "keras>=3": "works"},
    )
    # A model that holds a TFSMLayer, saved to .keras and loaded back: from Keras 3.12.1
    # (and again from 3.13.2: 3.13.0 and 3.13.1 lack the fix) safe_mode refuses it, since
    # the layer loads an external SavedModel (CVE-2026-1462); safe_mode=False loads it.
    by_default = "absent"
    if has_tfsm_layer:
        outer = keras.Sequential([keras.Input((3,)), layer])
        outer.save(tmp_path / "outer.keras")
        by_default = outcome_of(
            lambda: keras.models.load_model(tmp_path / "outer.keras"),
            ["Requested the deserialization of a `TFSMLayer`"],
        )
        unsafe = keras.models.load_model(tmp_path / "outer.keras", safe_mode=False)
        np.testing.assert_array_equal(np.asarray(unsafe(X)), np.asarray(outer(X)))
    refused = "ValueError: Requested the deserialization of a `TFSMLayer`"
    version_split(
        "load_model(.keras holding a TFSMLayer), default safe_mode",
        by_default,
        {
            "keras<3": "absent",
            "keras>=3,<3.12.1": "works",
            "keras>=3.12.1,<3.13": refused,
            "keras>=3.13,<3.13.2": "works",
            "keras>=3.13.2": refused,
        },
    )


def test_tf_saved_model_save_writes_a_savedmodel_everywhere(tmp_path, observe):
    model = small_model()
    directory = tmp_path / "saved_model"
    tf.saved_model.save(model, str(directory))
    assert (directory / "saved_model.pb").is_file()
    observe("tf.saved_model.save(model, directory)", "writes saved_model.pb")
