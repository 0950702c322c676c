"""Tests for recipes/training_apis.py: every training route agrees, every pitfall is real.

Property tests build their model and compiled functions once per test and reset the weights
before each example, so hypothesis explores data without paying for a new trace per example.
"""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import KERAS_MAJOR, KERAS_VERSION
from recipes import training_apis

TOLERANCE = training_apis.EQUIVALENCE_TOLERANCE
LEARNING_RATE = 0.1
BATCH_SIZE = 8
INPUT_DIM = 4


def finite_floats(bound):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)


def batches_of(leading_shape, bound=3.0):
    """Arrays of shape leading_shape + (INPUT_DIM + 1,): features in front, the target last."""
    return hnp.arrays(np.float32, (*leading_shape, INPUT_DIM + 1), elements=finite_floats(bound))


def split_features_and_targets(array):
    return array[..., :INPUT_DIM], array[..., INPUT_DIM:]


def regression_data(samples=32, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(samples, INPUT_DIM)).astype("float32")
    targets = rng.normal(size=(samples, 1)).astype("float32")
    return features, targets


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
    keras_major, observe
):
    base_model = training_apis.build_small_model(input_dim=INPUT_DIM)
    if keras_major >= 3:
        with pytest.raises(AttributeError, match="fit_generator"):
            weights_after_one_epoch("fit_generator", base_model)
        observe("model.fit_generator", "AttributeError")
    else:
        reference = weights_after_one_epoch("fit_arrays", base_model)
        with pytest.warns(UserWarning, match="deprecated"):
            weights = weights_after_one_epoch("fit_generator", base_model)
        assert training_apis.max_weight_difference(weights, reference) <= TOLERANCE
        observe("model.fit_generator", "trains like fit, UserWarning: deprecated")


# --- make_train_step ----------------------------------------------------------------------


def test_one_call_with_k_steps_per_call_equals_k_single_step_calls(observe):
    """Weights agree within TOLERANCE and the returned loss is the mean of the k losses."""
    loss_fn = keras.losses.MeanSquaredError()
    single_model = training_apis.build_small_model(input_dim=INPUT_DIM)
    initial_weights = single_model.get_weights()
    single_step = training_apis.make_train_step(
        single_model, loss_fn, keras.optimizers.SGD(LEARNING_RATE)
    )
    multi_model = training_apis.clone_with_same_weights(single_model)
    multi_steps = {
        steps: training_apis.make_train_step(
            multi_model, loss_fn, keras.optimizers.SGD(LEARNING_RATE), steps_per_call=steps
        )
        for steps in (2, 3)
    }

    @hypothesis.given(st.sampled_from([2, 3]).flatmap(lambda k: batches_of((k, BATCH_SIZE))))
    def check(stacked_batches):
        features, targets = split_features_and_targets(stacked_batches)
        single_model.set_weights(initial_weights)
        multi_model.set_weights(initial_weights)
        single_losses = [float(single_step(x, y)) for x, y in zip(features, targets, strict=True)]
        mean_loss = float(multi_steps[len(features)](features, targets))
        assert mean_loss == pytest.approx(np.mean(single_losses), rel=1e-5, abs=1e-6)
        difference = training_apis.max_weight_difference(
            multi_model.get_weights(), single_model.get_weights()
        )
        assert difference <= TOLERANCE

    check()
    observe("make_train_step(steps_per_call=k), one call", "k single steps' weights, mean loss")


@pytest.mark.parametrize("steps_per_call", [1, 2, 4])
def test_iterator_step_reads_batches_in_the_graph_and_matches_fit_with_one_trace(
    steps_per_call, observe
):
    """make_iterator_train_step pulls k batches per call from a tf.data iterator, as fit does."""
    base_model = training_apis.build_small_model(input_dim=INPUT_DIM)
    reference = weights_after_one_epoch("fit_arrays", base_model)
    features, targets = regression_data()
    model = training_apis.clone_with_same_weights(base_model)
    step = training_apis.make_iterator_train_step(
        model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(LEARNING_RATE), steps_per_call
    )
    iterator = iter(tf.data.Dataset.from_tensor_slices((features, targets)).batch(BATCH_SIZE))
    batches = len(features) // BATCH_SIZE
    losses = [float(step(iterator)) for _ in range(batches // steps_per_call)]
    assert all(np.isfinite(losses))
    assert training_apis.max_weight_difference(model.get_weights(), reference) <= TOLERANCE
    assert step.experimental_get_tracing_count() == 1
    # The epoch is spent: one more call finds no batch left inside the graph.
    with pytest.raises(tf.errors.OutOfRangeError):
        step(iterator)
    observe(
        "make_iterator_train_step, one epoch from a tf.data iterator",
        "same weights as fit on arrays, 1 trace; OutOfRangeError once the data runs out",
    )
    with pytest.raises(ValueError, match="steps_per_call must be a positive int, got 0"):
        training_apis.make_iterator_train_step(
            model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(LEARNING_RATE), 0
        )


def test_train_step_traces_twice_over_twelve_different_batch_sizes(observe):
    """reduce_retracing: the second batch size generalizes the trace to a None batch dimension.

    Each trace of a train step is costly, so this runs one scrambled sequence; the property over
    arbitrary sequences is tested on the cheap function in the retracing tests below.
    """
    model = training_apis.build_small_model(input_dim=INPUT_DIM)
    step = training_apis.make_train_step(
        model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(LEARNING_RATE)
    )
    traces_after_each_call = []
    for batch_size in (8, 8, 5, 8, 3, 1, 12, 7, 2, 11, 4, 6, 9, 10):
        step(tf.ones((batch_size, INPUT_DIM)), tf.ones((batch_size, 1)))
        traces_after_each_call.append(step.experimental_get_tracing_count())
    assert traces_after_each_call == [1, 1] + [2] * 12
    observe("make_train_step over 12 different batch sizes", "2 traces")


def test_an_unbuilt_optimizer_makes_the_first_step_trace_twice_unless_it_has_no_slots(
    keras_major, observe
):
    """Keras 2 SGD builds a slot per weight even at momentum 0; Keras 3 SGD only with momentum."""
    loss_fn = keras.losses.MeanSquaredError()
    features, targets = regression_data(samples=BATCH_SIZE)
    for momentum in (0.0, 0.9):
        model = training_apis.build_small_model(input_dim=INPUT_DIM)
        optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=momentum)

        @tf.function
        def naive_step(x, y, model=model, optimizer=optimizer):
            return training_apis.tape_step(model, loss_fn, optimizer, x, y)

        naive_step(features, targets)
        naive_step(features, targets)
        creates_slots = keras_major < 3 or momentum > 0
        expected_traces = 2 if creates_slots else 1
        assert naive_step.experimental_get_tracing_count() == expected_traces, momentum
        observe(
            f"first tf.function step, unbuilt SGD(momentum={momentum})",
            f"{expected_traces} trace{'s' if expected_traces > 1 else ''}",
        )

        fresh_model = training_apis.build_small_model(input_dim=INPUT_DIM)
        fresh_optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=momentum)
        step = training_apis.make_train_step(fresh_model, loss_fn, fresh_optimizer)
        step(features, targets)
        step(features, targets)
        assert step.experimental_get_tracing_count() == 1, momentum
        observe(f"first make_train_step call, SGD(momentum={momentum})", "1 trace")


def assert_rejects(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_make_train_step_rejects_bad_arguments_before_tensorflow_runs():
    valid = {
        "model": training_apis.build_small_model(input_dim=INPUT_DIM),
        "loss_fn": keras.losses.MeanSquaredError(),
        "optimizer": keras.optimizers.SGD(LEARNING_RATE),
    }
    cases = [
        ({"steps_per_call": 0}, "steps_per_call.*0"),
        ({"steps_per_call": -2}, "steps_per_call.*-2"),
        ({"steps_per_call": 1.5}, "steps_per_call.*1.5"),
        ({"steps_per_call": True}, "steps_per_call.*True"),
        ({"steps_per_call": "3"}, "steps_per_call.*'3'"),
        ({"model": "not a model"}, "model.*'not a model'"),
        ({"model": keras.Sequential([keras.layers.Dense(1)])}, "model has no trainable variables"),
        ({"loss_fn": "mse"}, "loss_fn.*'mse'"),
        ({"optimizer": "sgd"}, "optimizer.*'sgd'"),
    ]
    for arguments, message in cases:
        assert_rejects(
            lambda arguments=arguments: training_apis.make_train_step(**{**valid, **arguments}),
            message,
        )
    step = training_apis.make_train_step(**valid, steps_per_call=3)
    assert_rejects(
        lambda: step(tf.ones((2, BATCH_SIZE, INPUT_DIM)), tf.ones((2, BATCH_SIZE, 1))),
        "steps_per_call=3, got 2",
    )


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
    # make_train_step calls the model with training=True, so its step moves the statistics.
    model.set_weights(initial_weights)
    features, _ = regression_data(samples=BATCH_SIZE)
    training_apis.make_train_step(model, loss_fn, optimizer)(features, targets)
    np.testing.assert_allclose(
        batch_normalization.moving_mean.numpy(),
        0.99 * moving_mean_before + 0.01 * features.astype(np.float64).mean(axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
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
        # Keras 3.0 would otherwise report a running mean over every earlier example.
        model.reset_metrics()
        reported = model.test_on_batch(features, targets)
        expected = data_loss(features, targets) + regularization
        assert reported == pytest.approx(expected, rel=1e-5, abs=1e-6)

    check()
    observe("evaluate loss with an L2 kernel_regularizer", "compiled loss + sum(model.losses)")


def test_train_and_test_on_batch_report_a_running_mean_on_keras_3_0_only(observe):
    """An all-ones Dense kernel gives batch losses 4 then 0; Keras 3.0 reports (4 + 0) / 2."""
    inputs = keras.Input(shape=(2,))
    outputs = keras.layers.Dense(1, kernel_initializer="ones")(inputs)
    model = keras.Model(inputs, outputs)
    # A learning rate of zero keeps the weights, so each batch's own loss stays 4 or 0.
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    ones, zeros = np.ones((4, 2), "float32"), np.zeros((4, 2), "float32")
    targets = np.zeros((4, 1), "float32")
    running_mean = KERAS_MAJOR >= 3 and KERAS_VERSION.startswith("3.0.")
    for method in ("train_on_batch", "test_on_batch"):
        model.reset_metrics()
        first = getattr(model, method)(ones, targets)
        second = getattr(model, method)(zeros, targets)
        assert first == pytest.approx(4.0)
        if running_mean:
            assert second == pytest.approx(2.0)
            observe(f"{method}: loss of batch 4.0, then batch 0.0", "4.0, then 2.0 (running mean)")
        else:
            assert second == pytest.approx(0.0)
            observe(f"{method}: loss of batch 4.0, then batch 0.0", "4.0, then 0.0 (this batch)")
        model.reset_metrics()
        assert getattr(model, method)(zeros, targets) == pytest.approx(0.0)


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
    compiled_step = training_apis.make_train_step(model, loss_fn, optimizer)
    regularization = float(tf.add_n(model.losses))

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
        # make_train_step adds model.losses too: same weights, and it returns the full loss.
        model.set_weights(initial_weights)
        expected_loss = float(loss_fn(y, model(x))) + regularization
        assert float(compiled_step(x, y)) == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
        assert training_apis.max_weight_difference(model.get_weights(), reference) <= 1e-6

    check()
    assert np.max(np.abs(expected_gap[kernel_index])) > 1e-3
    observe("tape loss without model.losses, one step", "off by learning_rate * L2 gradient")


# --- Pitfall: retracing -------------------------------------------------------------------

SCALAR_SIGNATURE = [tf.TensorSpec([None, 3]), tf.TensorSpec([])]


def test_python_floats_retrace_once_per_value_and_tensors_trace_once(observe):
    x = tf.ones((2, 3))
    python_calls = [(x, value) for value in (1.0, 2.0, 3.0)]
    tensor_calls = [(x, tf.constant(value)) for value in (1.0, 2.0, 3.0)]
    assert training_apis.count_traces(python_calls) == 3
    assert training_apis.count_traces(tensor_calls) == 1
    assert training_apis.count_traces(python_calls, reduce_retracing=True) == 3
    assert training_apis.count_traces(python_calls, input_signature=SCALAR_SIGNATURE) == 1
    observe("tf.function called with Python floats 1.0, 2.0, 3.0", "3 traces")
    observe("tf.function called with tf.constant 1.0, 2.0, 3.0", "1 trace")
    observe("Python floats 1.0, 2.0, 3.0 with reduce_retracing=True", "3 traces")
    observe("Python floats 1.0, 2.0, 3.0 with an input_signature", "1 trace")

    @hypothesis.given(st.lists(finite_floats(10), min_size=1, max_size=4))
    def check(values):
        distinct = len(set(values))
        python_calls = [(x, value) for value in values]
        assert training_apis.count_traces(python_calls) == distinct
        assert training_apis.count_traces(python_calls, reduce_retracing=True) == distinct
        assert training_apis.count_traces(python_calls, input_signature=SCALAR_SIGNATURE) == 1
        assert training_apis.count_traces([(x, tf.constant(value)) for value in values]) == 1

    check()


def test_new_batch_sizes_retrace_unless_signature_or_reduce_retracing(observe):
    calls = [(tf.ones((batch, 3)), tf.constant(1.0)) for batch in range(1, 11)]
    assert training_apis.count_traces(calls) == 10
    assert training_apis.count_traces(calls, input_signature=SCALAR_SIGNATURE) == 1
    assert training_apis.count_traces(calls, reduce_retracing=True) == 2
    observe("tf.function over 10 batch sizes", "10 traces (no automatic relaxation)")
    observe("10 batch sizes, input_signature with None batch", "1 trace")
    observe("10 batch sizes, reduce_retracing=True", "2 traces")

    @hypothesis.given(st.lists(st.integers(1, 12), min_size=1, max_size=4))
    def check(sizes):
        calls = [(tf.ones((batch, 3)), tf.constant(1.0)) for batch in sizes]
        distinct = len(set(sizes))
        assert training_apis.count_traces(calls) == distinct
        assert training_apis.count_traces(calls, input_signature=SCALAR_SIGNATURE) == 1
        assert training_apis.count_traces(calls, reduce_retracing=True) == min(2, distinct)

    check()


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
        ({"route": "fit_dataset"}, "route.*'fit_dataset'"),
        ({"batch_size": 5}, "batch_size.*5"),
        ({"batch_size": 0}, "batch_size.*0"),
        ({"learning_rate": 0.0}, "learning_rate.*0.0"),
        ({"learning_rate": float("nan")}, "learning_rate.*nan"),
        ({"learning_rate": "0.1"}, "learning_rate.*'0.1'"),
        ({"targets": np.zeros((31, 1), "float32")}, "same length.*32 and 31"),
        ({"model": None}, "model.*None"),
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
    cases = [
        (lambda: training_apis.build_small_model(input_dim=0), "input_dim.*0"),
        (lambda: training_apis.build_small_model(hidden_units=2.5), "hidden_units.*2.5"),
        (lambda: training_apis.build_small_model(l2_factor=-1.0), "l2_factor.*-1.0"),
        (lambda: training_apis.build_small_model(dropout_rate=1.0), "dropout_rate.*1.0"),
        (lambda: training_apis.build_small_model(seed=-1), "seed.*-1"),
        (lambda: training_apis.clone_with_same_weights([]), r"model.*\[\]"),
        (lambda: training_apis.repeat_batches([], [], batch_size=-1), "batch_size.*-1"),
        (lambda: training_apis.max_weight_difference([1], [1, 2]), "weights.*2.*got 1"),
        (lambda: training_apis.count_traces([]), r"calls.*\[\]"),
        (lambda: training_apis.count_traces([(1.0, 1.0)], jit_compile=True), "jit_compile"),
        (
            lambda: training_apis.tape_step(
                model, loss_fn, optimizer, features, targets, training="yes"
            ),
            "training.*'yes'",
        ),
    ]
    for call, message in cases:
        assert_rejects(call, message)
