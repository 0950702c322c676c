"""A numpy transcription of PyTorch's NCHW layers, the reference for the port's tests.

Float64 throughout; shared by tests/test_port_pytorch_weights.py and tests_torch/.
"""

import numpy as np

# |actual - expected| <= 1e-5 + 1e-5 * |expected|, as the recipe says. Not atol alone: float32
# outputs of this network differ from float64 by up to 7.5e-6, too close to 1e-5.
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def conv2d(x, weight, bias=None, stride=1, padding=0, groups=1):
    """torch.nn.functional.conv2d: x (N, C, H, W), weight (O, C/groups, kh, kw), symmetric pad."""
    x = np.pad(np.asarray(x, np.float64), [(0, 0), (0, 0), (padding, padding), (padding, padding)])
    weight = np.asarray(weight, np.float64)
    out_channels, group_channels, kernel_height, kernel_width = weight.shape
    out_height = (x.shape[2] - kernel_height) // stride + 1
    out_width = (x.shape[3] - kernel_width) // stride + 1
    group_out = out_channels // groups
    out = np.zeros((x.shape[0], out_channels, out_height, out_width))
    for group in range(groups):
        inputs = x[:, group * group_channels : (group + 1) * group_channels]
        kernels = weight[group * group_out : (group + 1) * group_out]
        for row in range(kernel_height):
            for column in range(kernel_width):
                patch = inputs[
                    :,
                    :,
                    row : row + stride * out_height : stride,
                    column : column + stride * out_width : stride,
                ]
                out[:, group * group_out : (group + 1) * group_out] += np.einsum(
                    "nchw,oc->nohw", patch, kernels[:, :, row, column]
                )
    if bias is not None:
        out += np.asarray(bias, np.float64)[None, :, None, None]
    return out


def batchnorm_eval(x, weight, bias, running_mean, running_var, eps=1e-5):
    """BatchNorm2d in eval mode: running statistics, the module's eps (PyTorch's default 1e-5)."""
    shape = (1, -1, 1, 1)
    normalized = (x - np.reshape(running_mean, shape)) / np.sqrt(
        np.reshape(running_var, shape) + eps
    )
    return normalized * np.reshape(weight, shape) + np.reshape(bias, shape)


def relu(x):
    return np.maximum(x, 0)


def avg_pool2d(x, size):
    n, c, h, w = x.shape
    return (
        x[:, :, : h // size * size, : w // size * size]
        .reshape(n, c, h // size, size, w // size, size)
        .mean(axis=(3, 5))
    )


def linear(x, weight, bias):
    return x @ np.asarray(weight, np.float64).T + bias


def leaky_relu(x, negative_slope):
    return np.where(x > 0, x, negative_slope * np.asarray(x, np.float64))


def example_network(state, x_nchw, eps=1e-5):
    """The network build_keras_port ports, on NCHW input, as PyTorch computes it; `eps` is
    its BatchNorm2d's."""
    x = conv2d(x_nchw, state["conv1.weight"], padding=1)
    bn = [state[f"bn1.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]
    x = relu(batchnorm_eval(x, *bn, eps=eps))
    x = relu(conv2d(x, state["conv2.weight"], state["conv2.bias"], padding=1, groups=2))
    x = relu(conv2d(x, state["conv3.weight"], state["conv3.bias"], padding=1, groups=8))
    x = relu(conv2d(x, state["conv4.weight"], state["conv4.bias"], stride=2, padding=1))
    x = avg_pool2d(x, 2)
    return linear(x.reshape(x.shape[0], -1), state["fc.weight"], state["fc.bias"])
