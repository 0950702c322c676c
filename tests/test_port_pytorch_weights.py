"""Tests for recipes/port_pytorch_weights.py against a numpy transcription of PyTorch's layers.

tests_torch/test_port_pytorch_weights_torch.py checks the same port against torch itself.
"""

import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.port_pytorch_weights import (
    BATCHNORM_KEYS,
    FLATTEN_CHOICES,
    PYTORCH_BATCHNORM_EPSILON,
    batchnorm_layer,
    batchnorm_to_keras,
    build_keras_port,
    conv_kernel_to_keras,
    depthwise_kernel_to_keras,
    example_state_dict,
    leaky_relu_layer,
    linear_after_flatten_to_keras,
    linear_to_keras,
    tf_same_padding,
)
from tests import port_pytorch_reference as reference
from tests.keras_said import outcome_and_said
from tests.port_pytorch_reference import TOLERANCE


def normal(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


def nhwc(x_nchw):
    return np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))


def nchw(x_nhwc):
    return np.asarray(x_nhwc).transpose(0, 3, 1, 2)


def keras_conv(x_nchw, kernel, bias, stride, padding, groups=1, depthwise=False, same=False):
    """A ZeroPadding2D + 'valid' Keras convolution (or 'same', unpadded) on NCHW data."""
    x = nhwc(x_nchw)
    if padding and not same:
        x = keras.layers.ZeroPadding2D(padding)(x)
    mode = "same" if same else "valid"
    if depthwise:
        layer = keras.layers.DepthwiseConv2D(
            kernel.shape[:2], strides=stride, padding=mode, depth_multiplier=kernel.shape[3]
        )
    else:
        layer = keras.layers.Conv2D(
            kernel.shape[3], kernel.shape[:2], strides=stride, padding=mode, groups=groups
        )
    layer.build(x.shape)
    layer.set_weights([kernel, bias])
    return nchw(layer(x))


# --- The whole network ------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "height", "width"), [(0, 8, 8), (1, 12, 8), (2, 8, 16)])
@pytest.mark.parametrize("flatten", ["permute_weights", "transpose_to_nchw"])
def test_keras_port_matches_the_numpy_transcription_of_pytorch(
    observe, seed, height, width, flatten
):
    state_dict = example_state_dict(height, width, seed=seed)
    x = normal(3, 3, height, width, seed=seed + 10)
    expected = reference.example_network(state_dict, x)
    model = build_keras_port(state_dict, height, width, flatten=flatten)
    np.testing.assert_allclose(model(nhwc(x)).numpy(), expected, **TOLERANCE)
    observe(
        f"Keras port, flatten={flatten}, vs numpy PyTorch reference",
        "equal within 1e-5 + 1e-5 * |expected|",
    )


def test_flattening_nhwc_into_the_transposed_linear_weight_gives_wrong_outputs(observe):
    state_dict = example_state_dict()
    x = normal(3, 3, 8, 8, seed=10)
    expected = reference.example_network(state_dict, x)
    naive = build_keras_port(state_dict, flatten="naive")(nhwc(x)).numpy()
    assert np.abs(naive - expected).max() > 0.1
    observe("Keras port, naive NHWC flatten into Linear.T", "wrong outputs")


def test_linear_after_flatten_permutes_rows_from_chw_to_hwc_order():
    channels, height, width = 3, 2, 4
    weight, bias = normal(5, channels * height * width), normal(5, seed=1)
    features = normal(2, channels, height, width, seed=2)
    expected = reference.linear(features.reshape(2, -1), weight, bias)
    dense = keras.layers.Dense(5)
    dense.build((None, channels * height * width))
    dense.set_weights(linear_after_flatten_to_keras(weight, bias, channels, height, width))
    flattened_nhwc = nhwc(features).reshape(2, -1)
    np.testing.assert_allclose(dense(flattened_nhwc).numpy(), expected, **TOLERANCE)
    dense.set_weights(linear_to_keras(weight, bias))
    assert np.abs(dense(flattened_nhwc).numpy() - expected).max() > 0.1
    # Flattening after Permute((3, 1, 2)) restores PyTorch's (c, h, w) order instead.
    flattened_nchw = keras.layers.Flatten()(keras.layers.Permute((3, 1, 2))(nhwc(features)))
    np.testing.assert_allclose(dense(flattened_nchw).numpy(), expected, **TOLERANCE)


# --- Convolution kernels ----------------------------------------------------------------------


@st.composite
def conv_configurations(draw):
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    out_channels = groups * draw(st.integers(1, 3))
    kernel_size = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 2))
    size = draw(st.integers(max(kernel_size - 2 * padding, 1), 7))
    return groups, channels, out_channels, kernel_size, stride, padding, size


@hypothesis.given(conv_configurations())
def test_oihw_to_hwio_with_zero_padding_equals_pytorch_conv2d(configuration):
    groups, channels, out_channels, kernel_size, stride, padding, size = configuration
    weight = normal(out_channels, channels // groups, kernel_size, kernel_size, seed=1)
    bias = normal(out_channels, seed=2)
    x = normal(2, channels, size, size + 1, seed=3)
    expected = reference.conv2d(x, weight, bias, stride, padding, groups)
    kernel = conv_kernel_to_keras(weight, groups=groups)
    assert kernel.shape == (kernel_size, kernel_size, channels // groups, out_channels)
    actual = keras_conv(x, kernel, bias, stride, padding, groups=groups)
    np.testing.assert_allclose(actual, expected, **TOLERANCE)


@st.composite
def depthwise_configurations(draw):
    channels = draw(st.integers(1, 4))
    multiplier = draw(st.integers(1, 3))
    kernel_size = draw(st.integers(1, 3))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, 1))
    size = draw(st.integers(max(kernel_size - 2 * padding, 1), 7))
    return channels, multiplier, kernel_size, stride, padding, size


@hypothesis.given(depthwise_configurations())
def test_depthwise_kernel_to_keras_equals_pytorch_conv2d_with_groups_equal_channels(
    configuration,
):
    channels, multiplier, kernel_size, stride, padding, size = configuration
    weight = normal(channels * multiplier, 1, kernel_size, kernel_size, seed=1)
    bias = normal(channels * multiplier, seed=2)
    x = normal(2, channels, size, size, seed=3)
    expected = reference.conv2d(x, weight, bias, stride, padding, groups=channels)
    kernel = depthwise_kernel_to_keras(weight, channels)
    assert kernel.shape == (kernel_size, kernel_size, channels, multiplier)
    actual = keras_conv(x, kernel, bias, stride, padding, depthwise=True)
    np.testing.assert_allclose(actual, expected, **TOLERANCE)
    # The plain OIHW -> HWIO transpose gives a Conv2D(groups=C) kernel, equal too.
    grouped = conv_kernel_to_keras(weight, groups=channels)
    assert grouped.shape == (kernel_size, kernel_size, 1, channels * multiplier)
    actual = keras_conv(x, grouped, bias, stride, padding, groups=channels)
    np.testing.assert_allclose(actual, expected, **TOLERANCE)


def test_a_plain_transposed_depthwise_kernel_does_not_fit_depthwise_conv2d():
    weight = normal(8, 1, 3, 3)
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False)
    layer.build((None, 6, 6, 4))
    with pytest.raises(ValueError):
        layer.set_weights([conv_kernel_to_keras(weight)])
    layer.set_weights([depthwise_kernel_to_keras(weight, channels=4)])


# --- BatchNorm epsilon ------------------------------------------------------------------------


def test_batchnorm_needs_pytorchs_epsilon(observe):
    assert keras.layers.BatchNormalization().epsilon == pytest.approx(1e-3)
    assert PYTORCH_BATCHNORM_EPSILON == 1e-5
    state = example_state_dict()
    arrays = [state[f"bn1.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]
    x = normal(2, 8, 4, 4, seed=5, scale=0.05)
    expected = reference.batchnorm_eval(x, *arrays, eps=1e-5)
    outputs = {}
    for epsilon in (None, PYTORCH_BATCHNORM_EPSILON):
        layer = keras.layers.BatchNormalization(**({} if epsilon is None else {"epsilon": epsilon}))
        layer.build((None, 4, 4, 8))
        layer.set_weights(batchnorm_to_keras(*arrays))
        outputs[epsilon] = nchw(layer(nhwc(x), training=False))
    np.testing.assert_allclose(outputs[PYTORCH_BATCHNORM_EPSILON], expected, **TOLERANCE)
    assert np.abs(outputs[None] - expected).max() > 0.1
    observe("BatchNormalization default epsilon", "1e-3 (PyTorch 1e-5): outputs differ")


@pytest.mark.parametrize("module_eps", [1e-5, 1e-3], ids=["pytorch default", "yolov5"])
def test_batchnorm_layer_needs_the_modules_eps(module_eps, observe):
    """yolov5's initialize_weights sets eps=1e-3: the recipe's former constant 1e-5 misses it."""
    state = example_state_dict()
    arrays = [state[f"bn1.{name}"] for name in BATCHNORM_KEYS]
    x = normal(2, 8, 4, 4, seed=5, scale=0.05)
    expected = reference.batchnorm_eval(x, *arrays, eps=module_eps)
    layer = batchnorm_layer(*arrays, eps=module_eps)
    assert isinstance(layer, keras.layers.BatchNormalization)
    assert layer.epsilon == pytest.approx(module_eps, rel=1e-6)
    np.testing.assert_allclose(nchw(layer(nhwc(x), training=False)), expected, **TOLERANCE)
    other_eps = 1e-3 if module_eps == 1e-5 else 1e-5
    wrong = nchw(batchnorm_layer(*arrays, eps=other_eps)(nhwc(x), training=False))
    assert np.abs(wrong - expected).max() > 0.1
    observe(
        f"BatchNorm2d of eps {module_eps:g} ported with its eps, then with {other_eps:g}",
        "matches, then differs by more than 0.1",
    )


def test_build_keras_port_takes_the_batchnorm_eps(observe):
    state_dict = example_state_dict()
    x = normal(3, 3, 8, 8, seed=10)
    expected = reference.example_network(state_dict, x, eps=1e-3)
    np.testing.assert_allclose(
        build_keras_port(state_dict, eps=1e-3)(nhwc(x)).numpy(), expected, **TOLERANCE
    )
    default_eps = build_keras_port(state_dict)(nhwc(x)).numpy()
    assert np.abs(default_eps - expected).max() > 0.1
    observe(
        "build_keras_port of a network whose BatchNorm2d has eps 1e-3",
        "matches with eps=1e-3, differs by more than 0.1 with the default 1e-5",
    )


# --- Activations and sizes that differ between Keras versions --------------------------------


def leaky_reference(x):
    return reference.leaky_relu(x, negative_slope=0.1)


def test_activations_relu_takes_alpha_on_keras_2_and_negative_slope_on_keras_3(version_split):
    x = np.array([[-2.0, -0.5, 0.0, 1.5]], np.float32)
    outcomes = {}
    for argument in ("alpha", "negative_slope"):
        result = []
        outcomes[argument] = outcome_of(
            lambda argument=argument, result=result: result.append(
                keras.activations.relu(x, **{argument: 0.1})
            ),
            [f"unexpected keyword argument '{argument}'"],
        )
        if result:
            np.testing.assert_allclose(np.asarray(result[0]), leaky_reference(x), **TOLERANCE)
    version_split(
        "keras.activations.relu(x, alpha=0.1), yolov5's LeakyReLU port",
        outcomes["alpha"],
        {"keras<3": "works", "keras>=3": "TypeError: unexpected keyword argument 'alpha'"},
    )
    version_split(
        "keras.activations.relu(x, negative_slope=0.1)",
        outcomes["negative_slope"],
        {"keras<3": "TypeError: unexpected keyword argument 'negative_slope'", "keras>=3": "works"},
    )


def test_leaky_relu_layer_argument_names_differ_between_keras_2_and_3(version_split):
    x = np.array([[-2.0, -0.5, 0.0, 1.5]], np.float32)
    outcomes = {}
    for argument in ("alpha", "negative_slope"):
        result = []
        outcome, said = outcome_and_said(
            lambda argument=argument, result=result: result.append(
                keras.layers.LeakyReLU(**{argument: 0.1})(x)
            ),
            ["Keyword argument not understood"],
            ["Argument `alpha` is deprecated"],
        )
        if result:
            np.testing.assert_allclose(np.asarray(result[0]), leaky_reference(x), **TOLERANCE)
        outcomes[argument] = outcome if said == "nothing" else f"{outcome}, {said}"
    version_split(
        "keras.layers.LeakyReLU(alpha=0.1)",
        outcomes["alpha"],
        {
            "keras<3": "works",
            "keras>=3": "works, UserWarning: Argument `alpha` is deprecated",
        },
    )
    version_split(
        "keras.layers.LeakyReLU(negative_slope=0.1)",
        outcomes["negative_slope"],
        {"keras<3": "TypeError: Keyword argument not understood", "keras>=3": "works"},
    )


def test_leaky_relu_layer_and_tf_nn_leaky_relu_work_everywhere_without_a_warning(observe):
    x = normal(2, 3, 4, 4, seed=7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer_output = leaky_relu_layer(0.1)(x)
        op_output = tf.nn.leaky_relu(x, alpha=0.1)
        model = keras.Sequential([keras.Input((3, 4, 4)), leaky_relu_layer(0.1)])
        model_output = model(x)
    assert [str(warning.message) for warning in caught] == []
    for output in (layer_output, op_output, model_output):
        np.testing.assert_allclose(np.asarray(output), leaky_reference(x), **TOLERANCE)
    observe(
        "leaky_relu_layer(0.1) and tf.nn.leaky_relu(x, alpha=0.1) vs PyTorch's LeakyReLU(0.1)",
        "equal within the tolerance, no warning",
    )


def test_dense_refuses_a_numpy_integer_units_from_keras_3_13(version_split, observe):
    shape = (2, 3)
    x = np.ones((1, 4), np.float32)
    outputs = []
    outcome = outcome_of(
        lambda: outputs.append(keras.layers.Dense(np.prod(shape))(x)),
        ["Received an invalid value for `units`"],
    )
    if outcome == "works":
        assert tuple(outputs[0].shape) == (1, 6)
    version_split(
        "keras.layers.Dense(np.prod(shape)), a numpy integer",
        outcome,
        {"keras<3.13": "works", "keras>=3.13": "ValueError: Received an invalid value for `units`"},
    )
    assert tuple(keras.layers.Dense(int(np.prod(shape)))(x).shape) == (1, 6)
    observe("keras.layers.Dense(int(np.prod(shape)))", "works")


# --- Padding ----------------------------------------------------------------------------------


def test_tf_same_padding_at_stride_2_pads_the_extra_row_at_the_end(observe):
    weight, bias = normal(4, 2, 3, 3, seed=1), normal(4, seed=2)
    kernel = conv_kernel_to_keras(weight)
    assert tf_same_padding(8, 3, 2) == (0, 1)
    assert tf_same_padding(7, 3, 2) == (1, 1)
    for size, differs in [(8, True), (7, False)]:
        x = normal(2, 2, size, size, seed=3)
        pytorch = reference.conv2d(x, weight, bias, stride=2, padding=1)
        same = keras_conv(x, kernel, bias, stride=2, padding=1, same=True)
        explicit = keras_conv(x, kernel, bias, stride=2, padding=1)
        assert same.shape == pytorch.shape == explicit.shape
        np.testing.assert_allclose(explicit, pytorch, **TOLERANCE)
        assert bool(np.abs(same - pytorch).max() > 0.1) == differs
        # 'same' is the convolution of the input padded (before, after) = tf_same_padding.
        before, after = tf_same_padding(size, 3, 2)
        padded = np.pad(x, [(0, 0), (0, 0), (before, after), (before, after)])
        np.testing.assert_allclose(
            same, reference.conv2d(padded, weight, bias, stride=2), **TOLERANCE
        )
    observe("Conv2D 'same' vs PyTorch padding=1, stride 2, even size", "differ (TF pads 0, 1)")


# --- Bad input --------------------------------------------------------------------------------


def test_converters_refuse_bad_arrays_naming_them():
    with pytest.raises(
        ValueError, match=r"weight must be a 4-D numeric array, got shape \(8, 3, 3\)"
    ):
        conv_kernel_to_keras(np.zeros((8, 3, 3)))
    with pytest.raises(ValueError, match=r"groups=3 does not divide the 8 output channels"):
        conv_kernel_to_keras(np.zeros((8, 1, 3, 3)), groups=3)
    with pytest.raises(ValueError, match=r"groups must be a positive integer, got 0"):
        conv_kernel_to_keras(np.zeros((8, 1, 3, 3)), groups=0)
    with pytest.raises(ValueError, match=r"not a depthwise kernel for channels=4"):
        depthwise_kernel_to_keras(np.zeros((8, 2, 3, 3)), channels=4)
    with pytest.raises(ValueError, match=r"not a depthwise kernel for channels=3"):
        depthwise_kernel_to_keras(np.zeros((8, 1, 3, 3)), channels=3)
    with pytest.raises(ValueError, match=r"running_var must be a 1-D numeric array"):
        batchnorm_to_keras(np.ones(4), np.ones(4), np.ones(4), np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"shapes differ: \[\(4,\), \(4,\), \(3,\), \(4,\)\]"):
        batchnorm_to_keras(np.ones(4), np.ones(4), np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"weight must be a 2-D numeric array, got shape \(4,\)"):
        linear_to_keras(np.ones(4))
    with pytest.raises(ValueError, match=r"bias shape \(3,\) does not match weight shape \(2, 4\)"):
        linear_to_keras(np.ones((2, 4)), np.ones(3))
    with pytest.raises(ValueError, match=r"weight must be a 2-D numeric array, got shape \(\) of"):
        linear_to_keras("weights")
    with pytest.raises(ValueError, match=r"channels \* height \* width = 3 \* 2 \* 2 inputs"):
        linear_after_flatten_to_keras(np.ones((2, 10)), None, 3, 2, 2)
    with pytest.raises(ValueError, match=r"height must be a positive integer, got 0"):
        linear_after_flatten_to_keras(np.ones((2, 10)), None, 3, 0, 2)
    with pytest.raises(ValueError, match=r"stride must be a positive integer, got 0"):
        tf_same_padding(8, 3, 0)
    # numpy integers are integers.
    assert conv_kernel_to_keras(np.zeros((8, 1, 3, 3)), groups=np.int64(8)).shape == (3, 3, 1, 8)
    assert tf_same_padding(np.int32(8), np.int64(3), np.int16(2)) == (0, 1)


def test_build_keras_port_refuses_bad_arguments_naming_them():
    state_dict = example_state_dict()
    with pytest.raises(ValueError, match=r"flatten must be one of .* got 'nhwc'"):
        build_keras_port(state_dict, flatten="nhwc")
    with pytest.raises(ValueError, match=r"height=6 and width=8 must be multiples of 4"):
        build_keras_port(state_dict, height=6)
    incomplete = {key: value for key, value in state_dict.items() if key != "conv2.bias"}
    with pytest.raises(ValueError, match=r"state_dict has no 'conv2.bias'"):
        build_keras_port(incomplete)
    assert set(FLATTEN_CHOICES) == {"permute_weights", "transpose_to_nchw", "naive"}
    with pytest.raises(ValueError, match=r"eps must be a positive finite number, got 0"):
        build_keras_port(state_dict, eps=0)


@pytest.mark.parametrize("eps", [0, -1e-3, "1e-3", None, True, float("nan"), float("inf")])
def test_batchnorm_layer_refuses_an_eps_that_is_not_a_positive_number(eps):
    arrays = [np.ones(4, np.float32)] * 4
    with pytest.raises(ValueError, match=rf"eps must be a positive finite number, got {eps!r}"):
        batchnorm_layer(*arrays, eps=eps)


def test_batchnorm_layer_takes_numpy_floats_and_validates_its_arrays():
    arrays = [np.ones(4, np.float32)] * 4
    assert batchnorm_layer(*arrays, eps=np.float32(1e-3)).epsilon == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"shapes differ: \[\(4,\), \(4,\), \(3,\), \(4,\)\]"):
        batchnorm_layer(np.ones(4), np.ones(4), np.ones(3), np.ones(4), eps=1e-3)


@pytest.mark.parametrize("negative_slope", [-0.1, "0.1", None, False, float("nan")])
def test_leaky_relu_layer_refuses_a_slope_that_is_not_a_non_negative_number(negative_slope):
    with pytest.raises(
        ValueError,
        match=rf"negative_slope must be a non-negative finite number, got {negative_slope!r}",
    ):
        leaky_relu_layer(negative_slope)
