"""Title: Port a PyTorch model's weights to Keras: kernels, BatchNorm, padding and flatten order.

In short:
    state = {name: tensor.numpy() for name, tensor in torch_model.state_dict().items()}
    conv.set_weights([conv_kernel_to_keras(state["conv.weight"], groups=1), state["conv.bias"]])
    dw.set_weights([depthwise_kernel_to_keras(state["dw.weight"], channels=8), state["dw.bias"]])
    bn = batchnorm_layer(*(state[f"bn.{key}"] for key in BATCHNORM_KEYS), eps=torch_bn.eps)
    act = leaky_relu_layer(0.1)  # not keras.activations.relu(x, alpha=0.1): TypeError on Keras 3
    dense = keras.layers.Dense(int(np.prod(shape)))  # a numpy integer fails from Keras 3.13
    pad = keras.layers.ZeroPadding2D(1)  # then a "valid" Conv2D: PyTorch padding=1 is not "same"
    fc.set_weights(linear_after_flatten_to_keras(state["fc.weight"], state["fc.bias"], c, h, w))
    keras_outputs = keras_model(x_nchw.transpose(0, 2, 3, 1))  # Keras takes NHWC

Problem: Rebuilding a PyTorch network as Keras layers and copying its `state_dict` in (as
yolov5's `models/tf.py` does for TensorFlow/TFLite export) goes wrong in quiet ways: the
outputs come out plausible but different. PyTorch stores convolution kernels as (out, in /
groups, kh, kw) and images as NCHW, Keras as (kh, kw, in / groups, out) and NHWC; each
BatchNorm has its own `eps` (1e-5 by default, 1e-3 all through yolov5), which the state_dict
leaves out and Keras' BatchNormalization sets to 1e-3 unless told; its `padding=1` at stride
2 is not TensorFlow's 'same'; and a Linear layer after a flatten expects the channels-first
order. yolov5's port also writes `keras.activations.relu(x, alpha=0.1)`, which Keras 3
refuses.

Recipe:
    1. Convert each array with numpy (the recipe needs no torch; pass
       `{name: tensor.numpy() for name, tensor in module.state_dict().items()}`):
       `conv_kernel_to_keras` (OIHW -> HWIO, grouped kernels too), `depthwise_kernel_to_keras`
       ((C*m, 1, kh, kw) -> (kh, kw, C, m)), `batchnorm_to_keras` (weight, bias,
       running_mean, running_var -> gamma, beta, moving_mean, moving_variance) and
       `linear_to_keras` (weight transposed).
    2. Give every BatchNormalization its module's eps, as yolov5's TFBN does with
       `epsilon=w.eps`: `batchnorm_layer(*arrays, eps=module.eps)` builds the layer with
       both (eps defaults to PyTorch's 1e-5, which yolov5 changes to 1e-3).
    3. Replace PyTorch's symmetric `padding=p` by `ZeroPadding2D(p)` and a 'valid'
       convolution, as yolov5's TFPad does.
    4. Before the first Linear after a flatten, either permute the Linear weight's input
       rows from (C, H, W) to (H, W, C) order (`linear_after_flatten_to_keras`), or
       `Permute((3, 1, 2))` to NCHW before `Flatten`.
    5. Feed NHWC: `x_nchw.transpose(0, 2, 3, 1)`. `build_keras_port` does all of this for
       the example network (conv-BN-ReLU, grouped conv, depthwise conv, stride-2 padded
       conv, average pooling, flatten, Linear); pass it `eps=module.bn1.eps`.
    6. Write what every Keras accepts: `leaky_relu_layer(slope)` (or `tf.nn.leaky_relu(x,
       alpha=slope)` inside a layer's `call`) for LeakyReLU, and Python ints for sizes,
       `Dense(int(np.prod(shape)))`.

Pitfalls:
    - Use the module's eps, not a constant: a state_dict does not carry it, PyTorch's
      default is 1e-5, yolov5's `initialize_weights` sets 1e-3 on every BatchNorm2d, and
      Keras' BatchNormalization defaults to 1e-3 on every stack. With running variances
      near 1e-3, porting a BatchNorm2d of eps 1e-3 with 1e-5, or one of eps 1e-5 with
      1e-3, moves the outputs by more than 0.1; the module's eps matches, within the
      tolerance below.
    - `keras.activations.relu(x, alpha=0.1)` (yolov5's LeakyReLU port) raises TypeError on
      Keras 3, whose argument is `negative_slope`, which Keras 2 refuses in turn (see
      Versions). `leaky_relu_layer(0.1)` and `tf.nn.leaky_relu(x, alpha=0.1)` compute
      PyTorch's LeakyReLU(0.1) on every stack without a warning.
    - `Dense(np.prod(shape))` gives `units` a numpy integer, which Keras 3.13 and later
      refuse (see Versions); `Dense(int(np.prod(shape)))` works on every stack.
    - Stride 2, kernel 3, even input size: TensorFlow's 'same' pads 0 rows on top and 1 at
      the bottom (and the same for columns), PyTorch's padding=1 one on each side: same
      output shape, different numbers. For odd sizes the two paddings coincide.
      `ZeroPadding2D(1)` then 'valid' equals PyTorch at every size.
    - Flattening an NHWC tensor orders features (h, w, c), PyTorch's NCHW flatten (c, h,
      w): the transposed Linear weight alone gives wrong outputs; permuting its rows, or
      flattening after `Permute((3, 1, 2))`, gives PyTorch's.
    - A depthwise PyTorch kernel (C*m, 1, kh, kw) converted by the plain OIHW -> HWIO rule
      is a `Conv2D(groups=C)` kernel (kh, kw, 1, C*m), which DepthwiseConv2D's
      `set_weights` refuses (ValueError); `depthwise_kernel_to_keras` reshapes it to
      (kh, kw, C, m).
    - With these conversions the Keras port matches a numpy transcription of PyTorch's
      semantics on every stack, and PyTorch itself (eval mode, float32), within
      1e-5 + 1e-5 * |expected| (absolute and relative tolerance 1e-5 each).

Versions:
    - The port gives the same results on all five stacks: the conversions are numpy, and
      the layers used (Conv2D with groups, DepthwiseConv2D, ZeroPadding2D,
      BatchNormalization, AveragePooling2D, Permute, Flatten, Dense) behave alike on Keras
      2.12, 2.15, tf-keras 2.21, Keras 3.0 and 3.15; BatchNormalization's default epsilon
      is 1e-3 on all of them.
    - `keras.activations.relu(x, alpha=0.1)`: Keras 2 (tf-keras included) computes a leaky
      ReLU; Keras 3.0 and later raise TypeError "relu() got an unexpected keyword argument
      'alpha'". `relu(x, negative_slope=0.1)` is the reverse: Keras 3 computes it, Keras 2
      raises TypeError.
    - `keras.layers.LeakyReLU(alpha=0.1)` works on every stack, and Keras 3 warns
      (UserWarning "Argument `alpha` is deprecated"); `LeakyReLU(negative_slope=0.1)`
      raises TypeError on Keras 2.
    - `keras.layers.Dense(units)` with a numpy integer: Keras 2 and Keras 3.0 to 3.12 take
      it; Keras 3.13 and later raise ValueError "Received an invalid value for `units`,
      expected a positive integer".

Sources: ultralytics/yolov5 `models/tf.py` (TFBN passes `epsilon=w.eps`, TFPad,
    TFConv's 'VALID' after explicit padding at stride > 1, `activations` writing
    `keras.activations.relu(x, alpha=0.1)`; ultralytics/yolov5#1127); yolov5
    `utils/torch_utils.py` (`initialize_weights` sets BatchNorm2d eps to 1e-3); Keras 3.13
    `Dense` source (units must be an `int`);
    PyTorch docs "Conv2d", "BatchNorm2d", "Linear", "Flatten"; Keras API docs "Conv2D",
    "DepthwiseConv2D", "BatchNormalization", "ZeroPadding2D", "Permute"; TensorFlow API
    docs "tf.nn.convolution" ('SAME' padding).

See also:
    - grouped_conv: Conv2D(groups=g) and its weight layouts
    - custom_layer_config: PyTorch's avg_pool2d as a Keras layer
    - torch_dataloader: feed NCHW PyTorch batches to Keras
    - space_to_depth_reorg: YOLO's reorg layer

Run: python -m recipes.port_pytorch_weights
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
PYTORCH_BATCHNORM_EPSILON = 1e-5
FLATTEN_CHOICES = ("permute_weights", "transpose_to_nchw", "naive")


def _array(argument_name, value, ndim):
    array = np.asarray(value)
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"{argument_name} must be a {ndim}-D numeric array, got shape {array.shape} "
            f"of {array.dtype}"
        )
    return array


def _positive_integer(argument_name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument_name} must be a positive integer, got {value!r}")
    return int(value)


def _finite_number(argument_name, value, minimum, allow_minimum):
    """`value` as a float if it is a finite real number above `minimum` (or equal to it)."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if (
        not is_number
        or not np.isfinite(value)
        or value < minimum
        or (value == minimum and not allow_minimum)
    ):
        bound = "non-negative" if allow_minimum else "positive"
        raise ValueError(f"{argument_name} must be a {bound} finite number, got {value!r}")
    return float(value)


def conv_kernel_to_keras(weight, groups=1):
    """PyTorch Conv2d weight (O, I/groups, kh, kw) -> Keras Conv2D kernel (kh, kw, I/groups, O).

    Both frameworks order a grouped kernel's output channels group by group, so the same
    transpose serves `Conv2D(groups=groups)`.
    """
    weight = _array("weight", weight, 4)
    groups = _positive_integer("groups", groups)
    if weight.shape[0] % groups:
        raise ValueError(
            f"groups={groups} does not divide the {weight.shape[0]} output channels of "
            f"weight shape {weight.shape}"
        )
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def depthwise_kernel_to_keras(weight, channels):
    """PyTorch Conv2d(groups=C) weight (C*m, 1, kh, kw) -> DepthwiseConv2D (kh, kw, C, m)."""
    weight = _array("weight", weight, 4)
    channels = _positive_integer("channels", channels)
    if weight.shape[1] != 1 or weight.shape[0] % channels:
        raise ValueError(
            f"weight shape {weight.shape} is not a depthwise kernel for channels={channels}: "
            "expected (channels * depth_multiplier, 1, kh, kw)"
        )
    # Output channel c * m + j reads input channel c: a reshape keeps that order.
    hwio = weight.transpose(2, 3, 1, 0)
    return np.ascontiguousarray(hwio.reshape(hwio.shape[0], hwio.shape[1], channels, -1))


def batchnorm_to_keras(weight, bias, running_mean, running_var):
    """BatchNorm2d's four arrays -> BatchNormalization.set_weights' [gamma, beta, mean, var].

    The layer also needs the module's eps as its epsilon; `batchnorm_layer` sets both.
    """
    arrays = [
        _array(name, value, 1)
        for name, value in [
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ]
    ]
    if len({array.shape for array in arrays}) != 1:
        shapes = [array.shape for array in arrays]
        raise ValueError(f"weight, bias, running_mean, running_var shapes differ: {shapes}")
    return arrays


def batchnorm_layer(
    weight, bias, running_mean, running_var, eps=PYTORCH_BATCHNORM_EPSILON, name=None
):
    """A BatchNormalization for NHWC images that computes the BatchNorm2d's eval output.

    `eps` is the module's (`module.eps`): a state_dict does not carry it, and models change
    it (yolov5's `initialize_weights` sets 1e-3 on every BatchNorm2d). PyTorch's default,
    1e-5, is the default here; Keras' own is 1e-3.
    """
    epsilon = _finite_number("eps", eps, minimum=0, allow_minimum=False)
    arrays = batchnorm_to_keras(weight, bias, running_mean, running_var)
    layer = keras.layers.BatchNormalization(epsilon=epsilon, name=name)
    layer.build((None, None, None, arrays[0].shape[0]))
    layer.set_weights(arrays)
    return layer


def leaky_relu_layer(negative_slope):
    """PyTorch's LeakyReLU(negative_slope) as keras.layers.LeakyReLU, on every Keras.

    Keras 2 calls the argument `alpha` and refuses `negative_slope`; Keras 3 calls it
    `negative_slope` and warns about `alpha`.
    """
    slope = _finite_number("negative_slope", negative_slope, minimum=0, allow_minimum=True)
    argument = "negative_slope" if KERAS_MAJOR == 3 else "alpha"
    return keras.layers.LeakyReLU(**{argument: slope})


def linear_to_keras(weight, bias=None):
    """PyTorch Linear weight (out, in) -> Dense [kernel (in, out), bias]."""
    kernel = _array("weight", weight, 2).T
    if bias is None:
        return [np.ascontiguousarray(kernel)]
    bias = _array("bias", bias, 1)
    if bias.shape != (kernel.shape[1],):
        raise ValueError(f"bias shape {bias.shape} does not match weight shape {weight.shape}")
    return [np.ascontiguousarray(kernel), bias]


def linear_after_flatten_to_keras(weight, bias, channels, height, width):
    """A Linear fed by PyTorch's flatten of (C, H, W) -> Dense fed by Flatten of NHWC."""
    weight = _array("weight", weight, 2)
    channels, height, width = (
        _positive_integer(name, value)
        for name, value in [("channels", channels), ("height", height), ("width", width)]
    )
    if weight.shape[1] != channels * height * width:
        raise ValueError(
            f"weight shape {weight.shape} does not take channels * height * width = "
            f"{channels} * {height} * {width} inputs"
        )
    # Input feature c*H*W + h*W + w of PyTorch is feature h*W*C + w*C + c of Keras.
    reordered = weight.reshape(-1, channels, height, width).transpose(0, 2, 3, 1)
    return linear_to_keras(reordered.reshape(weight.shape[0], -1), bias)


def tf_same_padding(size, kernel_size, stride):
    """(before, after) rows TensorFlow's 'same' pads along one axis: the extra row goes after."""
    size, kernel_size, stride = (
        _positive_integer(name, value)
        for name, value in [("size", size), ("kernel_size", kernel_size), ("stride", stride)]
    )
    output_size = -(-size // stride)
    total = max((output_size - 1) * stride + kernel_size - size, 0)
    return total // 2, total - total // 2


def _state(state_dict, key):
    if key not in state_dict:
        raise ValueError(f"state_dict has no {key!r}; keys: {sorted(state_dict)}")
    return np.asarray(state_dict[key])


def build_keras_port(
    state_dict, height=8, width=8, flatten="permute_weights", eps=PYTORCH_BATCHNORM_EPSILON
):
    """The example network (see `demo` and the tests' torch module) as Keras, on NHWC input.

    PyTorch: Conv2d(3, 8, 3, padding=1, bias=False), BatchNorm2d(8), ReLU,
    Conv2d(8, 8, 3, padding=1, groups=2), ReLU, Conv2d(8, 16, 3, padding=1, groups=8), ReLU,
    Conv2d(16, 16, 3, stride=2, padding=1), ReLU, AvgPool2d(2), Flatten, Linear(_, 10).
    `eps` is the BatchNorm2d's (`module.bn1.eps`), which the state_dict does not hold.
    `flatten="naive"` reproduces the flatten-order bug, for comparison.
    """
    if flatten not in FLATTEN_CHOICES:
        raise ValueError(f"flatten must be one of {FLATTEN_CHOICES}, got {flatten!r}")
    height, width = _positive_integer("height", height), _positive_integer("width", width)
    if height % 4 or width % 4:
        raise ValueError(f"height={height} and width={width} must be multiples of 4")
    layers = keras.layers
    conv1 = layers.Conv2D(8, 3, use_bias=False)
    bn1 = batchnorm_layer(*(_state(state_dict, f"bn1.{name}") for name in BATCHNORM_KEYS), eps=eps)
    conv2 = layers.Conv2D(8, 3, groups=2)
    conv3 = layers.DepthwiseConv2D(3, depth_multiplier=2)
    conv4 = layers.Conv2D(16, 3, strides=2)
    fc = layers.Dense(10)
    stack = [
        layers.ZeroPadding2D(1), conv1, bn1, layers.ReLU(),
        layers.ZeroPadding2D(1), conv2, layers.ReLU(),
        layers.ZeroPadding2D(1), conv3, layers.ReLU(),
        layers.ZeroPadding2D(1), conv4, layers.ReLU(),
        layers.AveragePooling2D(2),
    ]  # fmt: skip
    if flatten == "transpose_to_nchw":
        stack.append(layers.Permute((3, 1, 2)))
    model = keras.Sequential([keras.Input((height, width, 3))] + stack + [layers.Flatten(), fc])

    conv1.set_weights([conv_kernel_to_keras(_state(state_dict, "conv1.weight"))])
    conv2.set_weights(
        [conv_kernel_to_keras(_state(state_dict, "conv2.weight"), groups=2)]
        + [_state(state_dict, "conv2.bias")]
    )
    conv3.set_weights(
        [depthwise_kernel_to_keras(_state(state_dict, "conv3.weight"), channels=8)]
        + [_state(state_dict, "conv3.bias")]
    )
    conv4.set_weights(
        [conv_kernel_to_keras(_state(state_dict, "conv4.weight"))]
        + [_state(state_dict, "conv4.bias")]
    )
    fc_weight, fc_bias = _state(state_dict, "fc.weight"), _state(state_dict, "fc.bias")
    if flatten == "permute_weights":
        fc.set_weights(
            linear_after_flatten_to_keras(fc_weight, fc_bias, 16, height // 4, width // 4)
        )
    else:
        fc.set_weights(linear_to_keras(fc_weight, fc_bias))
    return model


BATCHNORM_KEYS = ("weight", "bias", "running_mean", "running_var")


def example_state_dict(height=8, width=8, seed=0):
    """Random arrays named and shaped like the example network's PyTorch `state_dict`."""
    random = np.random.default_rng(seed)

    def normal(*shape, scale=0.3):
        return (random.normal(size=shape) * scale).astype("float32")

    features = 16 * (height // 4) * (width // 4)
    return {
        # Small conv1 outputs over small running variances keep BatchNorm's outputs near 1.
        "conv1.weight": normal(8, 3, 3, 3, scale=0.01),
        "bn1.weight": 1 + normal(8),
        "bn1.bias": normal(8),
        "bn1.running_mean": normal(8),
        "bn1.running_var": random.uniform(5e-4, 2e-3, size=8).astype("float32"),
        "conv2.weight": normal(8, 4, 3, 3),
        "conv2.bias": normal(8),
        "conv3.weight": normal(16, 1, 3, 3),
        "conv3.bias": normal(16),
        "conv4.weight": normal(16, 16, 3, 3, scale=0.1),
        "conv4.bias": normal(16),
        "fc.weight": normal(10, features, scale=0.2),
        "fc.bias": normal(10),
    }


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    state_dict = example_state_dict()
    x_nchw = np.random.default_rng(1).normal(size=(2, 3, 8, 8)).astype("float32")
    x_nhwc = x_nchw.transpose(0, 2, 3, 1)
    permuted = build_keras_port(state_dict, flatten="permute_weights")(x_nhwc).numpy()
    transposed = build_keras_port(state_dict, flatten="transpose_to_nchw")(x_nhwc).numpy()
    naive = build_keras_port(state_dict, flatten="naive")(x_nhwc).numpy()
    difference = np.abs(permuted - transposed).max()
    print(f"permuted Linear rows vs NCHW flatten: max |diff| {difference:.1e}")
    print(
        f"naive NHWC flatten vs NCHW flatten:   max |diff| {np.abs(naive - transposed).max():.2f}"
    )
    print(f"TF 'same' padding, size 8, k 3, stride 2: {tf_same_padding(8, 3, 2)}; PyTorch: (1, 1)")
    print(f"Keras BatchNormalization default epsilon: {keras.layers.BatchNormalization().epsilon}")
    # The same arrays with yolov5's eps: a port that keeps PyTorch's default is this far off.
    yolov5_eps = build_keras_port(state_dict, eps=1e-3)(x_nhwc).numpy()
    eps_difference = np.abs(yolov5_eps - permuted).max()
    print(f"BatchNorm2d eps 1e-3 vs 1e-5, same arrays: max |diff| {eps_difference:.2f}")
    print(f"leaky_relu_layer(0.1)([-1, 2]): {leaky_relu_layer(0.1)(np.array([-1.0, 2.0])).numpy()}")
    try:
        conv_kernel_to_keras(np.zeros((8, 3, 3)))
    except ValueError as error:
        print(f"conv_kernel_to_keras(3-D): ValueError: {error}")


if __name__ == "__main__":
    demo()
