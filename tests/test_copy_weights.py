"""Tests for recipes/copy_weights.py: get/set_weights, clone_model and copying by name."""

import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.copy_weights import CopyReport, copy_weights_by_name

INPUTS = np.random.default_rng(1).normal(size=(4, 3)).astype("float32")


def dense(units, seed, name=None, **kwargs):
    initializer = keras.initializers.GlorotUniform(seed=seed)
    return keras.layers.Dense(units, kernel_initializer=initializer, name=name, **kwargs)


def nested_source(seed=1):
    """Sequential[Sequential "trunk"[conv_a, conv_b], head]: conv_a is layers[0].layers[0]."""
    trunk = keras.Sequential(
        [dense(5, seed, "conv_a", activation="relu"), dense(5, seed + 1, "conv_b")], name="trunk"
    )
    return keras.Sequential([keras.Input((3,)), trunk, dense(2, seed + 2, "head")])


_TRAINED = []


def trained_source():
    """nested_source(), compiled and fitted for two epochs: its weights are not the initial ones.

    Trained once: the tests that use it only read it (copy out of it, clone it, call it).
    """
    if not _TRAINED:
        model = nested_source()
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(INPUTS, np.ones((4, 2)), epochs=2, batch_size=4, verbose=0)
        _TRAINED.append(model)
    return _TRAINED[0]


def arrays(model_or_layer):
    return [np.array(weight) for weight in model_or_layer.get_weights()]


def all_equal(first, second):
    return len(first) == len(second) > 0 and all(map(np.array_equal, first, second))


def none_equal(first, second):
    return len(first) == len(second) > 0 and not any(
        np.array_equal(a, b) for a, b in zip(first, second, strict=True) if np.any(a)
    )


class FlatSubclassed(keras.Model):
    """A different structure: conv_a, conv_b and new_head directly on the model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = dense(5, 11, "conv_a", activation="relu")
        self.conv_b = dense(5, 12, "conv_b")
        self.new_head = dense(7, 13, "new_head")

    def call(self, inputs):
        return self.new_head(self.conv_b(self.conv_a(inputs)))


class DeepSubclassed(keras.Model):
    """conv_b two levels down, inside a block inside a block."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv_a = dense(5, 21, "conv_a", activation="relu")
        # The inner block gets its input shape: Keras 3.5 refuses a nested Sequential without
        # one (test_a_nested_sequential_without_an_input_shape_fails_on_keras_3_5_only).
        inner = keras.Sequential([keras.Input((5,)), dense(5, 22, "conv_b")], name="inner")
        self.outer = keras.Sequential([inner])

    def call(self, inputs):
        return self.outer(self.conv_a(inputs))


def test_a_nested_sequential_without_an_input_shape_fails_on_keras_3_5_only(version_split):
    def nest():
        inner = keras.Sequential([dense(5, 22, "conv_b")], name="inner")
        return keras.Sequential([inner])

    version_split(
        "Sequential([Sequential([Dense], name='inner')]) without an input shape",
        outcome_of(nest, ["has no defined input shape yet"]),
        {
            "keras<3.5": "works",
            "keras>=3.5,<3.6": "ValueError: has no defined input shape yet",
            "keras>=3.6": "works",
        },
    )


# --- get_weights / set_weights --------------------------------------------------------------


def test_set_weights_copies_values_between_layers_not_references(observe):
    source, target = dense(4, 1), dense(4, 2)
    source.build((None, 3))
    target.build((None, 3))
    assert not all_equal(arrays(source), arrays(target))
    target.set_weights(source.get_weights())
    assert all_equal(arrays(target), arrays(source))
    copied = arrays(target)
    source.kernel.assign(source.kernel + 1.0)
    assert all_equal(arrays(target), copied) and not all_equal(arrays(source), copied)
    observe("set_weights(get_weights()) between layers", "copies values, no sharing")


def test_set_weights_refuses_a_shape_mismatch_and_an_unbuilt_layer(observe):
    source, wider, unbuilt = dense(4, 1), dense(5, 2), dense(4, 3)
    source.build((None, 3))
    wider.build((None, 3))
    with pytest.raises(ValueError, match=r"not compatible with provided weight shape"):
        wider.set_weights(source.get_weights())
    with pytest.raises(ValueError, match=r"expecting 0 weights"):
        unbuilt.set_weights(source.get_weights())
    observe("set_weights with another shape / into an unbuilt layer", "ValueError / ValueError")


def test_a_layer_inside_a_nested_sequential_is_model_layers_0_layers_0(observe):
    model1 = trained_source()
    inner = model1.layers[0].layers[0]
    assert inner.name == "conv_a" and inner is model1.get_layer("trunk").get_layer("conv_a")
    # model.layers stops at the block; the nested layer is not listed there.
    assert [layer.name for layer in model1.layers] == ["trunk", "head"]
    other = keras.Sequential([keras.Input((3,)), dense(5, 9, "copy_of_conv_a", activation="relu")])
    other.layers[0].set_weights(inner.get_weights())
    assert np.array_equal(np.asarray(other(INPUTS)), np.asarray(inner(INPUTS)))
    observe("set_weights out of model.layers[0].layers[0]", "exact copy")


# --- clone_model --------------------------------------------------------------------------------


def test_clone_model_gives_fresh_initial_weights_not_the_trained_ones(observe):
    initial = arrays(nested_source())
    model = trained_source()
    assert none_equal(arrays(model), initial)
    clone = keras.models.clone_model(model)
    # Seeded initializers run again: the clone holds the original's *initial* weights.
    assert all_equal(arrays(clone), initial)
    assert none_equal(arrays(clone), arrays(model))
    assert not {id(variable) for variable in clone.weights} & {id(v) for v in model.weights}
    assert not np.array_equal(np.asarray(clone(INPUTS)), np.asarray(model(INPUTS)))
    clone.set_weights(model.get_weights())
    assert np.array_equal(np.asarray(clone(INPUTS)), np.asarray(model(INPUTS)))
    observe("clone_model of a trained model (seeded initializers)", "the initial weights again")


def test_clone_model_with_unseeded_initializers_draws_new_weights(observe):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    clone = keras.models.clone_model(model)
    assert not np.array_equal(clone.get_weights()[0], model.get_weights()[0])
    observe("clone_model, unseeded initializers", "new random weights")


def test_clone_model_rebuilds_a_nested_sequential_with_the_same_names(observe):
    model = nested_source()
    clone = keras.models.clone_model(model)
    assert [layer.name for layer in clone.layers[0].layers] == ["conv_a", "conv_b"]
    assert clone.layers[0] is not model.layers[0]
    observe("clone_model of a nested Sequential block", "rebuilt, same layer names")


def test_clone_of_a_compiled_model(version_split):
    model = nested_source()
    metrics = ["mae", keras.metrics.RootMeanSquaredError(name="rmse")]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=metrics)
    history = model.fit(INPUTS, np.ones((4, 2)), epochs=1, batch_size=4, verbose=0).history
    clone = keras.models.clone_model(model)
    compiled = getattr(clone, "optimizer", None) is not None
    if compiled:
        assert clone.optimizer is not model.optimizer
        assert type(clone.optimizer) is type(model.optimizer)
        # Compiled from the original's compile config: loss, metrics and optimizer settings.
        original, cloned = model.get_compile_config(), clone.get_compile_config()
        for key in ("loss", "loss_weights", "metrics", "weighted_metrics"):
            assert cloned[key] == original[key], key
        assert original["metrics"][0] == "mae" and len(original["metrics"]) == 2
        optimizer_config = {**clone.optimizer.get_config(), "name": None}
        assert optimizer_config == {**model.optimizer.get_config(), "name": None}
        cloned_history = clone.fit(INPUTS, np.ones((4, 2)), epochs=1, verbose=0).history
        # The clone's fit reports the same loss and metrics as the original's.
        assert sorted(cloned_history) == sorted(history) == ["loss", "mae", "rmse"]
        observed = "compiled, new optimizer"
    else:
        observed = "not compiled: " + outcome_of(
            lambda: clone.fit(INPUTS, np.ones((4, 2)), epochs=1, verbose=0)
        )
    version_split(
        "clone_model of a compiled model",
        observed,
        {
            "keras<3": "not compiled: RuntimeError",
            "keras>=3,<3.9": "not compiled: ValueError",
            "keras>=3.9": "compiled, new optimizer",
        },
    )


# --- copy_weights_by_name -----------------------------------------------------------------------


def test_copy_by_name_out_of_a_nested_sequential_into_a_flat_functional_model(observe):
    source = trained_source()
    inputs = keras.Input((3,))
    features = dense(5, 12, "conv_b")(dense(5, 11, "conv_a", activation="relu")(inputs))
    target = keras.Model(inputs, dense(7, 13, "new_head")(features))
    head_before = arrays(target.get_layer("new_head"))
    report = copy_weights_by_name(source, target)
    assert report == CopyReport(copied=["conv_a", "conv_b"], mismatched=[], missing=["new_head"])
    trunk = source.get_layer("trunk")
    for name in ("conv_a", "conv_b"):
        assert all_equal(arrays(target.get_layer(name)), arrays(trunk.get_layer(name)))
    assert all_equal(arrays(target.get_layer("new_head")), head_before)
    # The copied trunk computes exactly what the source's trunk computes.
    features_model = keras.Model(inputs, features)
    assert np.array_equal(np.asarray(features_model(INPUTS)), np.asarray(trunk(INPUTS)))
    observe("copy_weights_by_name, nested Sequential -> flat Functional", "copied by name")


@pytest.mark.parametrize("target_class", [FlatSubclassed, DeepSubclassed])
def test_copy_by_name_into_subclassed_models_of_other_structures(target_class):
    source = trained_source()
    target = target_class()
    target(INPUTS)
    report = copy_weights_by_name(source, target)
    assert sorted(report.copied) == ["conv_a", "conv_b"] and report.mismatched == []
    assert report.missing == (["new_head"] if target_class is FlatSubclassed else [])
    trunk = source.get_layer("trunk")
    copied_conv_b = (
        target.conv_b if target_class is FlatSubclassed else target.outer.layers[0].layers[0]
    )
    assert all_equal(arrays(copied_conv_b), arrays(trunk.get_layer("conv_b")))
    # And back: the source's nested layers are targets too.
    fresh = nested_source(seed=31)
    report = copy_weights_by_name(target, fresh)
    assert sorted(report.copied) == ["conv_a", "conv_b"] and report.missing == ["head"]


def test_a_shape_mismatch_raises_naming_the_layer_and_both_shapes_before_copying(observe):
    source = trained_source()
    target = keras.Sequential(
        [keras.Input((3,)), dense(5, 11, "conv_a", activation="relu"), dense(6, 12, "conv_b")]
    )
    before = arrays(target)
    pattern = r"'conv_b'.*\[\(5, 5\), \(5,\)\].*\[\(5, 6\), \(6,\)\]"
    with pytest.raises(ValueError, match=pattern):
        copy_weights_by_name(source, target)
    # conv_a matched, but nothing is copied when any layer does not fit.
    assert all_equal(arrays(target), before)
    report = copy_weights_by_name(source, target, skip_mismatch=True)
    assert report == CopyReport(
        copied=["conv_a"], mismatched=[("conv_b", [(5, 5), (5,)], [(5, 6), (6,)])], missing=[]
    )
    assert all_equal(arrays(target.get_layer("conv_b")), before[2:])
    assert all_equal(arrays(target.get_layer("conv_a")), arrays(source.layers[0].layers[0]))
    observe(
        "copy_weights_by_name, shape mismatch", "ValueError naming layer and shapes, nothing copied"
    )


def test_copy_by_name_refuses_unbuilt_models_and_duplicate_names():
    source = nested_source()
    with pytest.raises(ValueError, match=r"target='flat_subclassed' has no weights"):
        copy_weights_by_name(source, FlatSubclassed(name="flat_subclassed"))
    duplicated = keras.Sequential(
        [keras.Input((3,)), keras.Sequential([dense(5, 1, "conv_a")]), dense(5, 2, "conv_a")],
        name="duplicated",
    )
    with pytest.raises(ValueError, match=r"source='duplicated' has two layers named 'conv_a'"):
        copy_weights_by_name(duplicated, source)


@pytest.mark.parametrize(
    "arguments, match",
    [
        (lambda model: (None, model), r"source=None"),
        (lambda model: (model, "model.h5"), r"target='model\.h5'"),
        (lambda model: (model, model, "yes"), r"skip_mismatch='yes'"),
        (lambda model: (model, model, 1), r"skip_mismatch=1"),
    ],
)
def test_bad_input_raises_value_error_naming_argument_and_value(arguments, match):
    with pytest.raises(ValueError, match=match):
        copy_weights_by_name(*arguments(nested_source()))


def test_a_single_layer_can_be_source_or_target():
    model = trained_source()
    lone = dense(5, 41, "conv_b")
    lone.build((None, 5))
    assert copy_weights_by_name(model, lone) == CopyReport(["conv_b"], [], [])
    assert all_equal(arrays(lone), arrays(model.layers[0].layers[1]))
    fresh = nested_source(seed=51)
    assert copy_weights_by_name(lone, fresh) == CopyReport(["conv_b"], [], ["conv_a", "head"])
    assert all_equal(arrays(fresh.layers[0].layers[1]), arrays(lone))


def test_numpy_bool_is_accepted_for_skip_mismatch():
    model = nested_source()
    report = copy_weights_by_name(model, nested_source(seed=5), skip_mismatch=np.bool_(True))
    assert sorted(report.copied) == ["conv_a", "conv_b", "head"]
