"""Tests for recipes/loss_shape_pitfall.py: every Pitfalls and Versions sentence, on every stack.

Related checks share one test where they can: each test pays for a Keras clear_session, which
is slow on Keras 3.15.
"""

import math
import re

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import strategies as st
from tensorflow import keras

from recipes import header_fields
from recipes import loss_shape_pitfall as recipe
from tests.running_mean_contract import check_running_mean

# Labels (N,) and predictions (N, 1) whose sample-by-sample and broadcast errors differ a lot.
LABELS = np.array([0.0, 1.0, 2.0, 3.0], dtype="float32")
PREDICTIONS = np.array([[0.5], [1.0], [2.5], [4.0]], dtype="float32")
ALIGNED_VALUE = float(np.mean((PREDICTIONS[:, 0].astype("float64") - LABELS) ** 2))
BROADCAST_VALUE = float(np.mean((PREDICTIONS.astype("float64") - LABELS) ** 2))

# Thresholds for the training measurement, with wide margins around what every stack reached
# (converged error about 7e-13; not converged about 1.51, the variance of y).
CONVERGED_ERROR = 1e-4
NOT_CONVERGED_ERROR = 1.0

bounded_floats = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)


def labels_and_column_predictions():
    """(labels (N,), predictions (N, 1)) for N from 2 to 8, float32."""
    return st.integers(2, 8).flatmap(
        lambda size: st.tuples(
            hnp.arrays("float32", (size,), elements=bounded_floats),
            hnp.arrays("float32", (size, 1), elements=bounded_floats),
        )
    )


def linear_problem():
    x, y = recipe.make_linear_data()
    return x, y, float(np.var(y.astype("float64")))


# --- Pitfall: the hand-written loss broadcasts -------------------------------------------


@hypothesis.given(labels_and_column_predictions())
def test_handwritten_loss_equals_mean_over_the_n_by_n_broadcast(labels_and_predictions):
    labels, predictions = labels_and_predictions
    # Every prediction i against every label j, computed without relying on broadcasting.
    table = np.array(
        [[float(prediction[0]) - float(label) for label in labels] for prediction in predictions]
    )
    assert table.shape == (len(labels), len(labels))
    value = recipe.handwritten_mean_squared_error(tf.constant(labels), tf.constant(predictions))
    np.testing.assert_allclose(float(value), np.mean(table**2), rtol=1e-4, atol=1e-3)


def test_handwritten_loss_broadcasts_on_every_stack(observe):
    # The fixed data the version tests use must tell the two readings clearly apart.
    assert math.isclose(BROADCAST_VALUE, 3.375) and math.isclose(ALIGNED_VALUE, 0.375)
    for as_tensor in (np.asarray, tf.constant):
        value = float(
            recipe.handwritten_mean_squared_error(as_tensor(LABELS), as_tensor(PREDICTIONS))
        )
        assert value == pytest.approx(BROADCAST_VALUE, rel=1e-6)
    observe("hand-written reduce_mean(square(p - y)), p (N,1), y (N,)", "broadcasts to (N,N)")


@hypothesis.given(labels_and_column_predictions(), st.sampled_from(["(N,)", "(N, 1)", "(1, N)"]))
def test_aligned_loss_equals_elementwise_mean(labels_and_predictions, label_layout):
    labels, predictions = labels_and_predictions
    shaped_labels = {
        "(N,)": labels,
        "(N, 1)": labels.reshape(-1, 1),
        "(1, N)": labels.reshape(1, -1),
    }[label_layout]
    expected = np.mean((predictions.astype("float64")[:, 0] - labels.astype("float64")) ** 2)
    for as_tensor in (np.asarray, tf.constant):
        value = recipe.mean_squared_error_aligned(as_tensor(shaped_labels), as_tensor(predictions))
        np.testing.assert_allclose(float(value), expected, rtol=1e-4, atol=1e-3)


# --- Keras loss objects and functions, both sides of the version split -------------------


def reading_of(value):
    """Which reading of LABELS against PREDICTIONS a loss value is, from the value itself."""
    if value == pytest.approx(ALIGNED_VALUE, rel=1e-6):
        return "aligns ranks"
    if value == pytest.approx(BROADCAST_VALUE, rel=1e-6):
        return "broadcasts to (N,N)"
    return f"neither reading: {value}"


# Keras 2 (bundled or tf-keras) broadcasts where Keras 3 aligns.
BROADCASTS_ON_KERAS_2 = {"keras<3": "broadcasts to (N,N)", "keras>=3": "aligns ranks"}


def test_loss_object_aligns_tensors_everywhere_but_broadcasts_numpy_on_keras_2(
    version_split, observe
):
    convert = {"numpy": np.asarray, "tensor": tf.constant}
    for label_kind, prediction_kind in [
        ("tensor", "tensor"),
        ("numpy", "numpy"),
        ("numpy", "tensor"),
        ("tensor", "numpy"),
    ]:
        value = float(
            keras.losses.MeanSquaredError()(
                convert[label_kind](LABELS), convert[prediction_kind](PREDICTIONS)
            )
        )
        behaviour = f"MeanSquaredError()(y, p), {label_kind} y (N,) and {prediction_kind} p (N,1)"
        if label_kind == prediction_kind == "tensor":
            assert reading_of(value) == "aligns ranks", behaviour
            observe(behaviour, "aligns ranks")
        else:
            version_split(behaviour, reading_of(value), BROADCASTS_ON_KERAS_2)


def test_functional_mse_broadcasts_on_keras_2_and_aligns_on_keras_3(version_split):
    for kind, convert in [("numpy", np.asarray), ("tensor", tf.constant)]:
        value = float(tf.reduce_mean(keras.losses.mse(convert(LABELS), convert(PREDICTIONS))))
        behaviour = f"reduce_mean(keras.losses.mse(y, p)), {kind} y (N,) and {kind} p (N,1)"
        version_split(behaviour, reading_of(value), BROADCASTS_ON_KERAS_2)


# --- compile() aligns: evaluate, train_on_batch and fit ----------------------------------


def test_compile_aligns_labels_in_evaluate_train_on_batch_and_fit(observe):
    for loss_name, loss in [
        ("'mse'", "mse"),
        ("hand-written function", recipe.handwritten_mean_squared_error),
    ]:
        # Kernel 1 and bias 0 make the model's output equal its input, the (N, 1) predictions.
        model = keras.Sequential(
            [
                keras.Input(shape=(1,)),
                keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros"),
            ]
        )
        # A zero learning rate keeps the weights, so every routine sees the same predictions.
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=loss)
        evaluated = model.evaluate(PREDICTIONS, LABELS, batch_size=4, verbose=0)
        trained = model.train_on_batch(PREDICTIONS, LABELS)
        history = model.fit(PREDICTIONS, LABELS, batch_size=4, epochs=1, verbose=0).history
        for value in (evaluated, trained, history["loss"][0]):
            assert float(value) == pytest.approx(ALIGNED_VALUE, rel=1e-5), loss_name
        observe(
            f"compile(loss={loss_name}): evaluate / train_on_batch / fit, y (N,)", "aligns ranks"
        )


# --- The measurement: tape loops against train_on_batch ----------------------------------


def test_tape_loop_with_handwritten_loss_predicts_the_mean_and_does_not_converge(observe):
    x, y, variance_of_y = linear_problem()
    model, last_loss = recipe.train_with_gradient_tape(
        recipe.handwritten_mean_squared_error, x, tf.constant(y)
    )
    error = recipe.prediction_error(model, x, y)
    predictions = np.asarray(model(x)).reshape(-1)
    assert error > NOT_CONVERGED_ERROR
    assert error == pytest.approx(variance_of_y, rel=0.01)
    np.testing.assert_allclose(predictions, np.mean(y), atol=0.05)
    # The loss the loop minimised, the mean over the (N, N) broadcast, is smallest when every
    # prediction is mean(y), and its minimum is var(y): it stalls there, as the error does.
    assert last_loss == pytest.approx(variance_of_y, rel=0.01)
    observe(
        "tape loop, hand-written loss, y (N,) vs output (N,1), y = 2x + 1",
        "does not converge: predicts mean(y); error and last loss = var(y)",
    )


def test_tape_loop_converges_once_labels_are_aligned(observe):
    x, y, _ = linear_problem()
    routes = {
        "y reshaped to (N, 1)": (recipe.handwritten_mean_squared_error, tf.reshape(y, (-1, 1))),
        "mean_squared_error_aligned": (recipe.mean_squared_error_aligned, y),
        "MeanSquaredError() on tensor y": (keras.losses.MeanSquaredError(), tf.constant(y)),
    }
    for route, (loss_function, labels) in routes.items():
        model, _ = recipe.train_with_gradient_tape(loss_function, x, labels)
        error = recipe.prediction_error(model, x, y)
        assert error < CONVERGED_ERROR, route
        observe(f"tape loop, {route}, y = 2x + 1", f"converges: error < {CONVERGED_ERROR:g}")


def test_tape_loop_with_loss_object_on_numpy_labels_converges_only_on_keras_3(version_split):
    x, y, variance_of_y = linear_problem()
    model, _ = recipe.train_with_gradient_tape(keras.losses.MeanSquaredError(), x, y)
    error = recipe.prediction_error(model, x, y)
    predictions = np.asarray(model(x)).reshape(-1)
    converged = f"converges: error < {CONVERGED_ERROR:g}"
    stalled = "does not converge: predicts mean(y), error = var(y)"
    if error < CONVERGED_ERROR:
        outcome = converged
    elif error == pytest.approx(variance_of_y, rel=0.01) and np.allclose(
        predictions, np.mean(y), atol=0.05
    ):
        outcome = stalled
    else:
        outcome = f"neither: error {error}"
    version_split(
        "tape loop, MeanSquaredError() on numpy y (N,), y = 2x + 1",
        outcome,
        {"keras<3": stalled, "keras>=3": converged},
    )


def test_train_on_batch_loop_with_flat_labels_converges_on_every_stack(observe):
    x, y, _ = linear_problem()
    assert y.shape == (16,)
    model, _ = recipe.train_with_train_on_batch(x, y)
    error = recipe.prediction_error(model, x, y)
    assert error < CONVERGED_ERROR
    observe("train_on_batch loop, loss='mse', y (N,), y = 2x + 1", "converges")


# The linear model predicts 0 for x = 0, so these flat-label batches have losses 4 and 0.
LOSS_4_BATCH = (np.zeros((4, 1), "float32"), np.full((4,), 2.0, "float32"))
LOSS_0_BATCH = (np.zeros((4, 1), "float32"), np.zeros((4,), "float32"))


def test_train_and_test_on_batch_report_a_running_mean_on_keras_3_0_to_3_14(version_split):
    """Keras 3.0 to 3.14 average since compile, reset_metrics, evaluate or a fit epoch began."""
    check_running_mean(version_split, recipe.build_linear_model, LOSS_4_BATCH, LOSS_0_BATCH)


# --- The fix: assert_same_shape ----------------------------------------------------------


def test_assert_same_shape_names_both_shapes_and_the_fix(observe):
    for as_tensor in (np.asarray, tf.constant):
        with pytest.raises(ValueError, match=r"shape \(4,\) .*shape \(4, 1\).*[Rr]eshape"):
            recipe.assert_same_shape(as_tensor(LABELS), as_tensor(PREDICTIONS))
    # The same rank is not enough: the sizes must agree too.
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        recipe.assert_same_shape(np.zeros((3, 2)), np.zeros((2, 3)))
    observe("assert_same_shape(y (N,), p (N,1))", "ValueError naming both shapes")


@hypothesis.given(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4))
def test_assert_same_shape_passes_for_equal_shapes(shape):
    for make_zeros in (np.zeros, tf.zeros):
        assert recipe.assert_same_shape(make_zeros(shape), make_zeros(shape)) is None


@hypothesis.given(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
def test_assert_same_shape_raises_when_one_side_has_an_extra_axis(shape):
    with pytest.raises(ValueError, match=re.escape(f"shape {shape!r} but y_pred has shape")):
        recipe.assert_same_shape(np.zeros(shape), np.zeros(shape + (1,)))
    with pytest.raises(ValueError, match=re.escape(f"y_pred has shape {shape!r}")):
        recipe.assert_same_shape(tf.zeros(shape + (1,)), tf.zeros(shape))


def test_assert_same_shape_lets_none_match_any_size_but_checks_rank_and_refuses_unknown_rank():
    def check_in_graph(true_spec, predicted_spec, true_value, predicted_value):
        @tf.function(input_signature=[true_spec, predicted_spec])
        def checked(y_true, y_pred):
            recipe.assert_same_shape(y_true, y_pred)
            return y_pred

        return checked(true_value, predicted_value)

    column, flat = tf.zeros((4, 1)), tf.zeros((4,))

    # An unknown batch size cannot be checked before the graph runs, so it matches 4.
    checked = check_in_graph(tf.TensorSpec([None, 1]), tf.TensorSpec([4, 1]), column, column)
    assert checked.shape == (4, 1)
    # The rank is still known, so (None,) against (None, 1) is caught at trace time.
    with pytest.raises(ValueError, match=r"\(None,\).*\(None, 1\)"):
        check_in_graph(tf.TensorSpec([None]), tf.TensorSpec([None, 1]), flat, column)
    with pytest.raises(ValueError, match="y_true has unknown rank"):
        check_in_graph(tf.TensorSpec(None), tf.TensorSpec([4, 1]), flat, column)


def test_assert_same_shape_stops_a_tape_loop_at_the_first_step():
    x, y, _ = linear_problem()

    def guarded_loss(y_true, y_pred):
        recipe.assert_same_shape(y_true, y_pred)
        return recipe.handwritten_mean_squared_error(y_true, y_pred)

    expected = re.escape("y_true has shape (16,) but y_pred has shape (16, 1)")
    with pytest.raises(ValueError, match=expected):
        recipe.train_with_gradient_tape(guarded_loss, x, tf.constant(y))


# --- The fix: mean_squared_error_aligned -------------------------------------------------


def test_mean_squared_error_aligned_refuses_shapes_that_differ_beyond_size_one_axes():
    for true_shape, predicted_shape in [((4,), (5, 1)), ((2, 3), (3, 2)), ((6,), (2, 3))]:
        pattern = (
            re.escape(f"y_true with shape {true_shape}")
            + ".*"
            + re.escape(f"y_pred with shape {predicted_shape}")
        )
        with pytest.raises(ValueError, match=pattern):
            recipe.mean_squared_error_aligned(np.zeros(true_shape), np.zeros(predicted_shape))


def test_mean_squared_error_aligned_works_with_an_unknown_batch_size_and_integers():
    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None, 1], tf.float32)]
    )
    def loss(y_true, y_pred):
        return recipe.mean_squared_error_aligned(y_true, y_pred)

    value = float(loss(tf.constant(LABELS), tf.constant(PREDICTIONS)))
    assert value == pytest.approx(ALIGNED_VALUE, rel=1e-6)
    integer_value = recipe.mean_squared_error_aligned(np.array([1, 2]), np.array([[1], [4]]))
    assert float(integer_value) == pytest.approx(2.0)


# --- Bad input ---------------------------------------------------------------------------


def test_make_linear_data_rejects_bad_sample_counts():
    for number_of_samples in [1, 0, 2.5, True, "16", np.int64(1), np.float32(16)]:
        pattern = rf"number_of_samples must be .*, got {re.escape(repr(number_of_samples))}\."
        with pytest.raises(ValueError, match=pattern):
            recipe.make_linear_data(number_of_samples)


def test_numpy_integer_sizes_and_steps_and_numpy_float_learning_rates_are_accepted():
    for number_of_samples in (np.int64(16), np.int32(16), np.uint8(16)):
        for made, expected in zip(
            recipe.make_linear_data(number_of_samples), recipe.make_linear_data(16), strict=True
        ):
            np.testing.assert_array_equal(made, expected)
    x, y, _ = linear_problem()
    for train in (
        lambda **kwargs: recipe.train_with_gradient_tape(
            recipe.mean_squared_error_aligned, x, y, **kwargs
        ),
        lambda **kwargs: recipe.train_with_train_on_batch(x, y, **kwargs),
    ):
        numpy_model, numpy_loss = train(steps=np.int64(3), learning_rate=np.float32(0.5))
        python_model, python_loss = train(steps=3, learning_rate=0.5)
        assert numpy_loss == python_loss
        for numpy_weight, python_weight in zip(
            numpy_model.get_weights(), python_model.get_weights(), strict=True
        ):
            np.testing.assert_array_equal(numpy_weight, python_weight)


def test_training_functions_reject_bad_steps_and_learning_rates():
    x, y, _ = linear_problem()
    for argument, value, pattern in [
        ("steps", 0, "steps must be a positive int, got 0"),
        ("steps", 2.0, "steps must be a positive int, got 2.0"),
        ("steps", True, "steps must be a positive int, got True"),
        ("steps", np.int64(-1), r"steps must be a positive int, got (np\.int64\()?-1"),
        ("learning_rate", -0.1, "learning_rate must be a positive finite number, got -0.1"),
        ("learning_rate", float("nan"), "learning_rate must be a positive finite number, got nan"),
        ("learning_rate", "0.5", "learning_rate must be a positive finite number, got '0.5'"),
        ("learning_rate", np.float32("inf"), r"learning_rate must be .*, got (np\.float32\()?inf"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            recipe.train_with_gradient_tape(
                recipe.mean_squared_error_aligned, x, y, **{argument: value}
            )
        with pytest.raises(ValueError, match=pattern):
            recipe.train_with_train_on_batch(x, y, **{argument: value})


def test_functions_reject_bad_data_shapes_and_values():
    x, y, _ = linear_problem()
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1\), got shape \(16,\)"):
        recipe.train_with_train_on_batch(x[:, 0], y)
    with pytest.raises(ValueError, match=r"y must have 16 rows like x, got shape \(15,\)"):
        recipe.train_with_gradient_tape(recipe.mean_squared_error_aligned, x, y[:15])
    with pytest.raises(ValueError, match="loss_function must be callable, got 'mse'"):
        recipe.train_with_gradient_tape("mse", x, y)
    with pytest.raises(ValueError, match=r"y must hold one value per row of x .*\(15,\)"):
        recipe.prediction_error(recipe.build_linear_model(), x, y[:15])
    with pytest.raises(ValueError, match="y_true must be an array or tensor of numbers, got 'abc'"):
        recipe.assert_same_shape("abc", np.zeros(3))


def test_every_data_argument_that_holds_no_numbers_raises_value_error_naming_it():
    x, y, _ = linear_problem()
    model = recipe.build_linear_model()
    loss = recipe.mean_squared_error_aligned
    calls = {
        "y_true": [
            lambda bad: recipe.assert_same_shape(bad, y),
            lambda bad: recipe.mean_squared_error_aligned(bad, y),
            lambda bad: recipe.handwritten_mean_squared_error(bad, y),
        ],
        "y_pred": [
            lambda bad: recipe.assert_same_shape(y, bad),
            lambda bad: recipe.mean_squared_error_aligned(y, bad),
            lambda bad: recipe.handwritten_mean_squared_error(y, bad),
        ],
        "x": [
            lambda bad: recipe.train_with_gradient_tape(loss, bad, y),
            lambda bad: recipe.train_with_train_on_batch(bad, y),
            lambda bad: recipe.prediction_error(model, bad, y),
        ],
        "y": [
            lambda bad: recipe.train_with_gradient_tape(loss, x, bad),
            lambda bad: recipe.train_with_train_on_batch(x, bad),
            lambda bad: recipe.prediction_error(model, x, bad),
        ],
    }
    for bad in ["abc", None, object(), np.array(["1", "2"]), [[1.0], [2.0, 3.0]], 1 + 2j]:
        for argument, functions in calls.items():
            pattern = (
                rf"^{argument} must be an array or tensor of numbers, got {re.escape(repr(bad))}\.$"
            )
            for call in functions:
                with pytest.raises(ValueError, match=pattern):
                    call(bad)
    for bad_model in [None, "model", 3]:
        pattern = rf"^model must be a callable Keras model, got {re.escape(repr(bad_model))}\.$"
        with pytest.raises(ValueError, match=pattern):
            recipe.prediction_error(bad_model, x, y)


# --- The page itself ---------------------------------------------------------------------


def test_header_has_every_field_and_the_run_line():
    fields = header_fields("loss_shape_pitfall")
    for field in ("Title", "Problem", "Recipe", "Pitfalls", "Versions", "Sources", "Run"):
        assert fields.get(field), field
    assert fields["Run"] == "python -m recipes.loss_shape_pitfall"


def test_demo_prints_both_readings_of_the_loss(demo_output):
    printed = demo_output("loss_shape_pitfall")
    assert "3.375" in printed and "0.375" in printed
    assert "assert_same_shape: ValueError" in printed
