"""Tests for recipes/compiled_train_step.py: the compiled steps train as fit does, and trace once.

Property tests build their model and compiled functions once per test and reset the weights
before each example, so hypothesis explores data without paying for a new trace per example.
"""

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes import compiled_train_step as recipe
from tests.regression_data import (
    INPUT_DIM,
    batches_of,
    finite_floats,
    regression_data,
    split_features_and_targets,
)

TOLERANCE = 1e-5
LEARNING_RATE = 0.1
BATCH_SIZE = 8


def small_model(batch_normalization=False, l2_factor=0.0):
    """Input -> [BatchNormalization] -> Dense(8, tanh, [L2]) -> Dense(1), seeded (not with 0:
    Keras 3.0 takes a seed of 0 as no seed)."""
    inputs = keras.Input(shape=(INPUT_DIM,))
    hidden = inputs
    if batch_normalization:
        hidden = keras.layers.BatchNormalization(name="batch_normalization")(hidden)
    hidden = keras.layers.Dense(
        8,
        activation="tanh",
        kernel_initializer=keras.initializers.GlorotUniform(seed=1),
        kernel_regularizer=keras.regularizers.L2(l2_factor) if l2_factor else None,
        name="hidden",
    )(hidden)
    outputs = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=2))(
        hidden
    )
    return keras.Model(inputs, outputs)


def copy_of(model):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def max_difference(weights, reference_weights):
    assert [np.shape(weight) for weight in weights] == [np.shape(r) for r in reference_weights]
    return max(
        float(np.max(np.abs(weight - reference)))
        for weight, reference in zip(weights, reference_weights, strict=True)
    )


def weights_after_fit(base_model):
    """One epoch of plain SGD by fit on arrays, batch order kept: the reference weights."""
    features, targets = regression_data()
    model = copy_of(base_model)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    model.fit(features, targets, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def new_step(model, maker=recipe.make_train_step, steps_per_call=1):
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    return maker(model, keras.losses.MeanSquaredError(), optimizer, steps_per_call)


# --- make_train_step trains as fit does -----------------------------------------------------


def test_one_epoch_of_make_train_step_ends_at_the_weights_of_fit(observe):
    base_model = small_model()
    reference = weights_after_fit(base_model)
    # The comparison only means something if one epoch moves the weights well past TOLERANCE.
    assert max_difference(reference, base_model.get_weights()) > 1e-3
    model = copy_of(base_model)
    step = new_step(model)
    features, targets = regression_data()
    for start in range(0, len(features), BATCH_SIZE):
        step(features[start : start + BATCH_SIZE], targets[start : start + BATCH_SIZE])
    assert max_difference(model.get_weights(), reference) <= TOLERANCE
    observe("one SGD epoch by make_train_step", "same weights as fit on arrays (atol 1e-5)")


def test_one_call_with_k_steps_per_call_equals_k_single_step_calls(observe):
    """Weights agree within TOLERANCE and the returned loss is the mean of the k losses."""
    single_model = small_model()
    initial_weights = single_model.get_weights()
    single_step = new_step(single_model)
    multi_model = copy_of(single_model)
    multi_steps = {steps: new_step(multi_model, steps_per_call=steps) for steps in (2, 3)}

    @hypothesis.given(st.sampled_from([2, 3]).flatmap(lambda k: batches_of((k, BATCH_SIZE))))
    def check(stacked_batches):
        features, targets = split_features_and_targets(stacked_batches)
        single_model.set_weights(initial_weights)
        multi_model.set_weights(initial_weights)
        single_losses = [float(single_step(x, y)) for x, y in zip(features, targets, strict=True)]
        mean_loss = float(multi_steps[len(features)](features, targets))
        assert mean_loss == pytest.approx(np.mean(single_losses), rel=1e-5, abs=1e-6)
        assert max_difference(multi_model.get_weights(), single_model.get_weights()) <= TOLERANCE

    check()
    observe("make_train_step(steps_per_call=k), one call", "k single steps' weights, mean loss")


def test_make_train_step_runs_the_model_in_training_mode_and_adds_model_losses(observe):
    """BatchNormalization's moving mean moves; an L2 step equals train_on_batch's."""
    bn_model = small_model(batch_normalization=True)
    moving_mean = bn_model.get_layer("batch_normalization").moving_mean
    moving_mean_before = moving_mean.numpy().copy()
    features, targets = regression_data(samples=BATCH_SIZE)
    new_step(bn_model)(features, targets)
    np.testing.assert_allclose(
        moving_mean.numpy(),
        0.99 * moving_mean_before + 0.01 * features.astype(np.float64).mean(axis=0),
        rtol=1e-5,
        atol=1e-6,
    )
    observe("make_train_step, BatchNormalization", "moving mean: 0.99 old + 0.01 batch mean")

    model = small_model(l2_factor=0.1)
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    initial_weights = model.get_weights()
    step = new_step(model)
    regularization = float(tf.add_n(model.losses))
    assert regularization > 0

    @hypothesis.given(batches_of((BATCH_SIZE,)))
    def check(batch):
        x, y = split_features_and_targets(batch)
        model.set_weights(initial_weights)
        model.train_on_batch(x, y)
        reference = model.get_weights()
        model.set_weights(initial_weights)
        expected_loss = float(keras.losses.MeanSquaredError()(y, model(x))) + regularization
        assert float(step(x, y)) == pytest.approx(expected_loss, rel=1e-5, abs=1e-6)
        assert max_difference(model.get_weights(), reference) <= 1e-6

    check()
    observe("make_train_step with an L2 kernel_regularizer", "train_on_batch's weights (1e-6)")


@pytest.mark.parametrize("steps_per_call", [1, 2, 4])
def test_iterator_step_reads_batches_in_the_graph_and_matches_fit_with_one_trace(
    steps_per_call, observe
):
    """make_iterator_train_step pulls k batches per call from a tf.data iterator, as fit does."""
    base_model = small_model()
    reference = weights_after_fit(base_model)
    features, targets = regression_data()
    model = copy_of(base_model)
    step = new_step(model, recipe.make_iterator_train_step, steps_per_call)
    iterator = iter(tf.data.Dataset.from_tensor_slices((features, targets)).batch(BATCH_SIZE))
    batches = len(features) // BATCH_SIZE
    losses = [float(step(iterator)) for _ in range(batches // steps_per_call)]
    assert all(np.isfinite(losses))
    assert max_difference(model.get_weights(), reference) <= TOLERANCE
    assert step.experimental_get_tracing_count() == 1
    # The epoch is spent: one more call finds no batch left inside the graph.
    with pytest.raises(tf.errors.OutOfRangeError):
        step(iterator)
    observe(
        "make_iterator_train_step, one epoch from a tf.data iterator",
        "same weights as fit on arrays, 1 trace; OutOfRangeError once the data runs out",
    )


# --- Tracing --------------------------------------------------------------------------------


def test_train_step_traces_twice_over_twelve_different_batch_sizes(observe):
    """reduce_retracing: the second batch size generalizes the trace to a None batch dimension.

    Each trace of a train step is costly, so this runs one scrambled sequence; the property over
    arbitrary sequences is tested on the cheap function in the retracing tests below.
    """
    step = new_step(small_model())
    traces_after_each_call = []
    for batch_size in (8, 8, 5, 8, 3, 1, 12, 7, 2, 11, 4, 6, 9, 10):
        step(tf.ones((batch_size, INPUT_DIM)), tf.ones((batch_size, 1)))
        traces_after_each_call.append(step.experimental_get_tracing_count())
    assert traces_after_each_call == [1, 1] + [2] * 12
    observe("make_train_step over 12 different batch sizes", "2 traces")


def slots_and_traces(step, optimizer, model):
    """Calls `step` twice; describes the optimizer's slots and the traces of the first call."""
    features, targets = regression_data(samples=BATCH_SIZE)
    variables_before = len(optimizer.variables)
    step(features, targets)
    variables_after = len(optimizer.variables)
    traces = step.experimental_get_tracing_count()
    step(features, targets)
    # Every trace belongs to the first call: the second reuses its graph.
    assert step.experimental_get_tracing_count() == traces
    # The optimizer's own variables (iteration; on Keras 3 also learning_rate) are scalars,
    # and every weight of the model is not, so the non-scalar variables are the slots.
    slot_shapes = [tuple(variable.shape) for variable in optimizer.variables if len(variable.shape)]
    if not slot_shapes:
        slots = "no slots"
    else:
        assert slot_shapes == [tuple(weight.shape) for weight in model.trainable_variables]
        created = variables_after - variables_before
        assert created in (0, len(slot_shapes))
        slots = "a slot per weight, " + (
            "created inside the first call" if created else "built before the first call"
        )
    return f"{slots}; the first call traces {traces} time{'s' if traces > 1 else ''}"


def naive_tf_function_step(model, loss_fn, optimizer):
    """A tape step under a plain tf.function, the optimizer left unbuilt."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
        return loss

    return step


SLOTS_MADE_IN_THE_CALL = (
    "a slot per weight, created inside the first call; the first call traces 2 times"
)
SLOTS_BUILT_BEFORE = "a slot per weight, built before the first call; the first call traces 1 time"
NO_SLOTS = "no slots; the first call traces 1 time"


def test_an_unbuilt_optimizer_creates_its_slots_in_the_first_call_which_then_traces_twice(
    version_split, observe
):
    """Keras 2 SGD builds a slot per weight even at momentum 0; Keras 3 SGD only with momentum."""
    loss_fn = keras.losses.MeanSquaredError()
    for momentum in (0.0, 0.9):
        model = small_model()
        optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=momentum)
        naive = slots_and_traces(
            naive_tf_function_step(model, loss_fn, optimizer), optimizer, model
        )
        model = small_model()
        optimizer = keras.optimizers.SGD(LEARNING_RATE, momentum=momentum)
        built = slots_and_traces(
            recipe.make_train_step(model, loss_fn, optimizer), optimizer, model
        )

        naive_behaviour = f"first tf.function step, unbuilt SGD(momentum={momentum})"
        built_behaviour = f"make_train_step, SGD(momentum={momentum})"
        if momentum == 0:
            version_split(
                naive_behaviour,
                naive,
                {
                    "keras<3": SLOTS_MADE_IN_THE_CALL,
                    "keras>=3": NO_SLOTS,
                },
            )
            version_split(
                built_behaviour,
                built,
                {
                    "keras<3": SLOTS_BUILT_BEFORE,
                    "keras>=3": NO_SLOTS,
                },
            )
        else:
            assert naive == SLOTS_MADE_IN_THE_CALL
            observe(naive_behaviour, naive)
            assert built == SLOTS_BUILT_BEFORE
            observe(built_behaviour, built)


SCALAR_SIGNATURE = [tf.TensorSpec([None, 3]), tf.TensorSpec([])]


def test_python_floats_retrace_once_per_value_and_tensors_trace_once(observe):
    x = tf.ones((2, 3))
    python_calls = [(x, value) for value in (1.0, 2.0, 3.0)]
    tensor_calls = [(x, tf.constant(value)) for value in (1.0, 2.0, 3.0)]
    assert recipe.count_traces(python_calls) == 3
    assert recipe.count_traces(tensor_calls) == 1
    assert recipe.count_traces(python_calls, reduce_retracing=True) == 3
    assert recipe.count_traces(python_calls, input_signature=SCALAR_SIGNATURE) == 1
    observe("tf.function called with Python floats 1.0, 2.0, 3.0", "3 traces")
    observe("tf.function called with tf.constant 1.0, 2.0, 3.0", "1 trace")
    observe("Python floats 1.0, 2.0, 3.0 with reduce_retracing=True", "3 traces")
    observe("Python floats 1.0, 2.0, 3.0 with an input_signature", "1 trace")

    @hypothesis.given(st.lists(finite_floats(10), min_size=1, max_size=4))
    def check(values):
        distinct = len(set(values))
        python_calls = [(x, value) for value in values]
        assert recipe.count_traces(python_calls) == distinct
        assert recipe.count_traces(python_calls, reduce_retracing=True) == distinct
        assert recipe.count_traces(python_calls, input_signature=SCALAR_SIGNATURE) == 1
        assert recipe.count_traces([(x, tf.constant(value)) for value in values]) == 1

    check()


def test_new_batch_sizes_retrace_unless_signature_or_reduce_retracing(observe):
    calls = [(tf.ones((batch, 3)), tf.constant(1.0)) for batch in range(1, 11)]
    assert recipe.count_traces(calls) == 10
    assert recipe.count_traces(calls, input_signature=SCALAR_SIGNATURE) == 1
    assert recipe.count_traces(calls, reduce_retracing=True) == 2
    observe("tf.function over 10 batch sizes", "10 traces (no automatic relaxation)")
    observe("10 batch sizes, input_signature with None batch", "1 trace")
    observe("10 batch sizes, reduce_retracing=True", "2 traces")

    @hypothesis.given(st.lists(st.integers(1, 12), min_size=1, max_size=4))
    def check(sizes):
        calls = [(tf.ones((batch, 3)), tf.constant(1.0)) for batch in sizes]
        distinct = len(set(sizes))
        assert recipe.count_traces(calls) == distinct
        assert recipe.count_traces(calls, input_signature=SCALAR_SIGNATURE) == 1
        assert recipe.count_traces(calls, reduce_retracing=True) == min(2, distinct)

    check()


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("maker", [recipe.make_train_step, recipe.make_iterator_train_step])
def test_both_step_makers_reject_bad_arguments_before_tensorflow_runs(maker):
    valid = {
        "model": small_model(),
        "loss_fn": keras.losses.MeanSquaredError(),
        "optimizer": keras.optimizers.SGD(LEARNING_RATE),
    }
    cases = [
        ({"steps_per_call": 0}, r"steps_per_call must be a positive int, got 0"),
        ({"steps_per_call": -2}, r"steps_per_call.*got -2"),
        ({"steps_per_call": 1.5}, r"steps_per_call.*got 1\.5"),
        ({"steps_per_call": np.float64(2.0)}, r"steps_per_call.*got (np\.float64\()?2\.0"),
        ({"steps_per_call": True}, r"steps_per_call.*got True"),
        ({"steps_per_call": "3"}, r"steps_per_call.*got '3'"),
        ({"model": "not a model"}, r"model must be a keras.Model, got 'not a model'"),
        ({"model": keras.Sequential([keras.layers.Dense(1)])}, "model has no trainable variables"),
        ({"loss_fn": "mse"}, r"loss_fn must be callable, got 'mse'"),
        ({"optimizer": "sgd"}, r"optimizer must have apply_gradients, got 'sgd'"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            maker(**{**valid, **arguments})


def test_the_steps_reject_bad_batches_and_accept_numpy_integers():
    model = small_model()
    step = new_step(model, steps_per_call=3)
    with pytest.raises(ValueError, match="steps_per_call=3, got 2"):
        step(tf.ones((2, BATCH_SIZE, INPUT_DIM)), tf.ones((2, BATCH_SIZE, 1)))
    # A Python generator would be read once at trace time and replayed by every call.
    iterator_step = new_step(model, recipe.make_iterator_train_step)
    batches = iter([(tf.ones((BATCH_SIZE, INPUT_DIM)), tf.ones((BATCH_SIZE, 1)))])
    with pytest.raises(ValueError, match=r"iterator must be iter\(a tf.data.Dataset\), got <list"):
        iterator_step(batches)
    with pytest.raises(ValueError, match="iterator must be .*, got 'data'"):
        iterator_step("data")

    features, targets = regression_data(samples=2 * BATCH_SIZE)
    for steps_per_call in (np.int64(2), np.int32(2)):
        stacked = (features.reshape(2, BATCH_SIZE, INPUT_DIM), targets.reshape(2, BATCH_SIZE, 1))
        assert np.isfinite(float(new_step(model, steps_per_call=steps_per_call)(*stacked)))
        dataset = tf.data.Dataset.from_tensor_slices((features, targets)).batch(BATCH_SIZE)
        step = new_step(model, recipe.make_iterator_train_step, steps_per_call)
        assert np.isfinite(float(step(iter(dataset))))


def test_count_traces_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"calls must be .*, got \[\]"):
        recipe.count_traces([])
    with pytest.raises(ValueError, match=r"calls must be .*, got \[1\.0\]"):
        recipe.count_traces([1.0])
    with pytest.raises(ValueError, match=r"function_options must be .*, got \['jit_compile'\]"):
        recipe.count_traces([(1.0, 1.0)], jit_compile=True)
