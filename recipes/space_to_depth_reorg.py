"""Title: YOLO "reorg" layers: tf.nn.space_to_depth, and darknet's own [reorg].

In short:
    passthrough = Reorg(block_size=2)(fine_features)  # not tf.nn.space_to_depth on keras.Input
    # Weights trained by darknet's [reorg]: DarknetReorg(stride=2)(fine_features) instead.
    with keras.utils.custom_object_scope({"Reorg": Reorg, "DarknetReorg": DarknetReorg}):
        model = keras.models.load_model("yolo.keras")  # .keras or legacy .h5, every stack

Problem: YOLOv2's passthrough ("reorg") layer moves each 2x2 block of a fine feature map into
channels, so it can be concatenated with a coarser map. The Keras ports (YAD2K, keras-yolo2)
call `tf.nn.space_to_depth` for it: on a functional `keras.Input` that one line worked on
Keras 2 and raises on Keras 3, and a `Lambda` wrapper makes the saved model refuse to load in
safe mode, so `Reorg` wraps it in a small custom layer that saves cleanly. But darknet, which
trained YOLOv2's published weights, computes something else: its `forward_reorg_layer`
calls `reorg_cpu` with the layer's input dimensions, which reads each (C, H, W) image as if
it were (C/s², sH, sW). `DarknetReorg` reproduces that exactly, for darknet weights.

Recipe:
    1. Subclass `keras.layers.Layer`; call `tf.nn.space_to_depth(inputs, block_size)` in `call()`.
    2. Check in `build()` that height and width divide by `block_size`, so a bad shape fails
       with a ValueError when the model is built, not deep inside TensorFlow; return a
       `tf.TensorShape` from `compute_output_shape` on Keras 2 and a tuple on Keras 3.
    3. Return `block_size` from `get_config()`. Load `.keras` files with
       `custom_objects={"Reorg": Reorg}`, or any file inside
       `keras.utils.custom_object_scope({"Reorg": Reorg})`.
    4. Check the layer against `reorg_reference`, a numpy transcription of the op, and
       invert it with `tf.nn.depth_to_space`.
    5. For a network defined by a darknet cfg, use `DarknetReorg(stride)` where the cfg says
       `[reorg]`; `darknet_reorg_reference` is darknet's `reorg_cpu` indexing in numpy.

Pitfalls:
    - Output channel index is (dy * block_size + dx) * C + c for the input pixel at offset
      (dy, dx) inside its block: the same as Reshape -> Permute -> Reshape
      (`reorg_with_reshapes`), and `tf.nn.depth_to_space` inverts it exactly.
    - Height or width not divisible by `block_size` raises a ValueError naming both, when
      the layer is built.
    - With unknown height or width (`keras.Input((None, None, C))`) the check can only run
      when data arrives: TensorFlow then raises InvalidArgumentError.
    - Pass `custom_objects` when loading: without it a `.keras` file fails to load on Keras 2
      and on Keras 3.9 and later, a legacy `.h5` file on all five stacks (see Versions).
    - darknet's `[reorg]` (pjreddie/darknet, and AlexeyAB/darknet, which implements it in
      reorg_old_layer.c) is not space_to_depth: build darknet `[reorg]` weights with
      `DarknetReorg`, AlexeyAB's `[reorg3d]` (exactly space_to_depth) with `Reorg`. For H
      divisible by stride², darknet gives `Reorg` of the input with its rows permuted inside
      each group of stride² rows (rows s*i + j and s*j + i swap: 0, 2, 1, 3 for stride 2);
      for other heights, such as YOLOv2's 26x26 map, some output channels also mix two input
      channels. Either way an output pixel holds other input values than `Reorg`'s, so no
      reordering of channels (of the next convolution's weights) turns one into the other.
    - `DarknetReorg` needs static H, W and C: H or W not divisible by the stride, or C not
      divisible by stride², raises a ValueError naming the shape.

Versions:
    - Keras 2: `tf.nn.space_to_depth(keras.Input(...), 2)` builds a functional model.
      Keras 3: the same call raises ValueError "A KerasTensor cannot be used as input to a
      TensorFlow function"; wrap the op in a layer.
    - Keras 2.12 writes `m.keras` as a legacy HDF5 file (2.13 and later write the zip
      archive), so it cannot save a subclassed model there.
    - Loading a `.keras` file without `custom_objects`: Keras 2.12 raises ValueError
      "Unknown layer: 'Reorg'"; Keras 2.13 and later Keras 2 (tf-keras too) raise TypeError
      "'str' object is not callable"; Keras 3.0 to 3.8 load it, importing the class from
      the module path saved in the file; Keras 3.9 and later import only Keras' own modules
      (the fix for CVE-2025-1550) and raise TypeError "Could not locate class 'Reorg'".
    - Keras 3.0 to 3.2 ignore `custom_objects` for a legacy `.h5` file ("Unknown layer");
      loading inside `keras.utils.custom_object_scope` works there and everywhere else.
    - Functional and Sequential models holding `Reorg` or `DarknetReorg` round-trip through
      `.keras` and legacy `.h5` files on all five stacks; a subclassed model (with
      `get_config`) through `.keras` from Keras 2.13 on, and through `.h5` on Keras 3 only
      (Keras 2 raises NotImplementedError: HDF5 needs a Functional or Sequential model).

Sources: tf.nn.space_to_depth and tf.nn.depth_to_space API docs; Keras guide "Making new
layers and models via subclassing"; Keras guide "Save, serialize, and export models"
(custom objects); keras-team/keras#20124 (a KerasTensor passed to a TensorFlow function);
taipingeric/yolo-v4-tf.keras#27 (a tf.keras YOLO that breaks on Keras 3 with that error);
Redmon and Farhadi, "YOLO9000: Better, Faster, Stronger" (2016), the passthrough layer;
allanzelener/YAD2K and experiencor/keras-yolo2 (`space_to_depth_x2`); pjreddie/darknet
src/reorg_layer.c (forward_reorg_layer) and src/blas.c (reorg_cpu); AlexeyAB/darknet
src/parser.c, src/reorg_layer.c ([reorg3d]) and src/reorg_old_layer.c ([reorg]);
thtrieu/darkflow#173, AlexeyAB/darknet#489, opencv/opencv#9705 and #12403 (darknet's reorg
against space_to_depth); keras-team/keras#20751 (CVE-2025-1550: from Keras 3.9,
`load_model` imports only Keras' own modules).

See also:
    - save_load_custom_objects: any custom layer that saves, then fails to load
    - custom_layer_config: a get_config that saves and loads
    - tensor_ops: other TensorFlow functions on a keras.Input under Keras 3
    - safe_model_loading: why a Lambda layer is refused when loading

Run: python -m recipes.space_to_depth_reorg
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _check_size(name, value):
    """`block_size` or `stride`: an integer >= 2 (numpy integers too, bools not)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {name}={value!r}")
    return int(value)


def _check_spatial(caller, height, width, block_size):
    if any(size and size % block_size for size in (height, width)):
        raise ValueError(
            f"{caller} needs height and width divisible by {block_size}, "
            f"got height={height}, width={width}"
        )


def _check_darknet_shape(shape, stride, label):
    """darknet's reorg needs static H, W divisible by the stride and C by stride**2."""
    shape = tuple(shape)
    if (
        len(shape) != 4
        or None in shape[1:]
        or shape[1] % stride
        or shape[2] % stride
        or shape[3] % stride**2
    ):
        raise ValueError(
            f"DarknetReorg(stride={stride}) needs static NHWC input with height and width "
            f"divisible by {stride} and channels by {stride**2}, got {label}={shape}"
        )


def _folded_shape(input_shape, size):
    """(N, H, W, C) -> (N, H/size, W/size, C*size*size), None kept; Keras 2 wants a TensorShape."""
    batch, height, width, channels = tuple(input_shape)
    shape = (
        batch,
        None if height is None else height // size,
        None if width is None else width // size,
        None if channels is None else channels * size * size,
    )
    # Keras 2's own layers (and its layer_test) return a TensorShape; Keras 3 wants a tuple.
    return tf.TensorShape(shape) if KERAS_MAJOR == 2 else shape


class Reorg(keras.layers.Layer):
    """Moves each block_size x block_size block of pixels into channels (NHWC)."""

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = _check_size("block_size", block_size)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(f"Reorg expects NHWC input of rank 4, got input_shape={shape}")
        _check_spatial(f"Reorg(block_size={self.block_size})", shape[1], shape[2], self.block_size)
        super().build(input_shape)

    def call(self, inputs):
        return tf.nn.space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        return _folded_shape(input_shape, self.block_size)

    def get_config(self):
        config = super().get_config()
        config.update({"block_size": self.block_size})
        return config


class DarknetReorg(keras.layers.Layer):
    """darknet's forward [reorg] (pjreddie/darknet reorg_cpu, forward=0, input dims), NHWC."""

    def __init__(self, stride=2, **kwargs):
        super().__init__(**kwargs)
        self.stride = _check_size("stride", stride)

    def build(self, input_shape):
        _check_darknet_shape(input_shape, self.stride, "input_shape")
        super().build(input_shape)

    def call(self, inputs):
        _, height, width, channels = tuple(inputs.shape)
        stride = self.stride
        # darknet stores each image as a (C, H, W) buffer; reorg_cpu reads it as a
        # (C/s², sH, sW) image, folds that with space_to_depth's channel order into a
        # (C, H, W) buffer, and the next layer reads that buffer as (C*s², H/s, W/s).
        x = tf.transpose(inputs, [0, 3, 1, 2])
        x = tf.reshape(x, [-1, channels // stride**2, height * stride, width * stride])
        x = tf.nn.space_to_depth(tf.transpose(x, [0, 2, 3, 1]), stride)
        x = tf.transpose(x, [0, 3, 1, 2])
        x = tf.reshape(x, [-1, channels * stride**2, height // stride, width // stride])
        return tf.transpose(x, [0, 2, 3, 1])

    def compute_output_shape(self, input_shape):
        return _folded_shape(input_shape, self.stride)

    def get_config(self):
        config = super().get_config()
        config.update({"stride": self.stride})
        return config


def reorg_reference(x, block_size):
    """numpy transcription of space_to_depth: output channel (dy * b + dx) * C + c."""
    block_size = _check_size("block_size", block_size)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC of rank 4, got x.shape={x.shape}")
    batch, height, width, channels = x.shape
    _check_spatial(f"reorg_reference(block_size={block_size})", height, width, block_size)
    out = np.empty(
        (batch, height // block_size, width // block_size, channels * block_size**2), x.dtype
    )
    for dy in range(block_size):
        for dx in range(block_size):
            first = (dy * block_size + dx) * channels
            out[..., first : first + channels] = x[:, dy::block_size, dx::block_size, :]
    return out


def darknet_reorg_reference(x, stride):
    """numpy transcription of darknet's forward [reorg]: reorg_cpu's index arithmetic."""
    stride = _check_size("stride", stride)
    x = np.asarray(x)
    _check_darknet_shape(x.shape, stride, "x.shape")
    batch, height, width, channels = x.shape
    # reorg_cpu(input, w=W, h=H, c=C, ..., forward=0) loops over k < C, j < H, i < W and
    # sets out[i + W*(j + H*k)] = x[w2 + W*s*(h2 + H*s*c2)], per image.
    k, j, i = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width), indexing="ij")
    reduced_channels = channels // stride**2
    offset = k // reduced_channels
    w2 = i * stride + offset % stride
    h2 = j * stride + offset // stride
    source = w2 + width * stride * (h2 + height * stride * (k % reduced_channels))
    buffers = x.transpose(0, 3, 1, 2).reshape(batch, -1)
    out = buffers[:, source.ravel()]
    out = out.reshape(batch, channels * stride**2, height // stride, width // stride)
    return out.transpose(0, 2, 3, 1)


def reorg_with_reshapes(inputs, block_size):
    """The same reorg from stock layers (static H, W, C), for a model with no custom layer."""
    block_size = _check_size("block_size", block_size)
    shape = tuple(inputs.shape)
    if len(shape) != 4 or None in shape[1:]:
        raise ValueError(
            f"reorg_with_reshapes needs NHWC inputs with static H, W, C, got inputs.shape={shape}"
        )
    _, height, width, channels = shape
    _check_spatial(f"reorg_with_reshapes(block_size={block_size})", height, width, block_size)
    rows, cols = height // block_size, width // block_size
    x = keras.layers.Reshape((rows, block_size, cols, block_size, channels))(inputs)
    # Bring the two in-block offsets (dy, dx) next to the channels, dy first.
    x = keras.layers.Permute((1, 3, 2, 4, 5))(x)
    return keras.layers.Reshape((rows, cols, block_size * block_size * channels))(x)


def demo():
    print(f"Keras major version {KERAS_MAJOR}")
    x = np.arange(2 * 4 * 4 * 4, dtype="float32").reshape(2, 4, 4, 4)
    inputs = keras.Input((4, 4, 4))
    model = keras.Model(inputs, Reorg(2)(inputs))
    outputs = model.predict(x, verbose=0)
    print("Reorg(2) in a functional model:", x.shape, "->", outputs.shape)
    print("equals numpy reference:", np.array_equal(outputs, reorg_reference(x, 2)))
    print("depth_to_space inverts it:", np.array_equal(tf.nn.depth_to_space(outputs, 2), x))
    darknet = np.asarray(DarknetReorg(2)(x))
    print(
        "DarknetReorg(2) equals its reference:",
        np.array_equal(darknet, darknet_reorg_reference(x, 2)),
    )
    print("DarknetReorg(2) equals Reorg(2):", np.array_equal(darknet, outputs))
    swapped = reorg_reference(x[:, [0, 2, 1, 3]], 2)
    print("DarknetReorg(2) equals Reorg(2) of rows 0, 2, 1, 3:", np.array_equal(darknet, swapped))
    try:
        tf.nn.space_to_depth(keras.Input((4, 4, 3)), 2)
        print("tf.nn.space_to_depth on keras.Input: works on this stack")
    except ValueError as error:
        print("tf.nn.space_to_depth on keras.Input:", str(error).splitlines()[0][:80])
    try:
        Reorg(2)(np.zeros((1, 5, 4, 3), "float32"))
    except ValueError as error:
        print("bad height:", error)


if __name__ == "__main__":
    demo()
