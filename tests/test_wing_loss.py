"""Tests for recipes/wing_loss.py: the paper's formula, its properties, training and saving."""

import math
import os
import re
import zipfile

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.wing_loss import WingLoss, wing_loss

# Registration is global for the whole pytest session, so the package name is unique.
REGISTRATION_PACKAGE = "keras_recipes_test_wing_loss"


@keras.utils.register_keras_serializable(package=REGISTRATION_PACKAGE)
class RegisteredWingLoss(WingLoss):
    """WingLoss registered under a test-only name, to load without custom_objects."""


# As if defined in a training script: Keras records no importable module for a class from
# __main__, so only the registry can find it again.
RegisteredWingLoss.__module__ = "__main__"


# `observe` only records a string per behaviour, so sharing it across examples is safe.
OBSERVE_IN_HYPOTHESIS = hypothesis.settings(
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture]
)

# --- Strategies -----------------------------------------------------------------------

# w and epsilon are float32-exact, so the numpy expectations and TensorFlow's float32
# comparison `|x| < w` use the same numbers.
widths = st.floats(float(np.float32(0.1)), 50.0, width=32)
epsilons = st.floats(float(np.float32(0.1)), 20.0, width=32)
shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5)
bounded_floats = st.floats(
    -100.0, 100.0, width=32, allow_nan=False, allow_infinity=False, allow_subnormal=False
)
# Integer-valued targets keep y_pred - y_true free of subnormals (see the float32 pitfall).
integer_targets = st.integers(-10, 10).map(float)


def float32_arrays(shape, elements):
    return hnp.arrays(np.float32, shape, elements=elements)


@st.composite
def target_and_prediction(draw, elements=bounded_floats):
    shape = draw(shapes)
    return draw(float32_arrays(shape, elements)), draw(float32_arrays(shape, elements))


def paper_wing(y_true, y_pred, w, epsilon):
    """Numpy transcription of Feng et al., eq. (5), in float64, for every element."""
    x = np.abs(np.asarray(y_pred, np.float64) - np.asarray(y_true, np.float64))
    constant = w - w * np.log(1.0 + w / epsilon)
    return np.where(x < w, w * np.log(1.0 + x / epsilon), x - constant)


def paper_wing_loss(y_true, y_pred, w, epsilon):
    return np.mean(paper_wing(y_true, y_pred, w, epsilon))


def per_element_losses(y_true, y_pred, w, epsilon):
    """Each element's own loss: WingLoss without reduction on one element per row."""
    loss = WingLoss(w=w, epsilon=epsilon, reduction="none")
    return loss(y_true.reshape(-1, 1), y_pred.reshape(-1, 1)).numpy().reshape(y_pred.shape)


def derivative_of_each_element_loss(y_true, y_pred, w, epsilon):
    """d(loss of element i)/d(y_pred[i]) for every i, with no reduction in the way.

    Each row of WingLoss(reduction="none") holds one element, so its value is that element's
    loss (a mean over one coordinate divides by 1) and depends on that element alone.
    """
    prediction = tf.constant(y_pred.reshape(-1, 1))
    with tf.GradientTape() as tape:
        tape.watch(prediction)
        losses = WingLoss(w=w, epsilon=epsilon, reduction="none")(y_true.reshape(-1, 1), prediction)
    return tape.gradient(losses, prediction).numpy().reshape(y_pred.shape)


def wing_loss_gradient(y_true, y_pred, w, epsilon):
    """d(wing_loss)/d(y_pred): the gradient of the mean over every element."""
    prediction = tf.constant(y_pred)
    with tf.GradientTape() as tape:
        tape.watch(prediction)
        loss = wing_loss(y_true, prediction, w=w, epsilon=epsilon)
    return tape.gradient(loss, prediction).numpy()


def per_element_gradient(y_true, y_pred, w, epsilon):
    """d(sum of per-element losses)/d(y_pred): the mean's gradient times the element count."""
    return wing_loss_gradient(y_true, y_pred, w, epsilon) * y_pred.size


def landmark_data(samples=64, coordinates=4):
    random = np.random.default_rng(0)
    inputs = random.normal(size=(samples, 4)).astype("float32")
    landmarks = (inputs @ random.normal(size=(4, coordinates))).astype("float32")
    return inputs, landmarks


def landmark_regressor(coordinates=4):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(coordinates)])


# --- The formula and its properties ---------------------------------------------------


@hypothesis.given(target_and_prediction(), widths, epsilons)
def test_wing_loss_agrees_with_numpy_transcription_of_the_paper(arrays, w, epsilon):
    y_true, y_pred = arrays
    expected = paper_wing_loss(y_true, y_pred, w, epsilon)
    actual = wing_loss(y_true, y_pred, w=w, epsilon=epsilon).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


@st.composite
def targets_with_some_exact_predictions(draw):
    """y_true, a mask of elements predicted exactly, and y_pred off by >= 1e-4 elsewhere."""
    shape = draw(shapes)
    y_true = draw(float32_arrays(shape, st.floats(-10.0, 10.0, width=32, allow_subnormal=False)))
    exact = draw(hnp.arrays(np.bool_, shape))
    magnitudes = draw(float32_arrays(shape, st.floats(float(np.float32(1e-4)), 10.0, width=32)))
    signs = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([-1.0, 1.0])))
    y_pred = np.where(exact, y_true, y_true + signs * magnitudes).astype(np.float32)
    return y_true, y_pred


@OBSERVE_IN_HYPOTHESIS
@hypothesis.given(arrays=targets_with_some_exact_predictions(), w=widths, epsilon=epsilons)
def test_each_element_loss_is_zero_exactly_when_exact_and_positive_when_off_by_1e_4(
    observe, arrays, w, epsilon
):
    """Element by element: 0.0 where prediction equals target, > 0 where it is off by >= 1e-4."""
    y_true, y_pred = arrays
    # ulp(10) in float32 is about 1e-6, so every perturbed element really differs.
    realized_error = y_pred.astype(np.float64) - y_true.astype(np.float64)
    assert np.all((realized_error == 0) | (np.abs(realized_error) > 9e-5))
    assert wing_loss(y_true, y_true.copy(), w=w, epsilon=epsilon).numpy() == 0.0
    losses = per_element_losses(y_true, y_pred, w, epsilon)
    assert losses.shape == y_pred.shape
    np.testing.assert_array_equal(losses == 0.0, realized_error == 0)
    assert np.all(losses[realized_error != 0] > 0.0)
    loss = wing_loss(y_true, y_pred, w=w, epsilon=epsilon).numpy()
    assert (loss > 0.0) == bool(np.any(realized_error != 0))
    observe("loss with prediction == target", "exactly 0.0")


def test_the_smallest_error_at_the_extreme_w_and_epsilon_still_has_a_positive_loss(observe):
    """The corner of the claim: |error| = 1e-4 with the smallest w and the largest epsilon."""
    for w, epsilon in [(np.float32(0.1), 20.0), (np.float32(0.1), 0.1), (50.0, 20.0)]:
        y_true = np.array([0.0, 0.0, 7.0, -3.0], np.float32)
        errors = np.array([1e-4, -1e-4, 1e-4, -1e-4], np.float32)
        y_pred = (y_true + errors).astype(np.float32)
        realized_error = y_pred.astype(np.float64) - y_true.astype(np.float64)
        assert np.all(np.abs(realized_error) > 9e-5)
        losses = per_element_losses(y_true, y_pred, float(w), epsilon)
        assert np.all(losses > 0.0), (w, epsilon, losses)
    observe("each element's loss for |error| >= 1e-4 (w in [0.1, 50], eps in [0.1, 20])", "> 0")


def test_float32_errors_below_the_smallest_normal_times_epsilon_give_exactly_zero(observe):
    """TensorFlow on CPU flushes subnormal float32 results to zero; numpy does not."""
    epsilon = 2.0
    smallest_normal = np.finfo(np.float32).tiny  # about 1.18e-38
    for error, flushed_to_zero in [(1e-39, True), (2e-38, True), (3e-38, False), (1e-37, False)]:
        y_true = np.zeros(1, np.float32)
        y_pred = np.array([error], np.float32)
        assert y_pred[0] != y_true[0]
        numpy_float32 = np.float32(10.0) * np.log1p(y_pred / np.float32(epsilon))
        assert numpy_float32[0] > 0.0
        loss = wing_loss(y_true, y_pred, w=10.0, epsilon=epsilon).numpy()
        assert (error / epsilon < smallest_normal) == flushed_to_zero
        if flushed_to_zero:
            assert loss == 0.0, error
        else:
            assert loss > 0.0, error
    observe("float32 error 1e-39 (subnormal), epsilon 2", "loss exactly 0.0 (flushed)")


@hypothesis.given(target_and_prediction(), widths, epsilons)
def test_wing_loss_is_never_negative(arrays, w, epsilon):
    y_true, y_pred = arrays
    assert wing_loss(y_true, y_pred, w=w, epsilon=epsilon).numpy() >= 0.0


@hypothesis.given(target_and_prediction(), widths, epsilons)
def test_wing_loss_is_symmetric_in_the_sign_of_the_error(arrays, w, epsilon):
    """Swapping target and prediction negates the error exactly, so the loss is bitwise equal."""
    y_true, y_pred = arrays
    forward = wing_loss(y_true, y_pred, w=w, epsilon=epsilon).numpy()
    swapped = wing_loss(y_pred, y_true, w=w, epsilon=epsilon).numpy()
    assert forward == swapped
    zeros = np.zeros_like(y_pred)
    assert (
        wing_loss(zeros, y_pred, w=w, epsilon=epsilon).numpy()
        == wing_loss(zeros, -y_pred, w=w, epsilon=epsilon).numpy()
    )


@hypothesis.given(widths, epsilons)
def test_wing_loss_is_continuous_at_abs_error_equal_to_w(w, epsilon):
    """Just below w (log piece), at w and just above (linear piece) all meet w*ln(1+w/eps)."""
    w32 = np.float32(w)
    errors = np.array(
        [np.nextafter(w32, np.float32(0)), w32, np.nextafter(w32, np.float32(np.inf))],
        np.float32,
    )
    limit = w * math.log(1.0 + w / epsilon)
    for sign in (1.0, -1.0):
        values = [
            wing_loss(
                np.zeros(1, np.float32),
                np.array([sign * error], np.float32),
                w=w,
                epsilon=epsilon,
            )
            for error in errors
        ]
        np.testing.assert_allclose([v.numpy() for v in values], limit, rtol=1e-5, atol=1e-6)
        below, _, above = (v.numpy() for v in values)
        assert abs(above - below) <= 1e-5 * limit + 1e-6


@st.composite
def errors_beyond_w(draw):
    w = draw(widths)
    shape = draw(shapes)
    y_true = draw(float32_arrays(shape, integer_targets))
    extra = draw(float32_arrays(shape, st.floats(float(np.float32(1e-2)), 50.0, width=32)))
    signs = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([-1.0, 1.0])))
    y_pred = (y_true + signs * (np.float32(w) + extra)).astype(np.float32)
    return w, y_true, y_pred


@OBSERVE_IN_HYPOTHESIS
@hypothesis.given(drawn=errors_beyond_w(), epsilon=epsilons)
def test_gradient_beyond_w_is_exactly_the_sign_per_element_and_sign_over_n_for_the_mean(
    observe, drawn, epsilon
):
    w, y_true, y_pred = drawn
    realized_error = y_pred - y_true
    assert np.all(np.abs(realized_error) > np.float32(w))
    # Exact equality: the linear piece |x| - C has derivative sign(x), with no rounding.
    each = derivative_of_each_element_loss(y_true, y_pred, w, epsilon)
    np.testing.assert_array_equal(each, np.sign(realized_error))
    # The mean over N elements scales that by the float32 1/N TensorFlow computes.
    one_over_n = np.float32(1.0) / np.float32(y_pred.size)
    np.testing.assert_array_equal(
        wing_loss_gradient(y_true, y_pred, w, epsilon), np.sign(realized_error) * one_over_n
    )
    observe("per-element gradient beyond w", "exactly sign(error); the mean's exactly sign/N")


@hypothesis.given(
    shapes.flatmap(
        lambda shape: st.tuples(
            float32_arrays(shape, integer_targets), float32_arrays(shape, bounded_floats)
        )
    ),
    widths,
    epsilons,
)
def test_gradient_is_w_over_epsilon_plus_abs_error_inside_w_and_sign_beyond(arrays, w, epsilon):
    y_true, offsets = arrays
    y_pred = (y_true + offsets).astype(np.float32)
    # numpy float32 subtraction is the same IEEE operation TensorFlow performs.
    realized_error = y_pred - y_true
    absolute_error = np.abs(realized_error).astype(np.float64)
    expected = np.where(
        absolute_error < np.float32(w),
        w / (epsilon + absolute_error) * np.sign(realized_error),
        np.sign(realized_error),
    )
    gradient = per_element_gradient(y_true, y_pred, w, epsilon)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5, atol=1e-6)


def test_gradient_is_exactly_zero_at_zero_error_but_w_over_epsilon_beside_it(observe):
    y_true = np.array([[0.0, 1.5, -3.0]], np.float32)
    at_zero = per_element_gradient(y_true, y_true.copy(), 10.0, 2.0)
    assert np.all(at_zero == 0.0)
    beside = per_element_gradient(y_true, y_true + np.float32(1e-3), 10.0, 2.0)
    np.testing.assert_allclose(beside, 10.0 / (2.0 + 1e-3), rtol=1e-3)
    observe("gradient at zero error", "exactly 0.0 (slope beside it w/epsilon)")


# --- Bad input ------------------------------------------------------------------------


BAD_PARAMETERS = [
    ("w", 0.0),
    ("w", -1.5),
    ("w", float("nan")),
    ("w", float("inf")),
    ("w", "10"),
    ("w", True),
    ("w", None),
    ("epsilon", 0),
    ("epsilon", -2.0),
    ("epsilon", float("inf")),
    ("epsilon", np.float32(-0.5)),
]


def test_bad_w_or_epsilon_raise_value_error_naming_argument_and_value():
    # One test, not a parametrization: each test pays for two Keras session resets.
    for argument, value in BAD_PARAMETERS:
        pattern = rf"^{argument} must be a finite number > 0, got {re.escape(repr(value))}$"
        # Inputs TensorFlow cannot convert prove the check runs before TensorFlow does.
        with pytest.raises(ValueError, match=pattern):
            wing_loss(object(), object(), **{argument: value})
        with pytest.raises(ValueError, match=pattern):
            WingLoss(**{argument: value})


# Not real numbers: a string, None, an object, a string array and tensor, a ragged nested
# list and a complex number.
NOT_REAL_NUMBERS = [
    "abc",
    None,
    object(),
    np.array(["1.0", "2.0"]),
    [[1.0], [2.0, 3.0]],
    1 + 2j,
]


def test_y_true_or_y_pred_that_are_not_real_numbers_raise_value_error_naming_them():
    real = np.zeros((2, 1), np.float32)
    for value in NOT_REAL_NUMBERS + [tf.constant(["a", "b"])]:
        for argument in ("y_true", "y_pred"):
            arguments = {"y_true": real, "y_pred": real, argument: value}
            pattern = (
                rf"^{argument} must be a tensor or array of real numbers, "
                rf"got {re.escape(repr(value))}$"
            )
            with pytest.raises(ValueError, match=pattern):
                wing_loss(**arguments)
            # Checked before the Loss base class converts them.
            with pytest.raises(ValueError, match=pattern):
                WingLoss()(**arguments)
            with pytest.raises(ValueError, match=pattern):
                WingLoss().call(**arguments)


def test_numpy_scalars_integers_and_nested_lists_are_accepted():
    expected = paper_wing_loss(np.zeros(2), np.array([1.0, 30.0]), 10.0, 2.0)
    for y_true, y_pred in [
        ([0, 0], [1, 30]),
        (np.zeros(2, np.int64), np.array([1.0, 30.0], np.float64)),
        (tf.zeros(2), tf.constant([1.0, 30.0])),
    ]:
        assert wing_loss(y_true, y_pred, w=np.float32(10), epsilon=np.int64(2)).numpy() == (
            pytest.approx(expected, rel=1e-6)
        )
    assert wing_loss(np.float32(0.0), np.float32(1.0)).numpy() == pytest.approx(
        paper_wing_loss(0.0, 1.0, 10.0, 2.0), rel=1e-6
    )


def test_mismatched_shapes_raise_value_error_naming_both_shapes():
    y_true, y_pred = np.zeros(4, np.float32), np.ones((4, 1), np.float32)
    pattern = r"y_true shape \(4,\) and y_pred shape \(4, 1\) differ"
    with pytest.raises(ValueError, match=pattern):
        wing_loss(y_true, y_pred)
    with pytest.raises(ValueError, match=pattern):
        WingLoss()(y_true, y_pred)
    # What the check prevents: plain subtraction broadcasts (4,) and (4, 1) to (4, 4).
    assert (tf.constant(y_pred) - tf.constant(y_true)).shape == (4, 4)


class HandWrittenL1(keras.losses.Loss):
    """A naive custom loss with no shape check, as found in many tutorials."""

    def call(self, y_true, y_pred):
        return tf.reduce_mean(tf.abs(y_pred - y_true), axis=-1)


def test_flat_targets_against_n_by_1_outputs_in_fit_by_keras_version(version_split):
    inputs = np.arange(8, dtype=np.float32).reshape(8, 1)
    targets = (np.arange(8, dtype=np.float32) * 0.5)[::-1].copy()  # shape (8,)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.set_weights([np.ones((1, 1), np.float32), np.zeros(1, np.float32)])
    correct = float(np.mean(np.abs(inputs[:, 0] - targets)))
    broadcast = float(np.mean(np.abs(inputs - targets[None, :])))
    assert not math.isclose(correct, broadcast, rel_tol=1e-3)

    model.compile(optimizer="sgd", loss=HandWrittenL1())
    naive = model.evaluate(inputs, targets, batch_size=8, verbose=0)
    readings = {"broadcasts to (N, N)": broadcast, "targets expanded to (N, 1)": correct}
    seen = [name for name, value in readings.items() if naive == pytest.approx(value, rel=1e-5)]
    version_split(
        "hand-written Loss, (N,) targets vs (N, 1) output",
        seen[0] if seen else f"neither reading: {naive}",
        {"keras<3": "targets expanded to (N, 1)", "keras>=3": "broadcasts to (N, N)"},
    )

    model.compile(optimizer="sgd", loss=WingLoss())
    history = {}

    def fit():
        history.update(model.fit(inputs, targets, epochs=1, batch_size=8, verbose=0).history)

    version_split(
        "WingLoss fit, (N,) targets vs (N, 1) output",
        outcome_of(fit, ["y_true shape (8,) and y_pred shape (8, 1) differ"]),
        {
            "keras<3": "works",
            "keras>=3": "ValueError: y_true shape (8,) and y_pred shape (8, 1) differ",
        },
    )
    if history:
        # Where fit works, it trains on the paired loss, not a broadcast one.
        expected = paper_wing_loss(targets, inputs[:, 0], 10.0, 2.0)
        assert history["loss"][0] == pytest.approx(expected, rel=1e-5)


# --- The Loss class -------------------------------------------------------------------


@hypothesis.given(
    st.tuples(st.integers(1, 6), st.integers(1, 6)).flatmap(
        lambda shape: st.tuples(
            float32_arrays(shape, bounded_floats),
            float32_arrays(shape, bounded_floats),
            float32_arrays(shape[:1], st.floats(0.0, 2.0, width=32, allow_subnormal=False)),
        )
    ),
    widths,
    epsilons,
)
def test_wing_loss_class_averages_coordinates_then_keras_reduces_samples(arrays, w, epsilon):
    y_true, y_pred, sample_weight = arrays
    per_element = paper_wing(y_true, y_pred, w, epsilon)
    per_sample = per_element.mean(axis=-1)

    default = WingLoss(w=w, epsilon=epsilon)(y_true, y_pred).numpy()
    np.testing.assert_allclose(default, per_element.mean(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        default, wing_loss(y_true, y_pred, w=w, epsilon=epsilon).numpy(), rtol=1e-5, atol=1e-5
    )
    unreduced = WingLoss(w=w, epsilon=epsilon, reduction="none")(y_true, y_pred).numpy()
    assert unreduced.shape == per_sample.shape
    np.testing.assert_allclose(unreduced, per_sample, rtol=1e-5, atol=1e-5)
    weighted = WingLoss(w=w, epsilon=epsilon)(y_true, y_pred, sample_weight=sample_weight)
    np.testing.assert_allclose(
        weighted.numpy(), np.sum(sample_weight * per_sample) / len(per_sample), rtol=1e-5, atol=1e-4
    )


def test_get_config_round_trips_w_and_epsilon(version_split):
    loss = WingLoss(w=4.0, epsilon=0.5)
    config = loss.get_config()
    assert config["w"] == 4.0 and config["epsilon"] == 0.5 and config["name"] == "wing_loss"
    version_split(
        "WingLoss default reduction in get_config",
        config["reduction"],
        {"keras<3": "auto", "keras>=3": "sum_over_batch_size"},
    )

    restored = WingLoss.from_config(config)
    assert (restored.w, restored.epsilon) == (4.0, 0.5)
    y_true, y_pred = np.zeros((3, 2), np.float32), np.full((3, 2), 1.5, np.float32)
    assert restored(y_true, y_pred).numpy() == loss(y_true, y_pred).numpy()


# --- Training -------------------------------------------------------------------------


def test_compile_with_wing_loss_fits_a_landmark_regressor(observe):
    inputs, landmarks = landmark_data()
    model = landmark_regressor()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=WingLoss())
    history = model.fit(inputs, landmarks, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]
    observe("fit with compile(loss=WingLoss())", "loss decreases")


def test_gradient_tape_loop_with_wing_loss_trains_a_landmark_regressor(observe):
    inputs, landmarks = landmark_data()
    model = landmark_regressor()
    optimizer = keras.optimizers.Adam(0.05)
    loss_object = WingLoss()
    losses = []
    for _ in range(30):
        with tf.GradientTape() as tape:
            loss = loss_object(landmarks, model(inputs, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        assert all(gradient is not None for gradient in gradients)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
    # The functional form trains the same way.
    with tf.GradientTape() as tape:
        loss = wing_loss(landmarks, model(inputs, training=True))
    assert all(g is not None for g in tape.gradient(loss, model.trainable_variables))
    observe("GradientTape loop with WingLoss", "gradients non-None, loss decreases")


# --- Saving ---------------------------------------------------------------------------


def trained_model(loss):
    inputs, landmarks = landmark_data(samples=16)
    model = landmark_regressor()
    model.compile(optimizer="adam", loss=loss)
    model.fit(inputs, landmarks, epochs=1, batch_size=16, verbose=0)
    return model, inputs


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
LOAD_ERRORS = [
    "Unknown loss function: 'WingLoss'",
    "Unknown loss function: 'ScriptWingLoss'",
    "Could not locate class 'WingLoss'",
    "Could not locate class 'ScriptWingLoss'",
    "Could not interpret loss identifier: wing_loss",
]


def load_outcome(path, **kwargs):
    """("works", the model) or ("ExceptionClass: <fragment>", None) for load_model(path)."""
    loaded = []
    outcome = outcome_of(
        lambda: loaded.append(keras.models.load_model(path, **kwargs)), LOAD_ERRORS
    )
    return outcome, (loaded[0] if loaded else None)


def assert_same_model_and_loss(original, restored, inputs, loss_class=WingLoss):
    np.testing.assert_allclose(
        restored.predict(inputs, verbose=0), original.predict(inputs, verbose=0), rtol=1e-6
    )
    assert type(restored.loss) is loss_class
    assert (restored.loss.w, restored.loss.epsilon) == (original.loss.w, original.loss.epsilon)
    assert restored.optimizer is not None


def assert_loaded_without_loss(original, uncompiled, inputs, version_split):
    """Same predictions, but no loss and no optimizer: nothing was compiled."""
    np.testing.assert_allclose(
        uncompiled.predict(inputs, verbose=0), original.predict(inputs, verbose=0), rtol=1e-6
    )
    # Keras 2 has no `loss` attribute before compile() and Keras 3 no `optimizer`; where
    # they exist they are None.
    assert getattr(uncompiled, "loss", None) is None
    assert getattr(uncompiled, "optimizer", None) is None
    version_split(
        "evaluate on a model loaded with compile=False",
        outcome_of(
            lambda: uncompiled.evaluate(inputs, original.predict(inputs, verbose=0), verbose=0),
            ["You must compile your model", "You must call `compile()`"],
        ),
        {
            "keras<3": "RuntimeError: You must compile your model",
            "keras>=3": "ValueError: You must call `compile()`",
        },
    )


def test_keras_file_format_and_loading_with_custom_objects_restores_w_and_epsilon(
    tmp_path, version_split, observe
):
    model, inputs = trained_model(WingLoss(w=5.0, epsilon=1.5))
    path = os.fspath(tmp_path / "landmarks.keras")
    model.save(path)
    with open(path, "rb") as file:
        signature = file.read(8)
    if zipfile.is_zipfile(path):
        written = "zip archive"
    elif signature == HDF5_SIGNATURE:
        written = "legacy HDF5"
    else:
        written = f"a file starting {signature!r}"
    version_split(
        'model.save("m.keras") writes',
        written,
        {"keras<2.13": "legacy HDF5", "keras>=2.13": "zip archive"},
    )
    restored = keras.models.load_model(path, custom_objects={"WingLoss": WingLoss})
    assert_same_model_and_loss(model, restored, inputs)
    with keras.utils.custom_object_scope({"WingLoss": WingLoss}):
        scoped = keras.models.load_model(path)
    assert_same_model_and_loss(model, scoped, inputs)
    observe(".keras with custom_objects / custom_object_scope", "loads, w and epsilon kept")


def test_keras_file_of_a_module_level_class_without_custom_objects_by_keras_version(
    tmp_path, version_split, observe
):
    """WingLoss comes from the importable module recipes.wing_loss."""
    model, inputs = trained_model(WingLoss(w=5.0, epsilon=1.5))
    path = os.fspath(tmp_path / "landmarks.keras")
    model.save(path)
    outcome, loaded = load_outcome(path)
    if loaded is not None:
        assert_same_model_and_loss(model, loaded, inputs)
    # 2.12 writes HDF5; 2.13 to 3.8 import the module the archive names; 3.9 and later
    # import only Keras' own packages (keras-team/keras#20751).
    version_split(
        ".keras without custom_objects, class imported from a module",
        outcome,
        {
            "keras<2.13": "ValueError: Unknown loss function: 'WingLoss'",
            "keras>=2.13,<3.9": "works",
            "keras>=3.9": "TypeError: Could not locate class 'WingLoss'",
        },
    )
    assert_loaded_without_loss(
        model, keras.models.load_model(path, compile=False), inputs, version_split
    )
    observe(".keras without custom_objects, compile=False", "loads for inference, no loss")


def test_keras_file_of_a_script_class_without_custom_objects_fails(tmp_path, version_split):
    """A class defined in the training script (module __main__) has no importable module."""

    class ScriptWingLoss(WingLoss):
        pass

    ScriptWingLoss.__module__ = "__main__"

    model, inputs = trained_model(ScriptWingLoss(w=5.0, epsilon=1.5))
    path = os.fspath(tmp_path / "landmarks.keras")
    model.save(path)
    version_split(
        ".keras without custom_objects, class defined in the script",
        load_outcome(path)[0],
        {
            "keras<2.13": "ValueError: Unknown loss function: 'ScriptWingLoss'",
            "keras>=2.13": "TypeError: Could not locate class 'ScriptWingLoss'",
        },
    )
    restored = keras.models.load_model(path, custom_objects={"ScriptWingLoss": ScriptWingLoss})
    assert_same_model_and_loss(model, restored, inputs, loss_class=ScriptWingLoss)
    assert_loaded_without_loss(
        model, keras.models.load_model(path, compile=False), inputs, version_split
    )


def test_legacy_h5_file_loading_by_keras_version(tmp_path, version_split, observe):
    model, inputs = trained_model(WingLoss(w=5.0, epsilon=1.5))
    path = os.fspath(tmp_path / "landmarks.h5")
    model.save(path)

    version_split(
        "legacy .h5 without custom_objects",
        load_outcome(path)[0],
        {
            "keras<3": "ValueError: Unknown loss function: 'WingLoss'",
            "keras>=3": "ValueError: Could not interpret loss identifier: wing_loss",
        },
    )
    # Keras 3.0 to 3.2's load_model calls the .h5 loader with the path alone, dropping
    # custom_objects and compile; 3.3 passes both on.
    dropped = {
        "keras<3": "works",
        "keras>=3,<3.3": "ValueError: Could not interpret loss identifier: wing_loss",
        "keras>=3.3": "works",
    }
    outcome, restored = load_outcome(path, custom_objects={"WingLoss": WingLoss})
    if restored is not None:
        assert_same_model_and_loss(model, restored, inputs)
    version_split("legacy .h5 with custom_objects", outcome, dropped)
    outcome, uncompiled = load_outcome(path, compile=False)
    if uncompiled is not None:
        assert_loaded_without_loss(model, uncompiled, inputs, version_split)
    version_split("legacy .h5 without custom_objects, compile=False", outcome, dropped)

    with keras.utils.custom_object_scope({"WingLoss": WingLoss}):
        scoped = keras.models.load_model(path)
    assert_same_model_and_loss(model, scoped, inputs)
    observe("legacy .h5 inside custom_object_scope", "loads, w and epsilon kept")


def test_registration_api_location_by_keras_version(version_split, observe):
    assert callable(keras.utils.register_keras_serializable)
    saving = getattr(keras, "saving", None)
    if saving is None:
        where = "absent"
    elif callable(getattr(saving, "register_keras_serializable", None)):
        where = "present"
    else:
        where = "keras.saving without register_keras_serializable"
    version_split(
        "keras.saving.register_keras_serializable (tensorflow.keras)",
        where,
        {"keras<3": "present", "keras>=3": "absent"},
    )
    observe("keras.utils.register_keras_serializable", "present")


def test_registered_subclass_loads_from_keras_file_without_custom_objects(tmp_path, observe):
    model, inputs = trained_model(RegisteredWingLoss(w=3.0, epsilon=0.75))
    path = os.fspath(tmp_path / "registered.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert_same_model_and_loss(model, restored, inputs, loss_class=RegisteredWingLoss)
    assert (restored.loss.w, restored.loss.epsilon) == (3.0, 0.75)
    observe(".keras with a registered WingLoss subclass", "loads without custom_objects")
