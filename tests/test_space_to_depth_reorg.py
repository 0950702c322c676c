import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import KERAS_VERSION
from recipes.space_to_depth_reorg import Reorg, reorg_reference, reorg_with_reshapes
from tests.layer_contract import check_layer_contract


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


def test_reorg_layer_contract_in_every_model_kind_and_file_format(tmp_path, observe):
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 3)).astype("float32")
    check_layer_contract(Reorg, {"block_size": 2}, x, reorg_reference(x, 2), tmp_path)
    observe("Reorg layer in Functional, Sequential, subclassed; .keras and .h5 round trip", "works")


def test_space_to_depth_on_functional_input_splits_by_keras_major(keras_major, observe):
    inputs = keras.Input((4, 4, 3))
    behaviour = "`tf.nn.space_to_depth` called on a functional `keras.Input`"
    if keras_major >= 3:
        with pytest.raises(ValueError, match="KerasTensor cannot be used as input to a TensorFlow"):
            tf.nn.space_to_depth(inputs, 2)
        observe(behaviour, "ValueError: a KerasTensor cannot be used as input to a TF function")
    else:
        model = keras.Model(inputs, tf.nn.space_to_depth(inputs, 2))
        x = np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype("float32")
        np.testing.assert_array_equal(model.predict(x, verbose=0), reorg_reference(x, 2))
        observe(behaviour, "works")


def save_reorg_model(path):
    inputs = keras.Input((4, 4, 3))
    keras.Model(inputs, Reorg(2)(inputs)).save(path)
    keras.backend.clear_session()


def test_loading_without_custom_objects_fails_with_an_error_that_varies(
    tmp_path, keras_major, observe
):
    """Keras 2.15 and tf-keras fail with an unhelpful TypeError; Keras 3.0 imports the class."""
    path = str(tmp_path / "reorg.keras")
    save_reorg_model(path)
    with open(path, "rb") as file:
        signature = file.read(4)
    # Keras 2.12 writes "*.keras" as legacy HDF5; the other four write the zip archive.
    assert signature == (b"\x89HDF" if KERAS_VERSION.startswith("2.12") else b"PK\x03\x04")
    behaviour = "loading a saved Reorg `.keras` model without `custom_objects`"
    if KERAS_VERSION.startswith("3.0."):
        # Keras 3.0 imports the module recorded in the file ("recipes.space_to_depth_reorg").
        assert isinstance(keras.models.load_model(path).layers[-1], Reorg)
        observe(behaviour, "loads: imports the class from the module named in the file")
    elif keras_major >= 3:
        with pytest.raises(TypeError, match="Could not locate class 'Reorg'"):
            keras.models.load_model(path)
        observe(behaviour, "TypeError: Could not locate class 'Reorg'")
    elif KERAS_VERSION.startswith("2.12"):
        with pytest.raises(ValueError, match="Unknown layer: 'Reorg'"):
            keras.models.load_model(path)
        observe(behaviour, "ValueError: Unknown layer: 'Reorg'")
    else:
        with pytest.raises(TypeError, match="'str' object is not callable"):
            keras.models.load_model(path)
        observe(behaviour, "TypeError: 'str' object is not callable")


def test_legacy_h5_custom_objects_argument_is_ignored_only_on_keras_3_0(tmp_path, observe):
    path = str(tmp_path / "reorg.h5")
    save_reorg_model(path)
    behaviour = "`load_model(legacy .h5, custom_objects={'Reorg': Reorg})`"
    if KERAS_VERSION.startswith("3.0."):
        with pytest.raises(ValueError, match="Unknown layer: 'Reorg'"):
            keras.models.load_model(path, custom_objects={"Reorg": Reorg})
        with keras.utils.custom_object_scope({"Reorg": Reorg}):
            assert isinstance(keras.models.load_model(path).layers[-1], Reorg)
        observe(behaviour, "ValueError: Unknown layer (use `custom_object_scope`)")
    else:
        loaded = keras.models.load_model(path, custom_objects={"Reorg": Reorg})
        assert isinstance(loaded.layers[-1], Reorg)
        observe(behaviour, "loads")


@pytest.mark.parametrize("height, width", [(5, 4), (4, 7), (3, 3)])
def test_height_or_width_not_divisible_raises_value_error_naming_both(height, width, observe):
    message = f"height={height}, width={width}"
    with pytest.raises(ValueError, match=message):
        Reorg(2)(keras.Input((height, width, 3)))
    with pytest.raises(ValueError, match=message):
        Reorg(2)(np.zeros((1, height, width, 3), "float32"))
    with pytest.raises(ValueError, match=message):
        reorg_reference(np.zeros((1, height, width, 3)), 2)
    observe("Reorg on H or W not divisible by block_size", "ValueError naming height and width")


def test_unknown_spatial_size_is_checked_by_tensorflow_at_run_time(observe):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, Reorg(2)(inputs))
    assert model.predict(np.zeros((1, 4, 6, 3), "float32"), verbose=0).shape == (1, 2, 3, 12)
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.predict(np.zeros((1, 5, 4, 3), "float32"), verbose=0)
    observe("Reorg with unknown H, W fed an odd size", "InvalidArgumentError at run time")


@pytest.mark.parametrize("block_size", [1, 0, -2, 2.0, "2", True, None])
def test_bad_block_size_raises_value_error_naming_it(block_size):
    with pytest.raises(ValueError, match=f"block_size={block_size!r}"):
        Reorg(block_size)
    with pytest.raises(ValueError, match="block_size"):
        reorg_reference(np.zeros((1, 4, 4, 1)), block_size)


def test_bad_rank_raises_value_error_naming_shape():
    with pytest.raises(ValueError, match=r"x.shape=\(4, 4, 1\)"):
        reorg_reference(np.zeros((4, 4, 1)), 2)
    with pytest.raises(ValueError, match="rank 4"):
        Reorg(2)(keras.Input((4, 4)))
