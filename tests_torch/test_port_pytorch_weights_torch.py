"""Tests for recipes/port_pytorch_weights.py that need torch; run by the `torch` tox env only.

The Keras port of a small torch network against torch itself, in eval mode, float32.
"""

import numpy as np
import pytest
import torch
from tensorflow import keras

from recipes.port_pytorch_weights import PYTORCH_BATCHNORM_EPSILON, build_keras_port
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
