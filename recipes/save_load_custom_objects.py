"""Title: Save and load models with custom layers and losses, in every format, on every Keras.

Problem: A model with a custom layer and a custom loss saves without complaint and then
fails to load, or loads on one Keras and not the next: Keras 3 refuses the paths Keras 2
users type (`save_weights("w.h5")`, `model.save("model_dir")`), Keras 3.0 to 3.2 ignore
`custom_objects` for a legacy `.h5`, and files written by Keras 2 meet a stricter Keras 3.

Recipe:
    1. Give every custom class a `get_config` returning its constructor arguments, and
       register it with `keras.utils.register_keras_serializable(package=...)`.
    2. Save the whole model to `save_path("model")` ("model.keras") and weights to
       `save_path("weights")` ("model.weights.h5"): names every stack accepts.
    3. Load with `load_model_with_custom_objects(path, custom_objects)`: it calls
       `keras.models.load_model` inside `keras.utils.custom_object_scope`, which every
       stack honours. Pass `compile=False` to load for inference only.
    4. Resume training from a `.keras` file: it restores the optimizer state exactly.
    5. For Keras 2 files with `DepthwiseConv2D`, the default custom objects include
       `DepthwiseConv2DFromKeras2`, which drops the `groups` argument Keras 3 refuses.
    6. For serving, `model.export(directory)` writes a SavedModel; on Keras 3 load it back
       as `keras.layers.TFSMLayer(directory, call_endpoint="serve")`.

Pitfalls:
    - `custom_objects=` passed to `load_model` is ignored for a legacy `.h5` on Keras 3.0
      to 3.2 (ValueError "Unknown layer"); inside `custom_object_scope` the same file loads
      on every stack.
    - Registered classes (layer and loss) load from `.keras` and from legacy `.h5` without
      custom_objects on every stack.
    - After saving to `.keras` and loading, one more training step gives exactly the
      weights the original model gets from the same step, on every stack.
    - `load_model(path, compile=False)` predicts exactly like the saved model and has no
      loss.
    - `tf.saved_model.save(model, directory)` writes a SavedModel on every stack.

Versions:
    - A model loaded from a legacy `.h5` resumes training identically on Keras 2; on Keras
      3 its first training step fails: ValueError "Unknown variable" on 3.0 to 3.6 and
      from 3.13, NotImplementedError "numpy() is only available when eager execution" on
      3.7 to 3.12. Use `.keras` to resume training.
    - `model.save("m.keras")`: Keras 2.12 writes a legacy HDF5 file, 2.13 and later the zip
      archive. `model.save("m.h5")` and `model.save("m.hdf5")` write HDF5 everywhere.
    - `model.save("model_dir")` (no extension): Keras 2 (tf-keras included) writes a
      SavedModel directory; Keras 3 raises ValueError "Invalid filepath extension".
    - `save_weights("w.h5")`: Keras 2 writes HDF5; Keras 3 raises ValueError "must end in
      `.weights.h5`". `save_weights("w.weights.h5")` writes HDF5 everywhere.
      `save_weights("ckpt")` (no extension): Keras 2 writes a TF checkpoint that
      `tf.train.latest_checkpoint` finds; Keras 3 raises the same ValueError.
    - Keras 2.15's legacy `.h5` of a model with `DepthwiseConv2D` (its config carries
      `groups: 1`, keras-team/keras#19151): Keras 2 loads it; Keras 3 raises TypeError
      "Unrecognized keyword arguments passed to DepthwiseConv2D"; through
      `load_model_with_custom_objects` it loads on every stack, weights intact.
    - `model.export(directory)` after `model.predict`: Keras 2.12 raises KeyError "Failed
      to add concrete function"; from 2.13 it writes a SavedModel whose `serve` endpoint
      predicts like the model. Keras 2 `load_model` loads that directory; Keras 3 raises
      ValueError "File format not supported" and reloads it as
      `keras.layers.TFSMLayer(directory, call_endpoint="serve")`, which Keras 2 lacks.
    - Keras 2.15's `.keras` of that model: Keras 2.12 raises TypeError "Could not
      deserialize class 'Functional'", 2.13 and 2.14 ValueError "... but received 0
      variables", 2.15 and tf-keras load it, and Keras 3 raises TypeError "Could not
      deserialize class 'Functional'" with or without `load_model_with_custom_objects`.

Sources: Keras guide "Save, serialize, and export models"; keras-team/keras#19151;
keras-team/keras-io#1844; tensorflow/tensorflow#74342.

Run: python -m recipes.save_load_custom_objects
"""

import numbers
import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
PACKAGE = "keras_recipes"


@keras.utils.register_keras_serializable(package=PACKAGE)
class Scale(keras.layers.Layer):
    """Multiplies its input by one trainable scalar, starting at `initial`."""

    def __init__(self, initial=1.0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(initial, numbers.Real) or not np.isfinite(initial):
            raise ValueError(f"initial must be a finite number, got initial={initial!r}")
        self.initial = float(initial)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(), initializer=keras.initializers.Constant(self.initial)
        )
        super().build(input_shape)

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@keras.utils.register_keras_serializable(package=PACKAGE)
class WeightedSquaredError(keras.losses.Loss):
    """`weight * mean((y_pred - y_true) ** 2)` over the last axis."""

    def __init__(self, weight=1.0, name="weighted_squared_error", **kwargs):
        super().__init__(name=name, **kwargs)
        if not isinstance(weight, numbers.Real) or not weight > 0:
            raise ValueError(f"weight must be a number > 0, got weight={weight!r}")
        self.weight = float(weight)

    def call(self, y_true, y_pred):
        y_true = tf.cast(y_true, y_pred.dtype)
        return self.weight * tf.reduce_mean(tf.square(y_pred - y_true), axis=-1)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


class DepthwiseConv2DFromKeras2(keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D that accepts the `groups: 1` Keras 2 writes into its config."""

    def __init__(self, *args, groups=None, **kwargs):
        super().__init__(*args, **kwargs)


CUSTOM_OBJECTS = {"Scale": Scale, "WeightedSquaredError": WeightedSquaredError}
# Passed with the recipe's own classes, so Keras 3 also loads Keras 2's DepthwiseConv2D.
KERAS2_COMPATIBLE_OBJECTS = {"DepthwiseConv2D": DepthwiseConv2DFromKeras2}
SAVE_PATHS = {"model": "model.keras", "weights": "model.weights.h5"}


def save_path(kind, directory="."):
    """The file name every stack accepts: kind "model" or "weights"."""
    if kind not in SAVE_PATHS:
        raise ValueError(f"kind must be one of {sorted(SAVE_PATHS)}, got kind={kind!r}")
    return os.path.join(directory, SAVE_PATHS[kind])


def load_model_with_custom_objects(path, custom_objects=None, compile=True):
    """`keras.models.load_model` inside `custom_object_scope`: honoured by every stack."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.exists(path):
        raise ValueError(f"path must be an existing file, got path={path!r}")
    if custom_objects is None:
        custom_objects = {**CUSTOM_OBJECTS, **KERAS2_COMPATIBLE_OBJECTS}
    if not isinstance(custom_objects, dict):
        raise ValueError(f"custom_objects must be a dict, got custom_objects={custom_objects!r}")
    with keras.utils.custom_object_scope(custom_objects):
        return keras.models.load_model(os.fspath(path), compile=compile)


def small_model(seed=1):
    """Dense -> Scale, compiled with Adam and WeightedSquaredError."""
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed))
    model = keras.Model(inputs, Scale(0.5, name="scale")(dense(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=WeightedSquaredError(2.0))
    return model


def demo():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    y = np.ones((4, 2), np.float32)
    model = small_model()
    model.train_on_batch(x, y)
    with tempfile.TemporaryDirectory() as directory:
        path = save_path("model", directory)
        model.save(path)
        loaded = load_model_with_custom_objects(path)
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    same = all(map(np.array_equal, model.get_weights(), loaded.get_weights()))
    print(f"saved to {os.path.basename(path)}; training resumes identically: {same}")


if __name__ == "__main__":
    demo()
