import functools
import re

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import expected_outcome, outcome_of
from recipes import tensor_ops

FINITE_FLOATS = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
KERAS_TENSOR_MESSAGE = "A KerasTensor cannot be used as input to a TensorFlow function"


def run(action, fragments=()):
    """(outcome_of(action, fragments), what action returned, or None if it raised)."""
    results = []
    outcome = outcome_of(lambda: results.append(action()), list(fragments))
    return outcome, (results[0] if results else None)


@st.composite
def arrays_with_a_unit_axis(draw):
    """A float32 array with a size-1 axis inserted after the batch axis, and that axis."""
    base_shape = draw(hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4))
    axis = draw(st.integers(1, len(base_shape)))
    shape = base_shape[:axis] + (1,) + base_shape[axis:]
    values = draw(hnp.arrays(np.float32, shape, elements=FINITE_FLOATS))
    return values, axis - len(shape) if draw(st.booleans()) else axis


@st.composite
def arrays_to_concatenate(draw):
    """Two or three float32 arrays that share every size but the one along the drawn axis."""
    shape = list(draw(hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4)))
    axis = draw(st.integers(0, len(shape) - 1))
    arrays = []
    for _ in range(draw(st.integers(2, 3))):
        shape[axis] = draw(st.integers(1, 3))
        arrays.append(draw(hnp.arrays(np.float32, tuple(shape), elements=FINITE_FLOATS)))
    return arrays, axis - len(shape) if draw(st.booleans()) else axis


# --- Which APIs exist, and that they agree ------------------------------------------------


def test_backend_squeeze_concatenate_get_value_exist_on_every_stack(version_split, observe):
    for name in ("squeeze", "concatenate", "get_value"):
        assert callable(getattr(keras.backend, name))
    observe(
        "keras.backend.squeeze / concatenate / get_value (from tensorflow import keras)", "present"
    )
    # On Keras 3, `from tensorflow import keras` is Keras 3's tf.keras compat namespace.
    if keras.__name__ == "keras._tf_keras.keras":
        namespace = "keras._tf_keras.keras (Keras 3 compat)"
    elif keras.__name__.endswith("api._v2.keras"):
        namespace = "api._v2.keras (Keras 2)"
    else:
        namespace = keras.__name__
    version_split(
        "module behind `from tensorflow import keras`",
        namespace,
        {
            "keras<3": "api._v2.keras (Keras 2)",
            "keras>=3": "keras._tf_keras.keras (Keras 3 compat)",
        },
    )


def test_keras_ops_squeeze_and_concatenate_exist_only_on_keras_3(version_split):
    ops = getattr(keras, "ops", None)
    present = ops is not None and callable(ops.squeeze) and callable(ops.concatenate)
    listed = {
        "keras.ops.squeeze" in tensor_ops.squeeze_functions(),
        "keras.ops.concatenate" in tensor_ops.concatenate_functions(),
    }
    # The recipe lists keras.ops exactly where it exists.
    assert listed == {present}
    version_split(
        "keras.ops.squeeze / keras.ops.concatenate",
        "present" if present else "absent",
        {"keras<3": "absent", "keras>=3": "present"},
    )


def test_every_squeeze_api_on_the_stack_gives_numpys_answer(observe):
    @hypothesis.given(arrays_with_a_unit_axis())
    def check(case):
        values, axis = case
        expected = np.squeeze(values, axis=axis)
        for name, squeeze in tensor_ops.squeeze_functions().items():
            result = np.asarray(squeeze(tf.constant(values), axis))
            assert result.shape == expected.shape, name
            np.testing.assert_allclose(result, expected, rtol=0, atol=0, err_msg=name)

    check()
    # Which APIs exist is its own split (keras.ops on Keras 3); every one of them agrees.
    observe("squeeze APIs vs np.squeeze", "every squeeze API on the stack = numpy")


# Keras 3.0.5 to 3.6.0 share one Concatenate.build; 3.7.0 rewrote its loop (see the sources).
CONCATENATE_BUILD_BUG = "keras>=3,<3.7"
CONCATENATE_BUILD_MESSAGES = {
    IndexError: "list assignment index out of range",
    ValueError: "requires inputs with matching shapes",
}


def concatenate_layer_known_outcomes(build_error):
    """The version table for keras.layers.Concatenate on inputs whose 3.0 build fails so."""
    if build_error is None:
        return {"keras<3": "works", "keras>=3": "works"}
    failure = f"{build_error.__name__}: {CONCATENATE_BUILD_MESSAGES[build_error]}"
    return {"keras<3": "works", CONCATENATE_BUILD_BUG: failure, "keras>=3.7": "works"}


def _keras_3_0_concatenate_build_error(shapes, axis):
    """The error Keras 3.0.5's Concatenate.build raises for these input shapes, or None.

    A transcription of that build: it deletes the size-1 axes (other than the joined one) from
    each shape while walking the original indices, so later deletions hit the wrong axis or run
    past the shortened list, and it then deletes the joined axis by the index the caller gave.
    """
    reduced_shapes = set()
    for shape in shapes:
        reduced = list(shape)
        for index, size in enumerate(shape[1:], start=1):
            if index != axis % len(shape) and size == 1:
                if index >= len(reduced):
                    return IndexError
                del reduced[index]
        if len(reduced) > axis:
            if -axis > len(reduced):
                return IndexError
            del reduced[axis]
        reduced_shapes.add(tuple(reduced))
    if any(
        len({reduced[index] for reduced in reduced_shapes}) > 1 for index in range(len(reduced))
    ):
        return ValueError
    return None


def test_every_concatenate_api_on_the_stack_gives_numpys_answer(observe):
    @hypothesis.given(arrays_to_concatenate())
    def check(case):
        arrays, axis = case
        expected = np.concatenate(arrays, axis=axis)
        tensors = [tf.constant(array) for array in arrays]
        build_error = _keras_3_0_concatenate_build_error([array.shape for array in arrays], axis)
        for name, concatenate in tensor_ops.concatenate_functions().items():
            outcome, result = run(
                functools.partial(concatenate, tensors, axis), CONCATENATE_BUILD_MESSAGES.values()
            )
            # Only the layer, and only where its 3.0 to 3.6 build fails, may refuse.
            known = {"keras<3": "works", "keras>=3": "works"}
            if name == "keras.layers.Concatenate":
                known = concatenate_layer_known_outcomes(build_error)
            assert outcome == expected_outcome(f"{name} of {arrays_shapes(arrays)}", known)
            if result is not None:
                result = np.asarray(result)
                assert result.shape == expected.shape, name
                np.testing.assert_allclose(result, expected, rtol=0, atol=0, err_msg=name)

    check()
    observe(
        "concatenate APIs vs np.concatenate",
        "every concatenate API on the stack = numpy (Concatenate: except where its Keras 3.0 "
        "to 3.6 build fails)",
    )


def arrays_shapes(arrays):
    return " and ".join(str(array.shape) for array in arrays)


def test_concatenate_layer_rejects_valid_inputs_with_unit_axes_on_keras_3_0_to_3_6(
    version_split,
):
    """keras-team/keras#20430 reports the IndexError; the ValueError has the same cause."""
    cases = [
        ([(1, 1, 1), (1, 1, 1)], 0, IndexError, "list assignment index out of range"),
        ([(1, 1, 1, 1, 5), (1, 1, 1, 1, 5)], -1, IndexError, "list assignment index out of range"),
        ([(2, 1, 1), (2, 1, 2)], 2, ValueError, "requires inputs with matching shapes"),
    ]
    for shapes, axis, keras_3_0_error, message in cases:
        assert _keras_3_0_concatenate_build_error(shapes, axis) is keras_3_0_error
        arrays = [np.full(shape, position, "float32") for position, shape in enumerate(shapes)]
        tensors = [tf.constant(array) for array in arrays]
        # tf.concat, which the layer wraps, joins the same tensors on every stack.
        expected = np.concatenate(arrays, axis=axis)
        np.testing.assert_allclose(tf.concat(tensors, axis=axis), expected, rtol=0, atol=0)
        assert CONCATENATE_BUILD_MESSAGES[keras_3_0_error] == message
        outcome, joined = run(
            functools.partial(keras.layers.Concatenate(axis=axis), tensors), [message]
        )
        if joined is not None:
            np.testing.assert_allclose(joined, expected, rtol=0, atol=0)
        version_split(
            f"keras.layers.Concatenate(axis={axis}) of {' and '.join(map(str, shapes))}",
            outcome,
            concatenate_layer_known_outcomes(keras_3_0_error),
        )
        if hasattr(keras, "ops"):
            joined = keras.ops.concatenate(tensors, axis=axis)
            np.testing.assert_allclose(joined, expected, rtol=0, atol=0)


# --- keras.Input: TF functions versus layers ----------------------------------------------


def test_tf_functions_on_keras_input_work_on_keras_2_and_raise_on_keras_3(version_split):
    inputs = keras.Input((3, 1))
    # Each function, the shape it gives on Keras 2 and the error fragment it raises on Keras 3.
    tf_functions = {
        "tf.squeeze": (lambda: tf.squeeze(inputs, axis=-1), (None, 3), KERAS_TENSOR_MESSAGE),
        "tf.concat": (
            lambda: tf.concat([inputs, inputs], axis=-1),
            (None, 3, 2),
            KERAS_TENSOR_MESSAGE,
        ),
        "keras.backend.squeeze": (
            lambda: keras.backend.squeeze(inputs, -1),
            (None, 3),
            KERAS_TENSOR_MESSAGE,
        ),
        "keras.backend.concatenate": (
            lambda: keras.backend.concatenate([inputs, inputs], axis=-1),
            (None, 3, 2),
            "object has no attribute 'rank'",
        ),
    }
    for name, (build, keras_2_shape, keras_3_message) in tf_functions.items():
        outcome, output = run(build, [keras_3_message])
        if output is not None:
            outcome = f"works, shape {tuple(output.shape)}"
        error = "AttributeError" if "rank" in keras_3_message else "ValueError"
        version_split(
            f"{name} on keras.Input of shape (None, 3, 1)",
            outcome,
            {"keras<3": f"works, shape {keras_2_shape}", "keras>=3": f"{error}: {keras_3_message}"},
        )


def test_reshape_and_concatenate_layers_on_keras_input_build_a_working_model(
    version_split, observe
):
    inputs = keras.Input((3, 1))
    squeezed = tensor_ops.squeeze_with_reshape_layer(inputs, -1)
    joined = keras.layers.Concatenate(axis=1)([squeezed, squeezed])
    model = keras.Model(inputs, joined)
    values = np.arange(6, dtype="float32").reshape(2, 3, 1)
    expected = np.concatenate([values[..., 0], values[..., 0]], axis=1)
    np.testing.assert_allclose(model.predict(values, verbose=0), expected, rtol=0, atol=0)
    observe("keras.layers.Reshape / Concatenate on keras.Input", "works")

    def ops_model_matches():
        ops_output = keras.ops.concatenate([keras.ops.squeeze(inputs, -1)] * 2, axis=1)
        ops_model = keras.Model(inputs, ops_output)
        np.testing.assert_allclose(ops_model.predict(values, verbose=0), expected, rtol=0, atol=0)

    version_split(
        "keras.ops.squeeze / concatenate on keras.Input",
        outcome_of(ops_model_matches) if hasattr(keras, "ops") else "absent",
        {"keras<3": "absent", "keras>=3": "works"},
    )


# --- Squeezing an axis whose size is not 1 -------------------------------------------------


def test_tf_squeeze_on_a_non_unit_axis_raises_invalid_argument_error_eagerly_value_error_traced(
    observe,
):
    tensor = tf.ones((2, 3, 1))
    # The docstring promises ValueError, yet the eager error is not one.
    assert re.search(r"ValueError: .*axis cannot be squeezed", " ".join(tf.squeeze.__doc__.split()))
    assert not issubclass(tf.errors.InvalidArgumentError, ValueError)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Can not squeeze dim"):
        tf.squeeze(tensor, axis=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Can not squeeze dim"):
        keras.backend.squeeze(tensor, 1)
    with pytest.raises(ValueError, match="size not equal to one"):
        np.squeeze(np.ones((2, 3, 1)), axis=1)
    observe(
        "tf.squeeze / keras.backend.squeeze on an axis of size 3, eager", "InvalidArgumentError"
    )

    @tf.function
    def squeeze_middle_axis(tensor):
        return tf.squeeze(tensor, axis=1)

    with pytest.raises(ValueError, match="Can not squeeze dim"):
        squeeze_middle_axis(tensor)
    observe("tf.squeeze on an axis of size 3 in tf.function (static shape)", "ValueError (trace)")


def test_keras_ops_squeeze_error_for_a_bad_axis_depends_on_the_keras_version(version_split):
    tensor = tf.ones((2, 3, 1))

    def squeeze_error(axis):
        if not hasattr(keras, "ops"):
            return "absent"
        return outcome_of(
            lambda: keras.ops.squeeze(tensor, axis),
            ["Can not squeeze dim", "Tried to squeeze dim index", "Cannot squeeze axis"],
        )

    # Keras 3.0.5's TensorFlow backend calls tf.squeeze; from 3.1.0 on its `squeeze` reads
    # static_shape[axis] in Python first (ValueError, or IndexError past the rank).
    version_split(
        "keras.ops.squeeze on an axis of size 3",
        squeeze_error(1),
        {
            "keras<3": "absent",
            "keras>=3,<3.1": "InvalidArgumentError: Can not squeeze dim",
            "keras>=3.1": "ValueError: Cannot squeeze axis",
        },
    )
    version_split(
        "keras.ops.squeeze on axis 5 of a rank-3 tensor",
        squeeze_error(5),
        {
            "keras<3": "absent",
            "keras>=3,<3.1": "InvalidArgumentError: Tried to squeeze dim index",
            "keras>=3.1": "IndexError",
        },
    )


@hypothesis.given(arrays_with_a_unit_axis())
def test_squeeze_axis_gives_numpys_answer_on_a_unit_axis(case):
    values, axis = case
    np.testing.assert_allclose(
        tensor_ops.squeeze_axis(values, axis), np.squeeze(values, axis=axis), rtol=0, atol=0
    )


def test_squeeze_axis_raises_value_error_naming_the_axis_and_its_size(observe):
    @hypothesis.given(hnp.array_shapes(min_dims=1, max_dims=4, min_side=2, max_side=4), st.data())
    def check(shape, data):
        axis = data.draw(st.integers(-len(shape), len(shape) - 1))
        with pytest.raises(ValueError, match=rf"axis={axis}: its size is {shape[axis]}, not 1"):
            tensor_ops.squeeze_axis(tf.zeros(shape), axis)

    check()
    observe("squeeze_axis on an axis whose size is not 1", "ValueError naming axis and size")


def test_squeeze_axis_rejects_an_out_of_range_or_non_integer_axis():
    cases = [
        (3, "axis=3 is out of range for a tensor of rank 3"),
        (-4, "axis=-4 is out of range"),
        (1.0, "axis must be an integer, got axis=1.0"),
        (True, "axis must be an integer, got axis=True"),
        ("1", "axis must be an integer, got axis='1'"),
    ]
    for axis, message in cases:
        with pytest.raises(ValueError, match=message):
            tensor_ops.squeeze_axis(np.ones((2, 1, 1)), axis)


def test_squeeze_axis_leaves_an_unknown_size_to_tf_squeeze_when_the_function_runs():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None])])
    def squeeze_middle_axis(tensor):
        return tensor_ops.squeeze_axis(tensor, 1)

    assert squeeze_middle_axis(tf.ones((2, 1, 3))).shape == (2, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Can not squeeze dim"):
        squeeze_middle_axis(tf.ones((2, 3, 1)))


def test_squeeze_functions_reject_a_tensor_that_does_not_hold_real_numbers():
    for tensor in ["abc", None, object(), np.array(["a", "b"]), [[1.0], [2.0, 3.0]], 1 + 2j]:
        pattern = (
            rf"^tensor must be a tensor or array of real numbers, got {re.escape(repr(tensor))}$"
        )
        with pytest.raises(ValueError, match=pattern):
            tensor_ops.squeeze_axis(tensor, 0)
        with pytest.raises(ValueError, match=pattern):
            tensor_ops.squeeze_with_reshape_layer(tensor, 1)


def test_squeeze_functions_accept_numpy_integer_axes_and_nested_lists():
    values = [[[1.0], [2.0]]]
    for axis in (np.int64(2), np.int32(-1), np.uint8(2)):
        np.testing.assert_allclose(tensor_ops.squeeze_axis(values, axis), [[1.0, 2.0]])
        squeezed = tensor_ops.squeeze_with_reshape_layer(np.asarray(values, "float32"), axis)
        np.testing.assert_allclose(squeezed, [[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"cannot squeeze axis=1: its size is 2"):
        tensor_ops.squeeze_axis(values, np.int64(1))


def test_squeeze_with_reshape_layer_rejects_the_batch_axis_and_non_unit_axes():
    cases = [
        (0, "axis=0 is the batch axis"),
        (-3, "axis=-3 is the batch axis"),
        (2, "axis=2: its size is 3"),
    ]
    for axis, message in cases:
        with pytest.raises(ValueError, match=message):
            tensor_ops.squeeze_with_reshape_layer(np.ones((1, 1, 3), "float32"), axis)


def test_backend_concatenate_of_numpy_arrays_with_a_negative_axis_raises_attribute_error(observe):
    arrays = [np.ones((2, 1), "float32"), np.zeros((2, 1), "float32")]
    with pytest.raises(AttributeError, match="rank"):
        keras.backend.concatenate(arrays)
    with pytest.raises(AttributeError, match="rank"):
        keras.backend.concatenate(arrays, axis=-1)
    expected = np.concatenate(arrays, axis=1)
    np.testing.assert_allclose(keras.backend.concatenate(arrays, axis=1), expected, rtol=0, atol=0)
    tensors = [tf.constant(array) for array in arrays]
    np.testing.assert_allclose(keras.backend.concatenate(tensors), expected, rtol=0, atol=0)
    observe("keras.backend.concatenate of numpy arrays, axis=-1", "AttributeError")


# --- Printing --------------------------------------------------------------------------


def _tf_print_lines(log_path):
    return log_path.read_text().splitlines() if log_path.exists() else []


def test_python_print_runs_once_at_trace_time_and_tf_print_on_every_call(tmp_path, capsys, observe):
    log_path = tmp_path / "tf_print.log"
    double = tensor_ops.make_traced_printer(log_path)
    results = [double(tf.constant(value)) for value in (1.0, 2.0, 3.0)]
    python_lines = capsys.readouterr().out.splitlines()
    assert [float(result) for result in results] == [2.0, 4.0, 6.0]
    assert len(python_lines) == 1 and "python print, tracing" in python_lines[0]
    assert "shape=()" in python_lines[0]  # The traced tensor is symbolic: a shape, no value.
    assert _tf_print_lines(log_path) == [f"tf.print, running: {value}" for value in (1, 2, 3)]
    observe("three calls of a tf.function: Python print / tf.print lines", "1 / 3")


def test_a_new_input_shape_or_python_number_traces_again_and_reruns_python_print(
    tmp_path, capsys, observe
):
    shape_log, number_log = tmp_path / "shapes.log", tmp_path / "numbers.log"
    double = tensor_ops.make_traced_printer(shape_log)
    for tensor in (tf.constant(1.0), tf.constant(2.0), tf.constant([1.0, 2.0])):
        double(tensor)
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert len(_tf_print_lines(shape_log)) == 3
    observe("tf.function called with a new input shape", "traces again: Python print runs again")

    double = tensor_ops.make_traced_printer(number_log)
    for value in (1.0, 2.0, 3.0):
        double(value)
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert len(_tf_print_lines(number_log)) == 3
    observe("tf.function called with Python floats 1.0, 2.0, 3.0", "3 traces")


@tf.function
def _tf_print_to_default_stream(tensor):
    tf.print("tf.print default stream:", tensor)
    return tensor


def test_tf_print_bypasses_sys_stderr_so_capsys_sees_nothing(capsys):
    _tf_print_to_default_stream(tf.constant(7))
    captured = capsys.readouterr()
    assert "tf.print default stream" not in captured.out + captured.err


def test_tf_print_default_output_reaches_the_stderr_file_descriptor(capfd, observe):
    _tf_print_to_default_stream(tf.constant(7))
    assert "tf.print default stream: 7" in capfd.readouterr().err
    observe("tf.print default output under pytest", "capfd (fd 2) sees it, capsys does not")


def test_numpy_and_get_value_return_equal_arrays_eagerly(observe):
    @hypothesis.given(
        hnp.arrays(np.float32, hnp.array_shapes(max_dims=3, max_side=4), elements=FINITE_FLOATS)
    )
    def check(values):
        for value in (tf.constant(values), tf.Variable(values)):
            from_numpy, from_get_value = value.numpy(), keras.backend.get_value(value)
            assert isinstance(from_numpy, np.ndarray) and isinstance(from_get_value, np.ndarray)
            np.testing.assert_allclose(from_numpy, values, rtol=0, atol=0)
            np.testing.assert_allclose(from_get_value, values, rtol=0, atol=0)

    check()
    # A seeded initializer: an unseeded one trips a DeprecationWarning inside Keras 2.12 and 2.15.
    layer = keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed=1))
    layer.build((None, 3))
    np.testing.assert_allclose(
        layer.kernel.numpy(), keras.backend.get_value(layer.kernel), rtol=0, atol=0
    )
    observe(
        ".numpy() vs keras.backend.get_value, eager (tensor, variable, layer weight)",
        "equal arrays",
    )


def test_numpy_and_get_value_raise_attribute_error_inside_tf_function(observe):
    @tf.function
    def call_numpy(tensor):
        return tensor.numpy()

    @tf.function
    def call_get_value(tensor):
        return keras.backend.get_value(tensor)

    for function in (call_numpy, call_get_value):
        with pytest.raises(AttributeError, match="has no attribute 'numpy'"):
            function(tf.constant([1.0, 2.0]))
    observe(".numpy() / keras.backend.get_value inside tf.function", "AttributeError")


def test_make_traced_printer_rejects_a_bad_log_path():
    for log_path in ["", None, 3, "/no/such/directory/tf_print.log"]:
        with pytest.raises(ValueError, match=f"log_path={log_path!r}"):
            tensor_ops.make_traced_printer(log_path)


def test_demo_shows_every_api_and_the_print_counts(demo_output):
    output = demo_output("tensor_ops")
    for name in list(tensor_ops.squeeze_functions()) + list(tensor_ops.concatenate_functions()):
        assert f"{name}(" in output
    assert "squeeze_axis: ValueError: cannot squeeze axis=1: its size is 3" in output
    assert "Python print ran 1 time(s)" in output and "tf.print ran 3 times" in output
