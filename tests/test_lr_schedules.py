"""Tests for recipes/lr_schedules.py: the rate each step really applies, on every stack.

The applied rate is read from plain-SGD weight updates, never from the optimizer's attribute:
a bias-free Dense(1) with zero kernel, inputs all equal to INPUT_VALUE and the loss
mean(y_pred) has the gradient INPUT_VALUE with respect to its one weight, so one SGD step
moves the weight by exactly -rate * INPUT_VALUE.
"""

import itertools
import logging
import math
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.lr_schedules import (
    cosine_learning_rate,
    get_learning_rate,
    multistep_learning_rate,
    set_learning_rate,
)

INPUT_VALUE = 2.0  # the gradient of mean(w * x) with respect to w
BATCH = 4
# float32 weights: w_new - w_old carries the rounding of w_old and w_new.
RTOL = 1e-5


def mean_prediction_loss(y_true, y_pred):
    """Per-sample loss w * x: its gradient with respect to w is x, known in advance."""
    return tf.reduce_mean(y_pred, axis=-1)


def linear_model():
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )


def batch():
    return np.full((BATCH, 1), INPUT_VALUE, "float32"), np.zeros((BATCH, 1), "float32")


def weight(model):
    return float(model.get_weights()[0][0, 0])


def applied_rates(weights):
    """The rate of each step from consecutive weights: (w_old - w_new) / gradient."""
    return [(old - new) / INPUT_VALUE for old, new in itertools.pairwise(weights)]


def sgd_step(optimizer, variable):
    """One plain-SGD step with gradient INPUT_VALUE; returns the rate it applied."""
    before = float(variable.numpy()[0])
    optimizer.apply_gradients([(tf.constant([INPUT_VALUE]), variable)])
    return (before - float(variable.numpy()[0])) / INPUT_VALUE


def compiled_model(optimizer):
    model = linear_model()
    model.compile(optimizer=optimizer, loss=mean_prediction_loss)
    return model


def fit_and_record_applied_rates(optimizer, epochs, callback):
    """fit with one step per epoch; the rate each epoch applied, and fit's history."""
    model = compiled_model(optimizer)
    weights = [weight(model)]
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: weights.append(weight(model))
    )
    # One batch repeated, one step an epoch: Keras 3 keeps one iterator across the epochs
    # instead of building one per epoch from arrays (a third of the time on Keras 3).
    dataset = tf.data.Dataset.from_tensors(batch()).repeat()
    history = model.fit(
        dataset,
        epochs=epochs,
        steps_per_epoch=1,
        shuffle=False,
        verbose=0,
        callbacks=[callback, record],
    )
    return applied_rates(weights), history.history


# --- The notes' `lr=` keyword -------------------------------------------------------------


@pytest.mark.parametrize("name", ["RMSprop", "Adam", "SGD"])
def test_lr_keyword_is_ignored_on_keras_2_and_refused_on_keras_3(name, version_split, caplog):
    optimizer_class = getattr(keras.optimizers, name)
    default_rate = get_learning_rate(optimizer_class())
    built = []
    with warnings.catch_warnings(record=True) as python_warnings, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        observed = outcome_of(
            lambda: built.append(optimizer_class(lr=0.5)), ["Argument(s) not recognized"]
        )
    if observed == "works":
        rate = get_learning_rate(built[0])
        observed = (
            f"accepted; learning_rate stays the default {rate:g}"
            if rate == default_rate
            else f"accepted; learning_rate={rate:g}"
        )
        # The only sign is a log record: no exception, no Python warning.
        assert [str(warning.message) for warning in python_warnings] == []
        assert any(
            record.name == "absl"
            and record.levelname == "WARNING"
            and "`lr` is deprecated" in record.getMessage()
            for record in caplog.records
        )
    defaults = {"RMSprop": "0.001", "Adam": "0.001", "SGD": "0.01"}
    version_split(
        f"keras.optimizers.{name}(lr=0.5)",
        observed,
        {
            "keras<3": f"accepted; learning_rate stays the default {defaults[name]}",
            "keras>=3": "ValueError: Argument(s) not recognized",
        },
    )


def test_sgd_built_with_lr_steps_at_the_default_rate_on_keras_2(version_split):
    """The weight update, not the attribute: on Keras 2 the step uses 0.01, not 0.5."""
    built = []
    observed = outcome_of(lambda: built.append(keras.optimizers.SGD(lr=0.5)), ["'lr': 0.5"])
    if observed == "works":
        applied = sgd_step(built[0], tf.Variable([0.0]))
        observed = f"a step applies {applied:.6g} * gradient"
        np.testing.assert_allclose(applied, 0.01, rtol=RTOL)
    version_split(
        "keras.optimizers.SGD(lr=0.5): the rate one step applies",
        observed,
        {"keras<3": "a step applies 0.01 * gradient", "keras>=3": "ValueError: 'lr': 0.5"},
    )


def test_learning_rate_keyword_and_positional_rate_apply_on_every_stack(observe):
    for optimizer in (keras.optimizers.SGD(learning_rate=0.5), keras.optimizers.SGD(0.5)):
        np.testing.assert_allclose(sgd_step(optimizer, tf.Variable([0.0])), 0.5, rtol=RTOL)
    for name in ("RMSprop", "Adam"):
        assert get_learning_rate(
            getattr(keras.optimizers, name)(learning_rate=0.5)
        ) == pytest.approx(0.5)
    observe("SGD(learning_rate=0.5) and SGD(0.5): the step applied", "0.5 * gradient")


# --- The notes' getters and setters -------------------------------------------------------


def test_optimizer_lr_exists_only_on_keras_2(version_split):
    optimizer = keras.optimizers.SGD(learning_rate=0.25)
    read = []
    observed = outcome_of(lambda: read.append(float(np.asarray(optimizer.lr))))
    if observed == "works":
        assert read == [pytest.approx(0.25)]
    version_split("optimizer.lr", observed, {"keras<3": "works", "keras>=3": "AttributeError"})


def standalone_keras_set_value(variable, value):
    """`import keras`, then `keras.backend.set_value`: the package named keras, whatever
    `tf.keras` is (TF_USE_LEGACY_KERAS=1 changes `tf.keras` only)."""
    import keras as standalone_keras

    major = 3 if hasattr(standalone_keras, "version") else 2
    return f"import keras is Keras {major}; " + outcome_of(
        lambda: standalone_keras.backend.set_value(variable, value),
        ["has no attribute 'set_value'"],
    )


SET_VALUE_SPELLINGS = {
    "tf.keras.backend.set_value(optimizer.learning_rate, v)": (
        lambda variable, value: outcome_of(
            lambda: tf.keras.backend.set_value(variable, value),
            ["'str' object has no attribute 'name'"],
        ),
        {"keras<3": "works", "keras>=3": "AttributeError: 'str' object has no attribute 'name'"},
    ),
    "import keras; keras.backend.set_value(optimizer.learning_rate, v)": (
        standalone_keras_set_value,
        {
            # TensorFlow 2.16 and later install Keras 3 as `keras`, next to tf-keras too.
            "keras<3 and tf<2.16": "import keras is Keras 2; works",
            "keras<3 and tf>=2.16": (
                "import keras is Keras 3; AttributeError: has no attribute 'set_value'"
            ),
            "keras>=3": "import keras is Keras 3; AttributeError: has no attribute 'set_value'",
        },
    ),
}


@pytest.mark.parametrize("spelling", list(SET_VALUE_SPELLINGS))
def test_backend_set_value_on_learning_rate_depends_on_the_spelling_and_the_stack(
    spelling, version_split
):
    set_value, known = SET_VALUE_SPELLINGS[spelling]
    optimizer = keras.optimizers.SGD(learning_rate=0.25)
    observed = set_value(optimizer.learning_rate, 0.5)
    # Where it works, the next step applies the new rate; where it fails, the old one stays.
    expected_rate = 0.5 if observed.endswith("works") else 0.25
    np.testing.assert_allclose(sgd_step(optimizer, tf.Variable([0.0])), expected_rate, rtol=RTOL)
    version_split(spelling, observed, known)


def step_schedule():
    """0.1 at step 0, 0.01 at step 1, 0.001 from step 2 on."""
    return keras.optimizers.schedules.PiecewiseConstantDecay([0, 1], [0.1, 0.01, 0.001])


def test_schedule_built_optimizer_applies_schedule_of_k_at_step_k_on_every_stack(observe):
    schedule = step_schedule()
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    variable = tf.Variable([0.0])
    for step in range(4):
        assert int(np.asarray(optimizer.iterations)) == step
        np.testing.assert_allclose(get_learning_rate(optimizer), float(schedule(step)), rtol=1e-7)
        np.testing.assert_allclose(sgd_step(optimizer, variable), float(schedule(step)), rtol=RTOL)
    observe("optimizer built on a schedule: the rate of step k", "schedule(k)")


def test_schedule_built_optimizer_refuses_learning_rate_attribute_on_every_stack(observe):
    optimizer = keras.optimizers.SGD(learning_rate=step_schedule())

    def set_attribute():
        optimizer.learning_rate = 0.5

    with pytest.raises(TypeError, match="not settable"):
        set_attribute()
    observe("optimizer built on a schedule: optimizer.learning_rate = v", "TypeError: not settable")


SCHEDULE_SETTERS = {
    "optimizer.learning_rate.assign(v)": lambda optimizer, value: optimizer.learning_rate.assign(
        value
    ),
    "tf.keras.backend.set_value(optimizer.learning_rate, v)": (
        lambda optimizer, value: tf.keras.backend.set_value(optimizer.learning_rate, value)
    ),
}


@pytest.mark.parametrize("spelling", list(SCHEDULE_SETTERS))
def test_schedule_built_optimizer_assign_or_set_value_depends_on_keras_version(
    spelling, version_split
):
    schedule = step_schedule()
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    variable = tf.Variable([0.0])
    sgd_step(optimizer, variable)
    observed = outcome_of(
        lambda: SCHEDULE_SETTERS[spelling](optimizer, 5.0), ["has no attribute 'assign'"]
    )
    applied = sgd_step(optimizer, variable)
    if observed == "works":
        assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(float(schedule(1)))
        if np.isclose(applied, float(schedule(1)), rtol=RTOL):
            observed = "accepted, then overwritten by the schedule at the next step"
        elif np.isclose(applied, 5.0, rtol=RTOL):
            observed = "accepted and applied"
    else:
        np.testing.assert_allclose(applied, float(schedule(1)), rtol=RTOL)
    version_split(
        f"optimizer built on a schedule: {spelling}",
        observed,
        {
            "keras<3": "accepted, then overwritten by the schedule at the next step",
            "keras>=3": "AttributeError: has no attribute 'assign'",
        },
    )


def test_schedule_built_optimizer_learning_rate_reads_last_or_next_step(version_split):
    schedule = step_schedule()
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    sgd_step(optimizer, tf.Variable([0.0]))
    read = float(np.asarray(optimizer.learning_rate))
    last, following = float(schedule(0)), float(schedule(1))
    observed = {
        last: "the rate of the step just taken",
        following: "the rate of the next step",
    }.get(read, repr(read))
    # get_learning_rate answers the next step's rate everywhere.
    assert get_learning_rate(optimizer) == following
    version_split(
        "optimizer built on a schedule: optimizer.learning_rate after one step",
        observed,
        {"keras<3": "the rate of the step just taken", "keras>=3": "the rate of the next step"},
    )


def test_set_learning_rate_refuses_a_schedule_built_optimizer_with_a_value_error(observe):
    optimizer = keras.optimizers.SGD(learning_rate=step_schedule())
    with pytest.raises(
        ValueError, match=r"LearningRateSchedule \(PiecewiseConstantDecay\).*value=0.5"
    ):
        set_learning_rate(optimizer, 0.5)
    # Nothing changed: the schedule still drives the first step.
    np.testing.assert_allclose(sgd_step(optimizer, tf.Variable([0.0])), 0.1, rtol=RTOL)
    observe("set_learning_rate on a schedule-built optimizer", "ValueError")


def test_get_and_set_learning_rate_round_trip_and_accept_numpy_scalars(observe):
    optimizer = keras.optimizers.Adam(learning_rate=0.001)
    set_learning_rate(optimizer, np.float32(0.25))
    assert get_learning_rate(optimizer) == 0.25
    set_learning_rate(optimizer, np.int64(0))
    assert get_learning_rate(optimizer) == 0.0
    observe("set_learning_rate / get_learning_rate round trip", "works")


# --- fit with callbacks --------------------------------------------------------------------


def history_rate_key(history):
    return next(key for key in ("lr", "learning_rate") if key in history)


def test_learning_rate_scheduler_sets_the_rate_each_epoch_applies(version_split):
    def schedule(epoch, rate):
        return multistep_learning_rate(epoch, 0.1, milestones=[2, 4], gamma=0.5)

    rates, history = fit_and_record_applied_rates(
        keras.optimizers.SGD(learning_rate=1.0), 6, keras.callbacks.LearningRateScheduler(schedule)
    )
    expected = [multistep_learning_rate(epoch, 0.1, [2, 4], 0.5) for epoch in range(6)]
    assert expected == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    np.testing.assert_allclose(rates, expected, rtol=RTOL)
    key = history_rate_key(history)
    np.testing.assert_allclose(np.asarray(history[key], "float64"), expected, rtol=RTOL)
    version_split(
        "fit history key of the rate set by LearningRateScheduler",
        key,
        {"keras<3": "lr", "keras>=3": "learning_rate"},
    )


def test_reduce_lr_on_plateau_halves_the_rate_the_next_epochs_apply(version_split):
    """min_delta=1 makes no epoch after the first an improvement: patience 2, then x0.5."""
    callback = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=2, min_delta=1.0
    )
    rates, history = fit_and_record_applied_rates(
        keras.optimizers.SGD(learning_rate=0.1), 7, callback
    )
    # Epoch 0 sets the best loss; epochs 1 and 2 do not improve on it by 1, so the rate halves
    # after epoch 2 and again after epoch 5 (the wait restarts at each reduction).
    expected = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    np.testing.assert_allclose(rates, expected, rtol=RTOL)
    key = history_rate_key(history)
    # The history logs the rate each epoch used: the callback reads it before reducing it.
    np.testing.assert_allclose(np.asarray(history[key], "float64"), expected, rtol=RTOL)
    version_split(
        "fit history key of the rate set by ReduceLROnPlateau",
        key,
        {"keras<3": "lr", "keras>=3": "learning_rate"},
    )


# --- Manual schedules in train_on_batch and tape loops -------------------------------------


def test_train_on_batch_applies_the_cosine_rate_set_before_each_epoch(observe):
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    model = compiled_model(optimizer)
    inputs, targets = batch()
    expected = [cosine_learning_rate(epoch, 0.1, 0.01, period=4) for epoch in range(6)]
    weights = [weight(model)]
    for rate in expected:
        set_learning_rate(optimizer, rate)
        model.train_on_batch(inputs, targets)
        weights.append(weight(model))
    np.testing.assert_allclose(applied_rates(weights), expected, rtol=RTOL)
    assert len(set(expected)) == 5  # the rate really changed every epoch until the floor
    observe("train_on_batch + set_learning_rate: the rate applied", "the one set")


def test_compiled_tape_loop_applies_the_multistep_rate_set_before_each_epoch(observe):
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    model = linear_model()
    inputs, _ = batch()

    @tf.function
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        # Autograph on TF 2.12 rejects zip(strict=...).
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905

    expected = [multistep_learning_rate(epoch, 0.2, [1, 3], 0.1) for epoch in range(5)]
    weights = [weight(model)]
    traces_after_first_step = None
    for rate in expected:
        set_learning_rate(optimizer, rate)
        train_step(tf.constant(inputs))
        weights.append(weight(model))
        if traces_after_first_step is None:
            traces_after_first_step = train_step.experimental_get_tracing_count()
    np.testing.assert_allclose(applied_rates(weights), expected, rtol=RTOL)
    # No retrace when the rate changes: it is a variable the compiled step reads, not a
    # constant baked into the graph.
    assert train_step.experimental_get_tracing_count() == traces_after_first_step
    observe(
        "tf.function tape loop + set_learning_rate: the rate applied", "the one set, no retrace"
    )


# --- Schedule objects against the manual formulas ------------------------------------------


def assert_cosine_decay_matches(eta_max, eta_min, period, steps):
    """CosineDecay computes in float32: within 1e-6 * eta_max of the float64 formula."""
    schedule = keras.optimizers.schedules.CosineDecay(
        eta_max, decay_steps=period, alpha=eta_min / eta_max
    )
    for step in steps:
        # One step at a time, as the optimizer calls it (a vector of steps rounds otherwise).
        np.testing.assert_allclose(
            float(schedule(step)),
            cosine_learning_rate(step, eta_max, eta_min, period),
            atol=1e-6 * eta_max,
            rtol=0,
        )


def test_cosine_decay_equals_cosine_learning_rate_step_by_step(observe):
    assert_cosine_decay_matches(0.1, 0.004, 7, range(7 + 3))
    observe("CosineDecay vs cosine_learning_rate", "equal step by step within 1e-6 * eta_max")


@st.composite
def cosine_decay_configurations(draw):
    eta_max = draw(st.floats(1e-4, 10.0))
    eta_min = eta_max * draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    period = draw(st.integers(1, 200))
    # One step per example (an eager call each); the test above covers every step of one.
    return eta_max, eta_min, period, [draw(st.integers(0, period + 2))]


@hypothesis.given(cosine_decay_configurations())
def test_cosine_decay_equals_cosine_learning_rate_for_any_configuration(configuration):
    assert_cosine_decay_matches(*configuration)


def test_piecewise_constant_decay_switches_one_step_after_its_boundary(observe):
    base, milestones, gamma = 0.1, [3, 5], 0.1
    values = [multistep_learning_rate(m, base, milestones, gamma) for m in [0] + milestones]
    shifted = keras.optimizers.schedules.PiecewiseConstantDecay([m - 1 for m in milestones], values)
    naive = keras.optimizers.schedules.PiecewiseConstantDecay(milestones, values)
    # The schedule holds its values in float32: it returns the multistep rate so rounded.
    for step in range(8):
        expected = np.float32(multistep_learning_rate(step, base, milestones, gamma))
        assert np.asarray(shifted(step)) == expected
    for milestone in milestones:
        # At the milestone itself the boundaries-as-milestones schedule is one step late.
        late = np.float32(multistep_learning_rate(milestone - 1, base, milestones, gamma))
        assert np.asarray(naive(milestone)) == late
        on_time = np.float32(multistep_learning_rate(milestone, base, milestones, gamma))
        assert np.asarray(naive(milestone + 1)) == on_time
        assert late != on_time
    observe("PiecewiseConstantDecay at step == boundary", "still the earlier value")


# --- The notes' cosine bug ------------------------------------------------------------------


def notes_cosine_rate_with_batch_index(i, eta_max, eta_min, epochs):
    """The notes' form: the batch index `i` where the epoch is meant."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1 + math.cos(math.pi * i / epochs))


class NotesCosineCallback(keras.callbacks.Callback):
    """The notes' loop: before every batch, set the rate from the batch index fit passes.

    The notes set it with `K.set_value(model.optimizer.lr, ...)`, which fails on Keras 3;
    `set_learning_rate` sets the same value on every stack.
    """

    def __init__(self, eta_max, eta_min, epochs):
        super().__init__()
        self.eta_max, self.eta_min, self.epochs = eta_max, eta_min, epochs

    def on_train_batch_begin(self, batch, logs=None):
        rate = notes_cosine_rate_with_batch_index(batch, self.eta_max, self.eta_min, self.epochs)
        set_learning_rate(self.model.optimizer, rate)


def test_notes_cosine_with_the_batch_index_restarts_every_epoch_and_climbs_back(observe):
    eta_max, eta_min, epochs, batches_per_epoch = 0.1, 0.04, 2, 4
    model = compiled_model(keras.optimizers.SGD(learning_rate=1.0))
    weights = [weight(model)]
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: weights.append(weight(model))
    )
    inputs = np.full((BATCH * batches_per_epoch, 1), INPUT_VALUE, "float32")
    model.fit(
        inputs,
        np.zeros_like(inputs),
        epochs=epochs,
        batch_size=BATCH,
        shuffle=False,
        verbose=0,
        callbacks=[NotesCosineCallback(eta_max, eta_min, epochs), record],
    )
    # The rate each step applied, from the weight updates: one row per epoch.
    applied = np.reshape(applied_rates(weights), (epochs, batches_per_epoch))
    # fit passes the batch index within the epoch, so every epoch starts again at eta_max
    # and applies the same sequence: no decay across epochs.
    np.testing.assert_allclose(applied[:, 0], eta_max, rtol=RTOL)
    for later_epoch in applied[1:]:
        np.testing.assert_allclose(later_epoch, applied[0], rtol=RTOL)
    # Within an epoch it reaches eta_min at batch `epochs`, then climbs back up.
    np.testing.assert_allclose(applied[0, epochs], eta_min, rtol=RTOL)
    assert applied[0, epochs + 1] > 1.2 * eta_min
    # The intended schedule has decayed by the last epoch; the notes' starts at eta_max again.
    assert applied[-1, 0] > 1.2 * cosine_learning_rate(epochs - 1, eta_max, eta_min, epochs)
    observe("notes' cosine with the batch index", "restarts each epoch, climbs back within it")


# --- Properties -----------------------------------------------------------------------------

rates = st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False)


@st.composite
def cosine_arguments(draw):
    eta_min, eta_max = sorted((draw(rates), draw(rates)))
    return eta_max, eta_min, draw(st.integers(1, 200))


@hypothesis.given(cosine_arguments())
def test_cosine_stays_in_bounds_never_increases_and_hits_both_ends_exactly(arguments):
    eta_max, eta_min, period = arguments
    sequence = [
        cosine_learning_rate(epoch, eta_max, eta_min, period) for epoch in range(period + 3)
    ]
    assert all(eta_min <= rate <= eta_max for rate in sequence)
    assert all(later <= earlier for earlier, later in itertools.pairwise(sequence))
    assert sequence[0] == eta_max
    assert sequence[period:] == [eta_min] * 3


@hypothesis.given(
    base=st.floats(1e-6, 10.0),
    gamma=st.floats(0.01, 2.0),
    milestones=st.lists(st.integers(1, 60), min_size=0, max_size=6, unique=True).map(sorted),
)
def test_multistep_multiplies_by_gamma_exactly_at_each_milestone_and_nowhere_else(
    base, gamma, milestones
):
    sequence = [multistep_learning_rate(epoch, base, milestones, gamma) for epoch in range(65)]
    assert sequence[0] == base
    for epoch in range(1, 65):
        if epoch in milestones:
            assert sequence[epoch] == sequence[epoch - 1] * gamma
        else:
            assert sequence[epoch] == sequence[epoch - 1]


# --- Input validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: multistep_learning_rate(-1, 0.1, [2]), r"epoch=-1"),
        (lambda: multistep_learning_rate(1.5, 0.1, [2]), r"epoch=1.5"),
        (lambda: multistep_learning_rate(0, -0.1, [2]), r"base_rate=-0.1"),
        (lambda: multistep_learning_rate(0, float("nan"), [2]), r"base_rate=nan"),
        (lambda: multistep_learning_rate(0, 0.1, [3, 2]), r"milestones=\[3, 2\]"),
        (lambda: multistep_learning_rate(0, 0.1, [2, 2]), r"milestones=\[2, 2\]"),
        (lambda: multistep_learning_rate(0, 0.1, [0]), r"milestones=\[0\]"),
        (lambda: multistep_learning_rate(0, 0.1, 3), r"milestones=3"),
        (lambda: multistep_learning_rate(0, 0.1, [2], gamma=0), r"gamma=0"),
        (lambda: multistep_learning_rate(0, 0.1, [2], gamma=-0.5), r"gamma=-0.5"),
        (lambda: cosine_learning_rate(0, 0.1, eta_min=0.5), r"eta_min=0.5 > eta_max=0.1"),
        (lambda: cosine_learning_rate(0, -0.1, eta_min=-0.2), r"eta_max=-0.1"),
        (lambda: cosine_learning_rate(0, 0.1, period=0), r"period=0"),
        (lambda: cosine_learning_rate(0, 0.1, period=2.5), r"period=2.5"),
        (lambda: cosine_learning_rate(0, True), r"eta_max.*True"),
        (lambda: set_learning_rate(keras.optimizers.SGD(0.1), -0.01), r"value=-0.01"),
        (lambda: set_learning_rate(keras.optimizers.SGD(0.1), float("inf")), r"value=inf"),
        (lambda: set_learning_rate("sgd", 0.1), r"optimizer='sgd'"),
        (lambda: get_learning_rate(None), r"optimizer=None"),
    ],
)
def test_helpers_reject_bad_input_naming_the_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_helpers_accept_numpy_scalars():
    assert (
        multistep_learning_rate(np.int64(3), np.float32(0.5), [np.int32(2)], np.float64(0.5))
        == 0.25
    )
    assert cosine_learning_rate(np.int32(4), np.float64(0.2), np.float32(0.0), np.int64(4)) == 0.0
