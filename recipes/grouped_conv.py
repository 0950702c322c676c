"""Title: Grouped convolution: Conv2D(groups=g), a split-convolve-concatenate fallback, depthwise.

In short:
    grouped = keras.layers.Conv2D(64, 3, groups=4)  # PyTorch Conv2d(16, 64, 3, groups=4); CPU too
    grouped(x)  # x: (N, H, W, 16); channels and filters must divide by groups
    split = GroupedConv2D(64, 3, groups=4)  # the same numbers as one Conv2D per group
    split.build(x.shape)
    split.set_weights(grouped_to_split_weights(grouped.get_weights(), groups=4))
    per_channel = keras.layers.Conv2D(32, 3, groups=16)  # groups == channels: depthwise
    per_channel(x)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=2)
    depthwise.build(x.shape)
    depthwise.set_weights(grouped_to_depthwise_weights(per_channel.get_weights(), channels=16))

Problem: ResNeXt, RegNet, ShuffleNet and PyTorch models ported to Keras use grouped
convolutions (PyTorch's `Conv2d(groups=g)`). Old Keras had no `groups` argument (field notes:
"TypeError: Keyword argument not understood: groups"), and old TensorFlow refused a grouped
convolution on CPU ("The Conv2D op currently does not support grouped convolutions on the
CPU", "Fused conv implementation does not support grouped convolutions for now"). The usual
workarounds, an explicit split into groups or a DepthwiseConv2D when every channel is its
own group, hold the same numbers in differently shaped kernels, and copying weights between
the forms is where ports go wrong.

Recipe:
    1. `check_groups(channels, groups, filters)` refuses channels or filters not divisible
       by groups with a ValueError naming the argument and both values.
    2. `grouped_conv2d(filters, kernel_size, groups)` returns `Conv2D(groups=groups)` where
       Conv2D takes `groups`, else `GroupedConv2D`: `tf.split` the channels into groups,
       one Conv2D of filters // groups per group, concatenate the outputs.
    3. Map weights: `Conv2D(groups=g)` has one kernel (kh, kw, C / g, filters); group i's
       kernel is its output columns i * filters / g to (i + 1) * filters / g
       (`grouped_to_split_weights`, `split_to_grouped_weights`).
    4. Groups equal to channels is a depthwise convolution with depth_multiplier m =
       filters / C: the grouped kernel (kh, kw, 1, C * m) reshaped to (kh, kw, C, m) is
       DepthwiseConv2D's kernel, the bias unchanged (`grouped_to_depthwise_weights`,
       `depthwise_to_grouped_weights`).

Pitfalls:
    - With mapped weights the three forms give the same outputs and the same gradients with
      respect to the input and to every kernel (the grouped kernel's gradient, split or
      reshaped the same way, is the other form's gradient), within 1e-5 + 1e-5 * |value| in
      float32 (absolute and relative tolerance 1e-5 each).
    - Keras checks divisibility itself: filters not divisible by groups raise ValueError
      "The number of filters must be evenly divisible by the number of groups" at
      construction; input channels not divisible, ValueError "The number of input
      channels must be evenly divisible by the number of groups" when called, on a
      `keras.Input` as on an array. `tf.nn.conv2d` with a kernel whose input depth does not
      divide the channels raises only when it runs, InvalidArgumentError "input depth must
      be evenly divisible by filter depth".
    - Conv1D and Conv3D take `groups` too, on every stack and on CPU: a PyTorch
      `Conv1d(groups=g)` or `Conv3d(groups=g)` ports to `Conv1D(groups=g)` or
      `Conv3D(groups=g)` with no split fallback. Their output equals a numpy transcription
      of the grouped convolution (same tolerance), eagerly, in a `tf.function` and under
      `jit_compile=True`.
    - Dense has no `groups` and refuses it: TypeError "Keyword argument not understood" on
      Keras 2 (the field notes' message) and ValueError "Unrecognized keyword arguments" on
      Keras 3.

Versions:
    - All five stacks (TensorFlow 2.12 to 2.21, Keras 2.12, 2.15, tf-keras 2.21, Keras 3.0
      and 3.15) run `Conv2D(groups=g)` on CPU forward and backward: eagerly, in a
      `tf.function`, under `jit_compile=True`, and in `fit` with and without
      `jit_compile=True`, equal to the split form. None of them raises the CPU refusals
      quoted above, reported for TensorFlow 1.14 to 2.7 (tensorflow/tensorflow#29005,
      #53631).
    - `fit` with `compile(jit_compile=True)` after
      `tf.config.experimental.enable_op_determinism()`: Keras 2 and Keras 3.0 to 3.6 keep
      XLA; Keras 3.7 and later warn "Model doesn't support `jit_compile=True`" and fit
      without it (`model.jit_compile` becomes False), so check XLA without determinism.
    - `DepthwiseConv2D(groups=2)` is accepted on Keras 2 (it subclasses Conv2D) and refused
      on Keras 3 with ValueError "Unrecognized keyword arguments". Keras 2's DepthwiseConv2D
      config stores groups=1, and Keras 3's `from_config` refuses such a config with
      TypeError "Unrecognized keyword arguments".

Sources: Keras API docs "Conv1D layer", "Conv2D layer", "Conv3D layer" and
    "DepthwiseConv2D layer" (keras.io/api/layers/convolution_layers); TensorFlow API docs
    "tf.nn.conv2d" and "tf.split";
    tensorflow/tensorflow#29005 (grouped convolutions only on GPU),
    tensorflow/tensorflow#53631 ("Fused conv implementation does not support grouped
    convolutions"), tensorflow/tensorflow#51825 (grouped convolutions failing on CPU only,
    TensorFlow 2.5); keras-team/keras#15162 and tensorflow/tensorflow#51461 (`fit` with
    `Conv2D(groups=4)` failing on CPU and on GPU in TensorFlow 2.6, a regression from 2.5).

See also:
    - port_pytorch_weights: PyTorch grouped and depthwise kernels to Keras
    - save_load_custom_objects: save and load a model holding GroupedConv2D

Run: python -m recipes.grouped_conv
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _positive_integer(argument_name, value):
    # bool is a numbers.Integral too, but groups=True is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument_name} must be a positive integer, got {value!r}")
    return int(value)


def check_groups(channels, groups, filters=None):
    """Raises ValueError unless groups divides channels (and filters, when given)."""
    channels = _positive_integer("channels", channels)
    groups = _positive_integer("groups", groups)
    if channels % groups:
        raise ValueError(
            f"channels={channels} is not divisible by groups={groups}; "
            "each group needs channels // groups input channels"
        )
    if filters is not None:
        _check_filters(filters, groups)


def _check_filters(filters, groups):
    filters = _positive_integer("filters", filters)
    groups = _positive_integer("groups", groups)
    if filters % groups:
        raise ValueError(f"filters={filters} is not divisible by groups={groups}")
    return filters, groups


def conv2d_accepts_groups():
    """True where `keras.layers.Conv2D` takes `groups` (Keras 2.3 / TensorFlow 2.3 on)."""
    try:
        keras.layers.Conv2D(1, 1, groups=1)
    except TypeError:  # "Keyword argument not understood: groups" on old Keras.
        return False
    return True


class GroupedConv2D(keras.layers.Layer):
    """Split the channels into `groups`, convolve each with its own Conv2D, concatenate."""

    def __init__(
        self, filters, kernel_size, groups, strides=1, padding="valid", use_bias=True, **kwargs
    ):
        self.filters, self.groups = _check_filters(filters, groups)
        super().__init__(**kwargs)
        self.kernel_size, self.strides = kernel_size, strides
        self.padding, self.use_bias = padding, use_bias
        # Created here rather than in build(), so both Keras 2 and 3 track them in order.
        self.group_convs = [
            keras.layers.Conv2D(
                self.filters // self.groups,
                kernel_size,
                strides=strides,
                padding=padding,
                use_bias=use_bias,
                # The parent's policy (mixed_float16 too): Keras 3.0 does not pass it down.
                dtype=self.dtype_policy,
                name=f"group_{index}",
            )
            for index in range(self.groups)
        ]

    def build(self, input_shape):
        channels = int(input_shape[-1])
        check_groups(channels, self.groups, self.filters)
        group_shape = tuple(input_shape[:-1]) + (channels // self.groups,)
        for conv in self.group_convs:
            conv.build(group_shape)
        super().build(input_shape)

    def call(self, inputs):
        pieces = tf.split(inputs, self.groups, axis=-1)
        # Indexing, not zip(strict=True): TensorFlow 2.12's autograph zip takes no `strict`.
        outputs = [conv(pieces[index]) for index, conv in enumerate(self.group_convs)]
        return tf.concat(outputs, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            groups=self.groups,
            strides=self.strides,
            padding=self.padding,
            use_bias=self.use_bias,
        )
        return config


def grouped_conv2d(filters, kernel_size, groups, **kwargs):
    """`Conv2D(groups=groups)` where Keras has it, else the split fallback `GroupedConv2D`."""
    filters, groups = _check_filters(filters, groups)
    if conv2d_accepts_groups():
        return keras.layers.Conv2D(filters, kernel_size, groups=groups, **kwargs)
    return GroupedConv2D(filters, kernel_size, groups, **kwargs)


def _kernel_and_bias(weights, depthwise=False):
    """Checks [kernel] or [kernel, bias] (as from get_weights) and returns numpy arrays."""
    if not isinstance(weights, (list, tuple)) or len(weights) not in (1, 2):
        raise ValueError(f"weights must be [kernel] or [kernel, bias], got {weights!r}")
    kernel = np.asarray(weights[0])
    bias = np.asarray(weights[1]) if len(weights) == 2 else None
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be 4-D (kh, kw, in, out), got shape {kernel.shape}")
    # A depthwise kernel (kh, kw, C, m) has C * m outputs, any other kernel its last axis.
    outputs = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
    if bias is not None and bias.shape != (outputs,):
        raise ValueError(f"bias shape {bias.shape} does not match kernel shape {kernel.shape}")
    return kernel, bias


def grouped_to_split_weights(weights, groups):
    """Conv2D(groups=g) [kernel, bias] -> GroupedConv2D's [kernel_0, bias_0, kernel_1, ...]."""
    kernel, bias = _kernel_and_bias(weights)
    groups = _positive_integer("groups", groups)
    check_groups(kernel.shape[-1], groups)
    kernels = np.split(kernel, groups, axis=-1)
    if bias is None:
        return kernels
    return [array for pair in zip(kernels, np.split(bias, groups), strict=True) for array in pair]


def split_to_grouped_weights(weights, groups, use_bias=True):
    """GroupedConv2D's weights -> Conv2D(groups=g)'s [kernel, bias] (or [kernel])."""
    groups = _positive_integer("groups", groups)
    per_group = 2 if use_bias else 1
    if not isinstance(weights, (list, tuple)) or len(weights) != groups * per_group:
        count = len(weights) if isinstance(weights, (list, tuple)) else weights
        raise ValueError(f"weights must hold {groups * per_group} arrays, got {count!r}")
    kernels = [np.asarray(array) for array in weights[::per_group]]
    for kernel in kernels:
        if kernel.ndim != 4:
            raise ValueError(f"kernel must be 4-D (kh, kw, in, out), got shape {kernel.shape}")
    merged = [np.concatenate(kernels, axis=-1)]
    if use_bias:
        merged.append(np.concatenate([np.asarray(b) for b in weights[1::2]]))
    return merged


def grouped_to_depthwise_weights(weights, channels):
    """Conv2D(groups=channels) [kernel (kh, kw, 1, C*m), bias] -> DepthwiseConv2D's."""
    kernel, bias = _kernel_and_bias(weights)
    channels = _positive_integer("channels", channels)
    if kernel.shape[2] != 1 or kernel.shape[-1] % channels:
        raise ValueError(
            f"kernel shape {kernel.shape} is not a grouped kernel with groups == "
            f"channels={channels}: expected (kh, kw, 1, channels * depth_multiplier)"
        )
    # Output column c * m + j reads input channel c: a plain reshape keeps that order.
    depthwise = kernel.reshape(kernel.shape[0], kernel.shape[1], channels, -1)
    return [depthwise] if bias is None else [depthwise, bias]


def depthwise_to_grouped_weights(weights):
    """DepthwiseConv2D's [kernel (kh, kw, C, m), bias] -> Conv2D(groups=C)'s."""
    kernel, bias = _kernel_and_bias(weights, depthwise=True)
    grouped = kernel.reshape(kernel.shape[0], kernel.shape[1], 1, -1)
    return [grouped] if bias is None else [grouped, bias]


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    print(f"Conv2D accepts groups: {conv2d_accepts_groups()}")
    channels, depth_multiplier = 4, 2
    x = np.random.default_rng(0).normal(size=(2, 7, 7, channels)).astype("float32")

    grouped = keras.layers.Conv2D(6, 3, groups=2)
    split = GroupedConv2D(6, 3, groups=2)
    reference = grouped(x)
    split.build(x.shape)
    split.set_weights(grouped_to_split_weights(grouped.get_weights(), groups=2))
    difference = np.max(np.abs(reference.numpy() - split(x).numpy()))
    print(f"Conv2D(groups=2) vs split-convolve-concatenate: max |difference| {difference:.1e}")

    per_channel = keras.layers.Conv2D(channels * depth_multiplier, 3, groups=channels)
    depthwise = keras.layers.DepthwiseConv2D(3, depth_multiplier=depth_multiplier)
    reference = per_channel(x)
    depthwise.build(x.shape)
    depthwise.set_weights(grouped_to_depthwise_weights(per_channel.get_weights(), channels))
    difference = np.max(np.abs(reference.numpy() - depthwise(x).numpy()))
    print(f"Conv2D(groups=C) vs DepthwiseConv2D(m=2): max |difference| {difference:.1e}")

    try:
        check_groups(channels=6, groups=4, filters=8)
    except ValueError as error:
        print(f"check_groups: ValueError: {error}")


if __name__ == "__main__":
    demo()
