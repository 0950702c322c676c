"""Tests for recipes/safe_model_loading.py: what loading runs, and the audit that reads first.

The crafted files that reference `os.system` are only ever audited, never loaded.
"""

import json
import os
import re
import warnings
import zipfile

import h5py
import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.safe_model_loading import audit_model_file, load_model_if_clean

SAFE_MODE_FRAGMENT = "safe_mode=False"


def save_quietly(model, path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*considered legacy")
        model.save(path)
    return str(path)


def lambda_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(inputs))


def clean_model(compiled=True):
    inputs = keras.Input((4, 4, 2))
    hidden = keras.layers.Conv2D(3, 2, activation="relu", kernel_regularizer="l2")(inputs)
    hidden = keras.layers.BatchNormalization()(hidden)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    if compiled:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
    return model


class ThirdPartyLayer(keras.layers.Layer):
    """A custom layer: its module is this test module, outside Keras."""

    def call(self, inputs):
        return inputs


def lambda_loads_and_runs(path):
    loaded = keras.models.load_model(path)
    output = loaded.predict(np.ones((1, 3), "float32"), verbose=0)
    np.testing.assert_array_equal(output, np.full((1, 3), 3.0))


# --- What each stack does with a Lambda --------------------------------------------------


def test_a_lambda_in_a_keras_file_is_refused_by_default_from_keras_2_13(tmp_path, version_split):
    path = save_quietly(lambda_model(), tmp_path / "lambda.keras")
    written = "zip archive" if zipfile.is_zipfile(path) else "HDF5"
    loaded = outcome_of(lambda: lambda_loads_and_runs(path), fragments=[SAFE_MODE_FRAGMENT])
    version_split(
        "`load_model` of a `.keras` file holding a Lambda, default arguments",
        f"{written}: {loaded}",
        # Keras 2.12 writes m.keras as legacy HDF5.
        {
            "keras<2.13": "HDF5: works",
            "keras>=2.13": f"zip archive: ValueError: {SAFE_MODE_FRAGMENT}",
        },
    )


def test_a_lambda_in_a_legacy_h5_loads_and_runs_until_keras_3_11_3(tmp_path, version_split):
    path = save_quietly(lambda_model(), tmp_path / "lambda.h5")
    version_split(
        "`load_model` of a legacy `.h5` holding a Lambda, default arguments",
        outcome_of(lambda: lambda_loads_and_runs(path), fragments=[SAFE_MODE_FRAGMENT]),
        {"keras<3.11.3": "works", "keras>=3.11.3": f"ValueError: {SAFE_MODE_FRAGMENT}"},
    )


def test_safe_mode_true_does_not_stop_a_legacy_h5_lambda_on_keras_2(tmp_path, version_split):
    """Passing safe_mode=True yourself changes nothing on Keras 2 and tf-keras 2.21
    (keras-team/tf-keras#910, open): its legacy .h5 loader never reads the argument."""
    path = save_quietly(lambda_model(), tmp_path / "lambda.h5")

    def load_safely():
        loaded = keras.models.load_model(path, safe_mode=True)
        output = loaded.predict(np.ones((1, 3), "float32"), verbose=0)
        np.testing.assert_array_equal(output, np.full((1, 3), 3.0))

    version_split(
        "`load_model(legacy .h5 holding a Lambda, safe_mode=True)`",
        outcome_of(load_safely, fragments=[SAFE_MODE_FRAGMENT]),
        {"keras<3.11.3": "works", "keras>=3.11.3": f"ValueError: {SAFE_MODE_FRAGMENT}"},
    )


def test_lambda_from_config_refuses_bytecode_outside_load_model_on_3_12_3_and_3_15(
    version_split,
):
    """keras-team/keras#23048: `Lambda.from_config` fails closed on its own from Keras 3.15,
    and on 3.12.3 and later 3.12 patches; 3.13 and 3.14 (3.13.2, 3.14.1) still rebuild it."""
    config = keras.layers.Lambda(lambda t: t * 2.0).get_config()

    def rebuild_and_run():
        rebuilt = keras.layers.Lambda.from_config(config)
        np.testing.assert_array_equal(np.asarray(rebuilt(np.ones((1, 1), "float32"))), [[2.0]])

    version_split(
        "`Lambda.from_config(config)` of a Python lambda, outside load_model",
        outcome_of(rebuild_and_run, fragments=[SAFE_MODE_FRAGMENT]),
        {
            "keras<3.12.3": "works",
            "keras>=3.12.3,<3.13": f"ValueError: {SAFE_MODE_FRAGMENT}",
            "keras>=3.13,<3.15": "works",
            "keras>=3.15": f"ValueError: {SAFE_MODE_FRAGMENT}",
        },
    )


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_load_model_if_clean_refuses_a_lambda_on_every_stack(extension, tmp_path, observe):
    path = save_quietly(lambda_model(), tmp_path / f"lambda.{extension}")
    with pytest.raises(ValueError, match=r"refusing to load path=.*lambda-bytecode"):
        load_model_if_clean(path)
    observe(f"load_model_if_clean on a Lambda in `.{extension}`", "ValueError: lambda-bytecode")


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_load_model_if_clean_loads_a_clean_model(extension, tmp_path):
    # Uncompiled: Keras 3.0 to 3.2 drop compile=False for legacy .h5 and then fail on
    # "mse" (tests/test_wing_loss.py asserts the dropped arguments).
    model = clean_model(compiled=False)
    path = save_quietly(model, tmp_path / f"clean.{extension}")
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 2)).astype("float32")
    loaded = load_model_if_clean(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


# --- The audit on real files ---------------------------------------------------------------


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_clean_models_give_no_findings(extension, tmp_path, observe):
    sequential = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, "softmax")])
    for name, model in (("functional", clean_model()), ("sequential", sequential)):
        assert audit_model_file(save_quietly(model, tmp_path / f"{name}.{extension}")) == []
    observe(f"audit of clean Functional and Sequential models in `.{extension}`", "no findings")


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_a_saved_lambda_is_flagged_as_bytecode(extension, tmp_path, observe):
    findings = audit_model_file(save_quietly(lambda_model(), tmp_path / f"l.{extension}"))
    assert [finding.kind for finding in findings] == ["lambda-bytecode"]
    assert findings[0].where.endswith("/config/function")
    observe(f"audit of a saved Lambda in `.{extension}`", "lambda-bytecode")


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_a_saved_custom_layer_is_flagged_as_a_foreign_class(extension, tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, ThirdPartyLayer()(inputs))
    findings = audit_model_file(save_quietly(model, tmp_path / f"custom.{extension}"))
    assert [finding.kind for finding in findings] == ["foreign-class"]
    assert "ThirdPartyLayer" in findings[0].detail


# --- The audit on crafted configs (never loaded) ------------------------------------------


def layer_entry(class_name, config, module=None):
    entry = {"class_name": class_name, "config": config, "name": config.get("name", "x")}
    if module is not None:
        entry["module"] = module
    return entry


def crafted_config(layers):
    return {"class_name": "Functional", "config": {"name": "crafted", "layers": layers}}


def write_archive(path, config):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    return str(path)


def write_hdf5(path, config):
    with h5py.File(path, "w") as file:
        file.attrs["model_config"] = json.dumps(config).encode("utf-8")
        file.attrs["keras_version"] = b"2.15.0"
    return str(path)


def never_called(*args, **kwargs):
    raise AssertionError(f"the audit called os.system{args}")


def test_a_crafted_keras_archive_referencing_os_system_is_flagged(tmp_path, observe, monkeypatch):
    monkeypatch.setattr(os, "system", never_called)
    config = crafted_config(
        [
            layer_entry("InputLayer", {"name": "in"}, module="keras.layers"),
            layer_entry(
                "Lambda",
                {
                    "name": "run",
                    "function": {
                        "module": "os",
                        "class_name": "function",
                        "config": "system",
                        "registered_name": "function",
                    },
                },
                module="keras.layers",
            ),
            layer_entry("Backdoor", {"name": "door"}, module="evil.layers"),
            layer_entry(
                "Dense",
                {"name": "d", "kernel_initializer": {"class_name": "__lambda__", "config": {}}},
                module="keras.layers",
            ),
        ]
    )
    findings = audit_model_file(write_archive(tmp_path / "crafted.keras", config))
    assert sorted((f.kind, f.detail) for f in findings) == [
        ("foreign-class", "evil.layers.Backdoor"),
        ("lambda-bytecode", "marshalled code"),
        ("module-function", "os.system"),
    ]
    observe("audit of a crafted `.keras` naming os.system", "flagged, nothing run")


def test_a_crafted_legacy_h5_referencing_os_system_is_flagged(tmp_path, observe, monkeypatch):
    monkeypatch.setattr(os, "system", never_called)
    config = crafted_config(
        [
            layer_entry("InputLayer", {"name": "in"}),
            # Keras 2's Lambda config names a module function by module and name.
            layer_entry(
                "Lambda",
                {"name": "run", "function": "system", "function_type": "function", "module": "os"},
            ),
            layer_entry(
                "Lambda",
                {"name": "code", "function": ["4wEAAAAA", None, None], "function_type": "lambda"},
            ),
            layer_entry("Backdoor", {"name": "door"}),
        ]
    )
    findings = audit_model_file(write_hdf5(tmp_path / "crafted.h5", config))
    assert sorted((f.kind, f.detail) for f in findings) == [
        ("foreign-class", "Backdoor (no module)"),
        ("lambda-bytecode", "marshalled code"),
        ("module-function", "os.system"),
    ]
    observe("audit of a crafted legacy `.h5` naming os.system", "flagged, nothing run")


@pytest.mark.parametrize("writer", [write_archive, write_hdf5])
def test_a_lambda_calling_a_keras_function_is_flagged_too(writer, tmp_path):
    """keras.models.load_model with safe_mode=False is a gadget (CVE-2025-9906)."""
    reference = {"module": "keras.models", "class_name": "function", "config": "load_model"}
    legacy = {"function": "load_model", "function_type": "function", "module": "keras.models"}
    function = legacy if writer is write_hdf5 else {"function": reference}
    lambda_layer = layer_entry(
        "Lambda", {"name": "gadget", "arguments": {"safe_mode": False}, **function}
    )
    activation = {"module": "keras.activations", "class_name": "function", "config": "relu"}
    dense = layer_entry("Dense", {"name": "d", "activation": activation}, module="keras.layers")
    path = writer(
        tmp_path / f"gadget.{'h5' if writer is write_hdf5 else 'keras'}",
        crafted_config([lambda_layer, dense]),
    )
    findings = audit_model_file(path)
    assert [(f.kind, f.detail) for f in findings] == [
        ("module-function", "keras.models.load_model")
    ]


def test_load_model_if_clean_refuses_a_crafted_file_before_keras_sees_it(tmp_path):
    config = crafted_config([layer_entry("Backdoor", {"name": "door"}, module="evil.layers")])
    path = write_archive(tmp_path / "crafted.keras", config)
    with pytest.raises(ValueError, match=r"foreign-class at /config/layers/0: evil\.layers"):
        load_model_if_clean(path)


# --- Files that are not models ---------------------------------------------------------------


def not_models(tmp_path):
    """{label: path} of files that are no Keras model, each for its own reason."""
    # Keras 2.12 writes m.keras as HDF5, so the archive is written here, then cut short.
    real = write_archive(tmp_path / "real.keras", crafted_config([]))
    truncated = tmp_path / "truncated.keras"
    with open(real, "rb") as source:
        truncated.write_bytes(source.read()[:60])
    weights = tmp_path / "weights.h5"
    with h5py.File(weights, "w") as file:
        file.create_dataset("kernel", data=np.zeros(3))
    corrupt_hdf5 = tmp_path / "corrupt.h5"
    corrupt_hdf5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40)
    no_config = tmp_path / "no_config.keras"
    with zipfile.ZipFile(no_config, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    bad_json = tmp_path / "bad_json.keras"
    with zipfile.ZipFile(bad_json, "w") as archive:
        archive.writestr("config.json", "{not json")
    not_a_model_json = tmp_path / "list.keras"
    with zipfile.ZipFile(not_a_model_json, "w") as archive:
        archive.writestr("config.json", "[1, 2]")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    paths = {
        "truncated archive": (truncated, "corrupt .keras archive"),
        "weights-only HDF5": (weights, "without a model_config attribute"),
        "corrupt HDF5": (corrupt_hdf5, "not a readable HDF5 file"),
        "archive without config.json": (no_config, "without config.json"),
        "config.json not JSON": (bad_json, "not JSON"),
        "config.json not a model": (not_a_model_json, "not a Keras model config"),
        "text file": (text, "neither a .keras archive nor an HDF5"),
        "missing file": (tmp_path / "missing.keras", "cannot be read"),
    }
    return {label: (str(path), fragment) for label, (path, fragment) in paths.items()}


def test_corrupt_and_non_model_files_raise_value_error_naming_the_path(tmp_path, observe):
    for label, (path, fragment) in not_models(tmp_path).items():
        with pytest.raises(ValueError, match=re.escape(f"path={path!r}")) as raised:
            audit_model_file(path)
        assert fragment in str(raised.value), label
    observe("audit of corrupt and non-model files", "ValueError naming the path")


@pytest.mark.parametrize("path", [None, 3, ["m.keras"]])
def test_a_path_of_the_wrong_type_raises_value_error_naming_it(path):
    with pytest.raises(ValueError, match=re.escape(f"path={path!r}")):
        audit_model_file(path)
