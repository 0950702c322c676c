"""Tests for recipes/save_paths.py: what each path users type writes, or why it is refused."""

import os
import pathlib
import warnings

import h5py
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.save_paths import SAVE_PATHS, latest_checkpoint, save_path

X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
Y = np.ones((4, 2), np.float32)
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
REFUSALS = [
    "Invalid filepath extension",
    "must end in `.weights.h5`",
    "must end in `.keras`",
    "The `save_format` argument is deprecated",
    "expected a `.keras` extension",
    "is inconsistent with `filepath`",
]


def small_model(seed=1):
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed))
    model = keras.Model(inputs, dense(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def what_is_at(path):
    """What a save wrote at `path`, read from the bytes and the directory, not from Keras."""
    path = pathlib.Path(path)
    if path.is_dir():
        return "SavedModel directory" if (path / "saved_model.pb").is_file() else "directory"
    if path.is_file():
        head = path.read_bytes()[:8]
        if head.startswith(ZIP_MAGIC):
            return "zip archive"
        if head == HDF5_MAGIC:
            # A legacy full-model HDF5 file carries its architecture in `model_config`.
            with h5py.File(path, "r") as file:
                return "HDF5 model" if "model_config" in file.attrs else "HDF5 weights"
        return "other file"
    if pathlib.Path(f"{path}.index").is_file():
        return "TF checkpoint"
    return "nothing"


def written_and_found(path, outcome):
    """`what_is_at(path)`, and whether tf.train.latest_checkpoint finds it."""
    if outcome != "works":
        assert what_is_at(path) == "nothing"
        return outcome
    found = tf.train.latest_checkpoint(str(pathlib.Path(path).parent))
    return f"{what_is_at(path)}, latest_checkpoint: {'finds it' if found else None}"


def assert_same_weights(model, other):
    for got, want in zip(model.get_weights(), other.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


# --- model.save and save_weights ------------------------------------------------------------

NOT_FOUND = ", latest_checkpoint: None"
SAVE_CASES = [
    ("save", "m.keras", {"keras<2.13": "HDF5 model", "keras>=2.13": "zip archive"}),
    ("save", "m.h5", {"keras<3": "HDF5 model", "keras>=3": "HDF5 model"}),
    ("save", "m.hdf5", {"keras<3": "HDF5 model", "keras>=3": "HDF5 model"}),
    (
        "save",
        "model_dir",
        {"keras<3": "SavedModel directory", "keras>=3": "ValueError: Invalid filepath extension"},
    ),
    (
        "save_weights",
        "w.h5",
        {"keras<3": "HDF5 weights", "keras>=3": "ValueError: must end in `.weights.h5`"},
    ),
    ("save_weights", "w.weights.h5", {"keras<3": "HDF5 weights", "keras>=3": "HDF5 weights"}),
    (
        "save_weights",
        "ckpt",
        {
            "keras<3": "TF checkpoint, latest_checkpoint: finds it",
            "keras>=3": "ValueError: must end in `.weights.h5`",
        },
    ),
]


def with_not_found(known):
    """Adds ", latest_checkpoint: None" to every outcome that wrote a file."""
    return {
        spec: outcome if "Error" in outcome or "finds it" in outcome else outcome + NOT_FOUND
        for spec, outcome in known.items()
    }


@pytest.mark.parametrize(("method", "name", "known"), SAVE_CASES)
def test_model_save_and_save_weights_paths(tmp_path, method, name, known, version_split):
    path = tmp_path / name
    outcome = outcome_of(lambda: getattr(small_model(), method)(str(path)), REFUSALS)
    version_split(
        f"model.{method}('{name}')", written_and_found(path, outcome), with_not_found(known)
    )


SAVE_FORMAT_CASES = [
    (
        "model",
        "h5",
        {
            "keras<3": "HDF5 model",
            "keras>=3": "ValueError: The `save_format` argument is deprecated",
        },
    ),
    (
        "model",
        "tf",
        {
            "keras<3": "SavedModel directory",
            "keras>=3": "ValueError: The `save_format` argument is deprecated",
        },
    ),
    (
        "model",
        "keras",
        {
            "keras<2.13": "SavedModel directory",
            "keras>=2.13,<3": "ValueError: expected a `.keras` extension",
            "keras>=3": "ValueError: The `save_format` argument is deprecated",
        },
    ),
    ("m.keras", "h5", {"keras<3": "HDF5 model", "keras>=3": "zip archive"}),
    ("m.keras", "tf", {"keras<3": "HDF5 model", "keras>=3": "zip archive"}),
    (
        "m.h5",
        "tf",
        {
            "keras<2.13": "ValueError: is inconsistent with `filepath`",
            "keras>=2.13,<3": "HDF5 model",
            "keras>=3": "HDF5 model",
        },
    ),
]


@pytest.mark.parametrize(("name", "save_format", "known"), SAVE_FORMAT_CASES)
def test_model_save_with_save_format(tmp_path, name, save_format, known, version_split):
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = outcome_of(
            lambda: small_model().save(str(path), save_format=save_format), REFUSALS
        )
    version_split(
        f"model.save('{name}', save_format='{save_format}')",
        written_and_found(path, outcome),
        with_not_found(known),
    )


# --- ModelCheckpoint --------------------------------------------------------------------------

MUST_BE_WEIGHTS_H5 = "ValueError: must end in `.weights.h5`"
MUST_BE_KERAS = "ValueError: must end in `.keras`"
CHECKPOINT_CASES = [
    ("m.keras", True, {"keras<3": "HDF5 weights", "keras>=3": MUST_BE_WEIGHTS_H5}),
    ("m.keras", False, {"keras<2.13": "HDF5 model", "keras>=2.13": "zip archive"}),
    ("m.h5", True, {"keras<3": "HDF5 weights", "keras>=3": MUST_BE_WEIGHTS_H5}),
    (
        "m.h5",
        False,
        {"keras<3": "HDF5 model", "keras>=3,<3.8": MUST_BE_KERAS, "keras>=3.8": "HDF5 model"},
    ),
    (
        "ckpt",
        True,
        {"keras<3": "TF checkpoint, latest_checkpoint: finds it", "keras>=3": MUST_BE_WEIGHTS_H5},
    ),
    ("ckpt", False, {"keras<3": "SavedModel directory", "keras>=3": MUST_BE_KERAS}),
    ("w.weights.h5", True, {"keras<3": "HDF5 weights", "keras>=3": "HDF5 weights"}),
    (
        "w.weights.h5",
        False,
        {"keras<3": "HDF5 model", "keras>=3,<3.8": MUST_BE_KERAS, "keras>=3.8": "HDF5 model"},
    ),
    ("w.h5", True, {"keras<3": "HDF5 weights", "keras>=3": MUST_BE_WEIGHTS_H5}),
    (
        "w.h5",
        False,
        {"keras<3": "HDF5 model", "keras>=3,<3.8": MUST_BE_KERAS, "keras>=3.8": "HDF5 model"},
    ),
]


@pytest.mark.parametrize(("name", "weights_only", "known"), CHECKPOINT_CASES)
def test_model_checkpoint_paths(tmp_path, name, weights_only, known, version_split):
    path = tmp_path / name
    callback = lambda: keras.callbacks.ModelCheckpoint(str(path), save_weights_only=weights_only)  # noqa: E731
    outcome = outcome_of(
        lambda: small_model().fit(X, Y, epochs=1, verbose=0, callbacks=[callback()]), REFUSALS
    )
    version_split(
        f"ModelCheckpoint('{name}', save_weights_only={weights_only}) in fit",
        written_and_found(path, outcome),
        with_not_found(known),
    )


# --- The portable names -----------------------------------------------------------------------


def test_save_path_model_and_weights_round_trip_exactly(tmp_path, observe):
    model = small_model()
    model.fit(X, Y, epochs=1, verbose=0)
    model.save(save_path("model", tmp_path))
    model.save_weights(save_path("weights", tmp_path))
    fresh = small_model(seed=2)
    fresh.load_weights(save_path("weights", tmp_path))
    assert_same_weights(fresh, model)
    assert_same_weights(keras.models.load_model(save_path("model", tmp_path)), model)
    assert tf.train.latest_checkpoint(str(tmp_path)) is None
    observe("save_path('model') and save_path('weights')", "written and reloaded exactly")


def test_checkpoint_callback_weights_round_trip_exactly(tmp_path, observe):
    model = small_model()
    callback = keras.callbacks.ModelCheckpoint(
        save_path("checkpoint", tmp_path), save_weights_only=True
    )
    model.fit(X, Y, epochs=3, verbose=0, callbacks=[callback])
    assert sorted(os.listdir(tmp_path)) == [f"ckpt-0{epoch}.weights.h5" for epoch in (1, 2, 3)]
    newest = latest_checkpoint(tmp_path)
    assert newest == str(tmp_path / "ckpt-03.weights.h5")
    assert what_is_at(newest) == "HDF5 weights"
    assert tf.train.latest_checkpoint(str(tmp_path)) is None
    fresh = small_model(seed=2)
    fresh.load_weights(newest)
    assert_same_weights(fresh, model)
    observe("ModelCheckpoint(save_path('checkpoint'), save_weights_only=True)", "reloads exactly")


def test_model_checkpoint_callback_round_trips_exactly(tmp_path, observe):
    model = small_model()
    callback = keras.callbacks.ModelCheckpoint(save_path("model_checkpoint", tmp_path))
    model.fit(X, Y, epochs=2, verbose=0, callbacks=[callback])
    newest = latest_checkpoint(tmp_path, "model_checkpoint")
    assert newest == str(tmp_path / "model-02.keras")
    assert tf.train.latest_checkpoint(str(tmp_path)) is None
    loaded = keras.models.load_model(newest)
    assert_same_weights(loaded, model)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    observe("ModelCheckpoint(save_path('model_checkpoint'))", "reloads exactly")


def test_latest_checkpoint_picks_the_highest_epoch_and_ignores_other_files(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for name in ["ckpt-09.weights.h5", "ckpt-10.weights.h5", "ckpt-x.weights.h5", "model-11.keras"]:
        (tmp_path / name).write_bytes(b"")
    assert latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-10.weights.h5")
    assert latest_checkpoint(str(tmp_path), "model_checkpoint") == str(tmp_path / "model-11.keras")


def test_bad_arguments_raise_a_value_error_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"kind='model\.h5'"):
        save_path("model.h5")
    with pytest.raises(ValueError, match=r"directory=3"):
        save_path("model", 3)
    with pytest.raises(ValueError, match=r"kind='weights'"):
        latest_checkpoint(tmp_path, "weights")
    with pytest.raises(ValueError, match=r"directory='missing_dir'"):
        latest_checkpoint("missing_dir")
    assert set(SAVE_PATHS) == {"model", "weights", "checkpoint", "model_checkpoint"}
