"""Tests for recipes/model_building_styles.py: three styles, two heads, unbuilt loads, nesting."""

import numpy as np
import pytest
from tensorflow import keras

from conftest import KERAS_MAJOR, outcome_of
from recipes.model_building_styles import (
    Block,
    NestedModel,
    Stage,
    SubclassedModel,
    TwoHeadedModel,
    build_and_load_weights,
    freeze_by_name,
    functional_model,
    functional_two_heads,
    sequential_model,
    walk_layers,
)

INPUTS = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")


def weights_equal(first, second):
    first, second = first.get_weights(), second.get_weights()
    return len(first) == len(second) > 0 and all(map(np.array_equal, first, second))


class SplitInTwo(keras.layers.Layer):
    """A layer that returns two tensors, as a two-headed block would."""

    def call(self, inputs):
        return inputs, 2.0 * inputs


def saved_nested_model(path):
    """A built NestedModel with random (non-initial) weights, saved to `path`."""
    model = NestedModel(seed=3)
    model(INPUTS)
    random = np.random.default_rng(2)
    model.set_weights([random.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    model.save_weights(path)
    return model


# --- Three styles ---------------------------------------------------------------------


def test_three_styles_give_exactly_equal_outputs_once_weights_are_copied(observe):
    functional = functional_model(seed=1)
    sequential, subclassed = sequential_model(seed=11), SubclassedModel(seed=21)
    subclassed(INPUTS)
    # Different seeds: before copying, the three models compute different things.
    assert not weights_equal(functional, sequential) and not weights_equal(functional, subclassed)
    assert [w.shape for w in subclassed.get_weights()] == [
        w.shape for w in functional.get_weights()
    ]
    for model in (sequential, subclassed):
        model.set_weights(functional.get_weights())
    expected = np.asarray(functional(INPUTS))
    for model in (sequential, subclassed):
        assert np.array_equal(np.asarray(model(INPUTS)), expected)
        assert np.array_equal(model.predict(INPUTS, verbose=0), expected)
    observe("Functional, Sequential, subclassed with copied weights", "exactly equal outputs")


# --- Two outputs ----------------------------------------------------------------------


def test_subclassed_tuple_and_functional_two_outputs_agree(observe):
    functional, subclassed = functional_two_heads(seed=1), TwoHeadedModel(seed=31)
    subclassed(INPUTS)
    subclassed.set_weights(functional.get_weights())
    functional_outputs, subclassed_outputs = functional(INPUTS), subclassed(INPUTS)
    assert type(subclassed_outputs) is tuple and type(functional_outputs) is list
    assert len(functional_outputs) == 2
    for first, second in zip(functional_outputs, subclassed_outputs, strict=True):
        assert np.array_equal(np.asarray(first), np.asarray(second))
    # The two heads really are different outputs of one trunk.
    assert not np.array_equal(np.asarray(functional_outputs[0]), np.asarray(functional_outputs[1]))
    observe("two heads: Functional list vs subclassed tuple", "exactly equal outputs")


def test_a_layer_returning_two_tensors_as_sequentials_last_layer(version_split):
    returned = []

    def build_and_call():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), SplitInTwo()])
        outputs = model(INPUTS)
        # Where it works, the model returns both tensors, in a container recorded below.
        assert len(outputs) == 2
        assert np.allclose(np.asarray(outputs[1]), 2.0 * np.asarray(outputs[0]))
        returned.append(type(outputs).__name__)

    observed = outcome_of(build_and_call, fragments=["single output tensor"])
    if observed == "works":
        observed = f"works, returns a {returned[0]}"
    version_split(
        "Sequential ending in a layer that returns two tensors",
        observed,
        {"keras<3": "ValueError: single output tensor", "keras>=3": "works, returns a tuple"},
    )


def test_a_sequential_trunk_cannot_feed_two_heads(version_split):
    def build():
        keras.Sequential([keras.Input((4,)), SplitInTwo(), keras.layers.Dense(3)])

    version_split(
        "Sequential: a layer after a layer that returns two tensors",
        outcome_of(build, fragments=["single output tensor", "1 input(s)"]),
        {"keras<3": "ValueError: single output tensor", "keras>=3": "ValueError: 1 input(s)"},
    )


# --- Loading weights into a subclassed model -------------------------------------------


def test_a_subclassed_model_has_no_weights_until_called(observe):
    model = NestedModel()
    assert model.weights == [] and not model.built
    model(INPUTS)
    assert len(model.weights) == 4 and model.built
    observe("subclassed model weights before the first call", "none")


def test_load_weights_h5_into_an_unbuilt_subclassed_model(tmp_path, version_split):
    path = str(tmp_path / "nested.weights.h5")
    saved = saved_nested_model(path)
    model = NestedModel(seed=7)
    observed = outcome_of(
        lambda: model.load_weights(path),
        fragments=["expected 0 variables", "has not yet been built"],
    )
    model(INPUTS)
    fresh = NestedModel(seed=7)
    fresh(INPUTS)
    if observed == "works":
        assert not weights_equal(model, saved)
        # Nothing was loaded: the model holds exactly its own initial weights.
        observed += ", loads nothing" if weights_equal(model, fresh) else ", loads some"
    version_split(
        "load_weights(.weights.h5) into a never-called subclassed model",
        observed,
        {
            "keras<3": "ValueError: expected 0 variables",
            "keras>=3,<3.7": "works, loads nothing",
            "keras>=3.7": "ValueError: has not yet been built",
        },
    )


@pytest.mark.parametrize("file_name", ["nested.h5", "nested_checkpoint"])
def test_legacy_h5_and_checkpoint_into_an_unbuilt_subclassed_model(
    tmp_path, file_name, version_split
):
    path = str(tmp_path / file_name)
    saved = NestedModel(seed=3)
    saved(INPUTS)
    saved_outcome = outcome_of(
        lambda: saved.save_weights(path), fragments=["must end in `.weights.h5`"]
    )
    observed = f"save_weights: {saved_outcome}"
    if saved_outcome == "works":
        model = NestedModel(seed=7)
        loaded = outcome_of(lambda: model.load_weights(path), fragments=["Call the Model first"])
        model(INPUTS)
        if loaded == "works":
            loaded += ", restored when called" if weights_equal(model, saved) else ", not restored"
        observed += f"; load before building: {loaded}"
    legacy_h5 = file_name.endswith(".h5")
    version_split(
        f"save_weights({'legacy .h5' if legacy_h5 else 'TF checkpoint'}), then load_weights "
        "into a never-called subclassed model",
        observed,
        {
            "keras<3": "save_weights: works; load before building: "
            + ("ValueError: Call the Model first" if legacy_h5 else "works, restored when called"),
            "keras>=3": "save_weights: ValueError: must end in `.weights.h5`",
        },
    )


def test_calling_on_a_sample_input_first_loads_exact_weights_from_every_format(tmp_path, observe):
    names = ["nested.weights.h5"] + (["nested.h5", "nested_checkpoint"] if KERAS_MAJOR == 2 else [])
    for name in names:
        path = str(tmp_path / name)
        saved = saved_nested_model(path)
        model = build_and_load_weights(NestedModel(seed=7), path, INPUTS)
        assert weights_equal(model, saved), name
        assert np.array_equal(np.asarray(model(INPUTS)), np.asarray(saved(INPUTS)))
    observe("load_weights after calling on a sample input", "exact weights, every format written")


# --- Nested layers ----------------------------------------------------------------------


def test_model_layers_lists_only_top_level_layers_and_walk_layers_finds_nested_ones(observe):
    model = NestedModel()
    model(INPUTS)
    assert [layer.name for layer in model.layers] == ["stage", "head"]
    assert not [layer for layer in model.layers if layer.name == "stage_block_dense"]
    walked = walk_layers(model)
    assert [layer.name for layer in walked] == ["stage", "stage_block", "stage_block_dense", "head"]
    # Two levels deep: the model holds "stage", which holds "stage_block", which holds it.
    assert walked[2] is model.stage.block.dense
    observe("model.layers of a subclassed model", "top-level layers only")
    observe("walk_layers (Layer._flatten_layers)", "finds a layer two levels deep")


def test_submodules_exists_on_keras_2_only_and_agrees_with_walk_layers(version_split):
    model = NestedModel()
    model(INPUTS)
    present = hasattr(model, "submodules")
    if present:
        layers = {
            id(module) for module in model.submodules if isinstance(module, keras.layers.Layer)
        }
        assert layers == {id(layer) for layer in walk_layers(model)}
    version_split(
        "Layer.submodules",
        "present" if present else "absent",
        {"keras<3": "present", "keras>=3": "absent"},
    )


def test_freezing_a_layer_two_levels_deep_by_name_keeps_its_weights_through_fit(observe):
    model = NestedModel()
    model(INPUTS)
    [frozen] = freeze_by_name(model, ["stage_block_dense"])
    assert frozen is model.stage.block.dense and not frozen.trainable
    frozen_before = [np.array(w) for w in frozen.get_weights()]
    head_before = [np.array(w) for w in model.head.get_weights()]
    assert len(model.trainable_weights) == 2
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    targets = np.random.default_rng(3).normal(size=(5, 2)).astype("float32")
    model.fit(INPUTS, targets, epochs=3, batch_size=5, verbose=0)
    assert all(map(np.array_equal, frozen.get_weights(), frozen_before))
    assert not np.array_equal(model.head.get_weights()[0], head_before[0])
    observe("nested layer frozen by name, then fit", "its weights do not move")


# --- Input validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: sequential_model(hidden_size=0), r"hidden_size=0"),
        (lambda: functional_model(input_size=2.5), r"input_size=2\.5"),
        (lambda: functional_two_heads(output_size=True), r"output_size=True"),
        (lambda: SubclassedModel(seed=0), r"seed=0"),
        (lambda: TwoHeadedModel(hidden_size="8"), r"hidden_size='8'"),
        (lambda: NestedModel(units=-1), r"units=-1"),
        (lambda: Block(units=np.float32(2.0)), r"units=(np\.float32\()?2\.0"),
        (lambda: Stage(seed=None), r"seed=None"),
        (lambda: walk_layers("stage"), r"model='stage'"),
        (lambda: freeze_by_name(NestedModel(), "head"), r"names='head'"),
        (lambda: freeze_by_name(NestedModel(), ["nope"]), r"names=\['nope'\]"),
        (lambda: build_and_load_weights(None, "w.weights.h5", INPUTS), r"model=None"),
        (lambda: build_and_load_weights(NestedModel(), 3, INPUTS), r"weights_path=3"),
        (lambda: build_and_load_weights(NestedModel(), "w.weights.h5", None), r"sample_input=None"),
    ],
)
def test_bad_input_raises_value_error_naming_argument_and_value(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_numpy_integers_are_accepted_as_sizes():
    model = sequential_model(np.int64(4), np.int32(3), np.int64(2), seed=np.int64(5))
    assert model(INPUTS).shape == (5, 2)
