"""Title: File names for model.save, save_weights and ModelCheckpoint that work on every Keras.

In short:
    model.save("model.keras")  # save_path("model")
    model.save_weights("model.weights.h5")  # save_path("weights")
    checkpoint = keras.callbacks.ModelCheckpoint(
        "ckpts/ckpt-{epoch:02d}.weights.h5", save_weights_only=True
    )  # save_path("checkpoint", "ckpts")
    model.fit(x, y, epochs=..., callbacks=[checkpoint])
    model.load_weights(latest_checkpoint("ckpts"))  # not tf.train.latest_checkpoint

Problem: The path decides the format. Keras 2 turns a bare name into a SavedModel
directory or a TF checkpoint and honours `save_format=`; Keras 3 refuses both, refuses
`save_weights("w.h5")`, and its `ModelCheckpoint` refuses most of the names Keras 2
tutorials use. Some names are accepted but write another format than they say, and
`tf.train.latest_checkpoint` finds none of the files Keras 3 can write.

Recipe:
    1. Save the whole model to `save_path("model")` ("model.keras") and weights to
       `save_path("weights")` ("model.weights.h5").
    2. Checkpoint weights during `fit` with
       `keras.callbacks.ModelCheckpoint(save_path("checkpoint", directory),
       save_weights_only=True)` ("ckpt-{epoch:02d}.weights.h5"), or whole models with
       `save_path("model_checkpoint", directory)` ("model-{epoch:02d}.keras") and
       `save_weights_only=False`.
    3. Find the newest one with `latest_checkpoint(directory, kind)`, not
       `tf.train.latest_checkpoint`, and reload it with `load_weights` or `load_model`.

Pitfalls:
    - `tf.train.latest_checkpoint(directory)` returns None for `.keras`, `.h5` and
      `.weights.h5` files on every stack (tensorflow/tensorflow#74342); it finds only the
      TF checkpoints Keras 2 writes for a name without extension.
    - The `save_path("checkpoint")` and `save_path("model_checkpoint")` callbacks work
      on every stack, `latest_checkpoint` finds the last epoch, and what it reloads
      holds exactly the trained model's weights.

Versions:
    - `model.save`: `m.keras` is a legacy HDF5 file on Keras 2.12, a zip archive from
      2.13; `m.h5` and `m.hdf5` are HDF5 everywhere; a bare name is a SavedModel
      directory on Keras 2 and ValueError "Invalid filepath extension" on Keras 3.
    - `save_format=` with a bare name: Keras 2 writes HDF5 for "h5" and a SavedModel
      directory for "tf"; for "keras" 2.12 writes a SavedModel directory and 2.13 and
      later raise ValueError "expected a `.keras` extension". Keras 3 raises ValueError
      "The `save_format` argument is deprecated" for all three.
    - `save_format=` with an extension: Keras 2 writes an HDF5 model to `m.keras` for "h5"
      and for "tf"; `m.h5` with "tf" is ValueError "is inconsistent with `filepath`" on
      2.12 and an HDF5 model from 2.13. Keras 3 ignores the argument: `m.keras` stays a
      zip archive, `m.h5` an HDF5 model.
    - `save_weights`: `w.weights.h5` is HDF5 everywhere; `w.h5` is HDF5 on Keras 2 and a
      name without extension a TF checkpoint; Keras 3 raises ValueError "must end in
      `.weights.h5`" for both.
    - `ModelCheckpoint(save_weights_only=True)`: Keras 2 writes HDF5 weights for every
      name with an extension, `m.keras` included, and a TF checkpoint for a bare name;
      Keras 3 accepts only `.weights.h5` (ValueError "must end in `.weights.h5`").
    - `ModelCheckpoint(save_weights_only=False)`: Keras 2 writes a model for every name
      (a SavedModel directory for a bare name, HDF5 for `m.keras` on 2.12, an HDF5 model
      for `w.weights.h5`). Keras 3.0 to 3.7 accept only `.keras` (ValueError "must end in
      `.keras`"); 3.8 and later also any `.h5` name, `w.weights.h5` included, and write a
      whole HDF5 model there.

Sources: Keras guide "Save, serialize, and export models"; Keras API "ModelCheckpoint";
keras-team/keras-io#1844; keras-team/keras-io#1568; tensorflow/tensorflow#74342;
keras-team/keras#20561.

See also:
    - save_load_custom_objects: load what you saved, custom objects included
    - resume_after_crash: checkpoints to resume an interrupted fit
    - load_weights_by_name: a .weights.h5 loads by position, not name

Run: python -m recipes.save_paths
"""

import os
import tempfile

import numpy as np
from tensorflow import keras

SAVE_PATHS = {
    "model": "model.keras",
    "weights": "model.weights.h5",
    # For keras.callbacks.ModelCheckpoint with save_weights_only=True and False.
    "checkpoint": "ckpt-{epoch:02d}.weights.h5",
    "model_checkpoint": "model-{epoch:02d}.keras",
}
CHECKPOINT_KINDS = ("checkpoint", "model_checkpoint")


def save_path(kind, directory="."):
    """The path every stack accepts for `kind`: model, weights, checkpoint, model_checkpoint."""
    if kind not in SAVE_PATHS:
        raise ValueError(f"kind must be one of {sorted(SAVE_PATHS)}, got kind={kind!r}")
    if not isinstance(directory, (str, os.PathLike)):
        raise ValueError(f"directory must be a path, got directory={directory!r}")
    return os.path.join(directory, SAVE_PATHS[kind])


def latest_checkpoint(directory, kind="checkpoint"):
    """The `save_path(kind)` file with the highest epoch in `directory`, or None."""
    if kind not in CHECKPOINT_KINDS:
        raise ValueError(f"kind must be one of {list(CHECKPOINT_KINDS)}, got kind={kind!r}")
    if not isinstance(directory, (str, os.PathLike)) or not os.path.isdir(directory):
        raise ValueError(f"directory must be an existing directory, got directory={directory!r}")
    prefix, _, suffix = SAVE_PATHS[kind].partition("{epoch:02d}")
    epochs = {}
    for name in os.listdir(directory):
        epoch = name[len(prefix) : len(name) - len(suffix)]
        if name.startswith(prefix) and name.endswith(suffix) and epoch.isdigit():
            epochs[int(epoch)] = name
    return os.path.join(directory, epochs[max(epochs)]) if epochs else None


def demo():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer="sgd", loss="mse")
    with tempfile.TemporaryDirectory() as directory:
        callback = keras.callbacks.ModelCheckpoint(
            save_path("checkpoint", directory), save_weights_only=True
        )
        model.fit(x, x[:, :2], epochs=3, verbose=0, callbacks=[callback])
        newest = latest_checkpoint(directory)
        restored = keras.models.clone_model(model)
        restored.load_weights(newest)
    same = all(map(np.array_equal, model.get_weights(), restored.get_weights()))
    print(f"newest checkpoint {os.path.basename(newest)}; reloads exactly: {same}")


if __name__ == "__main__":
    demo()
