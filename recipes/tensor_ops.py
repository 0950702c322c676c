"""Title: Squeeze, concatenate and print tensor values on every TF/Keras stack.

In short:
    inputs = keras.Input((3, 1))
    squeezed = keras.layers.Reshape((3,))(inputs)  # not tf.squeeze on a keras.Input (Keras 3)
    joined = keras.layers.Concatenate(axis=1)([squeezed, squeezed])  # not tf.concat
    values = squeeze_axis(tensor, axis=2)  # ValueError naming the axis if its size is not 1
    tf.print("inside tf.function:", tensor)  # print() runs only while tracing; .numpy() fails

Problem: Dropping a size-1 axis or joining tensors can be written with `keras.backend`,
`tf.squeeze` / `tf.concat`, the `Reshape` / `Concatenate` layers or Keras 3's `keras.ops`.
Which of these exist, which error a bad axis raises and which accept a `keras.Input` change
between Keras 2 and Keras 3. Printing is the other trap: inside a `tf.function` a Python
`print` shows a symbolic tensor once, at trace time, and `.numpy()` fails.

Recipe:
    1. Drop a size-1 axis with `squeeze_axis(tensor, axis)`: it checks the axis in Python,
       raises ValueError naming the axis and its size, then calls `tf.squeeze`.
    2. On a `keras.Input`, use the `Reshape` / `Concatenate` layers (or `keras.ops` on
       Keras 3), not `tf.squeeze` / `tf.concat` / `keras.backend`.
    3. Read values eagerly with `.numpy()` or `keras.backend.get_value`; inside a
       `tf.function` use `tf.print(..., output_stream="file://" + path)` as
       `make_traced_printer(path)` does, so the output can be counted.
    4. Call a `tf.function` with tensors, not Python numbers, so it traces once.

Pitfalls:
    - `tf.squeeze` and `keras.backend.squeeze` on an axis whose size is not 1 raise
      `tf.errors.InvalidArgumentError` ("Can not squeeze dim") eagerly, and that is not a
      ValueError although the `tf.squeeze` docs list ValueError; inside a `tf.function` with
      a static shape the same call raises ValueError while tracing. `np.squeeze` raises
      ValueError.
    - `keras.backend.concatenate` of numpy arrays with a negative axis (the default -1)
      raises AttributeError; tensors, or a non-negative axis, work.
    - Inside a `tf.function`, Python `print` runs when the function is traced and `tf.print`
      runs on every call: three calls with same-shaped tensors print 1 and 3 lines.
    - A new input shape traces again, and so does every new Python number: calls with 1.0,
      2.0 and 3.0 trace three times.
    - `tf.print` writes from C++ to the process's stderr, not through `sys.stderr`: pytest's
      `capsys` sees nothing, `capfd` sees it.
    - Inside a `tf.function`, `.numpy()` and `keras.backend.get_value` raise AttributeError
      ("has no attribute 'numpy'"); eagerly both return equal numpy arrays.

Versions:
    - All five stacks: `keras.backend.squeeze`, `concatenate` and `get_value` exist under
      `from tensorflow import keras` (on Keras 3 through the `keras._tf_keras` compat
      namespace) and agree with `tf.squeeze`, `tf.concat`, `Reshape`, `Concatenate` and numpy.
      `Reshape` and `Concatenate` work on a `keras.Input`.
    - Keras 2 (2.12 to 2.15, tf-keras): there is no `keras.ops`; `tf.squeeze`, `tf.concat`,
      `keras.backend.squeeze` and `keras.backend.concatenate` accept a `keras.Input`, and
      `from tensorflow import keras` is the `api._v2.keras` namespace.
    - Keras 3: `keras.ops.squeeze` and `keras.ops.concatenate` exist, agree with the rest
      and accept a `keras.Input`. `tf.squeeze`, `tf.concat` and `keras.backend.squeeze` on a
      `keras.Input` raise ValueError "A KerasTensor cannot be used as input to a TensorFlow
      function"; `keras.backend.concatenate` (axis=-1) raises AttributeError.
    - Keras 3.0: `keras.ops.squeeze` raises InvalidArgumentError for an axis whose size is
      not 1 and for an out-of-range axis; 3.1 and later check the axis in Python and raise
      ValueError ("Cannot squeeze axis") and IndexError for those.
    - Keras 3.0 to 3.6: `keras.layers.Concatenate` rejects some valid inputs that have
      size-1 axes: IndexError for two (1, 1, 1) tensors on axis 0 or two (1, 1, 1, 1, 5) on
      axis -1, ValueError "requires inputs with matching shapes" for (2, 1, 1) and
      (2, 1, 2) on axis 2. Keras 2 and Keras 3.7 and later join them, `tf.concat` does on
      every stack and `keras.ops.concatenate` on every Keras 3.

Sources: TensorFlow guide "Better performance with tf.function" (tracing, Python side
effects); tf.print, tf.squeeze and tf.keras.ops.squeeze API docs; Keras guide "Migrating Keras
2 code to multi-backend Keras 3" (section "Calling TF ops with a KerasTensor", whose example is
`tf.squeeze(keras.layers.Input(...))`); tensorflow/tensorflow#39817 ("'Tensor' object has no
attribute 'numpy'" in graph code); keras-team/keras#13396 (`K.get_value` when not executing
eagerly); keras-team/keras#20430 (`Concatenate` IndexError on tensors with several size-1
axes, reported on 3.6); `Concatenate.build` and the TensorFlow backend's `squeeze` in the
Keras 3.0.5, 3.1.0, 3.6.0 and 3.7.0 sources.

See also:
    - space_to_depth_reorg: a TensorFlow op wrapped in a layer for Keras 3
    - loss_shape_pitfall: a size-1 axis that silently broadcasts in a loss
    - compiled_train_step: retracing on Python numbers and new batch sizes

Run: python -m recipes.tensor_ops
"""

import contextlib
import io
import numbers
import os
import re
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _static_shape(tensor):
    """The shape TensorFlow knows before running anything, for tensors, variables and arrays.

    Raises ValueError naming the tensor unless it holds real numbers.
    """
    dtype = getattr(tensor, "dtype", None)
    try:
        # Tensors, variables, keras.Input and numpy arrays name their dtype; anything else
        # (numbers, nested lists) is read the way tf.convert_to_tensor would.
        dtype = tf.as_dtype(dtype if dtype is not None else np.asarray(tensor).dtype)
        real = dtype.is_floating or dtype.is_integer or dtype.is_bool
    except (TypeError, ValueError):  # e.g. strings, objects, ragged nested lists
        real = False
    if not real:
        raise ValueError(f"tensor must be a tensor or array of real numbers, got {tensor!r}")
    return tf.TensorShape(tensor.shape if hasattr(tensor, "shape") else np.shape(tensor))


def _checked_unit_axis(shape, axis):
    """Returns `axis` as a non-negative index into `shape` whose size is 1 (or unknown)."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ValueError(f"axis must be an integer, got axis={axis!r}")
    rank = shape.rank
    if not -rank <= axis < rank:
        raise ValueError(f"axis={axis} is out of range for a tensor of rank {rank} (shape {shape})")
    size = shape[int(axis)]
    if size is not None and size != 1:
        raise ValueError(f"cannot squeeze axis={axis}: its size is {size}, not 1 (shape {shape})")
    return int(axis) % rank


def squeeze_axis(tensor, axis):
    """Removes `axis` from `tensor`, which must have size 1 there.

    A wrong axis raises ValueError naming the axis and its size before TensorFlow runs,
    instead of tf.squeeze's InvalidArgumentError. A size TensorFlow does not know yet (None,
    inside a tf.function) can only be checked by tf.squeeze when the function runs.
    """
    shape = _static_shape(tensor)
    if shape.rank is not None:
        _checked_unit_axis(shape, axis)
    return tf.squeeze(tensor, axis=axis)


def squeeze_with_reshape_layer(tensor, axis):
    """Drops size-1 `axis` with a `keras.layers.Reshape`, which also accepts a `keras.Input`."""
    shape = _static_shape(tensor)
    index = _checked_unit_axis(shape, axis)
    # Reshape's target shape leaves out the batch axis, so the batch axis cannot be dropped.
    if index == 0:
        raise ValueError(f"axis={axis} is the batch axis, which keras.layers.Reshape keeps")
    target_shape = [size for position, size in enumerate(shape.as_list()) if position != index]
    return keras.layers.Reshape(target_shape[1:])(tensor)


def squeeze_functions():
    """The ways to drop one size-1 axis on this stack, by name, each called as f(tensor, axis)."""
    functions = {
        "tf.squeeze": lambda tensor, axis: tf.squeeze(tensor, axis=axis),
        "keras.backend.squeeze": keras.backend.squeeze,
        "keras.layers.Reshape": squeeze_with_reshape_layer,
    }
    if KERAS_MAJOR >= 3:
        functions["keras.ops.squeeze"] = keras.ops.squeeze
    return functions


def concatenate_functions():
    """The ways to join tensors on this stack, by name, each called as f(tensors, axis)."""
    functions = {
        "tf.concat": lambda tensors, axis: tf.concat(tensors, axis=axis),
        "keras.backend.concatenate": lambda tensors, axis: keras.backend.concatenate(
            tensors, axis=axis
        ),
        "keras.layers.Concatenate": lambda tensors, axis: keras.layers.Concatenate(axis=axis)(
            tensors
        ),
    }
    if KERAS_MAJOR >= 3:
        functions["keras.ops.concatenate"] = lambda tensors, axis: keras.ops.concatenate(
            tensors, axis=axis
        )
    return functions


def make_traced_printer(log_path):
    """Returns a tf.function doubling its input, with a Python print and a tf.print inside.

    The Python print writes to stdout only while the function is traced; the tf.print appends
    one line to `log_path` every time the function runs.
    """
    if not isinstance(log_path, str | os.PathLike) or not os.fspath(log_path):
        raise ValueError(f"log_path must be a file path, got log_path={log_path!r}")
    absolute_path = os.path.abspath(os.fspath(log_path))
    if not os.path.isdir(os.path.dirname(absolute_path)):
        raise ValueError(f"log_path={log_path!r} is in a directory that does not exist")

    @tf.function
    def double(tensor):
        print("python print, tracing:", tensor)
        tf.print("tf.print, running:", tensor, output_stream="file://" + absolute_path)
        return tensor * 2

    return double


def _first_line(error):
    # TensorFlow prefixes kernel errors with "{{function_node ...}}"; the message follows it.
    message = re.sub(r"\{\{.*?\}\}\s*", "", str(error)).strip().splitlines()[0]
    return f"{type(error).__name__}: {message[:90]}"


def demo():
    print(f"TensorFlow {tf.__version__}, Keras {KERAS_MAJOR} ({keras.__name__})")
    tensor = tf.reshape(tf.range(6, dtype=tf.float32), (2, 3, 1))
    for name, squeeze in squeeze_functions().items():
        print(f"{name}(x of shape (2, 3, 1), axis=2) -> shape {tuple(squeeze(tensor, 2).shape)}")
    for name, concatenate in concatenate_functions().items():
        print(f"{name}([x, x], axis=1) -> shape {tuple(concatenate([tensor, tensor], 1).shape)}")

    print("\nSqueezing axis=1, whose size is 3:")
    bad_squeezes = {
        "tf.squeeze": squeeze_functions()["tf.squeeze"],
        "keras.backend.squeeze": keras.backend.squeeze,
    }
    if KERAS_MAJOR >= 3:
        bad_squeezes["keras.ops.squeeze"] = keras.ops.squeeze
    bad_squeezes["squeeze_axis"] = squeeze_axis
    for name, squeeze in bad_squeezes.items():
        try:
            squeeze(tensor, 1)
        except Exception as error:  # The point is to show which type each API raises.
            print(f"  {name}: {_first_line(error)}")

    print("\nOn a keras.Input of shape (None, 3, 1):")
    inputs = keras.Input((3, 1))
    for name, build in {
        "tf.squeeze": lambda: tf.squeeze(inputs, axis=-1),
        "keras.layers.Reshape": lambda: squeeze_with_reshape_layer(inputs, -1),
    }.items():
        try:
            print(f"  {name}: works, shape {tuple(build().shape)}")
        except Exception as error:
            print(f"  {name}: {_first_line(error)}")

    variable = tf.Variable([1.0, 2.0])
    from_get_value = keras.backend.get_value(variable)
    print(f"\n.numpy() {variable.numpy()} equals keras.backend.get_value {from_get_value}")
    with tempfile.TemporaryDirectory() as directory:
        log_path = os.path.join(directory, "tf_print.log")
        double = make_traced_printer(log_path)
        python_output = io.StringIO()
        with contextlib.redirect_stdout(python_output):
            for value in (1.0, 2.0, 3.0):
                double(tf.constant(value))
        with open(log_path) as log:
            tf_print_lines = log.read().splitlines()
    python_print_count = len(python_output.getvalue().splitlines())
    print(f"Three calls of a tf.function: Python print ran {python_print_count} time(s),")
    print(f"tf.print ran {len(tf_print_lines)} times: {tf_print_lines}")


if __name__ == "__main__":
    demo()
