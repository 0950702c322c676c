"""Tests for recipes/custom_layer_config.py: AvgPool2d against PyTorch's rules, and configs.

The comparison with torch itself lives in tests_torch/test_custom_layer_config_torch.py.
"""

import re
import warnings

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.custom_layer_config import AvgPool2d, avg_pool2d_reference, pooled_size
from tests.layer_contract import check_layer_contract

# Inputs lie in [-100, 100]; float32 sums of up to 16 of them round at about 1e-5.
TOLERANCE = 1e-4


@st.composite
def pool_configurations(draw):
    """(input batch, AvgPool2d kwargs): ints or pairs, any valid padding, both flags."""
    if draw(st.booleans()):  # one int for both axes, as PyTorch accepts
        kernel_size = draw(st.integers(1, 4))
        padding = draw(st.integers(0, kernel_size // 2))
        kernel, pads = (kernel_size, kernel_size), (padding, padding)
    else:
        kernel = kernel_size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        pads = padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    stride = draw(
        st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))
    )
    # Every valid size: the padded input must hold one kernel (PyTorch's own requirement).
    height = draw(st.integers(max(1, kernel[0] - 2 * pads[0]), 9))
    width = draw(st.integers(max(1, kernel[1] - 2 * pads[1]), 9))
    kwargs = {
        "kernel_size": kernel_size,
        "stride": stride,
        "padding": padding,
        "ceil_mode": draw(st.booleans()),
        "count_include_pad": draw(st.booleans()),
    }
    shape = (draw(st.integers(1, 2)), height, width, draw(st.integers(1, 3)))
    elements = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=32)
    return draw(hnp.arrays(np.float32, shape, elements=elements)), kwargs


@hypothesis.given(pool_configurations())
def test_avg_pool2d_equals_the_numpy_reference_of_pytorchs_rules(configuration):
    x, kwargs = configuration
    expected = avg_pool2d_reference(x, **kwargs)
    np.testing.assert_allclose(AvgPool2d(**kwargs)(x), expected, atol=TOLERANCE, rtol=0)


def test_reference_divisor_counts_padding_only_when_asked():
    """Hand-checked: a 4-wide window starting at -2 over ones covers 2 input columns."""
    x = np.ones((1, 1, 5, 1), "float32")
    with_pad = avg_pool2d_reference(x, (1, 4), (1, 1), (0, 2), count_include_pad=True)
    without_pad = avg_pool2d_reference(x, (1, 4), (1, 1), (0, 2), count_include_pad=False)
    np.testing.assert_allclose(with_pad[0, 0, :, 0], [0.5, 0.75, 1, 1, 0.75, 0.5])
    np.testing.assert_allclose(without_pad[0, 0, :, 0], np.ones(6))
    np.testing.assert_allclose(
        AvgPool2d((1, 4), 1, (0, 2))(x)[0, 0, :, 0], with_pad[0, 0, :, 0], atol=TOLERANCE
    )


def test_ceil_mode_divisor_never_counts_the_overhang_even_with_count_include_pad(observe):
    x = np.ones((1, 4, 1, 1), "float32")  # rows 0..3; the second window covers rows 3 and 4
    layer = AvgPool2d((2, 1), stride=(3, 1), ceil_mode=True, count_include_pad=True)
    np.testing.assert_allclose(np.asarray(layer(x))[0, :, 0, 0], [1.0, 1.0], atol=TOLERANCE)
    np.testing.assert_allclose(avg_pool2d_reference(x, (2, 1), (3, 1), 0, True)[0, :, 0, 0], 1)
    observe("AvgPool2d ceil mode: divisor of the overhanging window", "input and padding only")


def test_ceil_mode_drops_a_last_window_that_would_start_in_the_right_padding(observe):
    # size 5, kernel 2, stride 2, padding 1: ceil(5 / 2) + 1 = 4 windows, but the 4th
    # would start at 6 = size + padding, inside the right padding, so PyTorch keeps 3.
    assert pooled_size(5, 2, 2, 1, ceil_mode=True) == 3
    assert pooled_size(5, 2, 2, 1, ceil_mode=False) == 3
    assert pooled_size(6, 2, 2, 1, ceil_mode=True) == 4
    assert pooled_size(4, 2, 3, 0, ceil_mode=True) == 2  # starts at 3, inside the input
    assert pooled_size(4, 2, 3, 0, ceil_mode=False) == 1
    x = np.ones((1, 5, 5, 1), "float32")
    assert AvgPool2d(2, 2, 1, ceil_mode=True)(x).shape == (1, 3, 3, 1)
    observe("AvgPool2d ceil mode: last window starting in the right padding", "dropped")


def test_avg_pool2d_layer_contract_in_every_model_kind_and_file_format(
    tmp_path, version_split, observe
):
    x = np.random.default_rng(0).normal(size=(2, 7, 6, 3)).astype("float32")
    kwargs = {
        "kernel_size": (3, 2),
        "stride": 2,
        "padding": (1, 1),
        "ceil_mode": True,
        "count_include_pad": False,
    }
    expected = avg_pool2d_reference(x, **kwargs)
    check_layer_contract(AvgPool2d, kwargs, x, expected, tmp_path, version_split, atol=TOLERANCE)
    observe("AvgPool2d: Keras' layer harness; Functional, Sequential, subclassed; saving", "works")


def test_config_round_trips_and_holds_only_plain_values():
    layer = AvgPool2d(np.int64(3), stride=(2, 1), padding=1, ceil_mode=True)
    config = layer.get_config()
    assert {key: config[key] for key in ("kernel_size", "stride", "padding")} == {
        "kernel_size": (3, 3),
        "stride": (2, 1),
        "padding": (1, 1),
    }
    assert (config["ceil_mode"], config["count_include_pad"]) == (True, True)
    assert type(config["kernel_size"][0]) is int
    assert AvgPool2d.from_config(config).get_config() == config
    assert AvgPool2d(2).stride == (2, 2), "stride defaults to kernel_size"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"kernel_size": 0}, "kernel_size=0"),
        ({"kernel_size": (2, 0)}, "kernel_size=(2, 0)"),
        ({"kernel_size": -1}, "kernel_size=-1"),
        ({"kernel_size": 2.5}, "kernel_size=2.5"),
        ({"kernel_size": "3"}, "kernel_size='3'"),
        ({"kernel_size": True}, "kernel_size=True"),
        ({"kernel_size": (2, 2, 2)}, "kernel_size=(2, 2, 2)"),
        ({"kernel_size": 3, "stride": 0}, "stride=0"),
        ({"kernel_size": 3, "stride": (1, -2)}, "stride=(1, -2)"),
        ({"kernel_size": 3, "padding": 2}, "padding=2"),
        ({"kernel_size": (3, 4), "padding": (1, 3)}, "padding=(1, 3)"),
        ({"kernel_size": 3, "padding": -1}, "padding=-1"),
        ({"kernel_size": 3, "ceil_mode": "yes"}, "ceil_mode='yes'"),
        ({"kernel_size": 3, "count_include_pad": None}, "count_include_pad=None"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_argument_and_value(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        AvgPool2d(**kwargs)


def test_an_input_too_small_for_the_kernel_raises_value_error_naming_its_shape():
    with pytest.raises(ValueError, match=re.escape("input_shape=(1, 1, 5, 1)")):
        AvgPool2d(4, padding=1)(np.ones((1, 1, 5, 1), "float32"))
    with pytest.raises(ValueError, match=re.escape("input_shape=(None, None, 5, 1)")):
        AvgPool2d(2)(keras.Input((None, 5, 1)))


# --- Pitfalls: configs that do not load ---------------------------------------------------


class NotesAvgPool(keras.layers.Layer):
    """The field notes' layer: a sub-layer object in get_config."""

    def __init__(self, pool_size=2, **kwargs):
        super().__init__(**kwargs)
        self.avgpool = keras.layers.AveragePooling2D(pool_size)

    def call(self, inputs):
        return self.avgpool(inputs)

    def get_config(self):
        config = super().get_config()
        config.update({"avgpool": self.avgpool})
        return config


class PlainValuesNoConfig(keras.layers.Layer):
    """Plain values in __init__, no get_config: Keras' automatic config records them."""

    def __init__(self, scale=2.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs * self.scale


class ArrayArgumentNoConfig(keras.layers.Layer):
    """A numpy array in __init__ and no get_config: nothing to record it with."""

    def __init__(self, table, **kwargs):
        super().__init__(**kwargs)
        self.table = table

    def call(self, inputs):
        return inputs * self.table


def save_quietly(model, path):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*considered legacy")
        model.save(path)


def model_with(layer):
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, layer(inputs))


def load_in_scope(path, custom_objects):
    # custom_object_scope works on every stack; Keras 3.0 to 3.2 ignore custom_objects= for
    # legacy .h5 (tests/layer_contract.py asserts that), which is not the point here.
    with keras.utils.custom_object_scope(custom_objects):
        return keras.models.load_model(path)


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_a_sub_layer_object_in_get_config_saves_then_fails_to_load(
    extension, tmp_path, version_split
):
    path = str(tmp_path / f"notes.{extension}")
    save_quietly(model_with(NotesAvgPool(2)), path)  # saving works on every stack
    observed = outcome_of(
        lambda: load_in_scope(path, {"NotesAvgPool": NotesAvgPool}),
        fragments=[
            "Keyword argument not understood",
            "could not be deserialized properly",
            "is not JSON serializable",
            "Unrecognized keyword arguments",
        ],
    )
    if extension == "keras":
        known = {
            "keras<3": "TypeError: Keyword argument not understood",
            "keras>=3": "TypeError: could not be deserialized properly",
        }
    else:
        known = {
            "keras<3": "TypeError: Keyword argument not understood",
            "keras>=3,<3.11.3": "TypeError: is not JSON serializable",
            "keras>=3.11.3": "TypeError: Unrecognized keyword arguments",
        }
    version_split(
        f"loading a `.{extension}` file whose layer puts a sub-layer object in get_config",
        observed,
        known,
    )


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_automatic_config_saves_and_loads_a_layer_with_plain_init_values(
    extension, tmp_path, observe
):
    model = model_with(PlainValuesNoConfig(3.0))
    path = str(tmp_path / f"plain.{extension}")
    save_quietly(model, path)
    loaded = load_in_scope(path, {"PlainValuesNoConfig": PlainValuesNoConfig})
    assert loaded.layers[-1].scale == 3.0
    x = np.ones((1, 4, 4, 1), "float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), 3 * x)
    observe(f"layer without get_config, plain __init__ values, `.{extension}`", "loads")


# Keras 3.11.2 and 3.11.3 build the NotImplementedError's advice in an f-string whose example
# code holds a dict literal, `config.update({"arg1": self.arg1, ...})`: Python reads what
# follows "arg1": as a format specifier, and raising the advice raises this ValueError.
BROKEN_ADVICE = (
    "Invalid format specifier ' self.arg1, \"arg2\": self.arg2, ' for object of type 'str'"
)


@pytest.mark.parametrize("extension", ["keras", "h5"])
def test_automatic_config_refuses_a_non_serializable_init_argument_at_save_time(
    extension, tmp_path, version_split
):
    model = model_with(ArrayArgumentNoConfig(np.float32([2.0])))
    fragments = ["non-serializable argument values", "Invalid format specifier"]
    from_get_config = outcome_of(model.layers[-1].get_config, fragments)
    from_save = outcome_of(
        lambda: save_quietly(model, str(tmp_path / f"array.{extension}")), fragments
    )
    # Saving fails the way get_config does.
    assert from_save == from_get_config
    if from_save.startswith("ValueError"):
        with pytest.raises(ValueError) as raised:
            model.layers[-1].get_config()
        # The whole message, as the recipe quotes it (whitespace collapsed).
        assert " ".join(str(raised.value).split()) == BROKEN_ADVICE
    advice = "save raises NotImplementedError: non-serializable argument values"
    version_split(
        f"layer without get_config, numpy array __init__ argument, `.{extension}`",
        f"save raises {from_save}",
        {
            "keras<3.11.2": advice,
            "keras>=3.11.2,<3.12": "save raises ValueError: Invalid format specifier",
            "keras>=3.12": advice,
        },
    )
