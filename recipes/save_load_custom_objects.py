"""Title: Save and load models with custom layers and losses, in every format, on every Keras.

In short:
    @keras.utils.register_keras_serializable(package="my_project")
    class Scale(keras.layers.Layer):
        ...  # __init__(self, initial=1.0, **kwargs), build, call
        def get_config(self):  # every constructor argument, as plain values
            return {**super().get_config(), "initial": self.initial}
    model.save("model.keras")  # resumes training exactly; a legacy .h5 does not on Keras 3
    with keras.utils.custom_object_scope({"Scale": Scale}):  # honoured for .h5 too
        model = keras.models.load_model("model.keras")
    # load_model_with_custom_objects(path) adds fixes that load Keras 2 .h5 files on Keras 3.

Problem: A model with a custom layer and a custom loss saves without complaint and then
fails to load, or loads on one Keras and not the next: Keras 3.0 to 3.2 ignore
`custom_objects` for a legacy `.h5`, and files written by Keras 2 meet a stricter Keras 3.
Which file names each stack accepts is recipes/save_paths.py.

Recipe:
    1. Give every custom class a `get_config` returning its constructor arguments, and
       register it with `keras.utils.register_keras_serializable(package=...)`.
    2. Save the whole model to "model.keras" and weights to "model.weights.h5": names
       every stack accepts (recipes/save_paths.py has the rest).
    3. Load with `load_model_with_custom_objects(path, custom_objects)`: it calls
       `keras.models.load_model` inside `keras.utils.custom_object_scope`, which every
       stack honours. Pass `compile=False` to load for inference only.
    4. Resume training from a `.keras` file: it restores the optimizer state exactly.
    5. For Keras 2 `.h5` files, the default custom objects on Keras 3 add
       `DepthwiseConv2D`, `LSTM` and `Bidirectional` classes that drop the `groups` and
       `time_major` arguments Keras 3 refuses, and Keras 3.0's name for `Orthogonal`.
    6. For a Keras 2 `.keras` archive, `load_keras2_archive(path)` rebuilds the model
       from the archive's `config.json` with the same fixes, then loads its weights.
    7. For serving, `model.export(directory)` writes a SavedModel; on Keras 3 load it back
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
    - The default custom objects change nothing for a `.keras` file of the same stack
      with `LSTM`, `Bidirectional` and `DepthwiseConv2D`: it loads (or fails) exactly as
      with plain `load_model`, with Keras' own classes and the same predictions.

Versions:
    - A model loaded from a legacy `.h5` resumes training identically on Keras 2; on Keras
      3 its first training step fails: ValueError "Unknown variable" on 3.0 to 3.6 and
      from 3.13, NotImplementedError "numpy() is only available when eager execution" on
      3.7 to 3.12. Use `.keras` to resume training.
    - Keras 2.15's legacy `.h5` of a model with `DepthwiseConv2D` (its config carries
      `groups: 1`, keras-team/keras#19151): Keras 2 loads it; Keras 3 raises TypeError
      "Unrecognized keyword arguments passed to DepthwiseConv2D"; through
      `load_model_with_custom_objects` it loads on every stack, weights intact, and
      predicts exactly what Keras 2.15 predicted.
    - Keras 2.15's `.keras` of that model: Keras 2.12 raises TypeError "Could not
      deserialize class 'Functional'", 2.13 and 2.14 ValueError "... but received 0
      variables", 2.15 and tf-keras load it, and Keras 3 raises TypeError "Could not
      deserialize class 'Functional'" with or without `load_model_with_custom_objects`:
      its config.json names Keras 2's private module `keras.src.engine.functional`, and
      past that Keras 3 refuses DepthwiseConv2D's `groups` (TypeError above).
      `load_keras2_archive` loads it from Keras 2.15 on, Keras 3 included, predicting
      exactly what Keras 2.15 predicted; on 2.12 to 2.14 it raises ValueError "but
      received 0 variables".
    - Keras 2.15's `.h5` of a model with an `LSTM` and a `Bidirectional(LSTM)`: Keras 2
      loads it; Keras 3.0 to 3.3 raise ValueError "Could not interpret initializer
      identifier" (they cannot read `Orthogonal` by that name), 3.4 and later ValueError
      "Unrecognized keyword arguments passed to LSTM" (`time_major`,
      keras-team/keras#20750). Through `load_model_with_custom_objects` it loads on
      every stack and predicts exactly what Keras 2.15 predicted.
    - Keras 2.15's `.keras` of that model: 2.15 and tf-keras load it; Keras 2.12 and
      Keras 3 raise TypeError "Could not deserialize class 'Functional'" (2.13 and 2.14
      ValueError "but received 0 variables"). `load_keras2_archive` loads it from 2.15 on,
      Keras 3 included, with exact predictions.
    - A Bidirectional LSTM saved to `.keras` and loaded by the same Keras fails on Keras
      3.0 to 3.2 (tensorflow/tensorflow#65395: ValueError "... but received 0
      variables"); Keras 2 and Keras 3.3 and later reload it exactly.
    - `model.export(directory)` after `model.predict`: Keras 2.12 raises KeyError "Failed
      to add concrete function"; from 2.13 it writes a SavedModel whose `serve` endpoint
      predicts like the model. Keras 2 `load_model` loads that directory; Keras 3 raises
      ValueError "File format not supported" and reloads it as
      `keras.layers.TFSMLayer(directory, call_endpoint="serve")`, which Keras 2 lacks.
    - A model holding a `TFSMLayer`, saved to `.keras` and loaded with default arguments:
      Keras 3.0 to 3.12.0 and 3.13.0 to 3.13.1 load it; Keras 3.12.1 to 3.12.x and 3.13.2
      and later raise ValueError "Requested the deserialization of a `TFSMLayer`, which
      loads an external SavedModel ..." (CVE-2026-1462); `safe_mode=False` loads it, with
      the same outputs, on every Keras 3. Pass it only for a SavedModel you trust.

Sources: Keras guide "Save, serialize, and export models"; keras-team/keras#19151;
keras-team/keras#20750; tensorflow/tensorflow#65395.

See also:
    - custom_layer_config: a get_config that saves and loads
    - wing_loss: a custom loss that saves and loads
    - space_to_depth_reorg: a custom layer loaded without custom_objects
    - save_paths: the file names each stack accepts

Run: python -m recipes.save_load_custom_objects
"""

import json
import numbers
import os
import tempfile
import zipfile

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


class LSTMFromKeras2(keras.layers.LSTM):
    """LSTM that accepts the `time_major: false` Keras 2 writes into its config."""

    def __init__(self, *args, time_major=None, **kwargs):
        super().__init__(*args, **kwargs)


class BidirectionalFromKeras2(keras.layers.Bidirectional):
    """Bidirectional whose wrapped layers' configs lose Keras 2's `time_major` first."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = keras2_config_for_this_keras(config)
        return super().from_config(config, custom_objects=custom_objects)


CUSTOM_OBJECTS = {"Scale": Scale, "WeightedSquaredError": WeightedSquaredError}
# Passed with the recipe's own classes, so Keras 3 also loads Keras 2's legacy .h5 files.
# Keras 2 reads its own files as they are: there the replacements would only get in the way.
KERAS2_COMPATIBLE_OBJECTS = {
    "DepthwiseConv2D": DepthwiseConv2DFromKeras2,
    "LSTM": LSTMFromKeras2,
    "Bidirectional": BidirectionalFromKeras2,
    "Orthogonal": keras.initializers.Orthogonal,
}
if KERAS_MAJOR < 3:
    KERAS2_COMPATIBLE_OBJECTS = {}
# Arguments Keras 2 writes and Keras 3 refuses.
KERAS2_ONLY_ARGUMENTS = {
    "DepthwiseConv2D": ("groups",),
    "LSTM": ("time_major",),
    "GRU": ("time_major",),
    "SimpleRNN": ("time_major",),
}


def keras2_config_for_this_keras(config):
    """A copy of a Keras 2 config that this Keras can deserialize; Keras 2 reads it too."""
    if isinstance(config, list):
        return [keras2_config_for_this_keras(item) for item in config]
    if not isinstance(config, dict):
        return config
    config = {key: keras2_config_for_this_keras(value) for key, value in config.items()}
    # Keras 2 names private modules (keras.src.engine.functional) no Keras 3 can import.
    if str(config.get("module", "")).startswith("keras.src."):
        del config["module"]
    # Keras 3.0 registers Orthogonal as "OrthogonalInitializer".
    if config.get("class_name") == "Orthogonal":
        config["class_name"] = keras.initializers.Orthogonal.__name__
    if isinstance(config.get("config"), dict):
        for argument in KERAS2_ONLY_ARGUMENTS.get(config.get("class_name"), ()):
            config["config"].pop(argument, None)
    return config


def load_keras2_archive(path, custom_objects=None):
    """Rebuilds a Keras 2 functional model from a `.keras` archive, then loads its weights.

    The model comes back uncompiled, for inference or for a new `compile`.
    """
    if not isinstance(path, (str, os.PathLike)) or not zipfile.is_zipfile(path):
        raise ValueError(f"path must be an existing .keras archive, got path={path!r}")
    if not isinstance(custom_objects, (dict, type(None))):
        raise ValueError(f"custom_objects must be a dict, got custom_objects={custom_objects!r}")
    with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as directory:
        config = keras2_config_for_this_keras(json.loads(archive.read("config.json")))
        if config.get("class_name") != "Functional":
            raise ValueError(
                f"path must hold a functional model, got path={path!r} holding "
                f"class_name={config.get('class_name')!r}"
            )
        with keras.utils.custom_object_scope(custom_objects or {}):
            model = keras.Model.from_config(config["config"])
        model.load_weights(archive.extract("model.weights.h5", directory))
    return model


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
        path = os.path.join(directory, "model.keras")
        model.save(path)
        loaded = load_model_with_custom_objects(path)
    model.train_on_batch(x, y)
    loaded.train_on_batch(x, y)
    same = all(map(np.array_equal, model.get_weights(), loaded.get_weights()))
    print(f"saved to {os.path.basename(path)}; training resumes identically: {same}")


if __name__ == "__main__":
    demo()
