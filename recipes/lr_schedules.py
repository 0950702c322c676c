"""Title: Learning-rate schedules that apply on every stack: fit callbacks, manual loops, schedules.

In short:
    optimizer = keras.optimizers.SGD(learning_rate=0.1)  # never lr=: ignored on Keras 2
    scheduler = keras.callbacks.LearningRateScheduler(
        lambda epoch: multistep_learning_rate(epoch, 0.1, milestones=[10, 20], gamma=0.1)
    )
    model.fit(x, y, epochs=30, callbacks=[scheduler])
    for epoch in range(30):  # train_on_batch or a tape loop
        set_learning_rate(optimizer, cosine_learning_rate(epoch, 0.1, 0.001, period=30))
        ...  # one epoch of steps

Problem: Old training scripts build `RMSprop(lr=...)` and change the rate with
`K.set_value(model.optimizer.lr, ...)` from a callback or inside `train_on_batch` and
GradientTape loops, with hand-written multistep and cosine formulas. With the optimizers
Keras 2 introduced in 2.11 (tested here from 2.12 on, tf-keras included) the `lr=` keyword
is dropped with only a log line, so training runs at the optimizer's default rate; on
Keras 3 `lr=`, `optimizer.lr` and `set_value` all fail. A schedule the optimizer was built
on cannot be changed by hand, and Keras' own schedule classes count steps differently from
the usual multistep rule.

Recipe:
    1. Spell the rate `learning_rate=` (or pass it first, positionally): it works on all
       five stacks. Never `lr=`.
    2. With `fit`, use `keras.callbacks.LearningRateScheduler(lambda epoch: ...)` or
       `ReduceLROnPlateau`; both set the rate the next epoch really uses.
    3. In `train_on_batch` and tape loops, call `set_learning_rate(optimizer, value)`
       before each epoch, with `multistep_learning_rate` or `cosine_learning_rate`;
       `get_learning_rate(optimizer)` reads the rate the next step will use.
    4. Or build the optimizer on a `keras.optimizers.schedules` object, counted in steps;
       then leave its rate alone: `set_learning_rate` refuses it with a ValueError.

Pitfalls:
    - On Keras 2.12 and later Keras 2 (tf-keras included), `keras.optimizers.RMSprop(lr=0.5)`,
      `Adam(lr=0.5)` and `SGD(lr=0.5)` build an optimizer at the default rate (0.001, 0.001,
      0.01); the only sign is an absl WARNING "`lr` is deprecated", no exception and no
      Python warning. A plain-SGD step then moves the weights by 0.01 * gradient, not
      0.5 * gradient.
    - `PiecewiseConstantDecay(boundaries, values)` still gives the earlier value at
      step == boundary and switches one step later: to multiply at milestone m as the
      multistep rule does, pass boundaries m - 1.
    - An optimizer built on a schedule applies schedule(k) at its k-th step (k counted from
      0 by `optimizer.iterations`), and `optimizer.learning_rate = value` raises TypeError
      "not settable" on every stack.
    - The usual hand-written cosine that puts the batch index where it means the epoch,
      set before every batch from a callback's `on_train_batch_begin(batch, ...)`, restarts
      at eta_max at every epoch (`fit` counts batches from 0 in each epoch), applies the same
      rates every epoch (relative 1e-5, measured from the SGD weight steps), never decaying,
      and climbs back up within an epoch once the batch index passes the period.
    - `cosine_learning_rate` stays within [eta_min, eta_max], never increases, is eta_max
      at epoch 0 and eta_min from epoch `period` on, exactly; `multistep_learning_rate`
      multiplies by gamma exactly at each milestone and nowhere else.
      `PiecewiseConstantDecay` with boundaries m - 1 returns `multistep_learning_rate`
      rounded to float32, exactly, step by step. `CosineDecay` (alpha = eta_min / eta_max)
      computes in float32 and stays within 1e-6 * eta_max of `cosine_learning_rate` at
      every step (tested for eta_max 1e-4 to 10, any eta_min, periods 1 to 200).

Versions:
    - Keras 2.12 and later Keras 2, tf-keras included: `lr=` is ignored as above;
      `optimizer.lr` reads the rate;
      `tf.keras.backend.set_value(optimizer.learning_rate, v)` sets it.
    - Keras 3.0 and later: `RMSprop(lr=...)`, `Adam(lr=...)` and `SGD(lr=...)` raise
      ValueError "Argument(s) not recognized"; `optimizer.lr` is an AttributeError;
      `tf.keras.backend.set_value(optimizer.learning_rate, v)` raises AttributeError
      "'str' object has no attribute 'name'" and leaves the rate unchanged.
    - `import keras` then `keras.backend.set_value(optimizer.learning_rate, v)`: with
      TensorFlow 2.12 to 2.15 `import keras` is Keras 2 and this sets the rate. With
      TensorFlow 2.16 and later `import keras` is Keras 3, with TF_USE_LEGACY_KERAS=1 too
      (it changes `tf.keras` only), and Keras 3's `keras.backend` has no `set_value`:
      AttributeError "module 'keras.backend' has no attribute 'set_value'", the rate
      unchanged. `set_learning_rate` works on every stack.
    - On an optimizer built on a schedule, Keras 2's `optimizer.learning_rate` holds the
      rate of the step just taken, and `optimizer.learning_rate.assign(v)` or
      `tf.keras.backend.set_value(optimizer.learning_rate, v)` is accepted and silently
      overwritten by the schedule at the next step. Keras 3's holds the rate of the next
      step, and both raise AttributeError "has no attribute 'assign'".
    - `fit`'s history logs the rate set by `LearningRateScheduler` and `ReduceLROnPlateau`
      under "lr" on Keras 2 and under "learning_rate" on Keras 3.

Sources: Keras API docs "LearningRateScheduler", "ReduceLROnPlateau", "CosineDecay" and
    "PiecewiseConstantDecay" (keras.io/api/callbacks, keras.io/api/optimizers/
    learning_rate_schedules); keras-team/keras#17338 and tensorflow/tensorflow#58831 (the new
    optimizers accept `lr` and ignore it); keras-team/keras#19148 (Keras 3: how to set the
    learning rate without `set_value`); Loshchilov and Hutter, "SGDR: Stochastic Gradient
    Descent with Warm Restarts", ICLR 2017, arXiv:1608.03983 (the cosine formula); PyTorch's
    `torch.optim.lr_scheduler.MultiStepLR` (the multistep rule).

See also:
    - per_layer_learning_rates: a schedule for each group of layers
    - training_apis: fit, train_on_batch and tape loops agree
    - compiled_train_step: Python floats retrace a tf.function

Run: python -m recipes.lr_schedules
"""

import bisect
import itertools
import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _rate(argument_name, value):
    """Returns a learning rate as a float, or raises ValueError naming the argument."""
    # bool is a numbers.Real too, but True is a mistake, not a rate of 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{argument_name} must be a finite number >= 0, got {argument_name}={value!r}"
        )
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{argument_name} must be a finite number >= 0, got {argument_name}={value!r}"
        )
    return float(value)


def _count(argument_name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"{argument_name} must be an integer >= {minimum}, got {argument_name}={value!r}"
        )
    return int(value)


def multistep_learning_rate(epoch, base_rate, milestones, gamma=0.1):
    """base_rate, multiplied by gamma at each milestone epoch reached (PyTorch's MultiStepLR)."""
    epoch = _count("epoch", epoch, 0)
    base_rate = _rate("base_rate", base_rate)
    if isinstance(milestones, (str, bytes)) or not hasattr(milestones, "__iter__"):
        raise ValueError(
            f"milestones must be a sequence of integers, got milestones={milestones!r}"
        )
    milestones = list(milestones)
    for milestone in milestones:
        if (
            isinstance(milestone, bool)
            or not isinstance(milestone, numbers.Integral)
            or milestone < 1
        ):
            raise ValueError(f"milestones must hold integers >= 1, got milestones={milestones!r}")
    milestones = [int(milestone) for milestone in milestones]
    if any(later <= earlier for earlier, later in itertools.pairwise(milestones)):
        raise ValueError(f"milestones must be strictly increasing, got milestones={milestones!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise ValueError(f"gamma must be a finite number > 0, got gamma={gamma!r}")
    if not math.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a finite number > 0, got gamma={gamma!r}")
    rate = base_rate
    # One multiplication per milestone passed, so rate(m) == rate(m - 1) * gamma exactly.
    for _ in range(bisect.bisect_right(milestones, epoch)):
        rate *= float(gamma)
    return rate


def cosine_learning_rate(epoch, eta_max, eta_min=0.0, period=10):
    """Cosine from eta_max at epoch 0 down to eta_min at epoch `period`, then eta_min."""
    epoch = _count("epoch", epoch, 0)
    eta_max = _rate("eta_max", eta_max)
    eta_min = _rate("eta_min", eta_min)
    if eta_min > eta_max:
        raise ValueError(
            f"eta_min must be <= eta_max, got eta_min={eta_min!r} > eta_max={eta_max!r}"
        )
    period = _count("period", period, 1)
    progress = min(epoch, period) / period
    if progress == 0:
        # eta_min + (eta_max - eta_min) can miss eta_max by one rounding; the start is exact.
        return eta_max
    weight = 0.5 * (1.0 + math.cos(math.pi * progress))
    # The same rounding can overshoot eta_max by one ulp just after the start.
    return min(eta_max, eta_min + (eta_max - eta_min) * weight)


def _optimizer(optimizer):
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(
            f"optimizer must be a keras.optimizers.Optimizer, got optimizer={optimizer!r}"
        )
    # Keras 2.11+ and Keras 3 optimizers keep the constructor's learning_rate here.
    schedule = getattr(optimizer, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return schedule
    return None


def get_learning_rate(optimizer):
    """The rate the optimizer's next step will use, as a float, on every stack."""
    schedule = _optimizer(optimizer)
    if schedule is not None:
        # Keras 2's `learning_rate` holds the previous step's rate here; ask the schedule.
        return float(schedule(optimizer.iterations))
    return float(np.asarray(optimizer.learning_rate))


def set_learning_rate(optimizer, value):
    """Sets the rate of the optimizer's next steps; ValueError for a schedule-built one."""
    value = _rate("value", value)
    schedule = _optimizer(optimizer)
    if schedule is not None:
        # Keras 2 would accept the assign and let the schedule overwrite it at the next step.
        raise ValueError(
            f"optimizer was built on a LearningRateSchedule ({type(schedule).__name__}), which "
            f"sets the rate at every step; cannot set value={value!r}. Build the optimizer "
            "on a float to set its rate by hand."
        )
    # `learning_rate` is a variable on every stack, so a compiled step sees the new value.
    optimizer.learning_rate.assign(value)


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    try:
        optimizer = keras.optimizers.RMSprop(lr=0.5, rho=0.99, epsilon=1e-8)
        print(f"RMSprop(lr=0.5): learning_rate is {get_learning_rate(optimizer):g} (lr ignored)")
    except ValueError as error:
        print(f"RMSprop(lr=0.5): ValueError: {error}")

    # Plain SGD on loss = mean(w * x) with x = 2: the gradient is 2, so w moves by -2 * rate.
    inputs = np.full((4, 1), 2.0, "float32")
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    optimizer = keras.optimizers.SGD(learning_rate=0.1)
    model.compile(optimizer=optimizer, loss=lambda y_true, y_pred: tf.reduce_mean(y_pred, -1))
    for epoch in range(6):
        set_learning_rate(optimizer, cosine_learning_rate(epoch, 0.1, 0.01, period=4))
        before = model.get_weights()[0][0, 0]
        model.train_on_batch(inputs, np.zeros((4, 1), "float32"))
        step = before - model.get_weights()[0][0, 0]
        print(
            f"epoch {epoch}: scheduled {get_learning_rate(optimizer):.4f}, applied {step / 2:.4f}"
        )
    print("multistep:", [multistep_learning_rate(e, 0.1, [2, 4], 0.5) for e in range(6)])

    scheduled = keras.optimizers.SGD(
        learning_rate=keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    )
    try:
        set_learning_rate(scheduled, 0.5)
    except ValueError as error:
        print(f"set_learning_rate on a schedule: ValueError: {error}")


if __name__ == "__main__":
    demo()
