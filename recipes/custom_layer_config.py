"""Title: A PyTorch-compatible AvgPool2d layer with a config that saves and loads.

In short:
    pool = AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    # In your own layer, get_config returns plain constructor values, never a layer object:
    def get_config(self):
        config = super().get_config()
        config.update({"kernel_size": self.kernel_size, "stride": self.stride})
        return config
    with keras.utils.custom_object_scope({"AvgPool2d": AvgPool2d}):
        model = keras.models.load_model("model.keras")  # .keras or legacy .h5

Problem: Porting a PyTorch network means `nn.AvgPool2d(kernel_size, stride, padding,
ceil_mode, count_include_pad)`, which `keras.layers.AveragePooling2D` cannot express: it
has no explicit zero padding, no ceil mode and no choice of divisor. The field notes'
version takes `ceil_mode` (misspelled `ceil_model`) and `count_include_pad`, then ignores
them, and puts its `AveragePooling2D` sub-layer object into `get_config`, so the model
saves and then fails to load.

Recipe:
    1. Validate every argument in Python (ints or pairs of ints, kernel and stride > 0,
       0 <= padding <= kernel // 2 as PyTorch requires, booleans for the flags) and raise a
       ValueError naming the argument and the value.
    2. Output size per axis: floor or ceil of (size + 2 * padding - kernel) / stride, plus
       1; in ceil mode drop the last window when it would start at or beyond
       size + padding, i.e. in the right padding (PyTorch's rule).
    3. Zero-pad the input left and right by `padding`, and further on the right so the
       ceil-mode windows fit, then average each window with `tf.nn.avg_pool2d` (VALID).
    4. Divide by the same average of a mask that is 1 over the input, also 1 over the
       explicit padding when count_include_pad, and always 0 over the ceil-mode overhang:
       the ratio is the window's sum over PyTorch's divisor.
    5. `get_config` returns only plain values (the constructor arguments), so `.keras`
       and legacy `.h5` files load with `custom_objects={"AvgPool2d": AvgPool2d}`.

Pitfalls:
    - `get_config` returning a layer object (the notes' `{"avgpool": self.avgpool}`):
      `model.save` succeeds in `.keras` and in legacy `.h5` on every stack, and
      `load_model` then raises TypeError, even inside `keras.utils.custom_object_scope`
      (each stack's message is under Versions).
    - A layer whose `__init__` takes plain values (numbers, strings) and that writes no
      `get_config` saves and loads on every stack, in both formats: Keras' automatic
      config records the `__init__` arguments.
    - With a non-serializable `__init__` argument (a numpy array) that automatic config is
      empty: `get_config()` and `model.save` raise NotImplementedError "non-serializable
      argument values" on every stack, in both formats (on Keras 3.11.2 and 3.11.3 a
      ValueError instead, see Versions).
    - In ceil mode the divisor of the overhanging last window counts only input and
      explicit padding, never the overhang, even with count_include_pad=True; and a last
      window that would start in the right padding is dropped.

Versions:
    - The sub-layer object in `get_config`, loaded from `.keras`: Keras 2 (tf-keras
      included) raises TypeError "Keyword argument not understood" naming `avgpool`; Keras 3
      raises TypeError "could not be deserialized properly".
    - The same from legacy `.h5`: Keras 2 raises TypeError "Keyword argument not
      understood"; Keras 3.0 to 3.11.2 raise TypeError "Object of type AveragePooling2D
      is not JSON serializable"; 3.11.3 and later raise TypeError "Unrecognized keyword
      arguments passed to NotesAvgPool" (the release that reworked legacy `.h5` loading,
      keras-team/keras#21602).
    - A numpy array `__init__` argument and no `get_config`, on Keras 3.11.2 and 3.11.3:
      `get_config()` and `model.save` (`.keras` and `.h5`) raise, instead of the
      NotImplementedError that says to override `get_config()`,
          ValueError: Invalid format specifier ' self.arg1,
                              "arg2": self.arg2,
                          ' for object of type 'str'
      (Keras builds its advice in an f-string whose example code holds a dict literal).
      Keras 2, 3.0 to 3.11.1 and 3.12 and later raise the NotImplementedError.

Sources: PyTorch docs "torch.nn.AvgPool2d" (output size, ceil_mode, count_include_pad);
    PyTorch `aten/src/ATen/native/Pool.h` `pooling_output_shape` (the last window must
    start inside the input or its left padding) and `pool2d_shape_check` ("pad should be
    at most half of effective kernel size"); Keras guide "Save, serialize, and export
    models" (get_config, from_config, custom_objects); `keras.layers.Layer.get_config`
    source (automatic config from `__init__` arguments) and `keras/src/ops/operation.py`
    in Keras 3.11.2 to 3.12.0 (the advice's f-string, then its fix); keras-team/keras#21602
    (Keras 3.11.3's legacy `.h5` loading).

See also:
    - save_load_custom_objects: custom layers and losses in every file format
    - port_pytorch_weights: the rest of a PyTorch port (kernels, padding, BatchNorm)
    - space_to_depth_reorg: another custom layer whose config saves cleanly

Run: python -m recipes.custom_layer_config
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _pair(argument_name, value, minimum):
    """An int or a pair of ints >= minimum, as a tuple of two Python ints."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    valid = len(values) == 2 and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum for v in values
    )
    if not valid:
        raise ValueError(
            f"{argument_name} must be an int >= {minimum} or a pair of them, "
            f"got {argument_name}={value!r}"
        )
    return tuple(int(v) for v in values)


def _flag(argument_name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{argument_name} must be True or False, got {argument_name}={value!r}")
    return bool(value)


def pooled_size(size, kernel, stride, padding, ceil_mode):
    """PyTorch's `pooling_output_shape` for one axis (dilation 1)."""
    span = size + 2 * padding - kernel
    count = (-(-span // stride) if ceil_mode else span // stride) + 1
    # The last window must start inside the input or its left padding.
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


class AvgPool2d(keras.layers.Layer):
    """`torch.nn.AvgPool2d` semantics on NHWC input (divisor_override not supported)."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        **kwargs,
    ):
        kernel = _pair("kernel_size", kernel_size, 1)
        strides = kernel if stride is None else _pair("stride", stride, 1)
        pads = _pair("padding", padding, 0)
        for axis in (0, 1):
            if pads[axis] > kernel[axis] // 2:
                raise ValueError(
                    f"padding must be at most half of kernel_size, got padding={padding!r} "
                    f"with kernel_size={kernel_size!r}"
                )
        ceil_mode = _flag("ceil_mode", ceil_mode)
        count_include_pad = _flag("count_include_pad", count_include_pad)
        super().__init__(**kwargs)
        self.kernel_size, self.stride, self.padding = kernel, strides, pads
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def _output_hw(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            raise ValueError(
                f"AvgPool2d needs NHWC input with static height and width, got input_shape={shape}"
            )
        sizes = tuple(
            pooled_size(
                shape[1 + axis],
                self.kernel_size[axis],
                self.stride[axis],
                self.padding[axis],
                self.ceil_mode,
            )
            for axis in (0, 1)
        )
        if min(sizes) < 1:
            raise ValueError(
                f"AvgPool2d(kernel_size={self.kernel_size}, padding={self.padding}) gives an "
                f"empty output for input_shape={shape}"
            )
        return sizes

    def build(self, input_shape):
        self._output_hw(input_shape)
        super().build(input_shape)

    def call(self, inputs):
        shape = tuple(inputs.shape)
        output_hw = self._output_hw(shape)
        fill = 1.0 if self.count_include_pad else 0.0
        # PyTorch's divisor is a product of per-axis extents, so the mask is an outer
        # product: per axis 1 over the input, `fill` over the padding, 0 over the overhang.
        axis_masks, paddings = [], [[0, 0]]
        for axis in (0, 1):
            size, kernel = shape[1 + axis], self.kernel_size[axis]
            pad, stride = self.padding[axis], self.stride[axis]
            overhang = max(0, (output_hw[axis] - 1) * stride + kernel - (size + 2 * pad))
            paddings.append([pad, pad + overhang])
            axis_masks.append(
                np.concatenate([[fill] * pad, [1.0] * size, [fill] * pad, [0.0] * overhang])
            )
        mask = np.outer(*axis_masks)
        paddings.append([0, 0])
        padded = tf.pad(inputs, paddings)
        mask = tf.constant(mask[None, :, :, None], dtype=inputs.dtype)
        window = (1, *self.kernel_size, 1)
        strides = (1, *self.stride, 1)
        sums = tf.nn.avg_pool2d(padded, window, strides, "VALID")
        counts = tf.nn.avg_pool2d(mask, window, strides, "VALID")
        return sums / counts

    def compute_output_shape(self, input_shape):
        shape = (input_shape[0], *self._output_hw(input_shape), input_shape[3])
        # Keras 2's own layers (and its layer_test) return a TensorShape; Keras 3 a tuple.
        return tf.TensorShape(shape) if KERAS_MAJOR == 2 else shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "stride": self.stride,
                "padding": self.padding,
                "ceil_mode": self.ceil_mode,
                "count_include_pad": self.count_include_pad,
            }
        )
        return config


def avg_pool2d_reference(
    x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
):
    """A loop-by-loop numpy transcription of PyTorch's avg_pool2d forward, on NHWC."""
    kernel = _pair("kernel_size", kernel_size, 1)
    strides = kernel if stride is None else _pair("stride", stride, 1)
    pads = _pair("padding", padding, 0)
    batch, height, width, channels = x.shape
    out_h, out_w = (
        pooled_size(s, k, st, p, ceil_mode)
        for s, k, st, p in zip((height, width), kernel, strides, pads, strict=True)
    )
    out = np.zeros((batch, out_h, out_w, channels), dtype=np.float64)
    for i in range(out_h):
        for j in range(out_w):
            h0, w0 = i * strides[0] - pads[0], j * strides[1] - pads[1]
            h1 = min(h0 + kernel[0], height + pads[0])
            w1 = min(w0 + kernel[1], width + pads[1])
            divisor = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, height), min(w1, width)
            if not count_include_pad:
                divisor = (h1 - h0) * (w1 - w0)
            out[:, i, j, :] = x[:, h0:h1, w0:w1, :].astype(np.float64).sum(axis=(1, 2)) / divisor
    return out.astype(x.dtype)


def demo():
    x = np.arange(2 * 5 * 5 * 1, dtype="float32").reshape(2, 5, 5, 1)
    layer = AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    output = np.asarray(layer(x))
    print(f"AvgPool2d{layer.kernel_size, layer.stride, layer.padding}: {x.shape} -> {output.shape}")
    print(
        "matches the numpy reference of PyTorch's rule:",
        np.allclose(output, avg_pool2d_reference(x, 3, 2, 1, True, False), atol=1e-5),
    )
    print("config:", AvgPool2d.from_config(layer.get_config()).get_config() == layer.get_config())


if __name__ == "__main__":
    demo()
