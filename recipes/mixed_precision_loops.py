"""Title: Mixed precision (mixed_float16) in fit and in a GradientTape loop, on every stack.

In short:
    hidden = keras.layers.Dense(64, activation="relu", dtype="mixed_float16")  # fp16 math
    output = keras.layers.Dense(10, dtype="float32")  # the last layer in float32
    optimizer = loss_scale_optimizer(keras.optimizers.Adam())  # for compile() too
    with tf.GradientTape() as tape:
        loss = loss_fn(y, tf.cast(model(x, training=True), "float32"))
        scaled_loss = scale_loss(optimizer, loss)  # get_scaled_loss / scale_loss
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    gradients = unscale_gradients(optimizer, gradients)  # Keras 3: apply_gradients does it
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))

Problem: The TensorFlow mixed precision guide's custom training loop calls
`optimizer.get_scaled_loss(loss)` and `optimizer.get_unscaled_gradients(gradients)`. On
TensorFlow 2.16 and later (Keras 3) that loop fails with AttributeError
"'LossScaleOptimizer' object has no attribute 'get_scaled_loss'": Keras 3 has
`scale_loss` instead and unscales the gradients inside `apply_gradients`. Porting the loop
by hand goes wrong quietly: a Keras 3 loop that never scales the loss, or that divides the
gradients by the loss scale itself, takes steps divided by the loss scale (32768 at the
default). And without a float32 output layer Keras 2 computes a loss such as
MeanSquaredError in float16, where a squared error above 65504 is inf.

Recipe:
    1. Give the hidden layers `dtype="mixed_float16"` (or call
       `keras.mixed_precision.set_global_policy("mixed_float16")` before building the model,
       and set it back to "float32" afterwards: it applies to every layer built later) and the
       last layer, or an `Activation("linear")` after it, `dtype="float32"`.
    2. With `fit` under the global mixed_float16 policy, `compile` wraps the optimizer in a
       `LossScaleOptimizer` on every stack. With per-layer dtypes it does not (the model's
       own policy is float32): pass `loss_scale_optimizer(optimizer)` to `compile`, as you
       do to choose the initial scale or the growth interval.
    3. In a tape loop, wrap the optimizer with `loss_scale_optimizer`, compute the loss in
       float32, and scale and unscale with `scale_loss` and `unscale_gradients`, which pick
       the right calls for the installed Keras. `train_step` is that step;
       `make_train_step` compiles it with `tf.function` after building the optimizer.
    4. Read the current loss scale with `loss_scale_of(optimizer)`.
    5. Speed is out of scope: the tests run on CPU and prove dtypes, loss scaling and
       accuracy only. The TensorFlow guide expects a speed-up only on NVIDIA GPUs of compute
       capability 7.0 or higher (and TPUs, with mixed_bfloat16); Keras 2 logs that
       mixed_float16 "may run slowly" on a machine without such a GPU.

Pitfalls:
    - A `dtype="mixed_float16"` layer computes in float16 (`compute_dtype`, and its output
      is float16) and keeps its weights in float32 (`variable_dtype`, `dtype` and the
      kernel's dtype). A layer with `dtype="float32"` after it, Dense or Activation, returns
      float32.
    - The dynamic loss scale halves after a step with a non-finite gradient, which it skips
      (the weights stay exactly unchanged), and doubles after `dynamic_growth_steps` finite
      steps in a row. With one float16 weight whose gradient is about -3, the float16
      gradient overflows at a scale of 32768 (98000 > 65504) and not at 16384, so with
      `dynamic_growth_steps=2` the compiled step leaves the scale at 16384, 16384, 32768,
      16384, 16384, 32768, and the applied steps are plain SGD's (numpy, float64) within 1e-4.
    - Under the global mixed_float16 policy, `fit` with a plain SGD optimizer trains with a
      `LossScaleOptimizer` at an initial scale of 32768, which halves on that overflow and
      skips the step, and its history reports the mean of the unscaled batch losses.
    - With `dtype="mixed_float16"` given per layer and the global policy left at float32,
      `compile` keeps a plain SGD optimizer on every stack: `fit` trains without loss
      scaling unless you pass a LossScaleOptimizer.
    - `scale_loss`, `unscale_gradients` and `apply_gradients` together apply the plain SGD
      step exactly on every stack.
    - Over five SGD steps of a small MLP with an L2 regularizer, the mixed_float16 model's
      losses match the float32 model's within a relative 1e-3 and its weights within 2e-4
      (measured: at most 2.0e-4 and 5.4e-5 on the five stacks); the float32 model matches
      plain SGD in numpy within 1e-5.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): the guide's loop with `get_scaled_loss`
      and `get_unscaled_gradients` works; `scale_loss` is an AttributeError. Keras 3.0 and
      later: the guide's loop raises AttributeError "'LossScaleOptimizer' object has no
      attribute 'get_scaled_loss'", `get_unscaled_gradients` is missing too, and
      `scale_loss` exists.
    - `apply_gradients` given gradients that were never scaled: Keras 2 applies them as given
      and logs "You forgot to call LossScaleOptimizer.get_scaled_loss()"; Keras 3 divides
      them by the loss scale, with no such warning.
    - Where the scale lives: Keras 2 `optimizer.loss_scale` (a tensor; the good-step count is
      `optimizer.dynamic_counter`), from construction on. Keras 3 `optimizer.dynamic_scale`
      (a variable; the count is `optimizer.step_counter`), created by `optimizer.build`;
      until then `scale_loss` multiplies by `initial_scale`.
    - After three non-finite gradients from a scale of 2: 1, 1, 1 on Keras 2 (it never goes
      below 1); 1, 0.5, 0.25 on Keras 3.
    - `optimizer.iterations` after two applied and one skipped step: 3 on Keras 2 (the
      skipped step counts, in `inner_optimizer.iterations` too); 0 on Keras 3.0 to 3.8,
      whose `inner_optimizer.iterations` is 2; 2 on Keras 3.9 and later.
    - `keras.losses.MeanSquaredError()` on float16 predictions: Keras 2 computes it in
      float16 (an error of 300 gives inf); Keras 3 in float32 (90000).

Sources: TensorFlow guide "Mixed precision" (tensorflow.org/guide/mixed_precision: the
    float32 output layer, loss scaling in a custom training loop, GPU requirements); Keras
    API docs "LossScaleOptimizer" and "Mixed precision policy API"
    (keras.io/api/mixed_precision); keras-team/keras#19479 and keras-team/keras#20894 (Keras 3:
    no get_scaled_loss, use scale_loss; fit scales for you); tensorflow/tensorflow#64124
    (get_scaled_loss missing on TF 2.16); keras-team/tf-keras#644 (Keras 2's loss scale does
    not go below 1).

See also:
    - compiled_train_step: a tape step that traces once under tf.function
    - training_apis: a tape loop that ends where fit ends
    - deterministic_training: repeatable float numbers on CPU

Run: python -m recipes.mixed_precision_loops
"""

import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _require_loss_scale_optimizer(optimizer):
    if not isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer):
        raise ValueError(
            "optimizer must be a keras.mixed_precision.LossScaleOptimizer (wrap it with "
            f"loss_scale_optimizer), got optimizer={optimizer!r}"
        )


def loss_scale_optimizer(optimizer, initial_scale=2.0**15, dynamic_growth_steps=2000):
    """`optimizer` wrapped in a dynamic LossScaleOptimizer, with the same arguments on all stacks.

    The scale halves after a non-finite gradient and doubles after `dynamic_growth_steps`
    finite steps in a row.
    """
    if not isinstance(optimizer, keras.optimizers.Optimizer) or isinstance(
        optimizer, keras.mixed_precision.LossScaleOptimizer
    ):
        raise ValueError(
            "optimizer must be a keras optimizer that is not a LossScaleOptimizer yet, got "
            f"optimizer={optimizer!r}"
        )
    if (
        isinstance(initial_scale, bool)
        or not isinstance(initial_scale, numbers.Real)
        or not math.isfinite(initial_scale)
        or initial_scale <= 0
    ):
        raise ValueError(
            f"initial_scale must be a finite number > 0, got initial_scale={initial_scale!r}"
        )
    if (
        isinstance(dynamic_growth_steps, bool)
        or not isinstance(dynamic_growth_steps, numbers.Integral)
        or dynamic_growth_steps < 1
    ):
        raise ValueError(
            "dynamic_growth_steps must be an integer >= 1, got "
            f"dynamic_growth_steps={dynamic_growth_steps!r}"
        )
    return keras.mixed_precision.LossScaleOptimizer(
        optimizer,
        initial_scale=float(initial_scale),
        dynamic_growth_steps=int(dynamic_growth_steps),
    )


def loss_scale_of(optimizer):
    """The current loss scale as a float, read from the optimizer's own variable."""
    _require_loss_scale_optimizer(optimizer)
    if KERAS_MAJOR == 2:
        return float(optimizer.loss_scale)
    # Keras 3 creates `dynamic_scale` in `build`; until then scale_loss uses initial_scale.
    if not optimizer.built:
        return float(optimizer.initial_scale)
    return float(optimizer.dynamic_scale.numpy())


def scale_loss(optimizer, loss):
    """The loss times the current loss scale: take the gradients of this one."""
    _require_loss_scale_optimizer(optimizer)
    if KERAS_MAJOR == 2:
        return optimizer.get_scaled_loss(loss)
    return optimizer.scale_loss(loss)


def unscale_gradients(optimizer, gradients):
    """The gradients to pass to `optimizer.apply_gradients` after `scale_loss`."""
    _require_loss_scale_optimizer(optimizer)
    if KERAS_MAJOR == 2:
        return optimizer.get_unscaled_gradients(gradients)
    # Keras 3's apply_gradients divides by the scale itself; dividing here too would make
    # every step `loss scale` times too small.
    return list(gradients)


def _require_step_arguments(model, loss_fn, optimizer):
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model must be a keras Model or Layer, got model={model!r}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got loss_fn={loss_fn!r}")
    _require_loss_scale_optimizer(optimizer)


def train_step(model, loss_fn, optimizer, x, y):
    """One tape step with dynamic loss scaling; returns the unscaled loss, in float32."""
    _require_step_arguments(model, loss_fn, optimizer)
    with tf.GradientTape() as tape:
        # The loss in float32 even if the last layer was left in float16.
        predictions = tf.cast(model(x, training=True), "float32")
        loss = loss_fn(tf.cast(y, "float32"), predictions)
        if model.losses:
            loss = loss + tf.add_n([tf.cast(term, "float32") for term in model.losses])
        scaled = scale_loss(optimizer, loss)
    gradients = tape.gradient(scaled, model.trainable_variables)
    gradients = unscale_gradients(optimizer, gradients)
    # Autograph on TF 2.12 rejects zip(strict=...).
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
    return loss


def make_train_step(model, loss_fn, optimizer):
    """`train_step` compiled with tf.function: `step(x, y) -> float32 loss`."""
    _require_step_arguments(model, loss_fn, optimizer)
    # Keras 2 raises its own ValueError for the weights of a model that is not built.
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"model must be built (give it a keras.Input or call it once) and have trainable "
            f"weights, got model={model!r} with no trainable variables"
        )
    if KERAS_MAJOR == 3 and not optimizer.built:
        # Built before the first trace, so scale_loss reads the dynamic_scale variable.
        optimizer.build(model.trainable_variables)
    return tf.function(lambda x, y: train_step(model, loss_fn, optimizer, x, y))


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    hidden = keras.layers.Dense(
        1, use_bias=False, kernel_initializer="zeros", dtype="mixed_float16"
    )
    model = keras.Sequential(
        [keras.Input((1,)), hidden, keras.layers.Activation("linear", dtype="float32")]
    )
    # x = 1 and y = 1.5: the gradient is about -3, so at a loss scale of 32768 the float16
    # gradient (about 98000) overflows, at 16384 it does not.
    x, y = np.ones((4, 1), "float32"), np.full((4, 1), 1.5, "float32")
    optimizer = loss_scale_optimizer(
        keras.optimizers.SGD(0.01), initial_scale=2.0**15, dynamic_growth_steps=2
    )
    step = make_train_step(model, keras.losses.MeanSquaredError(), optimizer)
    print(
        f"hidden layer: compute {hidden.compute_dtype}, variables {hidden.variable_dtype}; "
        f"model output {tf.as_dtype(model(x).dtype).name}"
    )
    for number in range(6):
        loss = step(x, y)
        print(
            f"step {number}: loss {float(loss):.4f} ({loss.dtype.name}), "
            f"loss scale {loss_scale_of(optimizer):g}, "
            f"kernel {float(hidden.kernel.numpy()[0, 0]):.5f}"
        )


if __name__ == "__main__":
    demo()
