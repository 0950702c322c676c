"""Tests for recipes/training_apis.py: every training route agrees, every pitfall is real.

Property tests build their model and compiled functions once per test and reset the weights
before each example, so hypothesis explores data without paying for a new trace per example.
"""

import warnings

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes import training_apis
from tests.regression_data import (
    INPUT_DIM,
    batches_of,
    finite_floats,
    regression_data,
    split_features_and_targets,
)
from tests.running_mean_contract import check_running_mean

TOLERANCE = training_apis.EQUIVALENCE_TOLERANCE
LEARNING_RATE = 0.1
BATCH_SIZE = 8


def weights_after_one_epoch(route, base_model):
    features, targets = regression_data()
    model = training_apis.clone_with_same_weights(base_model)
    return training_apis.train_one_epoch(route, model, features, targets, BATCH_SIZE, LEARNING_RATE)


# --- Every route, one epoch, the same weights ---------------------------------------------


def test_every_route_ends_one_epoch_with_the_weights_of_fit_on_arrays(observe):
    base_model = training_apis.build_small_model(input_dim=INPUT_DIM)
    initial_weights = base_model.get_weights()
    reference = weights_after_one_epoch("fit_arrays", base_model)
    # The comparison only means something if one epoch moves the weights well past TOLERANCE.
    assert training_apis.max_weight_difference(reference, initial_weights) > 1e-3
    for route in ("fit_python_generator", "train_on_batch", "tape_eager", "tape_tf_function"):
        weights = weights_after_one_epoch(route, base_model)
        assert training_apis.max_weight_difference(weights, reference) <= TOLERANCE, route
        observe(f"one SGD epoch by {route}", "same weights as fit on arrays (atol 1e-5)")


def test_fit_generator_trains_with_a_deprecation_warning_on_keras_2_and_is_gone_on_keras_3(
    version_split,
):
    base_model = training_apis.build_small_model(input_dim=INPUT_DIM)
    reference = weights_after_one_epoch("fit_arrays", base_model)

    def fit_generator_outcome():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                weights = weights_after_one_epoch("fit_generator", base_model)
            except AttributeError as error:
                # The message names the method, not only the class that lacks it.
                return "AttributeError" + (
                    ": fit_generator" if "fit_generator" in str(error) else ""
                )
        same = training_apis.max_weight_difference(weights, reference) <= TOLERANCE
        deprecated = [
            warning
            for warning in caught
            if issubclass(warning.category, UserWarning) and "deprecated" in str(warning.message)
        ]
        return f"trains to {'the same' if same else 'other'} weights as fit" + (
            ", UserWarning: deprecated" if deprecated else ""
        )

    version_split(
        "model.fit_generator",
        fit_generator_outcome(),
        {
            "keras<3": "trains to the same weights as fit, UserWarning: deprecated",
            "keras>=3": "AttributeError: fit_generator",
        },
    )


def assert_rejects(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- Pitfall: no training=True ------------------------------------------------------------


def test_tape_step_without_training_flag_never_updates_batchnorm_moving_statistics(observe):
    model = training_apis.build_small_model(input_dim=INPUT_DIM, batch_normalization=True)
    batch_normalization = model.get_layer("batch_normalization")
    initial_weights = model.get_weights()
    moving_mean_before = batch_normalization.moving_mean.numpy().copy()
    moving_variance_before = batch_normalization.moving_variance.numpy().copy()
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    # Constant targets keep the gradient away from zero even for an all-zero feature batch.
    targets = np.ones((BATCH_SIZE, 1), "float32")

    @hypothesis.given(hnp.arrays(np.float32, (BATCH_SIZE, INPUT_DIM), elements=finite_floats(5)))
    def check(features):
        model.set_weights(initial_weights)
        training_apis.tape_step(model, loss_fn, optimizer, features, targets, training=None)
        np.testing.assert_array_equal(batch_normalization.moving_mean.numpy(), moving_mean_before)
        np.testing.assert_array_equal(
            batch_normalization.moving_variance.numpy(), moving_variance_before
        )
        # The step still trained: nothing fails loudly, the statistics just stay put.
        assert training_apis.max_weight_difference(model.get_weights(), initial_weights) > 0

        model.set_weights(initial_weights)
        training_apis.tape_step(model, loss_fn, optimizer, features, targets, training=True)
        batch = features.astype(np.float64)
        np.testing.assert_allclose(
            batch_normalization.moving_mean.numpy(),
            0.99 * moving_mean_before + 0.01 * batch.mean(axis=0),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            batch_normalization.moving_variance.numpy(),
            0.99 * moving_variance_before + 0.01 * batch.var(axis=0),
            rtol=1e-5,
            atol=1e-6,
        )

    check()
    observe("tape step calling model(x) without training=True", "BN moving stats exactly unchanged")
    observe("tape step with training=True", "BN moving stats: 0.99 old + 0.01 batch (biased var)")


def test_without_training_flag_dropout_is_off_and_with_it_units_are_zeroed_or_rescaled(observe):
    rate = 0.5
    model = training_apis.build_small_model(input_dim=INPUT_DIM, dropout_rate=rate)
    dropout_output = keras.Model(model.input, model.get_layer("dropout").output)

    @hypothesis.given(hnp.arrays(np.float32, (BATCH_SIZE, INPUT_DIM), elements=finite_floats(5)))
    def check(features):
        inference = dropout_output(features, training=False).numpy()
        np.testing.assert_array_equal(dropout_output(features).numpy(), inference)
        np.testing.assert_array_equal(
            model(features).numpy(), model(features, training=False).numpy()
        )
        trained = dropout_output(features, training=True).numpy()
        kept = trained != 0
        np.testing.assert_allclose(trained[kept], inference[kept] / (1 - rate), rtol=1e-6)

    check()
    features, _ = regression_data(samples=BATCH_SIZE)
    inference = dropout_output(features, training=False).numpy()
    trained = dropout_output(features, training=True).numpy()
    assert np.count_nonzero(inference == 0) == 0
    assert 0 < np.count_nonzero(trained == 0) < trained.size
    observe("Dropout under model(x) without training=True", "off: equals inference output")


# --- Pitfall: no model.losses -------------------------------------------------------------


def test_evaluate_and_test_on_batch_report_the_compiled_loss_plus_model_losses(observe):
    model = training_apis.build_small_model(input_dim=INPUT_DIM, l2_factor=0.1)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    regularization = float(tf.add_n(model.losses))
    assert regularization > 0

    def data_loss(features, targets):
        return float(keras.losses.MeanSquaredError()(targets, model(features)))

    features, targets = regression_data()
    reported = model.evaluate(features, targets, batch_size=len(features), verbose=0)
    assert reported == pytest.approx(data_loss(features, targets) + regularization, rel=1e-5)

    # test_on_batch runs the same compiled test step as evaluate, without its per-call setup.
    @hypothesis.given(batches_of((BATCH_SIZE,)))
    def check(batch):
        features, targets = split_features_and_targets(batch)
        # Keras 3.0 to 3.14 would otherwise report a running mean over earlier batches.
        model.reset_metrics()
        reported = model.test_on_batch(features, targets)
        expected = data_loss(features, targets) + regularization
        assert reported == pytest.approx(expected, rel=1e-5, abs=1e-6)

    check()
    observe("evaluate loss with an L2 kernel_regularizer", "compiled loss + sum(model.losses)")


# An all-ones Dense kernel on two features: a batch of ones has loss 4, a batch of zeros 0.
LOSS_4_BATCH = (np.ones((4, 2), "float32"), np.zeros((4, 1), "float32"))
LOSS_0_BATCH = (np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32"))


def build_all_ones_model():
    inputs = keras.Input(shape=(2,))
    return keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(inputs))


def test_train_and_test_on_batch_report_a_running_mean_on_keras_3_0_to_3_14(version_split):
    """Keras 3.0 to 3.14 average since compile, reset_metrics, evaluate or a fit epoch began."""
    check_running_mean(version_split, build_all_ones_model, LOSS_4_BATCH, LOSS_0_BATCH)


def test_tape_loss_without_model_losses_misses_exactly_the_regularizer_gradient(observe):
    l2_factor = 0.1
    model = training_apis.build_small_model(input_dim=INPUT_DIM, l2_factor=l2_factor)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    initial_weights = model.get_weights()
    kernel_index = next(
        index
        for index, variable in enumerate(model.weights)
        if variable is model.get_layer("hidden").kernel
    )
    # SGD's update is -learning_rate * gradient, and L2's gradient is 2 * l2_factor * kernel.
    expected_gap = [np.zeros_like(weight) for weight in initial_weights]
    expected_gap[kernel_index] = LEARNING_RATE * 2 * l2_factor * initial_weights[kernel_index]
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(LEARNING_RATE)

    def weights_after(step):
        model.set_weights(initial_weights)
        step()
        return model.get_weights()

    @hypothesis.given(batches_of((BATCH_SIZE,)))
    def check(batch):
        x, y = split_features_and_targets(batch)
        reference = weights_after(lambda: model.train_on_batch(x, y))
        with_losses = weights_after(
            lambda: training_apis.tape_step(model, loss_fn, optimizer, x, y)
        )
        without_losses = weights_after(
            lambda: training_apis.tape_step(
                model, loss_fn, optimizer, x, y, include_model_losses=False
            )
        )
        assert training_apis.max_weight_difference(with_losses, reference) <= 1e-6
        gaps = [mine - fit for mine, fit in zip(without_losses, reference, strict=True)]
        assert training_apis.max_weight_difference(gaps, expected_gap) <= 1e-6

    check()
    assert np.max(np.abs(expected_gap[kernel_index])) > 1e-3
    observe("tape loss without model.losses, one step", "off by learning_rate * L2 gradient")


# --- Bad input to the other exported functions --------------------------------------------


def test_train_one_epoch_rejects_bad_arguments():
    features, targets = regression_data()
    valid = {
        "route": "fit_arrays",
        "model": training_apis.build_small_model(input_dim=INPUT_DIM),
        "features": features,
        "targets": targets,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
    }
    cases = [
        ({"route": "fit_dataset"}, r"route must be one of .*, got 'fit_dataset'"),
        ({"batch_size": 5}, r"batch_size must divide the 32 samples, got 5"),
        ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
        ({"batch_size": True}, r"batch_size must be an int >= 1, got True"),
        ({"learning_rate": 0.0}, r"learning_rate must be a finite number > 0, got 0\.0"),
        ({"learning_rate": float("nan")}, r"learning_rate must be .*, got nan"),
        ({"learning_rate": "0.1"}, r"learning_rate must be .*, got '0\.1'"),
        ({"targets": np.zeros((31, 1), "float32")}, r"features and targets .*got 32 and 31"),
        ({"model": None}, r"model must be a keras.Model, got None"),
    ]
    for arguments, message in cases:
        assert_rejects(
            lambda arguments=arguments: training_apis.train_one_epoch(**{**valid, **arguments}),
            message,
        )


def test_the_other_exports_reject_bad_arguments():
    model = training_apis.build_small_model(input_dim=INPUT_DIM)
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    features, targets = regression_data(samples=BATCH_SIZE)
    build = training_apis.build_small_model
    cases = [
        (lambda: build(input_dim=0), r"input_dim must be an int >= 1, got 0"),
        (lambda: build(hidden_units=2.5), r"hidden_units must be an int >= 1, got 2\.5"),
        (lambda: build(l2_factor=-1.0), r"l2_factor must be a finite number >= 0, got -1\.0"),
        (lambda: build(dropout_rate=1.0), r"dropout_rate must be in \[0, 1\), got 1\.0"),
        (lambda: build(seed=-1), r"seed must be an int >= 0, got -1"),
        (lambda: build(batch_normalization="yes"), r"batch_normalization must be .*, got 'yes'"),
        (lambda: build(batch_normalization=1), r"batch_normalization must be .*, got 1"),
        (lambda: training_apis.clone_with_same_weights([]), r"model must be .*, got \[\]"),
        (
            lambda: training_apis.repeat_batches([], [], batch_size=-1),
            r"batch_size must be an int >= 1, got -1",
        ),
        (
            lambda: training_apis.repeat_batches(features, targets[:5], batch_size=4),
            r"features and targets must have the same length, got 8 and 5",
        ),
        (
            lambda: training_apis.max_weight_difference([1], [1, 2]),
            r"weights must hold as many arrays as reference_weights \(2\).*got 1",
        ),
        (
            lambda: training_apis.max_weight_difference([], []),
            r"weights must hold .*at least one, got 0",
        ),
        (
            lambda: training_apis.max_weight_difference([np.zeros((4, 8))], [np.zeros(8)]),
            r"weights\[0\] must have the shape of reference_weights\[0\] \(8,\), "
            r"got shape \(4, 8\)",
        ),
        (
            lambda: training_apis.tape_step("net", loss_fn, optimizer, features, targets),
            r"model must be a keras.Model, got 'net'",
        ),
        (
            lambda: training_apis.tape_step(model, "mse", optimizer, features, targets),
            r"loss_fn must be callable, got 'mse'",
        ),
        (
            lambda: training_apis.tape_step(model, loss_fn, "sgd", features, targets),
            r"optimizer must have apply_gradients, got 'sgd'",
        ),
        (
            lambda: training_apis.tape_step(
                model, loss_fn, optimizer, features, targets, training="yes"
            ),
            r"training must be True, False or None, got 'yes'",
        ),
    ]
    for call, message in cases:
        assert_rejects(call, message)


def test_numpy_scalars_are_accepted_wherever_python_numbers_are():
    base_model = training_apis.build_small_model(
        input_dim=np.int64(INPUT_DIM),
        hidden_units=np.int32(8),
        l2_factor=np.float32(0.0),
        batch_normalization=np.bool_(False),
        dropout_rate=np.float64(0.0),
        seed=np.int64(0),
    )
    python_model = training_apis.build_small_model(input_dim=INPUT_DIM)
    assert (
        training_apis.max_weight_difference(base_model.get_weights(), python_model.get_weights())
        == 0
    )
    features, targets = regression_data()
    reference = weights_after_one_epoch("fit_arrays", python_model)
    model = training_apis.clone_with_same_weights(base_model)
    weights = training_apis.train_one_epoch(
        "train_on_batch", model, features, targets, np.int64(BATCH_SIZE), np.float32(LEARNING_RATE)
    )
    assert training_apis.max_weight_difference(weights, reference) <= TOLERANCE
    first_features, _ = next(training_apis.repeat_batches(features, targets, np.int64(4)))
    assert first_features.shape == (4, INPUT_DIM)
