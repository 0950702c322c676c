"""Tests for recipes/grouped_conv.py: three forms of one grouped convolution, and the stacks."""

import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.grouped_conv import (
    GroupedConv2D,
    check_groups,
    conv2d_accepts_groups,
    depthwise_to_grouped_weights,
    grouped_conv2d,
    grouped_to_depthwise_weights,
    grouped_to_split_weights,
    split_to_grouped_weights,
)
from tests.child_process import finish, last_report, run_python
from tests.grouped_conv_forms import (
    TOLERANCE,
    fit_grouped_and_split,
    grouped_and_split_pair,
    random_input,
    randomize_weights,
)
from tests.layer_contract import run_keras_layer_test


def numpy_grouped_conv(x, kernel, bias, groups):
    """Direct transcription of a grouped convolution with 1, 2 or 3 spatial axes: 'valid',
    stride 1, channels last, kernel (*window, channels / groups, filters)."""
    spatial = kernel.ndim - 2
    window, group_channels = kernel.shape[:spatial], kernel.shape[spatial]
    group_filters = kernel.shape[-1] // groups
    # Every window the kernel sees: (batch, *output positions, channels, *window).
    windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=tuple(range(1, 1 + spatial)))
    outputs = []
    for group in range(groups):
        # Group g reads input channels g * C/g .. and owns output columns g * F/g ...
        channels = slice(group * group_channels, (group + 1) * group_channels)
        inputs = windows[(Ellipsis, channels) + (slice(None),) * spatial]
        group_kernel = kernel[..., group * group_filters : (group + 1) * group_filters]
        # Sum over the group's channels and the window: (channels, *window) on both sides.
        outputs.append(np.tensordot(inputs, np.moveaxis(group_kernel, spatial, 0), spatial + 1))
    return np.concatenate(outputs, axis=-1) + bias


def outputs_and_gradients(layer, x):
    """The layer's output, d(sum of output * fixed weights)/d(input) and /d(each weight)."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        # A fixed random cotangent, so every output element's gradient counts differently.
        loss = tf.reduce_sum(y * random_input(y.shape, seed=7))
    gradients = tape.gradient(loss, [x] + list(layer.weights))
    return y.numpy(), gradients[0].numpy(), [g.numpy() for g in gradients[1:]]


@st.composite
def grouped_configurations(draw):
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    filters = groups * draw(st.integers(1, 3))
    kernel_size = draw(st.integers(1, 3))
    size = draw(st.integers(kernel_size, 6))
    strides = draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["valid", "same"]))
    return groups, channels, filters, kernel_size, size, strides, padding


@hypothesis.given(grouped_configurations())
def test_conv2d_groups_equals_split_convolve_concatenate_forward_and_backward(configuration):
    groups, channels, filters, kernel_size, size, strides, padding = configuration
    x = random_input((2, size, size, channels))
    options = {"strides": strides, "padding": padding}
    grouped = keras.layers.Conv2D(filters, kernel_size, groups=groups, **options)
    grouped.build(x.shape)
    randomize_weights(grouped)
    split = GroupedConv2D(filters, kernel_size, groups, **options)
    split.build(x.shape)
    split.set_weights(grouped_to_split_weights(grouped.get_weights(), groups))

    grouped_y, grouped_dx, grouped_dweights = outputs_and_gradients(grouped, x)
    split_y, split_dx, split_dweights = outputs_and_gradients(split, x)
    np.testing.assert_allclose(split_y, grouped_y, **TOLERANCE)
    np.testing.assert_allclose(split_dx, grouped_dx, **TOLERANCE)
    # The grouped kernel's gradient, split like the kernel, is the split form's gradient.
    for mapped, expected in zip(
        grouped_to_split_weights(grouped_dweights, groups), split_dweights, strict=True
    ):
        np.testing.assert_allclose(mapped, expected, **TOLERANCE)


@st.composite
def depthwise_configurations(draw):
    channels = draw(st.integers(1, 4))
    depth_multiplier = draw(st.integers(1, 3))
    kernel_size = draw(st.integers(1, 3))
    size = draw(st.integers(kernel_size, 6))
    return channels, depth_multiplier, kernel_size, size


@hypothesis.given(depthwise_configurations())
def test_conv2d_groups_equal_to_channels_is_depthwise_forward_and_backward(configuration):
    channels, depth_multiplier, kernel_size, size = configuration
    x = random_input((2, size, size, channels))
    grouped = keras.layers.Conv2D(channels * depth_multiplier, kernel_size, groups=channels)
    grouped.build(x.shape)
    randomize_weights(grouped)
    depthwise = keras.layers.DepthwiseConv2D(kernel_size, depth_multiplier=depth_multiplier)
    depthwise.build(x.shape)
    mapped = grouped_to_depthwise_weights(grouped.get_weights(), channels)
    assert mapped[0].shape == (kernel_size, kernel_size, channels, depth_multiplier)
    depthwise.set_weights(mapped)

    grouped_y, grouped_dx, grouped_dweights = outputs_and_gradients(grouped, x)
    depthwise_y, depthwise_dx, depthwise_dweights = outputs_and_gradients(depthwise, x)
    np.testing.assert_allclose(depthwise_y, grouped_y, **TOLERANCE)
    np.testing.assert_allclose(depthwise_dx, grouped_dx, **TOLERANCE)
    mapped_gradients = grouped_to_depthwise_weights(grouped_dweights, channels)
    for mapped_gradient, expected in zip(mapped_gradients, depthwise_dweights, strict=True):
        np.testing.assert_allclose(mapped_gradient, expected, **TOLERANCE)


def test_grouped_conv_and_the_weight_mapping_match_a_numpy_transcription():
    """Independent of TensorFlow: group i reads channels i*C/g.. and owns columns i*F/g.."""
    x = random_input((2, 5, 6, 6))
    layer = keras.layers.Conv2D(6, (2, 3), groups=3)
    layer.build(x.shape)
    randomize_weights(layer)
    kernel, bias = layer.get_weights()
    expected = numpy_grouped_conv(x.astype(np.float64), kernel, bias, groups=3)
    np.testing.assert_allclose(layer(x).numpy(), expected, **TOLERANCE)
    split_weights = grouped_to_split_weights([kernel, bias], groups=3)
    np.testing.assert_array_equal(split_weights[2], kernel[..., 2:4])
    np.testing.assert_array_equal(split_weights[3], bias[2:4])


def test_weight_mappings_round_trip_exactly():
    random = np.random.default_rng(0)
    kernel = random.normal(size=(3, 2, 2, 6)).astype("float32")
    bias = random.normal(size=(6,)).astype("float32")
    split = grouped_to_split_weights([kernel, bias], groups=3)
    assert [w.shape for w in split] == [(3, 2, 2, 2), (2,)] * 3
    for restored, original in zip(
        split_to_grouped_weights(split, groups=3), [kernel, bias], strict=True
    ):
        np.testing.assert_array_equal(restored, original)
    no_bias = grouped_to_split_weights([kernel], groups=2)
    np.testing.assert_array_equal(split_to_grouped_weights(no_bias, 2, use_bias=False)[0], kernel)

    per_channel = random.normal(size=(3, 3, 1, 8)).astype("float32")
    depthwise = grouped_to_depthwise_weights([per_channel, bias[:1].repeat(8)], channels=4)
    assert depthwise[0].shape == (3, 3, 4, 2)
    # Depthwise output column c * m + j reads input channel c with multiplier j.
    np.testing.assert_array_equal(depthwise[0][:, :, 1, 0], per_channel[:, :, 0, 2])
    np.testing.assert_array_equal(depthwise_to_grouped_weights(depthwise)[0], per_channel)


def test_grouped_conv2d_builds_conv2d_with_groups_where_keras_has_it(observe):
    """All five stacks take `groups`, so the helper never needs the fallback here."""
    assert conv2d_accepts_groups()
    layer = grouped_conv2d(4, 3, groups=2, padding="same")
    assert type(layer) is keras.layers.Conv2D and layer.groups == 2
    x = random_input((1, 5, 5, 4))
    assert layer(x).shape == (1, 5, 5, 4)
    assert layer.kernel.shape == (3, 3, 2, 4)
    observe("Conv2D accepts groups", "yes")


@pytest.mark.parametrize(
    ("layer_name", "input_shape", "kernel_size"),
    [("Conv1D", (2, 7, 4), 3), ("Conv3D", (2, 4, 5, 3, 4), 2)],
)
def test_conv1d_and_conv3d_take_groups_on_cpu_like_conv2d(
    layer_name, input_shape, kernel_size, observe
):
    """A PyTorch Conv1d or Conv3d with groups ports to its Keras layer: no split fallback."""
    x = random_input(input_shape)
    layer = getattr(keras.layers, layer_name)(6, kernel_size, groups=2)
    layer.build(x.shape)
    randomize_weights(layer)
    kernel, bias = layer.get_weights()
    # (*window, channels / groups, filters), as Conv2D's kernel.
    assert kernel.shape == (kernel_size,) * (len(input_shape) - 2) + (2, 6)
    expected = numpy_grouped_conv(x.astype(np.float64), kernel, bias, groups=2)

    def forward(inputs):
        return layer(inputs)

    routes = {
        "eager": forward,
        "tf.function": tf.function(forward),
        "tf.function(jit_compile=True)": tf.function(forward, jit_compile=True),
    }
    for route, run in routes.items():
        y = run(tf.constant(x))
        assert "CPU" in y.device
        np.testing.assert_allclose(y.numpy(), expected, **TOLERANCE)
        observe(f"{layer_name}(groups=2) forward on CPU, {route}", "works, equals numpy")


def test_grouped_conv2d_layer_saves_its_config():
    layer = GroupedConv2D(4, 3, groups=2, strides=2, padding="same", use_bias=False)
    restored = GroupedConv2D.from_config(layer.get_config())
    x = random_input((1, 6, 6, 4))
    layer.build(x.shape)
    restored.build(x.shape)
    restored.set_weights(layer.get_weights())
    assert len(layer.weights) == 2
    np.testing.assert_array_equal(restored(x).numpy(), layer(x).numpy())


# --- Bad input ---------------------------------------------------------------------------


def test_check_groups_names_the_argument_and_the_values():
    with pytest.raises(ValueError, match=r"channels=6 is not divisible by groups=4"):
        check_groups(6, 4)
    with pytest.raises(ValueError, match=r"filters=9 is not divisible by groups=2"):
        check_groups(4, 2, filters=9)
    with pytest.raises(ValueError, match=r"groups must be a positive integer, got 0"):
        check_groups(4, 0)
    with pytest.raises(ValueError, match=r"groups must be a positive integer, got True"):
        check_groups(4, True)
    with pytest.raises(ValueError, match=r"channels must be a positive integer, got 4.0"):
        check_groups(4.0, 2)
    check_groups(np.int64(6), np.int32(3), filters=np.int16(9))


def test_the_layers_refuse_channels_or_filters_not_divisible_by_groups():
    with pytest.raises(ValueError, match=r"channels=5 is not divisible by groups=2"):
        GroupedConv2D(4, 3, groups=2)(random_input((1, 6, 6, 5)))
    with pytest.raises(ValueError, match=r"channels=5 is not divisible by groups=2"):
        GroupedConv2D(4, 3, groups=2)(keras.Input((6, 6, 5)))
    with pytest.raises(ValueError, match=r"filters=3 is not divisible by groups=2"):
        GroupedConv2D(3, 3, groups=2)
    with pytest.raises(ValueError, match=r"filters=3 is not divisible by groups=2"):
        grouped_conv2d(3, 3, groups=2)
    with pytest.raises(ValueError, match=r"groups must be a positive integer, got -1"):
        grouped_conv2d(4, 3, groups=-1)


def test_weight_mappings_refuse_bad_kernels_and_groups():
    kernel = np.zeros((3, 3, 2, 6), "float32")
    with pytest.raises(ValueError, match=r"kernel must be 4-D .* got shape \(3, 3, 2\)"):
        grouped_to_split_weights([kernel[..., 0]], groups=2)
    with pytest.raises(ValueError, match=r"channels=6 is not divisible by groups=4"):
        grouped_to_split_weights([kernel], groups=4)
    with pytest.raises(ValueError, match=r"bias shape \(4,\) does not match"):
        grouped_to_split_weights([kernel, np.zeros(4)], groups=2)
    with pytest.raises(ValueError, match=r"weights must be \[kernel\] or \[kernel, bias\]"):
        grouped_to_split_weights(kernel, groups=2)
    with pytest.raises(ValueError, match=r"weights must hold 4 arrays, got 3"):
        split_to_grouped_weights([kernel] * 3, groups=2)
    with pytest.raises(ValueError, match=r"kernel must be 4-D .* got shape \(6,\)"):
        split_to_grouped_weights([np.zeros(6)] * 2, groups=2, use_bias=False)
    with pytest.raises(ValueError, match=r"groups == channels=3"):
        grouped_to_depthwise_weights([kernel], channels=3)
    with pytest.raises(ValueError, match=r"groups == channels=4"):
        grouped_to_depthwise_weights([np.zeros((3, 3, 1, 6))], channels=4)
    with pytest.raises(ValueError, match=r"kernel must be 4-D .* got shape \(3, 3, 4\)"):
        depthwise_to_grouped_weights([np.zeros((3, 3, 4))])


def test_keras_itself_refuses_non_divisible_filters_and_channels_on_every_stack(observe):
    with pytest.raises(ValueError, match="number of filters must be evenly divisible"):
        keras.layers.Conv2D(3, 3, groups=2)
    message = "number of input channels must be evenly divisible by the number of groups"
    with pytest.raises(ValueError, match=message):
        keras.layers.Conv2D(6, 3, groups=3)(random_input((1, 6, 6, 4)))
    with pytest.raises(ValueError, match=message):
        keras.layers.Conv2D(6, 3, groups=3)(keras.Input((6, 6, 4)))
    observe("Conv2D(3, groups=2)", "ValueError at construction: filters not divisible")
    observe("Conv2D(6, groups=3) on 4 channels", "ValueError when called: channels not divisible")


def test_tf_nn_conv2d_with_a_non_dividing_kernel_fails_only_when_it_runs(observe):
    x = random_input((1, 6, 6, 4))
    conv2d = tf.nn.conv2d(x, np.ones((3, 3, 2, 4), "float32"), 1, "VALID")
    assert conv2d.shape == (1, 4, 4, 4)  # input depth 2 of 4: a grouped conv, groups=2
    with pytest.raises(tf.errors.InvalidArgumentError, match="evenly divisible by filter dep"):
        tf.nn.conv2d(x, np.ones((3, 3, 3, 4), "float32"), 1, "VALID")
    observe("tf.nn.conv2d, channels 4, kernel depth 3", "InvalidArgumentError when run")


# --- What each stack does with a grouped convolution on CPU ----------------------------------


def test_grouped_conv_runs_on_cpu_eager_tf_function_and_jit_compile(observe):
    assert tf.config.list_physical_devices("GPU") == []
    x = random_input((3, 6, 6, 4))
    grouped, split = grouped_and_split_pair(x.shape)
    expected_y, expected_dx, expected_dweights = outputs_and_gradients(split, x)
    expected_dweights = split_to_grouped_weights(expected_dweights, 2)

    def forward_backward(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = grouped(inputs)
            loss = tf.reduce_sum(y * random_input(y.shape, seed=7))
        return [y] + tape.gradient(loss, [inputs] + list(grouped.weights))

    routes = {
        "eager": forward_backward,
        "tf.function": tf.function(forward_backward),
        "tf.function(jit_compile=True)": tf.function(forward_backward, jit_compile=True),
    }
    for route, run in routes.items():
        y, dx, dkernel, dbias = run(tf.constant(x))
        assert "CPU" in y.device
        np.testing.assert_allclose(y.numpy(), expected_y, **TOLERANCE)
        np.testing.assert_allclose(dx.numpy(), expected_dx, **TOLERANCE)
        np.testing.assert_allclose(dkernel.numpy(), expected_dweights[0], **TOLERANCE)
        np.testing.assert_allclose(dbias.numpy(), expected_dweights[1], **TOLERANCE)
        observe(f"Conv2D(groups=2) forward and backward on CPU, {route}", "works, equals split")


def test_grouped_conv_trains_in_fit_like_the_split_form(observe):
    """One SGD epoch in fit: the mapped weights stay equal, step after step."""
    fit_grouped_and_split(jit_compile=False)
    observe("Conv2D(groups=2) in fit on CPU", "works, equals split")


# Run in a child: with op determinism on (conftest), Keras 3's fit turns XLA off (below).
FIT_WITH_XLA = """
import warnings
from tests.grouped_conv_forms import fit_grouped_and_split
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    models = fit_grouped_and_split(jit_compile=True)
fallback = [w for w in caught if "jit_compile" in str(w.message)]
print("REPORT", [bool(model.jit_compile) for model in models], len(fallback))
"""


def run_fit_with_xla():
    return run_python(FIT_WITH_XLA)


# The child starts when the tests are collected and runs beside them (conftest).
START_EARLY = {"fit_with_xla": run_fit_with_xla}


@pytest.fixture
def fit_with_xla():
    return finish(run_fit_with_xla)


def test_grouped_conv_trains_in_fit_with_jit_compile_like_the_split_form(fit_with_xla, observe):
    # Both models kept jit_compile=True, with no fallback warning: fit really ran XLA.
    assert last_report(fit_with_xla) == "[True, True] 0"
    observe("Conv2D(groups=2) in fit(jit_compile=True) on CPU", "works, equals split")


def test_fit_jit_compile_under_op_determinism_depends_on_the_keras_version(version_split):
    """Why the XLA fit runs in a child: conftest enables op determinism for every test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        models = fit_grouped_and_split(jit_compile=True)
    fallback = any("support `jit_compile=True`" in str(w.message) for w in caught)
    kept = all(bool(model.jit_compile) for model in models)
    version_split(
        "fit(jit_compile=True) with op determinism enabled",
        f"jit_compile kept: {kept}; fallback warning: {fallback}",
        {
            "keras<3": "jit_compile kept: True; fallback warning: False",
            "keras>=3,<3.7": "jit_compile kept: True; fallback warning: False",
            "keras>=3.7": "jit_compile kept: False; fallback warning: True",
        },
    )


# --- `groups` elsewhere ------------------------------------------------------------------------


def test_a_layer_without_groups_refuses_it_differently_on_keras_2_and_3(version_split):
    fragments = ["Keyword argument not understood", "Unrecognized keyword arguments"]
    version_split(
        "Dense(3, groups=2)",
        outcome_of(lambda: keras.layers.Dense(3, groups=2), fragments),
        {
            "keras<3": "TypeError: Keyword argument not understood",
            "keras>=3": "ValueError: Unrecognized keyword arguments",
        },
    )


def test_depthwise_conv2d_takes_groups_on_keras_2_only(version_split):
    """Keras 2's DepthwiseConv2D config stores groups=1, which Keras 3's constructor refuses."""
    config = keras.layers.DepthwiseConv2D(3).get_config()
    fragments = ["Unrecognized keyword arguments"]
    constructed = outcome_of(lambda: keras.layers.DepthwiseConv2D(3, groups=2), fragments)
    # The stack's own config with Keras 2's groups=1 added, as a Keras 2 file holds it.
    loaded = outcome_of(
        lambda: keras.layers.DepthwiseConv2D.from_config({**config, "groups": 1}), fragments
    )
    version_split(
        "DepthwiseConv2D config's groups; DepthwiseConv2D(3, groups=2); from_config groups=1",
        f"config groups={config.get('groups')}; {constructed}; {loaded}",
        {
            "keras<3": "config groups=1; works; works",
            "keras>=3": (
                "config groups=None; ValueError: Unrecognized keyword arguments; "
                "TypeError: Unrecognized keyword arguments"
            ),
        },
    )


def test_grouped_conv2d_fallback_passes_keras_own_layer_harness(observe):
    # Values are checked against Conv2D(groups) and numpy above; the harness checks the rest:
    # build, symbolic and eager calls, config and serialization, a training step.
    inputs = np.random.default_rng(5).normal(size=(2, 5, 5, 4)).astype("float32")
    kwargs = {"filters": 6, "kernel_size": 3, "groups": 2, "padding": "same"}
    run_keras_layer_test(GroupedConv2D, kwargs, inputs, None, {"GroupedConv2D": GroupedConv2D})
    observe("GroupedConv2D in Keras' own layer harness", "passes")
