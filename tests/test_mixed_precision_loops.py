"""Tests for recipes/mixed_precision_loops.py: dtypes, loss scaling and accuracy, on CPU.

The loss scale tests train one float16 weight w (a bias-free Dense(1), kernel 0) on inputs
all equal to 1 and targets all equal to TARGET, so the gradient of mean((w - TARGET) ** 2) is
2 * (w - TARGET), about -3, known in numpy. At a loss scale of 32768 the float16 gradient
(about 98000) overflows float16's largest value 65504; at 16384 it does not.

The global policy leaks into every later test of the process, so only the `fit` test sets it,
through the `global_mixed_policy` fixture, which sets "float32" back in a `finally`; the other
tests give each layer its own `dtype=`.
"""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.mixed_precision_loops import (
    loss_scale_of,
    loss_scale_optimizer,
    make_train_step,
    scale_loss,
    train_step,
    unscale_gradients,
)
from tests.keras_said import outcome_and_said

FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
TARGET = 1.5
BATCH = 4
LEARNING_RATE = 0.01
# float16 rounds each gradient to 11 significant bits (relative 2 ** -11 = 4.9e-4): one SGD
# step of 0.01 * 3 moves w within 0.01 * 3 * 4.9e-4 = 1.5e-5 of numpy's, so four applied
# steps stay within 1e-4 (measured: 8.9e-6 on every stack).
ONE_WEIGHT_ATOL = 1e-4


@pytest.fixture
def global_mixed_policy():
    """The global policy mixed_float16 for one test, float32 again afterwards, whatever happens."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def one_weight_model(dtype="mixed_float16"):
    """x -> w * x in `dtype`, then a float32 Activation: the output and the loss in float32."""
    hidden = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros", dtype=dtype)
    output = keras.layers.Activation("linear", dtype="float32")
    return keras.Sequential([keras.Input((1,)), hidden, output]), hidden


def one_weight_batch(batches=1):
    return (
        np.ones((BATCH * batches, 1), "float32"),
        np.full((BATCH * batches, 1), TARGET, "float32"),
    )


def expected_loss_scaling(steps, initial_scale, growth_steps):
    """(loss scale, w, applied) after each step, by hand in float64.

    A step is skipped, and the scale halved, when scale * |gradient| exceeds float16's largest
    value; after `growth_steps` applied steps in a row the scale doubles.
    """
    weight, scale, good_steps, history = 0.0, float(initial_scale), 0, []
    for _ in range(steps):
        gradient = 2.0 * (weight - TARGET)
        ratio = scale * abs(gradient) / FLOAT16_MAX
        # Far from the edge, so float16 rounding cannot decide whether the step overflows.
        assert not 0.8 < ratio < 1.25, ratio
        applied = ratio < 1
        if applied:
            weight -= LEARNING_RATE * gradient
            good_steps += 1
            if good_steps == growth_steps:
                scale, good_steps = scale * 2, 0
        else:
            scale, good_steps = scale / 2, 0
        history.append((scale, weight, applied))
    return history


def own_scale_and_counter(optimizer):
    """The loss scale and good-step count read from the optimizer's own attributes."""
    if hasattr(optimizer, "dynamic_scale"):  # Keras 3
        return float(optimizer.dynamic_scale.numpy()), int(optimizer.step_counter.numpy())
    return float(optimizer.loss_scale.numpy()), int(optimizer.dynamic_counter.numpy())


# --- dtypes ---------------------------------------------------------------------------------


def test_mixed_layer_computes_in_float16_keeps_float32_weights_and_a_float32_layer_casts_back(
    observe,
):
    # Nothing leaked from another test: the fixture set the global policy back.
    assert keras.mixed_precision.global_policy().name == "float32"
    hidden = keras.layers.Dense(3, dtype="mixed_float16")
    dense_output = keras.layers.Dense(1, dtype="float32")
    activation_output = keras.layers.Activation("linear", dtype="float32")
    features = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    hidden_output = hidden(features)
    assert hidden.dtype_policy.name == "mixed_float16"
    assert (hidden.compute_dtype, hidden.variable_dtype, hidden.dtype) == (
        "float16",
        "float32",
        "float32",
    )
    assert tf.as_dtype(hidden.kernel.dtype) == tf.float32
    assert hidden_output.dtype == tf.float16
    # float16 math: x @ W + b in numpy within float16's relative precision.
    kernel, bias = hidden.get_weights()
    assert kernel.dtype == np.float32
    np.testing.assert_allclose(
        np.asarray(hidden_output, "float32"), features @ kernel + bias, rtol=2e-3, atol=2e-3
    )
    assert dense_output(hidden_output).dtype == tf.float32
    assert activation_output(hidden_output).dtype == tf.float32
    observe(
        "dtype='mixed_float16' layer",
        "computes float16, variables float32; a float32 layer after it returns float32",
    )


def test_mean_squared_error_on_float16_predictions(version_split):
    """Without a float32 output layer: 300 ** 2 = 90000 is above float16's largest value."""
    loss = keras.losses.MeanSquaredError()(tf.constant([[300.0]]), tf.constant([[0.0]], tf.float16))
    value = float(loss)
    assert FLOAT16_MAX < 300.0**2
    observed = {
        ("float16", np.inf): "float16: inf",
        ("float32", 90000.0): "float32: 90000",
    }.get((tf.as_dtype(loss.dtype).name, value), f"{tf.as_dtype(loss.dtype).name}: {value}")
    version_split(
        "keras.losses.MeanSquaredError() on float16 predictions",
        observed,
        {"keras<3": "float16: inf", "keras>=3": "float32: 90000"},
    )


# --- The portable tape step ------------------------------------------------------------------


def test_tape_step_skips_overflowing_steps_halves_then_grows_the_loss_scale(observe):
    model, hidden = one_weight_model()
    optimizer = loss_scale_optimizer(
        keras.optimizers.SGD(LEARNING_RATE), initial_scale=2.0**15, dynamic_growth_steps=2
    )
    step = make_train_step(model, keras.losses.MeanSquaredError(), optimizer)
    features, targets = one_weight_batch()
    expected = expected_loss_scaling(6, 2.0**15, 2)
    # Overflow, two applied steps, growth back to 32768, overflow again ...
    assert [scale for scale, _, _ in expected] == [2.0**14, 2.0**14, 2.0**15] * 2
    assert [applied for _, _, applied in expected] == [False, True, True] * 2
    assert loss_scale_of(optimizer) == 2.0**15
    weight_before, good_steps = 0.0, 0
    for expected_scale, expected_weight, applied in expected:
        loss = step(features, targets)
        assert loss.dtype == tf.float32
        # The loss of the weight before the step, computed from float16 w.
        np.testing.assert_allclose(float(loss), (weight_before - TARGET) ** 2, rtol=1e-3)
        weight = float(hidden.kernel.numpy()[0, 0])
        good_steps = 0 if not applied or good_steps + 1 == 2 else good_steps + 1
        assert loss_scale_of(optimizer) == expected_scale
        assert own_scale_and_counter(optimizer) == (expected_scale, good_steps)
        if applied:
            np.testing.assert_allclose(weight, expected_weight, atol=ONE_WEIGHT_ATOL, rtol=0)
        else:
            assert weight == weight_before  # a skipped step leaves the weight exactly alone
        weight_before = weight
    observe(
        "tape step with loss_scale_optimizer: loss scale over 6 overflowing/finite steps",
        "32768 -> 16384 (skipped), 16384, 32768 (grown), 16384 (skipped), 16384, 32768",
    )


def mlp(dtype, output_dtype):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(
                8,
                activation="relu",
                kernel_regularizer=keras.regularizers.L2(0.01),
                dtype=dtype,
            ),
            keras.layers.Dense(1, dtype=output_dtype),
        ]
    )


def numpy_mlp_sgd(weights, features, targets, steps, learning_rate, l2=0.01):
    """Plain SGD on mean squared error + l2 * sum(W1 ** 2), by hand in float64.

    Returns the loss before each step and the weights after the last one.
    """
    w1, b1, w2, b2 = (np.asarray(weight, "float64") for weight in weights)
    x, y = features.astype("float64"), targets.astype("float64")
    losses = []
    for _ in range(steps):
        pre = x @ w1 + b1
        hidden = np.maximum(pre, 0.0)
        prediction = hidden @ w2 + b2
        losses.append(np.mean((prediction - y) ** 2) + l2 * np.sum(w1**2))
        d_prediction = 2.0 * (prediction - y) / len(x)
        d_w2, d_b2 = hidden.T @ d_prediction, d_prediction.sum(0)
        d_pre = (d_prediction @ w2.T) * (pre > 0)
        d_w1, d_b1 = x.T @ d_pre + 2.0 * l2 * w1, d_pre.sum(0)
        w1, b1 = w1 - learning_rate * d_w1, b1 - learning_rate * d_b1
        w2, b2 = w2 - learning_rate * d_w2, b2 - learning_rate * d_b2
    return losses, [w1, b1, w2, b2]


def train(model, features, targets, steps, learning_rate):
    """`steps` eager tape steps (the compiled step is tested above; a trace costs 0.5 s)."""
    optimizer = loss_scale_optimizer(keras.optimizers.SGD(learning_rate))
    loss_fn = keras.losses.MeanSquaredError()
    losses = [float(train_step(model, loss_fn, optimizer, features, targets)) for _ in range(steps)]
    return losses, model.get_weights(), optimizer


def test_mixed_float16_tape_steps_match_float32_and_numpy_within_the_stated_tolerance(observe):
    random = np.random.default_rng(0)
    features = random.normal(size=(16, 4)).astype("float32")
    targets = random.normal(size=(16, 1)).astype("float32")
    float32_model = mlp("float32", "float32")
    mixed_model = mlp("mixed_float16", "float32")
    mixed_model.set_weights(float32_model.get_weights())
    start = float32_model.get_weights()
    steps, learning_rate = 5, 0.1
    expected_losses, expected_weights = numpy_mlp_sgd(
        start, features, targets, steps, learning_rate
    )
    float32_losses, float32_weights, _ = train(
        float32_model, features, targets, steps, learning_rate
    )
    mixed_losses, mixed_weights, mixed_optimizer = train(
        mixed_model, features, targets, steps, learning_rate
    )
    # The loss scale of 32768 never overflowed here: every step was applied.
    assert loss_scale_of(mixed_optimizer) == 2.0**15
    # float32: the step is plain SGD with the regularizer, the loss scale changes nothing.
    np.testing.assert_allclose(float32_losses, expected_losses, rtol=1e-5)
    for weight, expected in zip(float32_weights, expected_weights, strict=True):
        np.testing.assert_allclose(weight, expected, atol=1e-5, rtol=0)
    # mixed_float16 against float32, measured on the five stacks: losses at most 2.0e-4
    # apart (relative), weights at most 5.4e-5 (absolute).
    np.testing.assert_allclose(mixed_losses, float32_losses, rtol=1e-3)
    for weight, expected in zip(mixed_weights, float32_weights, strict=True):
        assert weight.dtype == np.float32
        np.testing.assert_allclose(weight, expected, atol=2e-4, rtol=0)
    # The training moved the weights much further than the tolerance.
    assert max(np.abs(w - s).max() for w, s in zip(mixed_weights, start, strict=True)) > 0.1
    observe(
        "mixed_float16 vs float32, 5 SGD tape steps",
        "losses within relative 1e-3, weights within 2e-4",
    )


# --- fit --------------------------------------------------------------------------------------


def test_fit_under_the_global_policy_wraps_sgd_and_halves_the_scale_on_overflow(
    global_mixed_policy, observe
):
    model, hidden = one_weight_model(dtype=None)
    assert hidden.compute_dtype == "float16" and hidden.variable_dtype == "float32"
    # run_eagerly: fit's own train step without its 0.5 s trace; the loss scale logic is the
    # same code, and the tape test above runs it compiled.
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse", run_eagerly=True)
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert loss_scale_of(model.optimizer) == 2.0**15
    features, targets = one_weight_batch(batches=4)
    history = model.fit(features, targets, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    # The default growth interval (2000 steps) never comes: the first step overflows and is
    # skipped, the three others are applied at 16384.
    expected = expected_loss_scaling(4, 2.0**15, 2000)
    assert [applied for _, _, applied in expected] == [False, True, True, True]
    final_scale, final_weight, _ = expected[-1]
    assert loss_scale_of(model.optimizer) == final_scale == 2.0**14
    np.testing.assert_allclose(
        float(hidden.kernel.numpy()[0, 0]), final_weight, atol=ONE_WEIGHT_ATOL, rtol=0
    )
    # fit reports the mean of the four batches' unscaled losses.
    weights_before = [0.0] + [weight for _, weight, _ in expected[:-1]]
    expected_loss = np.mean([(weight - TARGET) ** 2 for weight in weights_before])
    np.testing.assert_allclose(history.history["loss"][0], expected_loss, rtol=1e-3)
    observe(
        "fit under the global mixed_float16 policy with SGD",
        "LossScaleOptimizer at 32768, halved on overflow",
    )


def test_compile_keeps_a_plain_optimizer_when_only_the_layers_are_mixed(observe):
    assert keras.mixed_precision.global_policy().name == "float32"
    model, hidden = one_weight_model()
    assert hidden.compute_dtype == "float16"
    model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    assert not isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    wrapped = loss_scale_optimizer(keras.optimizers.SGD(LEARNING_RATE))
    model.compile(optimizer=wrapped, loss="mse")
    assert model.optimizer is wrapped
    observe(
        "compile with per-layer mixed_float16 dtypes, global policy float32",
        "plain SGD kept: no loss scaling unless a LossScaleOptimizer is passed",
    )


# --- Version splits --------------------------------------------------------------------------

# The TensorFlow mixed precision guide's custom training loop, run as a user's own code (not
# as this repository's), so the error it raises is recorded whole for the error index.
GUIDE_TRAIN_STEP = """
with tf.GradientTape() as tape:
    predictions = model(x)
    loss = loss_object(y, predictions)
    scaled_loss = optimizer.get_scaled_loss(loss)
scaled_gradients = tape.gradient(scaled_loss, model.trainable_variables)
gradients = optimizer.get_unscaled_gradients(scaled_gradients)
optimizer.apply_gradients(zip(gradients, model.trainable_variables))
"""


def test_the_guides_get_scaled_loss_loop_and_scale_loss(version_split):
    model, hidden = one_weight_model()
    optimizer = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(LEARNING_RATE))
    features, targets = one_weight_batch()
    namespace = {
        "tf": tf,
        "model": model,
        "optimizer": optimizer,
        "loss_object": keras.losses.MeanSquaredError(),
        "x": features,
        "y": targets,
    }
    code = compile(GUIDE_TRAIN_STEP, "<mixed precision guide>", "exec")
    guide = outcome_of(lambda: exec(code, namespace), ["has no attribute 'get_scaled_loss'"])
    if guide == "works":
        # It trained: 32768 * 3 overflowed float16, so the step was skipped and halved.
        assert loss_scale_of(optimizer) == 2.0**14
        assert float(hidden.kernel.numpy()[0, 0]) == 0.0
    scale = loss_scale_of(optimizer)
    scaled = outcome_of(
        lambda: np.testing.assert_allclose(
            float(optimizer.scale_loss(tf.constant(2.0))), 2.0 * scale
        ),
        ["has no attribute 'scale_loss'"],
    )
    unscaled = outcome_of(
        lambda: np.testing.assert_allclose(
            float(optimizer.get_unscaled_gradients([tf.constant(2.0)])[0]), 2.0 / scale
        ),
        ["has no attribute 'get_unscaled_gradients'"],
    )
    version_split(
        "the TF guide's get_scaled_loss loop; get_unscaled_gradients; scale_loss",
        f"guide loop: {guide}; get_unscaled_gradients: {unscaled}; scale_loss: {scaled}",
        {
            "keras<3": "guide loop: works; get_unscaled_gradients: works; scale_loss: "
            "AttributeError: has no attribute 'scale_loss'",
            "keras>=3": "guide loop: AttributeError: has no attribute 'get_scaled_loss'; "
            "get_unscaled_gradients: AttributeError: has no attribute "
            "'get_unscaled_gradients'; scale_loss: works",
        },
    )


def test_apply_gradients_on_gradients_that_were_never_scaled(version_split):
    """The gradient is 1 and the learning rate 1: a step of 1 is the gradient applied as given."""
    optimizer = loss_scale_optimizer(keras.optimizers.SGD(1.0), initial_scale=8.0)
    variable = tf.Variable([0.0])
    outcome, said = outcome_and_said(
        lambda: optimizer.apply_gradients([(tf.constant([1.0]), variable)]),
        said_fragments=["You forgot to call LossScaleOptimizer.get_scaled_loss()"],
    )
    assert outcome == "works"
    step = -float(variable.numpy()[0])
    observed = {1.0: "applied as given", 1.0 / 8.0: "divided by the loss scale (8)"}.get(
        step, f"step {step}"
    )
    version_split(
        "LossScaleOptimizer.apply_gradients on gradients of an unscaled loss",
        f"{observed}; said: {said}",
        {
            "keras<3": "applied as given; said: logged: You forgot to call "
            "LossScaleOptimizer.get_scaled_loss()",
            "keras>=3": "divided by the loss scale (8); said: nothing",
        },
    )


def test_the_portable_helpers_scale_and_unscale_exactly_once(observe):
    """scale_loss, then unscale_gradients, then apply_gradients: the plain SGD step."""
    optimizer = loss_scale_optimizer(keras.optimizers.SGD(1.0), initial_scale=8.0)
    variable = tf.Variable([0.0])
    assert float(scale_loss(optimizer, tf.constant(3.0))) == 24.0
    # The gradient of the scaled loss 8 * loss is 8 * 0.5; apply_gradients must step by 0.5.
    gradients = unscale_gradients(optimizer, [tf.constant([8.0 * 0.5])])
    optimizer.apply_gradients(zip(gradients, [variable]))  # noqa: B905
    assert float(variable.numpy()[0]) == -0.5
    observe("scale_loss + unscale_gradients + apply_gradients", "the plain SGD step, exactly")


def test_where_the_loss_scale_and_its_counter_live(version_split):
    optimizer = loss_scale_optimizer(keras.optimizers.SGD(0.1), initial_scale=8.0)
    names = ["loss_scale", "dynamic_counter", "dynamic_scale", "step_counter"]
    before_build = [name for name in names if hasattr(optimizer, name)]
    # Before build, Keras 3's scale_loss uses initial_scale; loss_scale_of says the same.
    assert loss_scale_of(optimizer) == 8.0
    optimizer.build([tf.Variable([0.0])])
    after_build = [name for name in names if hasattr(optimizer, name)]
    assert own_scale_and_counter(optimizer) == (8.0, 0) and loss_scale_of(optimizer) == 8.0
    version_split(
        "LossScaleOptimizer attributes holding the loss scale and the good-step count",
        f"before build: {', '.join(before_build) or 'none'}; after: {', '.join(after_build)}",
        {
            "keras<3": "before build: loss_scale, dynamic_counter; "
            "after: loss_scale, dynamic_counter",
            "keras>=3": "before build: none; after: dynamic_scale, step_counter",
        },
    )


def test_loss_scale_after_repeated_non_finite_gradients(version_split):
    optimizer = loss_scale_optimizer(keras.optimizers.SGD(0.1), initial_scale=2.0)
    variable = tf.Variable([0.0])
    scales = []
    for _ in range(3):
        optimizer.apply_gradients([(tf.constant([np.nan]), variable)])
        scales.append(loss_scale_of(optimizer))
    assert float(variable.numpy()[0]) == 0.0  # every step skipped
    version_split(
        "loss scale after three non-finite gradients from 2",
        ", ".join(f"{scale:g}" for scale in scales),
        {"keras<3": "1, 1, 1", "keras>=3": "1, 0.5, 0.25"},
    )


def test_iterations_after_two_applied_steps_and_one_skipped(version_split):
    optimizer = loss_scale_optimizer(keras.optimizers.SGD(0.1), initial_scale=8.0)
    variable = tf.Variable([0.0])
    for gradient in [1.0, 1.0, np.inf]:
        # The gradient of a loss scaled by 8, unscaled as each Keras expects.
        gradients = unscale_gradients(optimizer, [tf.constant([8.0 * gradient])])
        optimizer.apply_gradients(zip(gradients, [variable]))  # noqa: B905
    np.testing.assert_allclose(variable.numpy(), [-0.2], rtol=1e-6)  # two steps of 0.1 * 1
    counts = int(optimizer.iterations.numpy()), int(optimizer.inner_optimizer.iterations.numpy())
    version_split(
        "LossScaleOptimizer iterations (and inner_optimizer.iterations) after 2 applied and "
        "1 skipped steps",
        f"{counts[0]} ({counts[1]})",
        {"keras<3": "3 (3)", "keras>=3,<3.9": "0 (2)", "keras>=3.9": "2 (2)"},
    )


# --- Input validation and the demo -----------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: loss_scale_optimizer("sgd"), r"optimizer='sgd'"),
        (
            lambda: loss_scale_optimizer(loss_scale_optimizer(keras.optimizers.SGD())),
            r"not a LossScaleOptimizer yet",
        ),
        (lambda: loss_scale_optimizer(keras.optimizers.SGD(), 0.0), r"initial_scale=0.0"),
        (lambda: loss_scale_optimizer(keras.optimizers.SGD(), float("inf")), r"initial_scale=inf"),
        (lambda: loss_scale_optimizer(keras.optimizers.SGD(), True), r"initial_scale=True"),
        (
            lambda: loss_scale_optimizer(keras.optimizers.SGD(), dynamic_growth_steps=0),
            r"dynamic_growth_steps=0",
        ),
        (
            lambda: loss_scale_optimizer(keras.optimizers.SGD(), dynamic_growth_steps=2.5),
            r"dynamic_growth_steps=2.5",
        ),
        (lambda: loss_scale_of(keras.optimizers.SGD()), r"optimizer=<"),
        (lambda: scale_loss(None, 1.0), r"optimizer=None"),
        (lambda: unscale_gradients("adam", []), r"optimizer='adam'"),
        (lambda: make_train_step("model", "mse", None), r"model='model'"),
        (
            lambda: make_train_step(keras.Sequential([keras.layers.Dense(1)]), "mse", None),
            r"loss_fn='mse'",
        ),
        (
            lambda: make_train_step(
                keras.Sequential([keras.layers.Dense(1)]), keras.losses.MeanSquaredError(), None
            ),
            r"optimizer=None",
        ),
        (
            lambda: make_train_step(
                keras.Sequential([keras.layers.Dense(1)]),
                keras.losses.MeanSquaredError(),
                loss_scale_optimizer(keras.optimizers.SGD()),
            ),
            r"model must be built.*no trainable variables",
        ),
        (lambda: train_step(None, "mse", None, 1.0, 1.0), r"model=None"),
    ],
)
def test_helpers_reject_bad_input_naming_the_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_demo_prints_the_dtypes_and_the_loss_scale_going_down_and_up(demo_output):
    printed = demo_output("mixed_precision_loops")
    assert "compute float16, variables float32; model output float32" in printed
    scales = [float(scale) for scale in re.findall(r"loss scale (\d+)", printed)]
    assert scales == [16384.0, 16384.0, 32768.0] * 2
    assert "(float32)" in printed
