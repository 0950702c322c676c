"""Title: Wing loss for landmark regression, as a function and as a saveable Keras loss.

In short:
    model.compile(optimizer="adam", loss=WingLoss(w=10.0, epsilon=2.0))
    model.fit(images, landmarks, epochs=10)  # landmarks shaped like the output, e.g. (N, 1)
    loss = wing_loss(y_true, model(x, training=True))  # in a GradientTape loop
    model.save("landmarks.keras")
    model = keras.models.load_model("landmarks.keras", custom_objects={"WingLoss": WingLoss})

Problem: Facial landmark regressors trained with L2 or L1 pay little attention to the
small and medium errors that decide localisation quality. Wing loss (Feng et al., CVPR
2018) is logarithmic for |x| < w and linear beyond, and the constant C that joins the
two pieces is easy to get wrong. A hand-written `keras.losses.Loss` subclass then meets
Keras' own traps: Keras 3 hands it (N,) targets against (N, 1) outputs and lets them
broadcast to (N, N), and whether a model compiled with it loads without custom_objects
depends on the stack and on where the class was defined.

Recipe:
    1. Validate in Python: w and epsilon must be finite numbers > 0, y_true and y_pred
       tensors or arrays of real numbers.
    2. Refuse y_true and y_pred whose static shapes differ instead of broadcasting them.
    3. With x = y_pred - y_true, compute w * log1p(|x| / epsilon) where |x| < w and
       |x| - C elsewhere, with C = w - w * ln(1 + w / epsilon), in one `tf.where`.
    4. `wing_loss` averages over every element. `WingLoss.call` averages over the last
       axis (the landmark coordinates) and leaves the batch reduction and any
       sample_weight to the `keras.losses.Loss` base class.
    5. `WingLoss.get_config` adds w and epsilon. Load a saved model with
       `custom_objects={"WingLoss": WingLoss}` every time, or register a subclass with
       `keras.utils.register_keras_serializable`.

Pitfalls:
    - The loss is continuous at |x| = w, but its slope jumps there from w / (epsilon + w)
      to 1: beyond w the derivative of each element's loss is exactly +1 or -1 (the sign
      of the error), so the gradient of `wing_loss`, a mean over N elements, is exactly
      +-1/N there.
    - At zero error the gradient is exactly 0 (`tf.abs` has gradient 0 at 0), while just
      beside zero the slope is w / epsilon (5 with the defaults): the loss has a kink at 0.
    - TensorFlow on CPU flushes float32 subnormals to zero, so an error with
      |x| / epsilon below about 1.2e-38 gives a loss of exactly 0.0 although prediction and
      target differ (numpy's float32 gives a positive value). With w in [0.1, 50] and
      epsilon in [0.1, 20], every element whose error is at least 1e-4 has a positive loss.
    - A hand-written `call()` computing `y_pred - y_true` trains on the wrong loss on
      Keras 3 when fitted with (N,) targets against an (N, 1) output: the difference
      broadcasts to (N, N). `wing_loss` raises a ValueError naming both shapes instead.
    - `WingLoss()` equals `wing_loss` for equal-length rows; `reduction="none"` gives one
      value per sample, and sample_weight weights samples.
    - Whether a model loads without custom_objects depends on the stack and on where the
      class lives (see Versions). A `.keras` file loads on all five with w and epsilon
      restored when given custom_objects, inside `keras.utils.custom_object_scope`, or
      for a registered subclass; `load_model(path, compile=False)` loads it for inference
      on all five, with no loss and no optimizer.

Versions:
    - Keras 2.12 and earlier: `model.save("m.keras")` writes a legacy HDF5 file, not the
      zip archive (2.13 and later write the archive); without custom_objects it raises
      ValueError "Unknown loss function: 'WingLoss'".
    - Keras 2.13 and later Keras 2 (tf-keras included) and Keras 3.0 to 3.8: the `.keras`
      archive records the class's module and `load_model` imports it, so `WingLoss`
      imported from a module loads without custom_objects; a class defined in the training
      script (module `__main__`) raises TypeError "Could not locate class".
    - Keras 3.9 and later: `load_model` imports only the modules of Keras' own packages
      (the fix for CVE-2025-1550), so both raise TypeError "Could not locate class".
    - Legacy `.h5` without custom_objects: Keras 2 raises ValueError "Unknown loss
      function: 'WingLoss'"; Keras 3 looks the loss up by its name and raises ValueError
      "Could not interpret loss identifier: wing_loss".
    - Keras 3.0 to 3.2: `load_model` does not pass custom_objects or compile to the `.h5`
      loader, so that ValueError also comes with custom_objects and with compile=False;
      `keras.utils.custom_object_scope` loads it (as on all five). 3.3 and later pass both.
    - `evaluate` on a model loaded with compile=False raises RuntimeError "You must compile
      your model" on Keras 2 and ValueError "You must call `compile()`" on Keras 3.
    - Keras 2: `fit` expands (N,) targets to (N, 1) before the loss sees them. Keras 3:
      the loss gets (N,) against (N, 1), so `WingLoss` raises ValueError; reshape the
      targets to (N, 1).
    - `keras.saving.register_keras_serializable` exists under `from tensorflow import
      keras` on Keras 2 only; on Keras 3 that module has no `saving` attribute.
      `keras.utils.register_keras_serializable` works on all five.
    - The default reduction in `get_config()` is "auto" on Keras 2 and
      "sum_over_batch_size" on Keras 3; both average over the batch.

Sources: Feng et al., "Wing Loss for Robust Facial Landmark Localisation with
    Convolutional Neural Networks", CVPR 2018, arXiv:1711.06753; TensorFlow API docs
    "tf.keras.losses.Loss" and "Module: tf.keras.saving"; Keras guide "Save, serialize,
    and export models" (keras.io/guides/serialization_and_saving);
    keras-team/keras#19662 (a Loss subclass gets flat targets on Keras 3);
    tensorflow/tensorflow#32612 (loading a model compiled with a custom Loss subclass);
    tensorflow/tensorflow#62399 (`tf.math.log` of a float32 subnormal returns -inf);
    keras-team/keras#20751 (CVE-2025-1550: Keras 3.9 stops importing arbitrary modules);
    `keras.saving.load_model` source, Keras 3.2 and 3.3 (the `.h5` branch's arguments).

See also:
    - loss_shape_pitfall: (N,) targets against (N, 1) outputs broadcast silently
    - save_load_custom_objects: custom losses and layers in every file format

Run: python -m recipes.wing_loss
"""

import math
import numbers
import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _positive_finite(argument_name, value):
    """Returns value as a float, or raises ValueError naming the argument and the value."""
    # bool is a numbers.Real too, but w=True is a mistake, not a width of 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{argument_name} must be a finite number > 0, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{argument_name} must be a finite number > 0, got {value!r}")
    return float(value)


def _real_numbers(argument_name, value):
    """Raises ValueError naming the argument and the value unless it holds real numbers."""
    dtype = getattr(value, "dtype", None)
    try:
        # Tensors, variables, symbolic tensors and numpy arrays name their dtype; anything
        # else (numbers, nested lists) is read the way tf.convert_to_tensor would.
        dtype = tf.as_dtype(dtype if dtype is not None else np.asarray(value).dtype)
        real = dtype.is_floating or dtype.is_integer or dtype.is_bool
    except (TypeError, ValueError):  # e.g. strings, objects, ragged nested lists
        real = False
    if not real:
        raise ValueError(
            f"{argument_name} must be a tensor or array of real numbers, got {value!r}"
        )


def _elementwise_wing(y_true, y_pred, w, epsilon):
    """The paper's piecewise loss for every element of y_pred - y_true."""
    _real_numbers("y_true", y_true)
    _real_numbers("y_pred", y_pred)
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, keras.backend.floatx())
    y_true = tf.cast(y_true, y_pred.dtype)
    # Broadcasting (N,) against (N, 1) would silently compare every target with every
    # prediction, so differing static shapes are an error, not something to align.
    if not y_true.shape.is_compatible_with(y_pred.shape):
        raise ValueError(
            f"y_true shape {y_true.shape} and y_pred shape {y_pred.shape} differ; "
            "reshape the targets to the model's output shape"
        )
    absolute_error = tf.abs(y_pred - y_true)
    # C joins the two pieces: w * ln(1 + w / epsilon) == w - C at |x| = w.
    offset = w - w * math.log1p(w / epsilon)
    return tf.where(
        absolute_error < w,
        w * tf.math.log1p(absolute_error / epsilon),
        absolute_error - offset,
    )


def wing_loss(y_true, y_pred, w=10.0, epsilon=2.0):
    """Mean Wing loss over every element of y_true and y_pred (same shapes)."""
    w = _positive_finite("w", w)
    epsilon = _positive_finite("epsilon", epsilon)
    return tf.reduce_mean(_elementwise_wing(y_true, y_pred, w, epsilon))


class WingLoss(keras.losses.Loss):
    """Wing loss for `compile(loss=...)`: one value per sample, reduced by Keras."""

    def __init__(self, w=10.0, epsilon=2.0, name="wing_loss", **kwargs):
        # Validate before the base class runs, so a bad value never builds an object.
        self.w = _positive_finite("w", w)
        self.epsilon = _positive_finite("epsilon", epsilon)
        super().__init__(name=name, **kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The base class converts y_true and y_pred first, so check them before it runs.
        _real_numbers("y_true", y_true)
        _real_numbers("y_pred", y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        # Averaging over the last axis (the coordinates) leaves one value per sample, which
        # the base class weights by sample_weight and reduces as `reduction` says.
        return tf.reduce_mean(_elementwise_wing(y_true, y_pred, self.w, self.epsilon), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"w": self.w, "epsilon": self.epsilon})
        return config


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    w, epsilon = 10.0, 2.0
    errors = np.array([[0.0, 0.5, -3.0, 9.999, 10.0, 25.0]], dtype="float32")
    print("error:     ", errors[0])
    per_element = _elementwise_wing(np.zeros_like(errors), errors, w, epsilon).numpy()[0]
    print("wing(error):", np.round(per_element, 4))
    print(f"C = w - w*ln(1 + w/epsilon) = {w - w * math.log1p(w / epsilon):.4f}")

    predictions = tf.Variable(errors)
    with tf.GradientTape() as tape:
        loss = wing_loss(np.zeros_like(errors), predictions, w, epsilon)
    gradient = tape.gradient(loss, predictions).numpy()[0] * errors.size
    print("per-element gradient:", np.round(gradient, 4), "(0 at 0, w/(eps+|x|) inside, 1 beyond)")

    # A tiny landmark regressor: 4 inputs -> 2 landmarks (x, y), trained with WingLoss.
    random = np.random.default_rng(0)
    inputs = random.normal(size=(64, 4)).astype("float32")
    landmarks = (inputs @ random.normal(size=(4, 4))).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=WingLoss(w=w, epsilon=epsilon))
    history = model.fit(inputs, landmarks, epochs=15, batch_size=16, verbose=0)
    print(f"fit: loss {history.history['loss'][0]:.3f} -> {history.history['loss'][-1]:.3f}")

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "landmarks.keras")
        model.save(path)
        restored = keras.models.load_model(path, custom_objects={"WingLoss": WingLoss})
        same = np.allclose(model.predict(inputs, verbose=0), restored.predict(inputs, verbose=0))
        loss = restored.loss
        print(f"reloaded with custom_objects: same predictions {same}, ", end="")
        print(f"loss {type(loss).__name__}(w={loss.w}, epsilon={loss.epsilon})")
        # The outcome depends on the stack and on whether WingLoss came from an importable
        # module (python -m recipes --demo) or from __main__ (python -m recipes.wing_loss).
        try:
            keras.models.load_model(path)
            print(f"reloaded without custom_objects: loaded (Keras imported {WingLoss.__module__})")
        except (TypeError, ValueError) as error:
            print(f"reloaded without custom_objects: {type(error).__name__}: {str(error)[:50]}...")

    try:
        wing_loss(np.zeros(4), np.zeros((4, 1)))
    except ValueError as error:
        print(f"(N,) targets vs (N, 1) predictions: ValueError: {error}")


if __name__ == "__main__":
    demo()
