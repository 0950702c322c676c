"""Title: train_on_batch converges, GradientTape doesn't: labels (N,) against predictions (N, 1).

In short:
    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)  # shape (N, 1)
        y_true = tf.reshape(y_true, tf.shape(y_pred))  # (N,) labels would broadcast to (N, N)
        loss = tf.reduce_mean(tf.square(y_pred - y_true))
    # Or refuse the mismatch: assert_same_shape(y_true, y_pred) raises a ValueError;
    # or use loss = mean_squared_error_aligned(y_true, y_pred).

Problem: A regression model ends in `Dense(1)`, so it predicts shape (N, 1), while the labels
are a flat vector of shape (N,). `model.compile(loss="mse")` and `train_on_batch` learn the
target, but the same data in a hand-written GradientTape loop with
`tf.reduce_mean(tf.square(y_pred - y_true))` never does. Broadcasting turns (N, 1) minus (N,)
into an (N, N) matrix of every prediction against every label, so the loop minimises the
distance to all labels at once and the model learns to predict their mean. Nothing raises.

Recipe:
    1. Check shapes before the loss: `assert_same_shape(y_true, y_pred)` raises a ValueError
       naming both shapes.
    2. Or align them explicitly: `tf.reshape(y_true, tf.shape(y_pred))`, or call
       `mean_squared_error_aligned(y_true, y_pred)`, which refuses shapes that differ by more
       than size-1 axes.
    3. Inside the loop, call Keras loss objects on tensors, not numpy arrays: Keras 2 aligns
       ranks only when both arguments are tensors.
    4. Judge convergence from the model's predictions, not from the number a training routine
       reports.

Pitfalls:
    - A hand-written `tf.reduce_mean(tf.square(y_pred - y_true))` with y_pred (N, 1) and
      y_true (N,) equals the mean over the (N, N) broadcast on every stack.
    - A GradientTape loop with that loss does not converge on y = 2x + 1: the model predicts
      the mean of y, and its error stays at the variance of y; the same loop with y reshaped
      to (N, 1) or with `mean_squared_error_aligned` converges.
    - `compile()` aligns (N,) labels with (N, 1) outputs on every stack, for `loss="mse"` and
      for the very same hand-written function, in `evaluate`, `train_on_batch` and `fit`;
      that is why a `train_on_batch` loop converges where the tape loop does not.
    - `keras.losses.MeanSquaredError()` called on two tensors aligns ranks on every stack.
    - `assert_same_shape` raises a ValueError naming both shapes; an unknown (None) dimension
      matches any size, and an unknown rank raises.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras): `keras.losses.MeanSquaredError()(y_true, y_pred)`
      aligns ranks only when both arguments are tensors; if either is a numpy array it
      broadcasts to (N, N), so a tape loop calling it on numpy labels does not converge.
      The function `keras.losses.mse` broadcasts on numpy arrays and on tensors alike.
    - Keras 3 (3.0 and later): the loss object and `keras.losses.mse` align ranks for numpy
      arrays and tensors alike, so the same tape loop converges.
    - Keras 3.0 to 3.14: `train_on_batch` and `test_on_batch` return the mean of every batch
      loss since the last `compile()`, `reset_metrics()`, `evaluate()` or start of a `fit()`
      epoch, that call's own batches included and train and test batches alike (`predict()`
      does not reset it), not this batch's loss; call `reset_metrics()` first to read one
      batch. 3.15 and later, like Keras 2, return this batch's loss.

Sources: tensorflow/tensorflow#28901 (custom loop does not converge, labels (16,) vs
predictions (16, 1)); tensorflow/tensorflow#37770 (MSE differs between [128] and [128, 1]);
keras-team/keras#14627 (labels broadcast to [404, 404]); keras-team/keras#22596 and
keras-team/keras#22617 (train_on_batch returned a cumulative loss); TensorFlow API docs,
tf.keras.losses.MeanSquaredError; TensorFlow guide "Basic training loops"; Keras guide
"Writing a training loop from scratch".

See also:
    - training_apis: a tape loop that drifts from fit (training=True, model.losses)
    - wing_loss: a Loss subclass meets the same (N,) against (N, 1) on Keras 3
    - compiled_train_step: the tape step under tf.function, matching fit

Run: python -m recipes.loss_shape_pitfall
"""

import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

# `keras.version()` exists on every Keras 3 and on no Keras 2.
KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _check_numbers(value, argument_name):
    """Raises ValueError naming the argument and the value unless it holds real numbers."""
    dtype = getattr(value, "dtype", None)
    try:
        # Tensors, symbolic tensors and numpy arrays name their dtype; anything else (numbers,
        # nested lists) is read the way tf.convert_to_tensor would.
        dtype = tf.as_dtype(dtype if dtype is not None else np.asarray(value).dtype)
        numeric = dtype.is_floating or dtype.is_integer or dtype.is_bool
    except (TypeError, ValueError):  # e.g. strings, objects, ragged nested lists
        numeric = False
    if not numeric:
        raise ValueError(f"{argument_name} must be an array or tensor of numbers, got {value!r}.")


def _static_shape(value, argument_name):
    """The shape known before running anything, as a tuple with None for unknown sizes."""
    _check_numbers(value, argument_name)
    if hasattr(value, "shape"):
        shape = value.shape
        # TensorShape (tensors, variables, Keras 2 symbolic tensors) may not know its rank.
        if isinstance(shape, tf.TensorShape):
            if shape.rank is None:
                raise ValueError(
                    f"{argument_name} has unknown rank ({shape}), so its shape cannot be "
                    "checked; give it a static rank or reshape it explicitly."
                )
            return tuple(shape.as_list())
        return tuple(shape)
    return np.shape(value)


def _dimensions_match(first_size, second_size):
    # An unknown size (None) can only be checked when the graph runs, so it matches any size.
    return first_size is None or second_size is None or first_size == second_size


def assert_same_shape(y_true, y_pred):
    """Raises ValueError unless y_true and y_pred have the same rank and compatible sizes.

    Works on numpy arrays, tensors and symbolic tensors, using static shapes only. A None
    dimension matches any size; an unknown rank raises, since nothing could be checked.
    """
    true_shape = _static_shape(y_true, "y_true")
    predicted_shape = _static_shape(y_pred, "y_pred")
    same = len(true_shape) == len(predicted_shape) and all(
        map(_dimensions_match, true_shape, predicted_shape)
    )
    if not same:
        raise ValueError(
            f"y_true has shape {true_shape} but y_pred has shape {predicted_shape}; an "
            "elementwise loss would broadcast them against each other instead of pairing each "
            "label with its prediction. Reshape first, e.g. "
            "y_true = tf.reshape(y_true, tf.shape(y_pred)), or use mean_squared_error_aligned."
        )


def handwritten_mean_squared_error(y_true, y_pred):
    """The pitfall, kept to show it: broadcasts (N,) labels against (N, 1) predictions."""
    # Only the values are checked: the shapes are left to broadcast, which is the point.
    _check_numbers(y_true, "y_true")
    _check_numbers(y_pred, "y_pred")
    y_pred = tf.convert_to_tensor(y_pred)
    return tf.reduce_mean(tf.square(y_pred - tf.cast(y_true, y_pred.dtype)))


def mean_squared_error_aligned(y_true, y_pred):
    """Mean squared error after reshaping y_true to y_pred's shape.

    Only shapes that agree once size-1 axes are dropped are accepted: (N,) against (N, 1) is
    fine, but (2, 3) against (3, 2) is refused although the element counts match, because a
    reshape would silently pair the wrong values.
    """
    true_shape = _static_shape(y_true, "y_true")
    predicted_shape = _static_shape(y_pred, "y_pred")
    true_core = [size for size in true_shape if size != 1]
    predicted_core = [size for size in predicted_shape if size != 1]
    if len(true_core) != len(predicted_core) or not all(
        map(_dimensions_match, true_core, predicted_core)
    ):
        raise ValueError(
            f"y_true with shape {true_shape} cannot be aligned with y_pred with shape "
            f"{predicted_shape}: they must hold the same number of values and differ only "
            "in size-1 axes."
        )
    y_pred = tf.convert_to_tensor(y_pred)
    if not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, keras.backend.floatx())
    # tf.shape, not the static shape, so that a None batch size also works inside tf.function.
    y_true = tf.reshape(tf.cast(y_true, y_pred.dtype), tf.shape(y_pred))
    return tf.reduce_mean(tf.square(y_pred - y_true))


def make_linear_data(number_of_samples=16):
    """x of shape (N, 1) evenly spread over [-1, 1] and y = 2x + 1 of shape (N,), float32."""
    # bool is a numbers.Integral too, but True samples is a mistake, not a count of 1.
    if isinstance(number_of_samples, bool) or not isinstance(number_of_samples, numbers.Integral):
        raise ValueError(f"number_of_samples must be an int, got {number_of_samples!r}.")
    if number_of_samples < 2:
        raise ValueError(f"number_of_samples must be at least 2, got {number_of_samples!r}.")
    x = np.linspace(-1.0, 1.0, int(number_of_samples), dtype="float32").reshape(-1, 1)
    y = (2.0 * x[:, 0] + 1.0).astype("float32")
    return x, y


def build_linear_model():
    """Dense(1) on one feature, starting from zero weights so every stack trains identically."""
    return keras.Sequential(
        [
            keras.Input(shape=(1,)),
            keras.layers.Dense(1, kernel_initializer="zeros", bias_initializer="zeros"),
        ]
    )


def _check_training_arguments(x, y, steps, learning_rate):
    # numbers.Integral and numbers.Real admit numpy scalars such as np.int64 and np.float32.
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    if (
        isinstance(learning_rate, bool)
        or not isinstance(learning_rate, numbers.Real)
        or not math.isfinite(learning_rate)
        or learning_rate <= 0
    ):
        raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}.")
    x_shape = _static_shape(x, "x")
    if len(x_shape) != 2 or x_shape[1] != 1:
        raise ValueError(f"x must have shape (N, 1), got shape {x_shape}.")
    y_shape = _static_shape(y, "y")
    if not y_shape or y_shape[0] != x_shape[0]:
        raise ValueError(f"y must have {x_shape[0]} rows like x, got shape {y_shape}.")


def train_with_gradient_tape(loss_function, x, y, steps=30, learning_rate=0.5):
    """Full-batch SGD in a GradientTape loop; returns (model, last loss value).

    y is handed to loss_function exactly as given (numpy array or tensor), because whether it
    is a tensor decides what a Keras 2 loss object does with it.
    """
    if not callable(loss_function):
        raise ValueError(f"loss_function must be callable, got {loss_function!r}.")
    _check_training_arguments(x, y, steps, learning_rate)
    model = build_linear_model()
    optimizer = keras.optimizers.SGD(learning_rate=float(learning_rate))
    for _ in range(int(steps)):
        with tf.GradientTape() as tape:
            loss = loss_function(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    return model, float(loss)


def train_with_train_on_batch(x, y, steps=30, learning_rate=0.5):
    """The same full-batch SGD through compile(loss="mse") and train_on_batch; returns
    (model, the loss the last call reported)."""
    _check_training_arguments(x, y, steps, learning_rate)
    model = build_linear_model()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=float(learning_rate)), loss="mse")
    for _ in range(int(steps)):
        reported_loss = model.train_on_batch(x, y)
    return model, float(reported_loss)


def prediction_error(model, x, y):
    """Mean squared error of the model's predictions against y, paired sample by sample."""
    if not callable(model):
        raise ValueError(f"model must be a callable Keras model, got {model!r}.")
    x_shape = _static_shape(x, "x")
    _check_numbers(y, "y")
    targets = np.asarray(y, dtype="float64").reshape(-1)
    if not x_shape or targets.size != x_shape[0]:
        raise ValueError(
            f"y must hold one value per row of x ({x_shape}), got shape {np.shape(y)}."
        )
    predictions = np.asarray(model(x, training=False)).reshape(-1)
    return float(np.mean((predictions - targets) ** 2))


def demo():
    labels = np.array([0.0, 1.0, 2.0, 3.0], dtype="float32")
    predictions = np.array([[0.5], [1.0], [2.5], [4.0]], dtype="float32")
    print(f"Keras {KERAS_MAJOR}: labels {labels.shape}, predictions {predictions.shape}")
    loss_object = keras.losses.MeanSquaredError()
    values = {
        "numpy, paired sample by sample": np.mean((predictions[:, 0] - labels) ** 2),
        "numpy, broadcast to (N, N)": np.mean((predictions - labels) ** 2),
        "hand-written reduce_mean(square)": handwritten_mean_squared_error(labels, predictions),
        "MeanSquaredError() on numpy": loss_object(labels, predictions),
        "MeanSquaredError() on tensors": loss_object(tf.constant(labels), tf.constant(predictions)),
        "mean_squared_error_aligned": mean_squared_error_aligned(labels, predictions),
    }
    for name, value in values.items():
        print(f"  {name:32}: {float(value):.3f}")
    try:
        assert_same_shape(labels, predictions)
    except ValueError as error:
        print(f"  assert_same_shape: ValueError: {str(error)[:70]}...")

    x, y = make_linear_data()
    print(f"\nLearning y = 2x + 1 from {len(y)} points, 30 full-batch SGD steps:")
    routes = {
        "tape, hand-written loss": lambda: train_with_gradient_tape(
            handwritten_mean_squared_error, x, tf.constant(y)
        ),
        "tape, y reshaped to (N, 1)": lambda: train_with_gradient_tape(
            handwritten_mean_squared_error, x, tf.reshape(y, (-1, 1))
        ),
        "tape, mean_squared_error_aligned": lambda: train_with_gradient_tape(
            mean_squared_error_aligned, x, y
        ),
        "tape, MeanSquaredError() on numpy y": lambda: train_with_gradient_tape(
            keras.losses.MeanSquaredError(), x, y
        ),
        "train_on_batch, loss='mse'": lambda: train_with_train_on_batch(x, y),
    }
    for name, train in routes.items():
        model, last_loss = train()
        print(
            f"  {name:36} error vs y {prediction_error(model, x, y):.2e}, "
            f"last reported loss {last_loss:.2e}"
        )


if __name__ == "__main__":
    demo()
