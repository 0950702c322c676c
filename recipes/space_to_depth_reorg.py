"""Title: A YOLO-style Reorg layer built on tf.nn.space_to_depth.

Problem: YOLOv2's passthrough ("reorg") layer folds each 2x2 block of a fine feature map into
channels, so it can be concatenated with a coarser map. Calling `tf.nn.space_to_depth` on a
functional `keras.Input` did this in one line on Keras 2; on Keras 3 the same line raises, and a
`Lambda` wrapper would make the saved model refuse to load in safe mode. A small custom layer
works everywhere and saves cleanly.

Recipe:
    1. Subclass `keras.layers.Layer`; call `tf.nn.space_to_depth(inputs, block_size)` in `call()`.
    2. Check in `build()` that height and width divide by `block_size`, so a bad shape fails
       with a ValueError when the model is built, not deep inside TensorFlow.
    3. Return `block_size` from `get_config()` and load saved models with
       `custom_objects={"Reorg": Reorg}`.
    4. Check the layer against `reorg_reference`, a numpy transcription of the op, and
       invert it with `tf.nn.depth_to_space`.

Pitfalls:
    - Output channel index is (dy * block_size + dx) * C + c for the input pixel at offset
      (dy, dx) inside its block: the same as Reshape -> Permute -> Reshape
      (`reorg_with_reshapes`), and `tf.nn.depth_to_space` inverts it exactly.
    - Height or width not divisible by `block_size` raises a ValueError naming both, when
      the layer is built.
    - With unknown height or width (`keras.Input((None, None, C))`) the check can only run
      when data arrives: TensorFlow then raises InvalidArgumentError.
    - Pass `custom_objects` when loading: without it, every stack but Keras 3.0 fails to load,
      and Keras 2.15 and tf-keras fail with an unhelpful TypeError.

Versions:
    - Keras 2.12 / 2.15 / tf-keras 2.21: `tf.nn.space_to_depth(keras.Input(...), 2)` builds a
      functional model.
    - Keras 3.0 / 3.15: the same call raises ValueError "A KerasTensor cannot be used as input
      to a TensorFlow function"; wrap the op in a layer.
    - Loading a `.keras` file without `custom_objects`: Keras 2.12 (which writes `m.keras`
      as a legacy HDF5 file) raises ValueError "Unknown layer: 'Reorg'"; Keras 2.15 and
      tf-keras raise TypeError "'str' object is not callable"; Keras 3.0 loads, importing the
      class from the module path saved in the file; Keras 3.15 raises TypeError "Could not
      locate class 'Reorg'".
    - Keras 3.0 ignores `custom_objects` for a legacy `.h5` file ("Unknown layer"); loading
      inside `keras.utils.custom_object_scope` works there and everywhere else.
    - The Reorg layer works in Functional, Sequential and subclassed models and round-trips
      through `.keras` and legacy `.h5` files on all five stacks.

Sources: tf.nn.space_to_depth and tf.nn.depth_to_space API docs; Keras guide "Making new
layers and models via subclassing"; Keras guide "Save, serialize, and export models"
(custom objects); keras-team/keras#20124 (a KerasTensor passed to a TensorFlow function);
taipingeric/yolo-v4-tf.keras#27 (a tf.keras YOLO that breaks on Keras 3 with that error);
Redmon and Farhadi, "YOLO9000: Better, Faster, Stronger" (2016), the passthrough layer.

Run: python -m recipes.space_to_depth_reorg
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _check_block_size(block_size):
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise ValueError(f"block_size must be an integer >= 2, got block_size={block_size!r}")
    if block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2, got block_size={block_size!r}")
    return int(block_size)


def _check_spatial(height, width, block_size):
    bad = [(name, size) for name, size in (("height", height), ("width", width)) if size]
    if any(size % block_size for _, size in bad):
        raise ValueError(
            f"Reorg(block_size={block_size}) needs height and width divisible by "
            f"{block_size}, got height={height}, width={width}"
        )


class Reorg(keras.layers.Layer):
    """Moves each block_size x block_size block of pixels into channels (NHWC)."""

    def __init__(self, block_size=2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = _check_block_size(block_size)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(f"Reorg expects NHWC input of rank 4, got input_shape={shape}")
        _check_spatial(shape[1], shape[2], self.block_size)
        super().build(input_shape)

    def call(self, inputs):
        return tf.nn.space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tuple(input_shape)
        size = self.block_size
        return (
            batch,
            None if height is None else height // size,
            None if width is None else width // size,
            None if channels is None else channels * size * size,
        )

    def get_config(self):
        config = super().get_config()
        config.update({"block_size": self.block_size})
        return config


def reorg_reference(x, block_size):
    """numpy transcription of space_to_depth: output channel (dy * b + dx) * C + c."""
    block_size = _check_block_size(block_size)
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC of rank 4, got x.shape={x.shape}")
    batch, height, width, channels = x.shape
    _check_spatial(height, width, block_size)
    out = np.empty(
        (batch, height // block_size, width // block_size, channels * block_size**2), x.dtype
    )
    for dy in range(block_size):
        for dx in range(block_size):
            first = (dy * block_size + dx) * channels
            out[..., first : first + channels] = x[:, dy::block_size, dx::block_size, :]
    return out


def reorg_with_reshapes(inputs, block_size):
    """The same reorg from stock layers (static H, W, C), for a model with no custom layer."""
    block_size = _check_block_size(block_size)
    _, height, width, channels = tuple(inputs.shape)
    if None in (height, width, channels):
        raise ValueError(f"reorg_with_reshapes needs static H, W, C, got shape={inputs.shape}")
    _check_spatial(height, width, block_size)
    rows, cols = height // block_size, width // block_size
    x = keras.layers.Reshape((rows, block_size, cols, block_size, channels))(inputs)
    # Bring the two in-block offsets (dy, dx) next to the channels, dy first.
    x = keras.layers.Permute((1, 3, 2, 4, 5))(x)
    return keras.layers.Reshape((rows, cols, block_size * block_size * channels))(x)


def demo():
    print(f"Keras major version {KERAS_MAJOR}")
    x = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, Reorg(2)(inputs))
    outputs = model.predict(x, verbose=0)
    print("Reorg(2) in a functional model:", x.shape, "->", outputs.shape)
    print("equals numpy reference:", np.array_equal(outputs, reorg_reference(x, 2)))
    print("depth_to_space inverts it:", np.array_equal(tf.nn.depth_to_space(outputs, 2), x))
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
