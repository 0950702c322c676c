"""Title: Load weights by layer name on every Keras, from .h5, .keras and named .weights.h5.

In short:
    trunk.save("trunk.keras")  # or "trunk.h5"; a .weights.h5 names no layer before Keras 3.6
    model(batch)  # a subclassed model needs weights first
    report = load_weights_by_name(model, "trunk.keras")  # skip_mismatch=True to skip, not raise
    print(report.loaded, report.skipped, report.unmatched)

Problem: Reusing a trained trunk in a new model is one line on Keras 2:
`model.load_weights("trunk.h5", by_name=True)`. On Keras 3 `save_weights` writes only
`.weights.h5`, which `by_name` refuses, and Keras 3.0 to 3.7 cannot even load by name
from the full-model `.h5` they write. A `.weights.h5` file is keyed by class name and position, not
by the names you gave the layers, so renaming or inserting a layer silently changes what
goes where. `load_weights_by_name` matches layers by name from the files that do record
names, on every stack, and says what it did.

Recipe:
    1. Save the trunk with `model.save("trunk.keras")` (or `model.save("trunk.h5")`).
    2. Build the new model (call a subclassed model on data first) with the reused layers
       under the same names.
    3. `report = load_weights_by_name(model, "trunk.keras")`: a layer of the model whose
       name is in the file gets that layer's weights; a nested model not in the file is
       searched layer by layer. Check `report.loaded` and `report.unmatched`.
    4. A shape mismatch raises ValueError naming the layer and both shapes; with
       `skip_mismatch=True` the layer is left as it was and listed in `report.skipped`.

Pitfalls:
    - A `.weights.h5` is keyed by class name and position, not by the names you gave the
      layers: `layers/dense/vars/0`, `layers/dense_1/vars/0` from Keras 2.15 on;
      `_layer_checkpoint_dependencies/dense/vars/0` and `.../dense_1/...` on Keras 2.14;
      `.../dense/...` and `.../dense_2/...` on Keras 2.13 and earlier. Keras 3.5 and earlier
      (every Keras 2 included) store no layer name in it at all, so `load_weights_by_name`
      refuses such a file with a ValueError that says to save a `.keras` or `.h5` instead;
      from Keras 3.6 each `vars` group carries the layer's name as an attribute, and
      `load_weights_by_name` matches by it.
    - A `.keras` archive's weights are keyed the same way; the layer names and their order
      come from its `config.json`, so every layer inside a nested model is matched by its
      own name. A legacy `.h5` keeps a nested model's weights under the nested model's name
      only: that model loads whole.
    - A subclassed model has no weights until it is built: `load_weights(h5, by_name=True)`
      on an unbuilt one raises ValueError ("Unable to load weights" on Keras 2, "Weight
      count mismatch" on Keras 3), and `load_weights_by_name` refuses it with a ValueError
      saying to build it first.
    - Nothing is assigned unless every matched layer fits: a shape mismatch raises before
      any weight changes.
    - Keras' own `load_weights("m.h5", by_name=True, skip_mismatch=True)` (keras-yolo3's
      call) skips weight by weight, not layer by layer, on every stack: a layer whose kernel
      shape differs from the file's but whose bias fits gets the file's bias and keeps its
      kernel. `load_weights_by_name(model, path, skip_mismatch=True)` keeps such a layer
      whole and lists it in `report.skipped`.

Versions:
    - Keras 2 (tf-keras included): `save_weights("w.h5")` writes a legacy `.h5` keyed by
      layer name, and `load_weights(path, by_name=True)` loads by name from it, from a
      full-model `.h5` and from Keras 2.15's files. Given a `.weights.h5`, `by_name=True`
      is ignored: the weights load by position, into a renamed layer too.
    - Keras 3: `save_weights` accepts only `.weights.h5` ("must end in `.weights.h5`"); the
      one legacy `.h5` it writes is `model.save("x.h5")`.
    - Keras 3.0 to 3.7: `load_weights(path, by_name=True)` raises ValueError "Weight count
      mismatch for top-level weights" for a full-model `.h5` and for Keras 2.15's weights
      files of a functional or a subclassed model; 3.8 and later load them by name.
    - `load_weights("w.weights.h5", by_name=True)` raises ValueError "Invalid keyword
      arguments" on Keras 3.0 to 3.10, and "`by_name` only supports loading legacy '.h5'"
      from 3.11.
    - `load_weights(h5, by_name=True, skip_mismatch=True)`, from a full-model `.h5` or Keras
      2.15's weights file: every weight that fits loads, bit for bit, on every stack. Keras 2
      (tf-keras included) logs each skipped weight through TensorFlow's logger ("Skipping
      loading weights for layer #1 (named features)"); Keras 3 warns with a UserWarning of
      the same words; Keras 3.0 to 3.7 also warn "Skipping loading top-level weights" where
      by_name alone raises "Weight count mismatch for top-level weights".
    - `load_weights(".keras" or ".weights.h5", by_name=True, skip_mismatch=True)`: Keras 3
      raises the same ValueErrors as without skip_mismatch. Keras 2 (but for Keras 2.12's
      `.keras`, which it writes as HDF5 and loads by name) still loads by position: a layer
      at a file layer's position whose shapes differ is skipped with a UserWarning "Could not
      load weights in object", and a later layer the file names, shapes matching, gets
      nothing.
    - `load_weights_by_name` loads Keras 2.15's weights files by name on every stack, into
      a functional and into a subclassed model.

Sources: Keras guide "Save, serialize, and export models"; keras-team/keras#18577
(by_name in Keras 3); keras.src.saving.saving_lib (`.weights.h5` layout) and
keras.src.legacy.saving.legacy_h5_format (`load_weights_from_hdf5_group_by_name`, which
skips weight by weight); qqwweee/keras-yolo3 `train.py` (by_name with skip_mismatch=True).

See also:
    - branch_finetune: load a trunk by name, train a new branch
    - copy_weights: copy weights between models in memory
    - save_paths: which weight files each stack writes

Run: python -m recipes.load_weights_by_name
"""

import collections
import json
import os
import re
import tempfile
import zipfile

import numpy as np
from tensorflow import keras

try:
    import h5py
except ImportError:  # h5py is installed with TensorFlow on every stack we test.
    h5py = None

LoadReport = collections.namedtuple("LoadReport", ["loaded", "skipped", "unmatched"])

SAVE_INSTEAD = (
    'save a file that records layer names instead: model.save("trunk.keras"), '
    'model.save("trunk.h5"), or on Keras 2 model.save_weights("trunk.h5")'
)


def _snake_case(class_name):
    """Keras' own key for a layer in a .keras archive (keras.src.utils.naming)."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _variables(group):
    """A layer group's arrays in saved order: its own vars, then any sub-object's vars."""
    arrays = []
    if "vars" in group:
        vars_group = group["vars"]
        arrays += [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))]
    for key in sorted(group):
        if key not in ("vars", "layers", "_layer_checkpoint_dependencies") and isinstance(
            group[key], h5py.Group
        ):
            arrays += _variables(group[key])
    return arrays


def _add_entry(entries, name, group):
    """A nested model's own group holds no variables: its layers get entries of their own."""
    arrays = _variables(group)
    if arrays:
        entries.setdefault(name, arrays)


def _archive_entries(group, layer_configs, entries):
    """Walks a .keras/.weights.h5 `layers` tree; names come from config or vars attrs."""
    # Keras 2.12 and 2.13 call the container `_layer_checkpoint_dependencies`.
    container = next((k for k in ("layers", "_layer_checkpoint_dependencies") if k in group), None)
    if container is None:
        return
    if layer_configs is None:  # A .weights.h5: the layer name is an attribute, or nothing.
        for key in group[container]:
            child = group[container][key]
            name = child["vars"].attrs.get("name") if "vars" in child else None
            if name is None:
                raise ValueError(
                    f"path: this .weights.h5 records no layer names (its keys are class "
                    f"names and positions such as '{container}/{key}'), so no layer can be "
                    f"matched by name; {SAVE_INSTEAD}"
                )
            _add_entry(entries, str(name), child)
            _archive_entries(child, None, entries)
        return
    # The n-th layer of a class in the config is the n-th group of that class by its number:
    # `dense`, `dense_1` from Keras 2.14 on, but `dense`, `dense_2` on Keras 2.13.
    groups_by_class = {}
    for group_key in group[container]:
        base, _, number = group_key.rpartition("_")
        base, number = (base, int(number)) if base and number.isdigit() else (group_key, 0)
        groups_by_class.setdefault(base, []).append((number, group_key))
    classes = [_snake_case(layer_config["class_name"]) for layer_config in layer_configs]
    used = {}
    for layer_config, class_key in zip(layer_configs, classes, strict=True):
        index = used[class_key] = used.get(class_key, -1) + 1
        candidates = sorted(groups_by_class.get(class_key, []))
        if len(candidates) == classes.count(class_key):
            key = candidates[index][1]
        else:  # A layer without variables may have no group: number them as Keras 2.14+.
            key = class_key if index == 0 else f"{class_key}_{index}"
        if key not in group[container]:
            continue
        child = group[container][key]
        name = layer_config.get("config", {}).get("name", layer_config.get("name"))
        _add_entry(entries, name, child)
        _archive_entries(child, layer_config.get("config", {}).get("layers"), entries)


def _file_entries(path):
    """{layer name: [arrays in saved order]} for every layer the file names."""
    entries = {}
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            layer_configs = config.get("config", {}).get("layers")
            if layer_configs is None:
                raise ValueError(
                    f"path={path!r}: the archive's config.json lists no layers (a "
                    "subclassed model); save the weights with model.save('x.h5') instead"
                )
            with tempfile.TemporaryDirectory() as directory:
                archive.extract("model.weights.h5", directory)
                with h5py.File(os.path.join(directory, "model.weights.h5"), "r") as f:
                    _archive_entries(f, layer_configs, entries)
        return entries
    with h5py.File(path, "r") as f:
        root = f.get("model_weights", f)
        if "layer_names" not in root.attrs:
            try:
                _archive_entries(f, None, entries)
            except ValueError as error:
                raise ValueError(f"path={path!r}: {str(error).removeprefix('path: ')}") from None
            if not entries:
                raise ValueError(f"path={path!r}: not a Keras weights file; {SAVE_INSTEAD}")
            return entries
        for layer_name in root.attrs["layer_names"]:
            layer_name = layer_name.decode() if isinstance(layer_name, bytes) else layer_name
            group = root[layer_name]
            weight_names = [
                name.decode() if isinstance(name, bytes) else name
                for name in group.attrs["weight_names"]
            ]
            entries[layer_name] = [np.asarray(group[name]) for name in weight_names]
    return entries


def _plan(layer, entries, skip_mismatch, plan, report):
    """Decides what `layer` (or its sub-layers) gets from `entries`, assigning nothing."""
    variables = layer.trainable_weights + layer.non_trainable_weights
    if layer.name in entries and variables:
        arrays = entries[layer.name]
        saved = [tuple(array.shape) for array in arrays]
        wanted = [tuple(variable.shape) for variable in variables]
        if saved == wanted:
            plan.extend(zip(variables, arrays, strict=True))
            report.loaded.append(layer.name)
        elif skip_mismatch:
            report.skipped.append(layer.name)
        else:
            raise ValueError(
                f"layer {layer.name!r}: the model's weight shapes {wanted} differ from the "
                f"file's {saved}; pass skip_mismatch=True to leave this layer unloaded"
            )
    elif getattr(layer, "layers", None):
        for sublayer in layer.layers:
            _plan(sublayer, entries, skip_mismatch, plan, report)
    elif variables:
        report.unmatched.append(layer.name)


def load_weights_by_name(model, path, skip_mismatch=False):
    """Loads into `model`'s layers the weights the file saved under the same layer names.

    `path`: a legacy `.h5` (weights or full model), a `.keras` archive, or a `.weights.h5`
    that records layer names (Keras 3.6 and later). Returns a LoadReport of layer names:
    `loaded`, `skipped` (shape mismatch with `skip_mismatch=True`) and `unmatched` (layers
    with weights that the file does not name).
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got model={model!r}")
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path must be an existing file, got path={path!r}")
    if not isinstance(skip_mismatch, (bool, np.bool_)):
        raise ValueError(
            f"skip_mismatch must be True or False, got skip_mismatch={skip_mismatch!r}"
        )
    if not model.weights:
        raise ValueError(
            f"model={model.name!r} has no weights yet: build it first, e.g. call it on a "
            "batch of inputs"
        )
    if h5py is None:
        raise ImportError("load_weights_by_name reads the file with h5py: pip install h5py")
    path = os.fspath(path)
    if not zipfile.is_zipfile(path) and not h5py.is_hdf5(path):
        raise ValueError(f"path={path!r} is neither a .keras archive nor an HDF5 file")
    entries = _file_entries(path)
    plan, report = [], LoadReport([], [], [])
    for layer in model.layers:
        _plan(layer, entries, bool(skip_mismatch), plan, report)
    for variable, array in plan:
        variable.assign(array)
    return report


def demo():
    def trunk_model(head_units):
        inputs = keras.Input((4,))
        features = keras.layers.Dense(8, activation="relu", name="features")(inputs)
        return keras.Model(inputs, keras.layers.Dense(head_units, name="head")(features))

    trained = trunk_model(head_units=3)
    new = trunk_model(head_units=5)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trunk.keras")
        trained.save(path)
        report = load_weights_by_name(new, path, skip_mismatch=True)
    same = np.array_equal(
        new.get_layer("features").get_weights()[0], trained.get_layer("features").get_weights()[0]
    )
    print(f"loaded {report.loaded}, skipped {report.skipped}, unmatched {report.unmatched}")
    print(f"features kernel equals the trained one: {same}")


if __name__ == "__main__":
    demo()
