"""Title: Per-layer learning rates: a schedule for each group of layers, in tape loops and fit.

In short:
    classify, trunk = split_variables_by_layer_name(model, "classify")
    optimizers = [keras.optimizers.Adam(1e-4), keras.optimizers.Adam(1e-3)]  # one object per group
    # Every stack: wrap the model for fit; GroupSchedules sets each group's rate every epoch.
    wrapped = PerGroupOptimizerModel(model, [trunk, classify], optimizers)
    wrapped.compile(loss="mse")
    wrapped.fit(x, y, epochs=10, callbacks=[GroupSchedules([trunk_schedule, classify_schedule])])
    # Keras 3.15 and later: keras.optimizers.MultiOptimizer, keyed by each variable's exact path.
    model.compile(optimizer=multi_optimizer(model, [trunk, classify], optimizers), loss="mse")
    # Or in a tape loop: train_step_per_group(model, loss_fn, x, y, [trunk, classify], optimizers)

Problem: The notes end with an open question: "if different layers have different
learning-rate schedules, how do I set them?". A Keras optimizer has one learning rate, and
the obvious fix, one optimizer object called on one group of variables and then on
another, fails on its second group on every stack. Scaling each group's gradients by its
rate under one optimizer looks equivalent and is, for plain SGD only: Adam divides the
scale away again.

Recipe:
    1. Split the trainable variables into groups by layer name, as the notes do with
       `'classify' in layer.name`: `split_variables_by_layer_name(model, "classify")`
       returns (matching, others); each trainable variable is in exactly one group.
    2. (a) One optimizer per group, each with its own rate or schedule, applied in one tape
       step: `train_step_per_group(model, loss_fn, features, targets, groups, optimizers)`.
       Set each group's rate for the epoch with
       `set_group_learning_rates(optimizers, schedules, epoch)`.
    3. (b) Or one plain-SGD optimizer at `learning_rate=1.0` and gradients scaled by each
       group's rate: `train_step_scaled(..., groups, scales, optimizer)`. Only for SGD.
    4. (c) With `fit`: wrap the model in `PerGroupOptimizerModel(model, groups, optimizers)`,
       compile it with the loss, and pass `GroupSchedules(schedules)` as a callback. Its
       `train_step` uses only what Keras 2 and Keras 3 share: `compute_loss(x, y, y_pred,
       sample_weight)`, `apply_gradients` and its own loss tracker.
    5. (d) Keras 3.15 and later: `model.compile(optimizer=multi_optimizer(model, groups,
       optimizers))` builds a `keras.optimizers.MultiOptimizer` whose `OptimizerMap` keys
       every trainable variable by its exact `variable.path`, and plain `fit` trains each
       group with its own optimizer. With `LearningRateScheduler`, write the schedule as
       `f(epoch, lr)` (Pitfalls).

Pitfalls:
    - One optimizer applied to a second set of variables after its first fails on every
      stack, for SGD and Adam alike, even when the second set contains the first; the
      recipe refuses the same optimizer object for two groups with a ValueError.
    - Scaling gradients under one SGD optimizer at rate 1.0 gives bit-identical weights to
      one SGD optimizer per group. Under Adam it does not: a group whose gradients are
      scaled by 0.01 moves as far as the unscaled group, while an Adam optimizer at rate
      0.01 for that group moves it 100 times less.
    - A group at rate 0 stays bit-identical while the other group trains; with a known
      gradient each SGD step is exactly `rate * gradient` for its group.
    - Each group follows its own schedule epoch by epoch, in a tape loop and in `fit`, as
      measured from the applied weight steps.
    - The per-group optimizers create slot variables for their own group only and keep
      them across `fit` calls; the optimizer given to `compile` is never applied.
    - MultiOptimizer in `fit` steps each group by exactly its own SGD rate times the known
      gradient.
    - An `OptimizerMap` pattern must match the whole `variable.path`, and a Sequential's name
      is part of it: "encoder_dense/.*" matches nothing in a Sequential named "sequential"
      ("sequential/encoder_dense/kernel"), so with no error every variable trains at the
      default optimizer's rate. `multi_optimizer` keys each variable by its exact path.
    - `LearningRateScheduler` sets every sub-optimizer of a MultiOptimizer: a schedule
      `f(epoch)` gives every group the same rate, erasing the per-group rates, while
      `f(epoch, lr)` is called with each group's own rate, so `lr * factor` keeps the ratio.
    - A `.keras` round trip restores the MultiOptimizer, its map and its sub-optimizers'
      state: the loaded model and the saved one train on bit-identically.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): reusing an optimizer on other variables
      raises KeyError "The optimizer cannot recognize variable"; Keras 3: ValueError
      "Unknown variable".
    - Optimizers have `apply(gradients, variables)` on Keras 3 only (on Keras 2 it is an
      AttributeError); where it exists it takes the same step as `apply_gradients`, which
      works everywhere: plain SGD moves each variable by -learning_rate * gradient.
    - `keras.optimizers.MultiOptimizer` exists from Keras 3.15 (absent on Keras 2, tf-keras
      and Keras 3.0 to 3.14); there `multi_optimizer` raises NotImplementedError naming the
      release, and route (c) does the same job.
    - `Model.compute_loss` takes (x, y, y_pred, sample_weight) on Keras 2 and on Keras 3.2
      to 3.3; Keras 3.0 to 3.1 add `allow_empty`, 3.4 and later `training`. Passing the four
      positionally works on all of them.
    - The Keras 2 guide's `train_step` (`compiled_loss`, `compiled_metrics.update_state`,
      then every metric's result) logs the batch loss on Keras 2; on Keras 3 it warns that
      both are deprecated and logs the mean prediction as "loss".
    - A `train_step` that calls `compute_loss` and returns `compute_metrics(...)` logs the
      batch loss on Keras 2 and 0.0 on Keras 3: only Keras 3's own `train_step` updates its
      loss tracker. The recipe's `train_step` keeps its own tracker and logs the batch loss
      everywhere.

Sources: TensorFlow guide "Customizing what happens in fit()" (tensorflow.org/guide/keras/
    customizing_what_happens_in_fit: the Keras 2 train_step); Keras guide "Customizing what
    happens in fit() with TensorFlow" (keras.io/guides/custom_train_step_in_tensorflow);
    the reuse errors as users met them: yzhao062/pyod#459 (KeyError),
    mrosol/Nonlincausality#12 (ValueError "Unknown variable"); keras-team/keras#22897
    (MultiOptimizer and OptimizerMap, Keras 3.15: keys are regexes full-matched against
    `variable.path`).

See also:
    - lr_schedules: one schedule for the whole model, on every stack
    - freeze_layers: a group that should not train at all
    - compiled_train_step: the tape step in a tf.function

Run: python -m recipes.per_layer_learning_rates
"""

import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras


def _require_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras Model, got {model!r}")


def split_variables_by_layer_name(model, match):
    """(matching, others): trainable variables of `model.layers` that `match`, and the rest.

    `match` is a substring of the layer name or a predicate `match(layer) -> bool`. Every
    trainable variable of the model lands in exactly one group; an empty group is an error.
    Like the notes' loop it looks at `model.layers`, the top-level layers: a nested model is
    matched by its own name, with all the variables inside it.
    """
    _require_model(model)
    if isinstance(match, str):
        if not match:
            raise ValueError("match='' would match every layer; give a non-empty substring")

        def selected(layer):
            return match in layer.name

    elif callable(match):
        selected = match
    else:
        raise ValueError(f"match must be a substring or a predicate, got match={match!r}")
    names = [layer.name for layer in model.layers]
    chosen = [layer for layer in model.layers if selected(layer)]
    if not chosen:
        raise ValueError(f"match={match!r} matches no layer of {model.name!r}; layers: {names}")
    matching, seen = [], set()
    for layer in chosen:
        for variable in layer.trainable_variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                matching.append(variable)
    others = [variable for variable in model.trainable_variables if id(variable) not in seen]
    if not matching:
        raise ValueError(
            f"match={match!r} selects layers {[layer.name for layer in chosen]} "
            "with no trainable variables: that group would be empty"
        )
    if not others:
        raise ValueError(f"match={match!r} selects every trainable variable: no other group")
    return matching, others


def _check_groups(groups):
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError(f"groups must be a non-empty list of variable lists, got {groups!r}")
    seen = set()
    for index, group in enumerate(groups):
        if not isinstance(group, (list, tuple)) or not group:
            raise ValueError(
                f"groups[{index}] must be a non-empty list of variables, got {group!r}"
            )
        for variable in group:
            if id(variable) in seen:
                raise ValueError(f"groups[{index}] repeats variable {variable.name!r}")
            seen.add(id(variable))


def _check_optimizers(optimizers, groups):
    if not isinstance(optimizers, (list, tuple)) or len(optimizers) != len(groups):
        raise ValueError(f"optimizers must be a list of {len(groups)}, got {optimizers!r}")
    for index, optimizer in enumerate(optimizers):
        if not hasattr(optimizer, "apply_gradients"):
            raise ValueError(f"optimizers[{index}] is not an optimizer: {optimizer!r}")
        # One optimizer object on two groups fails on its second group on every stack.
        if any(optimizer is other for other in optimizers[:index]):
            raise ValueError(f"optimizers[{index}] is used twice: {optimizer!r}; one per group")


def _check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {name}={value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {name}={value!r}")


def _apply_per_group(optimizers, groups, gradients):
    start = 0
    for optimizer, group in zip(optimizers, groups):  # noqa: B905 - AutoGraph on TF 2.12
        part = gradients[start : start + len(group)]
        optimizer.apply_gradients(zip(part, group))  # noqa: B905
        start += len(group)


def train_step_per_group(model, loss_fn, features, targets, groups, optimizers):
    """(a) One tape step; each group's gradients go to that group's own optimizer."""
    _require_model(model)
    _check_groups(groups)
    _check_optimizers(optimizers, groups)
    variables = [variable for group in groups for variable in group]
    with tf.GradientTape() as tape:
        loss = loss_fn(targets, model(features, training=True))
    _apply_per_group(optimizers, groups, tape.gradient(loss, variables))
    return loss


def train_step_scaled(model, loss_fn, features, targets, groups, scales, optimizer):
    """(b) One tape step, one optimizer; each group's gradients multiplied by its scale.

    With `keras.optimizers.SGD(learning_rate=1.0)` the scales are the groups' rates.
    """
    _require_model(model)
    _check_groups(groups)
    if not isinstance(scales, (list, tuple)) or len(scales) != len(groups):
        raise ValueError(f"scales must be a list of {len(groups)} numbers, got {scales!r}")
    for index, scale in enumerate(scales):
        _check_rate(f"scales[{index}]", scale)
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got {optimizer!r}")
    variables = [variable for group in groups for variable in group]
    with tf.GradientTape() as tape:
        loss = loss_fn(targets, model(features, training=True))
    gradients = tape.gradient(loss, variables)
    scaled, start = [], 0
    for group, scale in zip(groups, scales):  # noqa: B905
        scaled.extend(gradient * scale for gradient in gradients[start : start + len(group)])
        start += len(group)
    optimizer.apply_gradients(zip(scaled, variables))  # noqa: B905
    return loss


def set_group_learning_rates(optimizers, schedules, epoch):
    """Sets optimizers[i]'s rate to schedules[i](epoch); returns the rates set."""
    if not isinstance(schedules, (list, tuple)) or not schedules:
        raise ValueError(f"schedules must be a non-empty list of callables, got {schedules!r}")
    if not isinstance(optimizers, (list, tuple)) or len(optimizers) != len(schedules):
        raise ValueError(f"optimizers must be a list of {len(schedules)}, got {optimizers!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got epoch={epoch!r}")
    rates = []
    for index, schedule in enumerate(schedules):
        if not callable(schedule):
            raise ValueError(f"schedules[{index}] must be callable, got {schedule!r}")
        rate = schedule(int(epoch))
        _check_rate(f"schedules[{index}]({epoch})", rate)
        rates.append(float(rate))
    # `learning_rate.assign` works on every stack; `optimizer.lr` and `set_value` do not.
    for optimizer, rate in zip(optimizers, rates):  # noqa: B905
        optimizer.learning_rate.assign(rate)
    return rates


class PerGroupOptimizerModel(keras.Model):
    """(c) Wraps `model` for `fit`: each group of its trainable variables has an optimizer.

    The groups are stored as positions in `model.trainable_variables`, so freeze first.
    """

    def __init__(self, model, groups, optimizers, **kwargs):
        _require_model(model)
        _check_groups(groups)
        _check_optimizers(optimizers, groups)
        positions = {
            id(variable): index for index, variable in enumerate(model.trainable_variables)
        }
        for index, group in enumerate(groups):
            for variable in group:
                if id(variable) not in positions:
                    raise ValueError(
                        f"groups[{index}] holds {variable.name!r}, not trainable in model"
                    )
        super().__init__(**kwargs)
        self.inner = model
        # Positions, not variables: a list of variables on a model is tracked as its weights.
        self.group_positions = [[positions[id(variable)] for variable in group] for group in groups]
        self.group_optimizers = list(optimizers)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=None):
        return self.inner(inputs, training=training)

    @property
    def metrics(self):
        # Listed here so that fit resets the tracker at each epoch, on Keras 2 and 3.
        return [self.loss_tracker]

    def train_step(self, data):
        features, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.inner.trainable_variables
        groups = [[variables[index] for index in group] for group in self.group_positions]
        flat = [variable for group in groups for variable in group]
        with tf.GradientTape() as tape:
            predictions = self(features, training=True)
            # Positional: Keras 3 adds keywords (allow_empty, training) that Keras 2 lacks.
            loss = self.compute_loss(features, targets, predictions, sample_weight)
        _apply_per_group(self.group_optimizers, groups, tape.gradient(loss, flat))
        # Keras 3's compute_loss does not update the logged loss; this tracker does, on both.
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


class GroupSchedules(keras.callbacks.Callback):
    """Sets each group optimizer of a PerGroupOptimizerModel from its schedule every epoch."""

    def __init__(self, schedules):
        super().__init__()
        if not isinstance(schedules, (list, tuple)) or not all(map(callable, schedules)):
            raise ValueError(f"schedules must be a list of callables, got {schedules!r}")
        self.schedules = list(schedules)

    def on_epoch_begin(self, epoch, logs=None):
        set_group_learning_rates(self.model.group_optimizers, self.schedules, epoch)


def multi_optimizer(model, groups, optimizers):
    """(d) Keras 3.15 and later: a MultiOptimizer for `model.compile`, one optimizer a group.

    Each trainable variable is keyed by its exact `variable.path`: a regex must match the
    whole path, Sequential name included, and a miss trains silently at the default rate.
    `groups` must hold every trainable variable of `model` exactly once.
    """
    _require_model(model)
    _check_groups(groups)
    _check_optimizers(optimizers, groups)
    grouped = {id(variable) for group in groups for variable in group}
    trainable = {id(variable) for variable in model.trainable_variables}
    if grouped != trainable:
        left_out = [
            getattr(variable, "path", variable.name)  # Keras 2 variables have no path
            for variable in model.trainable_variables
            if id(variable) not in grouped
        ]
        raise ValueError(
            f"groups must hold every trainable variable of {model.name!r} once; "
            f"left out: {left_out}, {len(grouped - trainable)} not trainable in the model"
        )
    if not hasattr(keras.optimizers, "MultiOptimizer"):
        raise NotImplementedError(
            "keras.optimizers.MultiOptimizer needs Keras 3.15 or later; "
            f"this is Keras {keras.version() if hasattr(keras, 'version') else 2}: "
            "use PerGroupOptimizerModel"
        )
    by_path = {
        variable.path: optimizer
        for group, optimizer in zip(groups, optimizers)  # noqa: B905 - checked above
        for variable in group
    }
    if len(by_path) != len(grouped):
        raise ValueError(f"two variables of {model.name!r} share a path; rename a layer")
    return keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(optimizers[0], by_path))


def build_model():
    """A tiny model with a trunk and a "classify" head, named as in the notes."""
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="tanh", name="trunk_dense")(inputs)
    outputs = keras.layers.Dense(1, name="classify_dense")(hidden)
    return keras.Model(inputs, outputs)


def demo():
    random = np.random.default_rng(1)
    features = random.normal(size=(32, 4)).astype("float32")
    targets = random.normal(size=(32, 1)).astype("float32")
    model = build_model()
    classify, trunk = split_variables_by_layer_name(model, "classify")
    optimizers = [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)]
    wrapped = PerGroupOptimizerModel(model, [trunk, classify], optimizers)
    wrapped.compile(loss="mse")
    schedules = [lambda epoch: 0.0 if epoch < 2 else 0.01, lambda epoch: 0.1 * 0.5**epoch]
    trunk_before = model.get_layer("trunk_dense").kernel.numpy().copy()
    history = wrapped.fit(
        features, targets, epochs=4, verbose=0, callbacks=[GroupSchedules(schedules)]
    )
    print("loss per epoch:", np.round(history.history["loss"], 4))
    print("trunk rate 0 for two epochs, then 0.01; classify halves each epoch")
    moved = not np.array_equal(trunk_before, model.get_layer("trunk_dense").kernel.numpy())
    print("trunk moved after epoch 2:", moved)


if __name__ == "__main__":
    demo()
