"""Tests for recipes/port_pytorch_weights.py that need torch; run by the `torch` tox env only.

The Keras port of a small torch network against torch itself, in eval mode, float32.
"""

import numpy as np
import pytest
import torch
from tensorflow import keras

from recipes.port_pytorch_weights import (
    BATCHNORM_KEYS,
    PYTORCH_BATCHNORM_EPSILON,
    batchnorm_layer,
    build_keras_port,
    conv_kernel_to_keras,
    leaky_relu_layer,
)
from tests import port_pytorch_reference as reference
from tests.port_pytorch_reference import TOLERANCE


class SmallNet(torch.nn.Module):
    """conv-BN-ReLU, grouped conv, depthwise conv, stride-2 padded conv, avg pool, Linear."""

    def __init__(self, height, width):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.conv3 = torch.nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.conv4 = torch.nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(16 * (height // 4) * (width // 4), 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def trained_looking_net(height, width, seed):
    """torch's own initialization, with BatchNorm statistics as training would leave them."""
    torch.manual_seed(seed)
    net = SmallNet(height, width)
    with torch.no_grad():
        # Small conv1 outputs over small running variances keep BatchNorm's outputs near 1,
        # and make PyTorch's epsilon (1e-5) against Keras' default (1e-3) matter.
        net.conv1.weight.mul_(0.05)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.normal_(0, 0.3)
        net.bn1.running_mean.normal_(0, 0.01)
        net.bn1.running_var.uniform_(5e-4, 2e-3)
    return net.eval()


def numpy_state_dict(net):
    return {name: tensor.detach().numpy() for name, tensor in net.state_dict().items()}


def torch_outputs(net, x_nchw):
    with torch.no_grad():
        return net(torch.from_numpy(x_nchw)).numpy()


@pytest.mark.parametrize(("seed", "height", "width"), [(0, 8, 8), (1, 12, 8)])
@pytest.mark.parametrize("flatten", ["permute_weights", "transpose_to_nchw"])
def test_keras_port_matches_torch_in_eval_mode(seed, height, width, flatten):
    net = trained_looking_net(height, width, seed)
    x = np.random.default_rng(seed).normal(size=(4, 3, height, width)).astype("float32")
    expected = torch_outputs(net, x)
    state_dict = numpy_state_dict(net)
    # state_dict also holds bn1.num_batches_tracked, which the port does not need.
    assert "bn1.num_batches_tracked" in state_dict
    model = build_keras_port(state_dict, height, width, flatten=flatten)
    actual = model(x.transpose(0, 2, 3, 1)).numpy()
    assert actual.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(actual, expected, **TOLERANCE)


def test_the_numpy_reference_is_torchs_network():
    net = trained_looking_net(8, 8, seed=2)
    x = np.random.default_rng(2).normal(size=(4, 3, 8, 8)).astype("float32")
    expected = torch_outputs(net, x)
    np.testing.assert_allclose(
        reference.example_network(numpy_state_dict(net), x), expected, **TOLERANCE
    )


def test_naive_flatten_and_keras_default_epsilon_both_miss_torch():
    net = trained_looking_net(8, 8, seed=3)
    x = np.random.default_rng(3).normal(size=(4, 3, 8, 8)).astype("float32")
    expected = torch_outputs(net, x)
    state_dict = numpy_state_dict(net)
    naive = build_keras_port(state_dict, flatten="naive")(x.transpose(0, 2, 3, 1)).numpy()
    # torch's default initialization gives outputs near 0.1; a miss is 100 times 1e-5.
    assert np.abs(naive - expected).max() > 1e-3
    assert net.bn1.eps == PYTORCH_BATCHNORM_EPSILON
    assert keras.layers.BatchNormalization().epsilon == pytest.approx(1e-3)
    model = build_keras_port(state_dict)
    batchnorm = next(
        layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    batchnorm.epsilon = 1e-3  # Keras' default, as a port that forgets epsilon has it.
    default_epsilon = model(x.transpose(0, 2, 3, 1)).numpy()
    assert np.abs(default_epsilon - expected).max() > 1e-3


# --- The module's eps: yolov5 sets 1e-3 -----------------------------------------------------


def initialize_weights(model):
    """yolov5's utils/torch_utils.initialize_weights, for BatchNorm2d: eps 1e-3, momentum 0.03."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-3
            module.momentum = 0.03


class Yolov5Conv(torch.nn.Module):
    """yolov5's Conv block: Conv2d(k=3, s=1, autopad 1, bias=False), BatchNorm2d, activation."""

    def __init__(self, in_channels, out_channels, activation):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(out_channels)
        self.act = activation

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def trained_looking_block(activation, seed):
    torch.manual_seed(seed)
    block = Yolov5Conv(3, 8, activation)
    initialize_weights(block)
    with torch.no_grad():
        block.conv.weight.mul_(0.05)
        block.bn.weight.uniform_(0.5, 1.5)
        block.bn.bias.normal_(0, 0.3)
        block.bn.running_mean.normal_(0, 0.01)
        block.bn.running_var.uniform_(5e-4, 2e-3)
    return block.eval()


def keras_block(block, eps, activation):
    state = numpy_state_dict(block)
    conv = keras.layers.Conv2D(8, 3, use_bias=False)
    model = keras.Sequential(
        [
            keras.Input((None, None, 3)),
            keras.layers.ZeroPadding2D(1),
            conv,
            batchnorm_layer(*(state[f"bn.{key}"] for key in BATCHNORM_KEYS), eps=eps),
            activation,
        ]
    )
    conv.set_weights([conv_kernel_to_keras(state["conv.weight"])])
    return model


@pytest.mark.parametrize(
    "torch_activation",
    [torch.nn.SiLU(), torch.nn.LeakyReLU(0.1)],
    ids=["SiLU", "LeakyReLU(0.1)"],
)
def test_a_yolov5_conv_block_ported_with_the_modules_eps_matches_torch(torch_activation):
    block = trained_looking_block(torch_activation, seed=4)
    assert block.bn.eps == 1e-3
    x = np.random.default_rng(4).normal(size=(4, 3, 8, 8)).astype("float32")
    expected = torch_outputs(block, x)

    def activation():
        if isinstance(torch_activation, torch.nn.SiLU):
            return keras.layers.Activation("swish")
        return leaky_relu_layer(torch_activation.negative_slope)

    ported = keras_block(block, block.bn.eps, activation())(x.transpose(0, 2, 3, 1)).numpy()
    np.testing.assert_allclose(ported.transpose(0, 3, 1, 2), expected, **TOLERANCE)
    # The recipe's former advice, PyTorch's default eps, is far off for this module.
    default_eps = keras_block(block, PYTORCH_BATCHNORM_EPSILON, activation())
    missed = default_eps(x.transpose(0, 2, 3, 1)).numpy().transpose(0, 3, 1, 2)
    assert np.abs(missed - expected).max() > 0.1


def test_build_keras_port_with_the_modules_eps_matches_torch():
    net = trained_looking_net(8, 8, seed=5)
    initialize_weights(net)
    x = np.random.default_rng(5).normal(size=(4, 3, 8, 8)).astype("float32")
    expected = torch_outputs(net, x)
    state_dict = numpy_state_dict(net)
    ported = build_keras_port(state_dict, eps=net.bn1.eps)(x.transpose(0, 2, 3, 1)).numpy()
    np.testing.assert_allclose(ported, expected, **TOLERANCE)
    np.testing.assert_allclose(
        reference.example_network(state_dict, x, eps=net.bn1.eps), expected, **TOLERANCE
    )
    default_eps = build_keras_port(state_dict)(x.transpose(0, 2, 3, 1)).numpy()
    assert np.abs(default_eps - expected).max() > 1e-3
