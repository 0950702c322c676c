"""Tests for recipes/space_to_depth_reorg.py: Reorg, darknet's reorg, saving and loading."""

import re

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.space_to_depth_reorg import (
    DarknetReorg,
    Reorg,
    darknet_reorg_reference,
    reorg_reference,
    reorg_with_reshapes,
)
from tests.layer_contract import check_layer_contract

# --- darknet, transcribed line by line ------------------------------------------------------


def reorg_cpu(x, w, h, c, batch, stride, forward, out):
    """pjreddie/darknet src/blas.c `reorg_cpu`, line by line, on flat buffers.

    AlexeyAB/darknet's src/blas.c names the first three parameters out_w, out_h, out_c (and
    `out_c` below `in_c`); the body is the same.
    """
    out_c = c // (stride * stride)

    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]


def darknet_layer(x, stride, call_with_input_dims):
    """A darknet reorg layer's forward pass on an NHWC batch, through darknet's NCHW buffers.

    make_reorg_layer sets l.w, l.h, l.c to the input's W, H, C and l.out_w, l.out_h, l.out_c
    to W/s, H/s, C*s*s; the next layer reads the output buffer as (out_c, out_h, out_w).
    """
    batch, height, width, channels = x.shape
    l_w, l_h, l_c = width, height, channels
    l_out_w, l_out_h, l_out_c = width // stride, height // stride, channels * stride * stride
    net_input = list(x.transpose(0, 3, 1, 2).ravel())
    l_output = [None] * len(net_input)
    if call_with_input_dims:
        # pjreddie/darknet src/reorg_layer.c forward_reorg_layer, also AlexeyAB's [reorg]
        # (src/reorg_old_layer.c forward_reorg_old_layer):
        reorg_cpu(net_input, l_w, l_h, l_c, batch, stride, 0, l_output)
    else:
        # AlexeyAB/darknet src/reorg_layer.c forward_reorg_layer, the [reorg3d] section:
        reorg_cpu(net_input, l_out_w, l_out_h, l_out_c, batch, stride, 0, l_output)
    assert None not in l_output, "reorg_cpu left part of the output unwritten"
    output = np.array(l_output, dtype=x.dtype).reshape(batch, l_out_c, l_out_h, l_out_w)
    return output.transpose(0, 2, 3, 1)


def distinct_values(shape):
    """Every element different, so any rearrangement shows."""
    return np.arange(np.prod(shape), dtype="float32").reshape(shape)


# (batch, H, W, C), stride: H divisible by stride² and not (26: YOLOv2's map at 416x416).
DARKNET_SHAPES = [
    ((2, 8, 4, 8), 2),
    ((1, 4, 6, 4), 2),
    ((1, 26, 26, 64), 2),
    ((2, 26, 26, 4), 2),
    ((1, 6, 6, 4), 2),
    ((2, 9, 6, 9), 3),
    ((1, 6, 3, 18), 3),
]


@st.composite
def darknet_batches(draw, height_divisible_by_stride_squared=False):
    """NHWC batches darknet's reorg accepts: H, W divisible by the stride, C by stride²."""
    stride = draw(st.integers(2, 3))
    height_unit = stride * stride if height_divisible_by_stride_squared else stride
    shape = (
        draw(st.integers(1, 2)),
        height_unit * draw(st.integers(1, 5)),
        stride * draw(st.integers(1, 3)),
        stride * stride * draw(st.integers(1, 2)),
    )
    elements = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(np.float32, shape, elements=elements)), stride


@pytest.mark.parametrize("shape, stride", DARKNET_SHAPES)
def test_darknet_reorg_equals_reorg_cpu_called_with_input_dims_and_differs_from_reorg(
    shape, stride, observe
):
    x = distinct_values(shape)
    darknet = darknet_layer(x, stride, call_with_input_dims=True)
    np.testing.assert_array_equal(DarknetReorg(stride)(x), darknet)
    np.testing.assert_array_equal(darknet_reorg_reference(x, stride), darknet)
    assert not np.array_equal(darknet, reorg_reference(x, stride))
    assert not np.array_equal(darknet, tf.nn.space_to_depth(x, stride))
    observe("DarknetReorg against darknet's reorg_cpu and against space_to_depth", "equal; differs")


@hypothesis.given(darknet_batches())
def test_darknet_reorg_equals_reorg_cpu_on_any_valid_shape(batch):
    x, stride = batch
    darknet = darknet_layer(x, stride, call_with_input_dims=True)
    np.testing.assert_array_equal(DarknetReorg(stride)(x), darknet)
    np.testing.assert_array_equal(darknet_reorg_reference(x, stride), darknet)


@pytest.mark.parametrize("shape, stride", DARKNET_SHAPES)
def test_alexeyab_reorg3d_is_exactly_space_to_depth(shape, stride, observe):
    x = distinct_values(shape)
    reorg3d = darknet_layer(x, stride, call_with_input_dims=False)
    np.testing.assert_array_equal(Reorg(stride)(x), reorg3d)
    np.testing.assert_array_equal(reorg_reference(x, stride), reorg3d)
    observe("AlexeyAB's [reorg3d] (reorg_cpu with output dims) against Reorg", "equal")


def rows_swapped_in_groups(height, stride):
    """Row s*i + j of each group of s*s rows takes row s*j + i (0, 2, 1, 3 for s = 2)."""
    group = stride * stride
    return [
        start + stride * (row % stride) + row // stride
        for start in range(0, height, group)
        for row in range(group)
    ]


def test_row_swap_for_stride_2_and_3_is_the_one_the_recipe_names():
    assert rows_swapped_in_groups(8, 2) == [0, 2, 1, 3, 4, 6, 5, 7]
    assert rows_swapped_in_groups(9, 3) == [0, 3, 6, 1, 4, 7, 2, 5, 8]


@hypothesis.given(darknet_batches(height_divisible_by_stride_squared=True))
def test_darknet_reorg_is_reorg_of_rows_swapped_when_height_divides_by_stride_squared(batch):
    x, stride = batch
    height = x.shape[1]
    rows = rows_swapped_in_groups(height, stride)
    # The swap is its own inverse, so "row a moves to b" and "b moves to a" are one claim.
    assert [rows[row] for row in rows] == list(range(height))
    expected = reorg_reference(x[:, rows], stride)
    np.testing.assert_array_equal(darknet_reorg_reference(x, stride), expected)
    np.testing.assert_array_equal(DarknetReorg(stride)(x), expected)


def source_channels(height, width, channels, stride):
    """For each output channel of DarknetReorg, the set of input channels it reads."""
    x = distinct_values((1, height, width, channels))
    darknet = np.asarray(DarknetReorg(stride)(x))[0].astype(int)
    channel_of = darknet % channels  # distinct_values: element index, channel last.
    return [set(channel_of[..., k].ravel()) for k in range(channels * stride**2)]


@pytest.mark.parametrize(
    "height, width, channels, stride",
    [(26, 26, 64, 2), (26, 26, 4, 2), (6, 4, 4, 2), (6, 3, 9, 3), (12, 6, 9, 3)],
)
def test_darknet_reorg_mixes_two_input_channels_in_some_output_channels_for_height_26(
    height, width, channels, stride, observe
):
    """Heights not divisible by stride², as YOLOv2's 26x26 map."""
    reads = source_channels(height, width, channels, stride)
    assert any(len(read) > 1 for read in reads)
    assert max(len(read) for read in reads) == 2
    observe("DarknetReorg: an output channel reads 2 input channels, H = 26", "yes")


@pytest.mark.parametrize(
    "height, width, channels, stride", [(24, 26, 64, 2), (8, 4, 4, 2), (9, 6, 9, 3)]
)
def test_darknet_reorg_keeps_each_output_channel_on_one_input_channel_for_height_24(
    height, width, channels, stride, observe
):
    """Heights divisible by stride², where the row swap above is the whole difference."""
    reads = source_channels(height, width, channels, stride)
    assert all(len(read) == 1 for read in reads)
    observe("DarknetReorg: an output channel reads 2 input channels, H = 24", "no")


@pytest.mark.parametrize("shape, stride", DARKNET_SHAPES)
def test_no_reordering_of_channels_turns_reorg_into_darknet_reorg(shape, stride):
    """Each output pixel holds other values, so no channel permutation can match them."""
    x = distinct_values(shape)
    per_pixel_darknet = np.sort(darknet_reorg_reference(x, stride), axis=-1)
    per_pixel_reorg = np.sort(reorg_reference(x, stride), axis=-1)
    assert not np.array_equal(per_pixel_darknet, per_pixel_reorg)


def test_darknet_reorg_layer_contract(tmp_path, version_split, observe):
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 8)).astype("float32")
    check_layer_contract(
        DarknetReorg, {"stride": 2}, x, darknet_reorg_reference(x, 2), tmp_path, version_split
    )
    observe(
        "DarknetReorg: Keras' layer harness; Functional, Sequential, subclassed; saving",
        "works",
    )


@pytest.mark.parametrize(
    "shape", [(1, 26, 25, 4), (1, 25, 26, 4), (2, 26, 26, 6), (1, 4, 4, 2), (4, 4, 4)]
)
def test_darknet_reorg_bad_shape_raises_value_error_naming_it(shape):
    with pytest.raises(ValueError, match=re.escape(f"x.shape={shape}")):
        darknet_reorg_reference(np.zeros(shape, "float32"), 2)
    with pytest.raises(ValueError, match=re.escape(f"input_shape={(None, *shape[1:])}")):
        DarknetReorg(2)(keras.Input(shape[1:]))
    if len(shape) == 4:
        with pytest.raises(ValueError, match=re.escape(f"input_shape={shape}")):
            DarknetReorg(2)(np.zeros(shape, "float32"))


def test_darknet_reorg_needs_static_height_width_and_channels():
    with pytest.raises(ValueError, match=re.escape("input_shape=(None, None, None, 4)")):
        DarknetReorg(2)(keras.Input((None, None, 4)))
    with pytest.raises(ValueError, match=re.escape("input_shape=(None, 4, 4, None)")):
        DarknetReorg(2)(keras.Input((4, 4, None)))


# --- Reorg: space_to_depth in a layer ---------------------------------------------------------


@st.composite
def nhwc_batches(draw):
    """A float32 NHWC batch whose height and width divide by the drawn block size."""
    block_size = draw(st.integers(2, 4))
    shape = (
        draw(st.integers(1, 3)),
        block_size * draw(st.integers(1, 3)),
        block_size * draw(st.integers(1, 3)),
        draw(st.integers(1, 4)),
    )
    elements = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(np.float32, shape, elements=elements)), block_size


@hypothesis.given(nhwc_batches())
def test_reorg_equals_numpy_reference_and_reshape_transpose_reshape(batch):
    x, block_size = batch
    expected = reorg_reference(x, block_size)
    np.testing.assert_array_equal(Reorg(block_size)(x), expected)
    inputs = keras.Input(x.shape[1:])
    reshapes = keras.Model(inputs, reorg_with_reshapes(inputs, block_size))
    np.testing.assert_array_equal(reshapes(x), expected)


@hypothesis.given(nhwc_batches())
def test_depth_to_space_inverts_reorg(batch):
    x, block_size = batch
    np.testing.assert_array_equal(tf.nn.depth_to_space(Reorg(block_size)(x), block_size), x)


def test_reference_places_pixel_at_block_offset_in_channel_group():
    """Pins the ordering with one hand-checked pixel, independent of any implementation."""
    x = np.zeros((1, 4, 4, 3), "float32")
    x[0, 3, 2, 1] = 7.0  # block (1, 1), offset dy=1, dx=0, channel 1
    out = reorg_reference(x, 2)
    assert out[0, 1, 1, (1 * 2 + 0) * 3 + 1] == 7.0
    assert np.count_nonzero(out) == 1


def test_reorg_layer_contract_in_every_model_kind_and_file_format(tmp_path, version_split, observe):
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype("float32")
    check_layer_contract(
        Reorg, {"block_size": 2}, x, reorg_reference(x, 2), tmp_path, version_split
    )
    observe("Reorg: Keras' layer harness; Functional, Sequential, subclassed; saving", "works")


def test_space_to_depth_on_functional_input_depends_on_the_keras_version(version_split):
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")

    def build_and_predict():
        inputs = keras.Input((4, 4, 3))
        model = keras.Model(inputs, tf.nn.space_to_depth(inputs, 2))
        np.testing.assert_array_equal(model.predict(x, verbose=0), reorg_reference(x, 2))

    version_split(
        "`tf.nn.space_to_depth` called on a functional `keras.Input`",
        outcome_of(build_and_predict, fragments=["cannot be used as input to a TensorFlow"]),
        {
            "keras<3": "works",
            "keras>=3": "ValueError: cannot be used as input to a TensorFlow",
        },
    )


def save_reorg_model(path):
    inputs = keras.Input((4, 4, 3))
    keras.Model(inputs, Reorg(2)(inputs)).save(path)
    keras.backend.clear_session()


def test_keras_2_12_writes_a_keras_file_as_legacy_hdf5(tmp_path, version_split):
    path = str(tmp_path / "reorg.keras")
    save_reorg_model(path)
    with open(path, "rb") as file:
        signature = file.read(4)
    formats = {b"\x89HDF": "legacy HDF5", b"PK\x03\x04": "zip archive"}
    version_split(
        "file format `model.save('m.keras')` writes",
        formats.get(signature, repr(signature)),
        {"keras<2.13": "legacy HDF5", "keras>=2.13": "zip archive"},
    )


def test_loading_a_keras_file_without_custom_objects_depends_on_the_keras_version(
    tmp_path, version_split
):
    """Keras 2.13+ fail with an unhelpful TypeError; Keras 3.0 imports the class."""
    path = str(tmp_path / "reorg.keras")
    save_reorg_model(path)

    def load_and_check():
        # Keras 3.0 imports the module recorded in the file ("recipes.space_to_depth_reorg").
        assert isinstance(keras.models.load_model(path).layers[-1], Reorg)

    version_split(
        "loading a saved Reorg `.keras` model without `custom_objects`",
        outcome_of(
            load_and_check,
            fragments=[
                "Unknown layer: 'Reorg'",
                "'str' object is not callable",
                "Could not locate class 'Reorg'",
            ],
        ),
        {
            "keras<2.13": "ValueError: Unknown layer: 'Reorg'",
            "keras>=2.13,<3": "TypeError: 'str' object is not callable",
            # Keras 3.9 imports only Keras' own modules (CVE-2025-1550; tox -e boundaries).
            "keras>=3,<3.9": "works",
            "keras>=3.9": "TypeError: Could not locate class 'Reorg'",
        },
    )


@pytest.mark.filterwarnings("ignore:.*HDF5 file.*considered legacy:UserWarning")
def test_loading_a_legacy_h5_file_without_custom_objects_fails_on_every_stack(tmp_path, observe):
    path = str(tmp_path / "reorg.h5")
    save_reorg_model(path)
    with pytest.raises(ValueError, match="Unknown layer"):
        keras.models.load_model(path)
    observe("loading a saved Reorg legacy `.h5` model without `custom_objects`", "ValueError")


@pytest.mark.parametrize("height, width", [(5, 4), (4, 7), (3, 3)])
def test_height_or_width_not_divisible_raises_value_error_naming_both(height, width, observe):
    message = f"height={height}, width={width}"
    with pytest.raises(ValueError, match=message):
        Reorg(2)(keras.Input((height, width, 3)))
    with pytest.raises(ValueError, match=message):
        Reorg(2)(np.zeros((1, height, width, 3), "float32"))
    with pytest.raises(ValueError, match=message):
        reorg_reference(np.zeros((1, height, width, 3)), 2)
    with pytest.raises(ValueError, match=message):
        reorg_with_reshapes(keras.Input((height, width, 3)), 2)
    observe("Reorg on H or W not divisible by block_size", "ValueError naming height and width")


def test_unknown_spatial_size_is_checked_by_tensorflow_at_run_time(observe):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, Reorg(2)(inputs))
    assert model.predict(np.zeros((1, 4, 6, 3), "float32"), verbose=0).shape == (1, 2, 3, 12)
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.predict(np.zeros((1, 5, 4, 3), "float32"), verbose=0)
    observe("Reorg with unknown H, W fed an odd size", "InvalidArgumentError at run time")


@pytest.mark.parametrize("size", [1, 0, -2, 2.0, "2", True, None, np.float32(2), np.int64(1)])
def test_bad_block_size_or_stride_raises_value_error_naming_it(size):
    block_size = re.escape(f"block_size={size!r}")
    stride = re.escape(f"stride={size!r}")
    with pytest.raises(ValueError, match=block_size):
        Reorg(size)
    with pytest.raises(ValueError, match=block_size):
        reorg_reference(np.zeros((1, 4, 4, 1)), size)
    with pytest.raises(ValueError, match=block_size):
        reorg_with_reshapes(keras.Input((4, 4, 1)), size)
    with pytest.raises(ValueError, match=stride):
        DarknetReorg(size)
    with pytest.raises(ValueError, match=stride):
        darknet_reorg_reference(np.zeros((1, 4, 4, 4)), size)


@pytest.mark.parametrize("size", [np.int64(2), np.int32(2), np.uint8(2)])
def test_numpy_integer_block_size_and_stride_are_accepted(size):
    x = distinct_values((1, 4, 4, 4))
    assert Reorg(size).get_config()["block_size"] == 2
    assert type(Reorg(size).get_config()["block_size"]) is int
    np.testing.assert_array_equal(Reorg(size)(x), reorg_reference(x, size))
    inputs = keras.Input((4, 4, 4))
    reshapes = keras.Model(inputs, reorg_with_reshapes(inputs, size))
    np.testing.assert_array_equal(reshapes(x), reorg_reference(x, 2))
    assert type(DarknetReorg(size).get_config()["stride"]) is int
    np.testing.assert_array_equal(DarknetReorg(size)(x), darknet_reorg_reference(x, size))


def test_bad_rank_raises_value_error_naming_shape():
    with pytest.raises(ValueError, match=re.escape("x.shape=(4, 4, 1)")):
        reorg_reference(np.zeros((4, 4, 1)), 2)
    with pytest.raises(ValueError, match=re.escape("input_shape=(None, 4, 4)")):
        Reorg(2)(keras.Input((4, 4)))
    with pytest.raises(ValueError, match=re.escape("inputs.shape=(None, 4, 4)")):
        reorg_with_reshapes(keras.Input((4, 4)), 2)


@pytest.mark.parametrize("shape", [(None, None, 3), (4, None, 3), (4, 4, None)])
def test_reorg_with_reshapes_needs_static_height_width_and_channels(shape):
    with pytest.raises(ValueError, match=re.escape(f"inputs.shape={(None, *shape)}")):
        reorg_with_reshapes(keras.Input(shape), 2)
