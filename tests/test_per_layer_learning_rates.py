"""Tests for recipes/per_layer_learning_rates.py: the steps each group really takes."""

import inspect
import math
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.per_layer_learning_rates import (
    GroupSchedules,
    PerGroupOptimizerModel,
    build_model,
    multi_optimizer,
    set_group_learning_rates,
    split_variables_by_layer_name,
    train_step_per_group,
    train_step_scaled,
)

# With these features the gradient of mean(output) is known exactly: each kernel's gradient
# is the column mean of the features, [4, 5], and each bias's gradient is 1.
FEATURES = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], "float32")
TARGETS = np.zeros((4, 1), "float32")
KERNEL_GRADIENT = np.array([[4.0], [5.0]], "float32")


def mean_output(targets, predictions):
    """A loss whose gradient does not depend on the weights: every step is rate * gradient."""
    return tf.reduce_mean(predictions)


def parallel_model():
    """Two linear branches on the input, summed: a trunk group and a "classify" group."""
    inputs = keras.Input((2,))
    trunk = keras.layers.Dense(1, name="trunk_dense")(inputs)
    head = keras.layers.Dense(1, name="classify_dense")(inputs)
    return keras.Model(inputs, keras.layers.Add(name="sum")([trunk, head]))


def trunk_and_classify(model):
    classify, trunk = split_variables_by_layer_name(model, "classify")
    return [trunk, classify]


def values(group):
    return [variable.numpy().copy() for variable in group]


def kernel_step(before, group):
    """How far the group's kernel moved, per unit of gradient: the rate really applied."""
    return float(np.mean((before[0] - group[0].numpy()) / KERNEL_GRADIENT))


def regression_data():
    random = np.random.default_rng(3)
    features = random.normal(size=(16, 4)).astype("float32")
    return features, random.normal(size=(16, 1)).astype("float32")


def mse(targets, predictions):
    return tf.reduce_mean(tf.square(predictions - targets))


# --- Groups by layer name ------------------------------------------------------------------


def test_split_by_the_notes_substring_puts_every_trainable_variable_in_exactly_one_group():
    model = build_model()
    classify, others = split_variables_by_layer_name(model, "classify")
    by_predicate = split_variables_by_layer_name(model, lambda layer: "classify" in layer.name)
    assert [v.name for v in classify] == [v.name for v in model.get_layer("classify_dense").weights]
    assert [v.name for v in others] == [v.name for v in model.get_layer("trunk_dense").weights]
    assert [id(v) for v in by_predicate[0] + by_predicate[1]] == [id(v) for v in classify + others]
    everything = [id(variable) for variable in model.trainable_variables]
    assert sorted(id(variable) for variable in classify + others) == sorted(everything)
    assert len(set(everything)) == len(classify) + len(others) == 4


def test_split_refuses_an_unmatched_substring_an_empty_group_and_bad_arguments():
    model = build_model()
    with pytest.raises(ValueError, match=r"match='missing' matches no layer.*classify_dense"):
        split_variables_by_layer_name(model, "missing")
    with pytest.raises(ValueError, match=r"match='dense' selects every trainable variable"):
        split_variables_by_layer_name(model, "dense")
    model.get_layer("classify_dense").trainable = False
    with pytest.raises(ValueError, match=r"match='classify'.*no trainable variables"):
        split_variables_by_layer_name(model, "classify")
    with pytest.raises(ValueError, match=r"match=''"):
        split_variables_by_layer_name(model, "")
    with pytest.raises(ValueError, match=r"match=3"):
        split_variables_by_layer_name(model, 3)
    with pytest.raises(ValueError, match=r"model must be a keras Model, got 'classify'"):
        split_variables_by_layer_name("classify", "classify")


# --- (a) one optimizer per group --------------------------------------------------------


def test_sgd_group_at_rate_zero_stays_bit_identical_while_the_other_moves():
    model = build_model()
    trunk, classify = trunk_and_classify(model)
    features, targets = regression_data()
    trunk_before, classify_before = values(trunk), values(classify)
    optimizers = [keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.1)]
    for _ in range(3):
        train_step_per_group(model, mse, features, targets, [trunk, classify], optimizers)
    for before, variable in zip(trunk_before, trunk, strict=True):
        np.testing.assert_array_equal(variable.numpy(), before)
    assert all(
        not np.array_equal(variable.numpy(), before)
        for before, variable in zip(classify_before, classify, strict=True)
    )


def test_each_sgd_step_is_exactly_its_groups_rate_times_the_known_gradient():
    model = parallel_model()
    groups = trunk_and_classify(model)
    rates = [0.05, 0.2]
    before = [values(group) for group in groups]
    optimizers = [keras.optimizers.SGD(rate) for rate in rates]
    train_step_per_group(model, mean_output, FEATURES, TARGETS, groups, optimizers)
    for rate, group, (kernel, bias) in zip(rates, groups, before, strict=True):
        rate = np.float32(rate)
        np.testing.assert_array_equal(group[0].numpy(), kernel - rate * KERNEL_GRADIENT)
        np.testing.assert_array_equal(group[1].numpy(), bias - rate * np.float32(1.0))
    steps = [
        kernel_step(kernel_and_bias, group)
        for kernel_and_bias, group in zip(before, groups, strict=True)
    ]
    assert steps[1] / steps[0] == pytest.approx(rates[1] / rates[0], rel=1e-5)


def test_each_group_follows_its_own_schedule_epoch_by_epoch_in_a_tape_loop():
    model = parallel_model()
    groups = trunk_and_classify(model)
    schedules = [
        lambda epoch: 0.1 * 0.1 ** (epoch >= 2),  # multistep: 0.1, 0.1, 0.01, 0.01
        lambda epoch: 0.05 * (1 + math.cos(math.pi * epoch / 4)),  # cosine from 0.1 down
    ]
    optimizers = [keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0)]
    applied = []
    for epoch in range(4):
        set_group_learning_rates(optimizers, schedules, epoch)
        before = [values(group) for group in groups]
        train_step_per_group(model, mean_output, FEATURES, TARGETS, groups, optimizers)
        applied.append([kernel_step(old, group) for old, group in zip(before, groups, strict=True)])
    expected = [[schedule(epoch) for schedule in schedules] for epoch in range(4)]
    np.testing.assert_allclose(applied, expected, rtol=1e-5)
    assert applied[2][0] < applied[1][0] and applied[3][1] < applied[2][1] < applied[1][1]


# --- (b) one optimizer, scaled gradients -----------------------------------------------------


def two_copies():
    first, second = build_model(), build_model()
    second.set_weights(first.get_weights())
    return first, second


def test_scaled_gradients_under_sgd_at_rate_one_equal_one_sgd_per_group_bit_for_bit():
    per_group_model, scaled_model = two_copies()
    features, targets = regression_data()
    rates = [0.05, 0.2]
    optimizers = [keras.optimizers.SGD(rate) for rate in rates]
    single = keras.optimizers.SGD(1.0)
    per_group_groups = trunk_and_classify(per_group_model)
    scaled_groups = trunk_and_classify(scaled_model)
    for _ in range(3):
        train_step_per_group(per_group_model, mse, features, targets, per_group_groups, optimizers)
        train_step_scaled(scaled_model, mse, features, targets, scaled_groups, rates, single)
    for expected, result in zip(
        per_group_model.get_weights(), scaled_model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(result, expected)


def test_scaled_gradients_under_adam_do_not_slow_the_scaled_group_as_its_own_adam_does():
    per_group_model, scaled_model = parallel_model(), parallel_model()
    scaled_model.set_weights(per_group_model.get_weights())
    per_group_groups = trunk_and_classify(per_group_model)
    scaled_groups = trunk_and_classify(scaled_model)
    per_group_before = [values(group) for group in per_group_groups]
    scaled_before = [values(group) for group in scaled_groups]
    optimizers = [keras.optimizers.Adam(0.1), keras.optimizers.Adam(0.001)]
    train_step_per_group(
        per_group_model, mean_output, FEATURES, TARGETS, per_group_groups, optimizers
    )
    train_step_scaled(
        scaled_model, mean_output, FEATURES, TARGETS, scaled_groups, [1.0, 0.01],
        keras.optimizers.Adam(0.1),
    )  # fmt: skip
    per_group_steps = [
        kernel_step(old, group)
        for old, group in zip(per_group_before, per_group_groups, strict=True)
    ]
    scaled_steps = [
        kernel_step(old, group) for old, group in zip(scaled_before, scaled_groups, strict=True)
    ]
    # One optimizer per group: the classify group moves 100 times less.
    assert per_group_steps[1] / per_group_steps[0] == pytest.approx(0.01, rel=1e-3)
    # Scaled gradients under Adam: it moves as far as the unscaled group.
    assert scaled_steps[1] / scaled_steps[0] == pytest.approx(1.0, rel=1e-3)


# --- (c) fit ------------------------------------------------------------------------------


def test_each_group_follows_its_own_schedule_in_fit():
    model = parallel_model()
    groups = trunk_and_classify(model)
    optimizers = [keras.optimizers.SGD(1.0), keras.optimizers.SGD(1.0)]
    wrapped = PerGroupOptimizerModel(model, groups, optimizers)
    wrapped.compile(loss=mean_output)
    schedules = [lambda epoch: [0.0, 0.0, 0.05, 0.05][epoch], lambda epoch: 0.1 * 0.5**epoch]
    applied, before = [], []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            before[:] = [values(group) for group in groups]

        def on_epoch_end(self, epoch, logs=None):
            applied.append(
                [kernel_step(old, group) for old, group in zip(before, groups, strict=True)]
            )

    wrapped.fit(
        FEATURES, TARGETS, epochs=4, batch_size=4, verbose=0, shuffle=False,
        callbacks=[GroupSchedules(schedules), Record()],
    )  # fmt: skip
    expected = [[schedule(epoch) for schedule in schedules] for epoch in range(4)]
    np.testing.assert_allclose(applied, expected, rtol=1e-5, atol=0)
    assert applied[0][0] == applied[1][0] == 0.0


def test_fit_logs_the_batch_loss_and_keeps_each_group_optimizers_state_for_its_group_only():
    model = build_model()
    groups = trunk_and_classify(model)
    features, targets = regression_data()
    optimizers = [keras.optimizers.SGD(0.1, momentum=0.9) for _ in groups]
    wrapped = PerGroupOptimizerModel(model, groups, optimizers)
    compiled_optimizer = keras.optimizers.SGD(0.5)
    wrapped.compile(loss="mse", optimizer=compiled_optimizer)
    expected_loss = float(mse(targets, model(features)))
    first = wrapped.fit(features, targets, epochs=1, batch_size=16, verbose=0)
    assert first.history["loss"][0] == pytest.approx(expected_loss, rel=1e-5)
    for optimizer, group in zip(optimizers, groups, strict=True):
        slots = [tuple(v.shape) for v in optimizer.variables if len(v.shape) > 0]
        assert slots == [tuple(variable.shape) for variable in group]
    momenta = [[v.numpy().copy() for v in o.variables if len(v.shape) > 0] for o in optimizers]
    wrapped.fit(features, targets, epochs=2, batch_size=16, verbose=0)
    for optimizer, old in zip(optimizers, momenta, strict=True):
        assert int(optimizer.iterations.numpy()) == 3  # not rebuilt by the second fit
        slots = [v.numpy() for v in optimizer.variables if len(v.shape) > 0]
        assert len(slots) == len(old) and all(s.any() for s in old)
        assert not any(np.array_equal(new, older) for new, older in zip(slots, old, strict=True))
    assert int(compiled_optimizer.iterations.numpy()) == 0


def test_fit_passes_sample_weight_to_the_loss():
    model = build_model()
    features, targets = regression_data()
    optimizers = [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)]
    wrapped = PerGroupOptimizerModel(model, trunk_and_classify(model), optimizers)
    wrapped.compile(loss="mse")
    before = model.get_weights()
    zero = np.zeros(len(features), "float32")
    history = wrapped.fit(features, targets, sample_weight=zero, batch_size=16, verbose=0)
    assert history.history["loss"] == [0.0]
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(new, old)
    history = wrapped.fit(features, targets, sample_weight=zero + 1, batch_size=16, verbose=0)
    assert history.history["loss"][0] > 0.1
    assert any(
        not np.array_equal(new, old) for old, new in zip(before, model.get_weights(), strict=True)
    )


# --- Version splits -----------------------------------------------------------------------


def test_one_optimizer_on_a_second_set_of_variables_fails_by_keras_version(version_split):
    first, second = tf.Variable([1.0]), tf.Variable([2.0])
    gradient = tf.constant([1.0])
    outcomes = set()
    for make in (keras.optimizers.SGD, keras.optimizers.Adam):
        for second_set in ([second], [first, second]):
            optimizer = make(learning_rate=0.1)
            optimizer.apply_gradients([(gradient, first)])
            outcomes.add(
                outcome_of(
                    lambda optimizer=optimizer, pairs=[(gradient, v) for v in second_set]: (
                        optimizer.apply_gradients(pairs)
                    ),
                    ["The optimizer cannot recognize variable", "Unknown variable"],
                )
            )
    [observed] = outcomes  # SGD and Adam, a disjoint set and a superset, all alike.
    version_split(
        "one optimizer applied to a second set of variables",
        observed,
        {
            "keras<3": "KeyError: The optimizer cannot recognize variable",
            "keras>=3": "ValueError: Unknown variable",
        },
    )
    model = parallel_model()
    shared = keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match=r"optimizers\[1\] is used twice"):
        train_step_per_group(
            model, mean_output, FEATURES, TARGETS, trunk_and_classify(model), [shared, shared]
        )


def test_optimizer_apply_exists_on_keras_3_only_and_apply_gradients_everywhere(version_split):
    """Both calls take one plain-SGD step, variables - rate * gradients, on two variables."""
    rate = 0.1
    start = [np.array([1.0, 2.0], "float32"), np.array([[3.0], [-4.0]], "float32")]
    gradients = [np.array([0.5, -1.5], "float32"), np.array([[2.0], [0.25]], "float32")]
    # numpy in float32, as the optimizer computes: variable - rate * gradient.
    expected = [
        value - np.float32(rate) * gradient
        for value, gradient in zip(start, gradients, strict=True)
    ]

    def sgd_and_variables():
        return keras.optimizers.SGD(rate), [tf.Variable(value) for value in start]

    optimizer, variables = sgd_and_variables()
    optimizer.apply_gradients(zip(map(tf.constant, gradients), variables, strict=True))
    for variable, value in zip(variables, expected, strict=True):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6)

    optimizer, variables = sgd_and_variables()
    observed = outcome_of(lambda: optimizer.apply(list(map(tf.constant, gradients)), variables))
    if observed == "works":
        for variable, value in zip(variables, expected, strict=True):
            np.testing.assert_allclose(variable.numpy(), value, rtol=1e-6)
        assert int(np.asarray(optimizer.iterations)) == 1
        observed = "takes one step"
    version_split(
        "optimizer.apply(gradients, variables)",
        observed,
        {"keras<3": "AttributeError", "keras>=3": "takes one step"},
    )


def test_compute_loss_parameters_depend_on_the_keras_version(version_split):
    model = build_model()
    model.compile(loss="mse")
    parameters = ", ".join(inspect.signature(model.compute_loss).parameters)
    base = "x, y, y_pred, sample_weight"
    version_split(
        "Model.compute_loss parameters",
        parameters,
        {
            "keras<3": base,
            "keras>=3,<3.2": base + ", allow_empty",
            "keras>=3.2,<3.4": base,
            "keras>=3.4": base + ", training",
        },
    )
    # The recipe passes the four positionally, which every one of these signatures accepts.
    features, targets = regression_data()
    optimizers = [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)]
    wrapped = PerGroupOptimizerModel(model, trunk_and_classify(model), optimizers)
    wrapped.compile(loss="mse")
    expected = float(mse(targets, model(features)))
    history = wrapped.fit(features, targets, batch_size=16, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


class Keras2GuideStep(keras.Model):
    """The Keras 2 guide's train_step: compiled_loss, compiled_metrics, every metric's result."""

    def train_step(self, data):
        features, targets = data
        with tf.GradientTape() as tape:
            predictions = self(features, training=True)
            loss = self.compiled_loss(targets, predictions, regularization_losses=self.losses)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))  # noqa: B905
        self.compiled_metrics.update_state(targets, predictions)
        return {metric.name: metric.result() for metric in self.metrics}


class ComputeMetricsStep(keras.Model):
    """A train_step that calls compute_loss and returns compute_metrics, nothing else."""

    def train_step(self, data):
        features, targets = data
        with tf.GradientTape() as tape:
            predictions = self(features, training=True)
            loss = self.compute_loss(features, targets, predictions, None)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))  # noqa: B905
        return self.compute_metrics(features, targets, predictions, None)


def logged_loss_of_one_step(model_class):
    """What fit logs as "loss" for one full batch, named by the value it equals."""
    inputs = keras.Input((4,))
    model = model_class(inputs, keras.layers.Dense(1)(inputs))
    model.compile(loss="mse", optimizer=keras.optimizers.SGD(0.01))
    features, targets = regression_data()
    predictions = model(features)
    candidates = {
        "the batch loss": float(mse(targets, predictions)),
        "the mean prediction": float(tf.reduce_mean(predictions)),
        "0.0": 0.0,
    }
    assert len({round(value, 3) for value in candidates.values()}) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(features, targets, epochs=1, batch_size=16, verbose=0)
    logged = history.history["loss"][0]
    named = [name for name, value in candidates.items() if logged == pytest.approx(value, rel=1e-5)]
    return (named[0] if named else f"another value {logged}"), caught


def test_keras_2_guide_train_step_logs_the_mean_prediction_as_loss_on_keras_3(version_split):
    logged, caught = logged_loss_of_one_step(Keras2GuideStep)
    deprecated = sorted(
        {
            name
            for name in ("compiled_loss", "compiled_metrics")
            for warning in caught
            if f"`model.{name}()` is deprecated" in str(warning.message)
        }
    )
    warned = f"warns {' and '.join(deprecated)} deprecated" if deprecated else "no warning"
    version_split(
        "Keras 2 guide's train_step (compiled_loss, compiled_metrics.update_state)",
        f"{warned}, logs {logged}",
        {
            "keras<3": "no warning, logs the batch loss",
            "keras>=3": "warns compiled_loss and compiled_metrics deprecated, "
            "logs the mean prediction",
        },
    )


def test_compute_metrics_after_compute_loss_logs_the_loss_on_keras_2_only(version_split):
    logged, _ = logged_loss_of_one_step(ComputeMetricsStep)
    version_split(
        "loss logged by a train_step returning compute_metrics after compute_loss",
        logged,
        {"keras<3": "the batch loss", "keras>=3": "0.0"},
    )
    # The recipe's train_step keeps its own tracker and logs the batch loss on every stack
    # (test_fit_logs_the_batch_loss_and_keeps_each_group_optimizers_state_for_its_group_only).


# --- (d) MultiOptimizer: Keras 3.15 and later ---------------------------------------------


def where_multi_optimizer_exists(check):
    """`check()` where keras.optimizers.MultiOptimizer exists, "absent" on other stacks."""
    return check() if hasattr(keras.optimizers, "MultiOptimizer") else "absent"


def sgd_pair(trunk_rate=0.01, classify_rate=0.1):
    return [keras.optimizers.SGD(trunk_rate), keras.optimizers.SGD(classify_rate)]


def fit_one_step(model, optimizer, epochs=1, callbacks=()):
    """Compiles with `optimizer` and mean_output, fits; returns the variables before fit."""
    model.compile(optimizer=optimizer, loss=mean_output)
    before = [variable.numpy().copy() for variable in model.trainable_variables]
    model.fit(
        FEATURES, TARGETS, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
        callbacks=list(callbacks),
    )  # fmt: skip
    return before


def test_multi_optimizer_exists_from_keras_3_15_and_the_recipe_says_so_before(version_split):
    model = parallel_model()
    built = outcome_of(
        lambda: multi_optimizer(model, trunk_and_classify(model), sgd_pair()),
        ["needs Keras 3.15 or later"],
    )
    present = "present" if hasattr(keras.optimizers, "MultiOptimizer") else "absent"
    version_split(
        "keras.optimizers.MultiOptimizer",
        f"{present}; multi_optimizer: {built}",
        {
            "keras<3.15": "absent; multi_optimizer: NotImplementedError: needs Keras 3.15 or later",
            "keras>=3.15": "present; multi_optimizer: works",
        },
    )


def test_multi_optimizer_in_fit_steps_each_group_by_exactly_its_own_rate(version_split):
    def check():
        model = parallel_model()
        groups = trunk_and_classify(model)
        rates = [0.01, 0.1]
        before = fit_one_step(model, multi_optimizer(model, groups, sgd_pair(*rates)))
        by_variable = {id(v): r for group, r in zip(groups, rates, strict=True) for v in group}
        for variable, old in zip(model.trainable_variables, before, strict=True):
            # mean_output's gradient: the features' column means for a kernel, 1 for a bias.
            gradient = KERNEL_GRADIENT if len(variable.shape) == 2 else np.ones(1, "float32")
            expected = old - np.float32(by_variable[id(variable)]) * gradient
            np.testing.assert_array_equal(variable.numpy(), expected)
        return "each group steps by exactly its own rate times the gradient"

    version_split(
        "MultiOptimizer with one SGD a group, in fit",
        where_multi_optimizer_exists(check),
        {
            "keras<3.15": "absent",
            "keras>=3.15": "each group steps by exactly its own rate times the gradient",
        },
    )


def sequential_encoder():
    return keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(1, name="encoder_dense"), keras.layers.Dense(1)]
    )


def test_optimizer_map_pattern_without_the_sequential_name_matches_nothing(version_split):
    """The intent: freeze the encoder with an SGD at rate 0 and train the rest at 0.1."""

    def check():
        model = sequential_encoder()
        pattern = "encoder_dense/.*"
        matched = [v.path for v in model.trainable_variables if re.fullmatch(pattern, v.path)]
        assert model.trainable_variables[0].path == f"{model.name}/encoder_dense/kernel"
        frozen_and_rest = keras.optimizers.OptimizerMap(
            keras.optimizers.SGD(0.1), {pattern: keras.optimizers.SGD(0.0)}
        )
        before = fit_one_step(model, keras.optimizers.MultiOptimizer(frozen_and_rest))
        encoder_moved = not np.array_equal(model.trainable_variables[0].numpy(), before[0])
        # The recipe keys the exact paths: the encoder stays bit-identical.
        model = sequential_encoder()
        encoder = model.get_layer("encoder_dense").trainable_variables
        head = model.layers[-1].trainable_variables
        before = fit_one_step(model, multi_optimizer(model, [encoder, head], sgd_pair(0.0, 0.1)))
        kept = all(
            np.array_equal(variable.numpy(), old)
            for variable, old in zip(encoder, before, strict=False)
        )
        return (
            f"'{pattern}' matches {len(matched)} paths, the encoder trains: {encoder_moved}; "
            f"exact paths keep it: {kept}"
        )

    version_split(
        "OptimizerMap pattern 'encoder_dense/.*' in a Sequential",
        where_multi_optimizer_exists(check),
        {
            "keras<3.15": "absent",
            "keras>=3.15": "'encoder_dense/.*' matches 0 paths, the encoder trains: True; "
            "exact paths keep it: True",
        },
    )


def test_learning_rate_scheduler_sets_every_sub_optimizer_of_a_multi_optimizer(version_split):
    def rates_after(schedule):
        model = parallel_model()
        optimizers = sgd_pair(0.01, 0.1)
        scheduler = keras.callbacks.LearningRateScheduler(schedule)
        fit_one_step(model, multi_optimizer(model, trunk_and_classify(model), optimizers),
                     callbacks=[scheduler])  # fmt: skip
        return [float(optimizer.learning_rate.numpy()) for optimizer in optimizers]

    def check():
        by_epoch = rates_after(lambda epoch: 0.5)
        by_epoch_and_rate = rates_after(lambda epoch, rate: rate * 0.5)
        halved = [float(np.float32(0.01) / 2), float(np.float32(0.1) / 2)]
        assert by_epoch_and_rate == halved, by_epoch_and_rate
        return f"f(epoch) sets every group to {by_epoch}; f(epoch, lr) halves each group's rate"

    version_split(
        "LearningRateScheduler on a MultiOptimizer",
        where_multi_optimizer_exists(check),
        {
            "keras<3.15": "absent",
            "keras>=3.15": "f(epoch) sets every group to [0.5, 0.5]; "
            "f(epoch, lr) halves each group's rate",
        },
    )


def test_multi_optimizer_survives_a_keras_file_round_trip(tmp_path, version_split):
    def check():
        model = parallel_model()
        optimizers = [keras.optimizers.Adam(0.01), keras.optimizers.Adam(0.1)]
        fit_one_step(model, multi_optimizer(model, trunk_and_classify(model), optimizers))
        model.save(tmp_path / "model.keras")
        loaded = keras.models.load_model(
            tmp_path / "model.keras", custom_objects={"mean_output": mean_output}
        )
        for trained in (model, loaded):
            trained.fit(FEATURES, TARGETS, batch_size=4, epochs=1, shuffle=False, verbose=0)
        same = all(
            np.array_equal(new, old)
            for new, old in zip(loaded.get_weights(), model.get_weights(), strict=True)
        )
        inner = [type(optimizer).__name__ for optimizer in loaded.optimizer.optimizers]
        outer = type(loaded.optimizer).__name__
        return f"loads a {outer} of {inner}; trains on bit-identically: {same}"

    version_split(
        "MultiOptimizer through a .keras save and load",
        where_multi_optimizer_exists(check),
        {
            "keras<3.15": "absent",
            "keras>=3.15": "loads a MultiOptimizer of ['Adam', 'Adam']; "
            "trains on bit-identically: True",
        },
    )


def test_multi_optimizer_names_the_variables_the_groups_leave_out():
    model = parallel_model()
    trunk, classify = trunk_and_classify(model)
    with pytest.raises(ValueError, match=r"every trainable variable of .* left out: \[.*bias"):
        multi_optimizer(model, [trunk, classify[:1]], sgd_pair())
    with pytest.raises(ValueError, match=r"model must be a keras Model, got None"):
        multi_optimizer(None, [trunk, classify], sgd_pair())
    with pytest.raises(ValueError, match=r"optimizers\[1\] is used twice"):
        shared = keras.optimizers.SGD(0.1)
        multi_optimizer(model, [trunk, classify], [shared, shared])


# --- Input validation ---------------------------------------------------------------------


def test_exported_helpers_name_the_bad_argument_and_value():
    model = parallel_model()
    groups = trunk_and_classify(model)
    sgd = [keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1)]
    with pytest.raises(ValueError, match=r"groups\[1\] must be a non-empty list.*\[\]"):
        train_step_per_group(model, mean_output, FEATURES, TARGETS, [groups[0], []], sgd)
    with pytest.raises(ValueError, match=r"groups\[1\] repeats variable"):
        train_step_per_group(model, mean_output, FEATURES, TARGETS, [groups[0], groups[0]], sgd)
    with pytest.raises(ValueError, match=r"optimizers must be a list of 2"):
        train_step_per_group(model, mean_output, FEATURES, TARGETS, groups, sgd[:1])
    with pytest.raises(ValueError, match=r"optimizers\[0\] is not an optimizer: 'sgd'"):
        train_step_per_group(model, mean_output, FEATURES, TARGETS, groups, ["sgd", sgd[1]])
    with pytest.raises(ValueError, match=r"scales\[1\]=-0.5"):
        train_step_scaled(model, mean_output, FEATURES, TARGETS, groups, [1.0, -0.5], sgd[0])
    with pytest.raises(ValueError, match=r"scales\[0\]=nan"):
        train_step_scaled(model, mean_output, FEATURES, TARGETS, groups, [math.nan, 1], sgd[0])
    with pytest.raises(ValueError, match=r"scales must be a list of 2 numbers, got \[1.0\]"):
        train_step_scaled(model, mean_output, FEATURES, TARGETS, groups, [1.0], sgd[0])
    with pytest.raises(ValueError, match=r"schedules\[1\]\(0\)=-1"):
        set_group_learning_rates(sgd, [lambda epoch: 0.1, lambda epoch: -1], 0)
    with pytest.raises(ValueError, match=r"schedules\[0\] must be callable, got 0.1"):
        set_group_learning_rates(sgd, [0.1, lambda epoch: 0.1], 0)
    with pytest.raises(ValueError, match=r"epoch=-1"):
        set_group_learning_rates(sgd, [lambda epoch: 0.1] * 2, -1)
    with pytest.raises(ValueError, match=r"schedules must be a list of callables, got 0.1"):
        GroupSchedules(0.1)
    other = parallel_model()
    with pytest.raises(ValueError, match=r"groups\[0\] holds .*not trainable in model"):
        PerGroupOptimizerModel(model, [trunk_and_classify(other)[0], groups[1]], sgd)
    # numpy scalars are numbers too.
    rates = set_group_learning_rates(sgd, [lambda e: np.float32(0.5), lambda e: np.float64(0)], 0)
    assert rates == [0.5, 0.0]
    assert [float(optimizer.learning_rate.numpy()) for optimizer in sgd] == [0.5, 0.0]
