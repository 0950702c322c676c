"""Title: Audit a Keras model file before loading it: loading can run code.

In short:
    for finding in audit_model_file("downloaded.keras"):  # or .h5: reads JSON, runs nothing
        print(finding.kind, finding.where, finding.detail)  # lambda-bytecode, foreign-class, ...
    model = load_model_if_clean("downloaded.keras")  # ValueError listing any findings
    # Never pass safe_mode=False for a file you did not make.

Problem: A model file is code as much as data. A `Lambda` layer stores its Python function
as marshalled bytecode, and `keras.models.load_model` rebuilds and runs it; a config can
also name any class or function in any importable module (`os.system`). Whether Keras
refuses such a file by default depends on the format and the release: a legacy `.h5`
with a `Lambda` loads and runs on every Keras 2 and on Keras 3 up to 3.11.2.
`audit_model_file` reads the model's configuration as plain JSON, without deserializing
anything, and says what in it could run code.

Recipe:
    1. Never `load_model` a file you did not make before auditing it, and never pass
       `safe_mode=False` for it.
    2. `audit_model_file(path)` reads a `.keras` archive's `config.json` (zipfile + json)
       or a legacy `.h5` file's `model_config` attribute (h5py, which TensorFlow installs;
       read as bytes, never through Keras), and walks the JSON.
    3. It returns a list of `Finding(kind, where, detail)`: "lambda-bytecode" for a
       `Lambda` carrying marshalled bytecode, "foreign-class" for a class whose module
       lies outside Keras' own packages (or, in a legacy `.h5`, which records no modules,
       a class name this Keras does not define), "module-function" for a reference to a
       function in a module outside Keras, or to any function a `Lambda` calls. An empty
       list means the config names no code outside Keras' layers, initializers and
       functions.
    4. `load_model_if_clean(path, **kwargs)` raises a ValueError listing the findings, and
       otherwise calls `keras.models.load_model(path, **kwargs)`.
    5. A file that is not a Keras model (corrupt, truncated, a weights-only `.h5`, text)
       raises ValueError naming the path.

Pitfalls:
    - Keras' own guard depends on format and release (see Versions): a legacy `.h5` with
      a `Lambda` loads and runs its bytecode on every Keras 2 and on Keras 3.0 to 3.11.2.
      `load_model_if_clean` refuses it in both formats on every stack.
    - A legacy `.h5` records class names without modules, so a custom class there is
      flagged by name, as a class this Keras does not define; a `.keras` file names the
      module, and any module outside `keras` and `tf_keras` is flagged.
    - The audit never imports or calls what it reports: auditing a crafted config that
      names `os.system` flags it and runs nothing.
    - Corrupt, truncated and non-model files (a weights-only `.h5`, a zip without
      `config.json`, text) raise ValueError naming the path, not an h5py or zipfile error.

Versions:
    - A `Lambda` in a `.keras` file, `load_model` with default arguments: Keras 2.12 loads
      it and runs the lambda (2.12 writes `m.keras` as a legacy HDF5 file); Keras 2.13 and
      later (tf-keras and Keras 3 included) raise ValueError naming `safe_mode=False`.
    - A `Lambda` in a legacy `.h5`, default arguments: every Keras 2 (2.12 to 2.15,
      tf-keras) and Keras 3.0 to 3.11.2 load it and run the lambda; Keras
      3.11.3 and later raise ValueError naming `safe_mode=False` (the fix for
      CVE-2025-9905, keras-team/keras#21602). Passing `safe_mode=True` yourself changes
      nothing: Keras 2 and tf-keras (2.21 included, keras-team/tf-keras#910) still load and
      run it.
    - `keras.layers.Lambda.from_config(config)` of a Python lambda, outside `load_model`:
      Keras 2, Keras 3.0 to 3.12.2 and 3.13 to 3.14 rebuild it; Keras 3.12.3 and later
      3.12 patches, and 3.15 and later, raise ValueError naming `safe_mode=False`
      (keras-team/keras#23048).

Sources: Keras guide "Save, serialize, and export models" (safe_mode); Keras API docs
    "keras.saving.load_model" and "Lambda layer" (its warning about bytecode);
    keras-team/keras#20751 (CVE-2025-1550: Keras 3.9 stops importing arbitrary modules);
    CVE-2025-9905 (legacy `.h5` Lambda loaded despite safe_mode) and keras-team/keras#21602
    (Keras 3.11.3 passes safe_mode to the `.h5` loader); CVE-2025-9906 (a `Lambda`
    calling Keras' own functions to switch safe_mode off);
    the h5py docs "Attributes".

See also:
    - save_load_custom_objects: register custom classes so they load
    - custom_layer_config: a layer with get_config instead of a Lambda

Run: python -m recipes.safe_model_loading
"""

import collections
import json
import os
import tempfile
import zipfile

import numpy as np
from tensorflow import keras

try:
    import h5py
except ImportError:  # TensorFlow depends on h5py, so this is a broken install.
    h5py = None

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_PACKAGES = ("keras", "tf_keras")
# Legacy `.h5` configs name classes without their modules; these are Keras' own.
KERAS_NAMESPACES = (
    "layers", "models", "initializers", "regularizers", "constraints", "optimizers",
    "losses", "metrics", "activations", "mixed_precision",
)  # fmt: skip
KERAS_MODEL_CLASSES = {"Functional", "Sequential", "Model"}

Finding = collections.namedtuple("Finding", ["kind", "where", "detail"])


def _in_keras(module):
    return isinstance(module, str) and module.split(".")[0] in KERAS_PACKAGES


def _known_keras_class(class_name):
    if class_name in KERAS_MODEL_CLASSES:
        return True
    return any(
        hasattr(getattr(keras, namespace, None), class_name) for namespace in KERAS_NAMESPACES
    )


def _audit_lambda_config(config, where, findings):
    """Keras 2's legacy Lambda config: a function as bytecode or as (module, name)."""
    for prefix in ("function", "output_shape"):
        kind, module = config.get(f"{prefix}_type"), config.get(f"{prefix}_module", "")
        if prefix == "function":
            module = config.get("module")
        if kind == "lambda":
            findings.append(Finding("lambda-bytecode", f"{where}/{prefix}", "marshalled code"))
        elif kind == "function":  # any function, Keras' own included, can be a gadget
            name = config.get(prefix)
            findings.append(Finding("module-function", f"{where}/{prefix}", f"{module}.{name}"))


def _walk(node, where, findings, legacy, in_lambda=False):
    if isinstance(node, list):
        for index, item in enumerate(node):
            _walk(item, f"{where}/{index}", findings, legacy, in_lambda)
        return
    if not isinstance(node, dict):
        return
    class_name, module = node.get("class_name"), node.get("module")
    if isinstance(class_name, str) and "config" in node:
        if class_name == "__lambda__":
            findings.append(Finding("lambda-bytecode", where, "marshalled code"))
        elif class_name == "function":
            # A Lambda calls whatever function it names, Keras' own included (the
            # CVE-2025-9906 exploit called keras functions); elsewhere a Keras function
            # is an activation or a loss.
            if in_lambda or not _in_keras(module):
                detail = f"{module}.{node.get('config')}"
                findings.append(Finding("module-function", where, detail))
        elif class_name.startswith("__"):
            pass  # Keras' own markers: __tuple__, __keras_tensor__, __numpy__, ...
        elif module is not None and not _in_keras(module):
            findings.append(Finding("foreign-class", where, f"{module}.{class_name}"))
        elif module is None and legacy and not _known_keras_class(class_name):
            findings.append(Finding("foreign-class", where, f"{class_name} (no module)"))
        if class_name == "Lambda" and isinstance(node["config"], dict):
            _audit_lambda_config(node["config"], f"{where}/config", findings)
    in_lambda = in_lambda or class_name == "Lambda"
    for key, value in node.items():
        _walk(value, f"{where}/{key}", findings, legacy, in_lambda)


def _read_hdf5_config(path):
    if h5py is None:
        raise ValueError(f"path={path!r} is an HDF5 file, and reading it needs h5py")
    try:
        with h5py.File(path, "r") as file:
            raw = file.attrs.get("model_config")
    except OSError as error:
        raise ValueError(f"path={path!r} is not a readable HDF5 file: {error}") from None
    if raw is None:
        raise ValueError(
            f"path={path!r} is an HDF5 file without a model_config attribute "
            "(a weights-only file?), not a saved model"
        )
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _read_archive_config(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read("config.json").decode("utf-8")
    except KeyError:
        raise ValueError(f"path={path!r} is a zip archive without config.json") from None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
        raise ValueError(f"path={path!r} is a corrupt .keras archive: {error}") from None


def read_model_config(path):
    """(config as parsed JSON, "keras" or "h5"): read only, nothing deserialized."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike, got path={path!r}")
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            head = file.read(8)
    except OSError as error:
        raise ValueError(f"path={path!r} cannot be read: {error}") from None
    if head == HDF5_SIGNATURE:
        text, kind = _read_hdf5_config(path), "h5"
    elif head[:2] == b"PK":
        text, kind = _read_archive_config(path), "keras"
    else:
        raise ValueError(f"path={path!r} is neither a .keras archive nor an HDF5 model file")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"path={path!r} holds a model config that is not JSON: {error}") from None
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"path={path!r} holds JSON that is not a Keras model config")
    return config, kind


def audit_model_file(path):
    """Findings about code a `.keras` or legacy `.h5` file would make Keras run."""
    config, kind = read_model_config(path)
    findings = []
    _walk(config, "", findings, legacy=kind == "h5")
    return findings


def load_model_if_clean(path, **load_kwargs):
    """`keras.models.load_model(path, **load_kwargs)` if the audit finds nothing."""
    findings = audit_model_file(path)
    if findings:
        listed = "; ".join(f"{f.kind} at {f.where or '/'}: {f.detail}" for f in findings)
        raise ValueError(f"refusing to load path={os.fspath(path)!r}: {listed}")
    return keras.models.load_model(path, **load_kwargs)


def demo():
    inputs = keras.Input((3,))
    clean = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    risky = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    with tempfile.TemporaryDirectory() as directory:
        for name, model in (("clean", clean), ("lambda", risky)):
            for extension in ("keras", "h5"):
                path = os.path.join(directory, f"{name}.{extension}")
                model.save(path)
                print(f"{name}.{extension}:", audit_model_file(path) or "no findings")
        loaded = load_model_if_clean(os.path.join(directory, "clean.keras"))
        print("clean model loaded:", loaded.predict(np.ones((1, 3)), verbose=0).shape)


if __name__ == "__main__":
    demo()
