"""Tests for recipes/freeze_layers.py: the walker, freezing by name, recompiling, counts."""

import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes import freeze_layers
from recipes.freeze_layers import TrunkAndClassifier, freeze_all_but, iter_layers, trainable_counts

FEATURES = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
TARGETS = np.random.default_rng(2).normal(size=(16, 1)).astype("float32")


def built_subclassed_model():
    model = TrunkAndClassifier()
    model(FEATURES)
    return model


def functional_model():
    """Input -> Dense "trunk" -> Dense "classify"; the layer frozen is "trunk"."""
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(3, name="trunk")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="classify")(hidden))


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def changes_during_fit(model, layer, fit=None):
    kernel_before = layer.kernel.numpy().copy()
    (fit or (lambda: model.fit(FEATURES, TARGETS, epochs=1, verbose=0)))()
    return not np.array_equal(kernel_before, layer.kernel.numpy())


# --- The walker -----------------------------------------------------------------------------


def test_model_layers_misses_nested_layers_and_iter_layers_finds_them(observe):
    model = built_subclassed_model()
    assert [layer.name for layer in model.layers] == ["trunk", "classify", "head"]
    paths = [path for path, _ in iter_layers(model)]
    assert paths == [
        "trunk",
        "trunk/inner_dense",
        "trunk/output_dense",
        "classify",
        "classify/inner_dense",
        "classify/output_dense",
        "head",
    ]
    observe("model.layers of a subclassed model", "top-level layers only")


@pytest.mark.parametrize("kind", ["subclassed", "functional_in_functional", "sequential"])
def test_iter_layers_yields_what_keras_own_recursive_flattening_yields(kind):
    """Keras' private `_flatten_layers` is the oracle, also after compile and fit (metrics)."""
    if kind == "subclassed":
        model = built_subclassed_model()
    elif kind == "sequential":
        model = keras.Sequential(
            [keras.Input(shape=(4,)), keras.layers.Dense(2, name="a"), keras.layers.Dense(1)]
        )
    else:
        inner = functional_model()
        inputs = keras.Input(shape=(4,))
        model = keras.Model(inputs, keras.layers.Dense(1, name="outer")(inner(inputs)))
    compiled(model).fit(FEATURES, TARGETS, epochs=1, verbose=0)
    flattened = model._flatten_layers(include_self=False, recursive=True)
    # Keras 2 lists a functional model's InputLayer in `model.layers`, Keras 3 does not.
    expected = {id(layer) for layer in flattened if not isinstance(layer, keras.layers.InputLayer)}
    found = [layer for _, layer in iter_layers(model)]
    assert len(found) == len({id(layer) for layer in found}), "each layer once"
    found_ids = {id(layer) for layer in found if not isinstance(layer, keras.layers.InputLayer)}
    assert found_ids == expected and len(expected) >= 2
    assert not any(isinstance(layer, keras.metrics.Metric) for layer in found)


class PrivatelyHeld(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.listed = [keras.layers.Dense(2, name="in_a_list")]
        self._hidden = keras.layers.Dense(2, name="private")

    def call(self, inputs):
        return self._hidden(self.listed[0](inputs))


def test_iter_layers_finds_a_plain_layers_sub_layers_through_public_attributes_only():
    inputs = keras.Input(shape=(4,))
    model = keras.Model(inputs, PrivatelyHeld(name="holder")(inputs))
    paths = [path for path, layer in iter_layers(model) if path != model.layers[0].name]
    assert paths == ["holder", "holder/in_a_list"]


# --- Freezing by name -----------------------------------------------------------------------


def test_freeze_all_but_keeps_only_matching_paths_trainable_and_fit_trains_only_them(observe):
    model = built_subclassed_model()
    frozen = freeze_all_but(model, "classify")
    assert frozen == ["trunk/inner_dense", "trunk/output_dense", "head"]
    compiled(model)
    before = {path: layer.get_weights() for path, layer in iter_layers(model)}
    model.fit(FEATURES, TARGETS, epochs=2, verbose=0)
    for path, layer in iter_layers(model):
        if path in ("trunk", "classify"):
            continue
        same = all(
            np.array_equal(old, new)
            for old, new in zip(before[path], layer.get_weights(), strict=True)
        )
        assert same == (path in frozen), path
    observe(
        "freeze_all_but('classify') on nested layers, then compile and fit", "only matches train"
    )


def test_freeze_all_but_keeps_a_nested_match_inside_a_frozen_container_trainable():
    model = built_subclassed_model()
    frozen = freeze_all_but(model, r"trunk/output")
    assert "trunk/output_dense" not in frozen and "trunk/inner_dense" in frozen
    assert [v.name.split("/")[-1].split(":")[0] for v in model.trainable_weights] == [
        "kernel",
        "bias",
    ]
    assert model.trunk.output_dense.trainable and not model.trunk.inner_dense.trainable
    # Calling it again with another pattern undoes the first freeze.
    assert freeze_all_but(model, "head") == [
        path for path, _ in iter_layers(model) if path not in ("trunk", "classify", "head")
    ]
    assert model.trunk.output_dense.trainable is False and model.head.trainable is True


@pytest.mark.parametrize("pattern", ["", "(", "[a-", None, 3, b"classify"])
def test_freeze_all_but_rejects_a_bad_pattern(pattern):
    model = built_subclassed_model()
    with pytest.raises(ValueError, match=r"pattern.*" + re.escape(repr(pattern))):
        freeze_all_but(model, pattern)


@pytest.mark.parametrize("function", [iter_layers, trainable_counts])
def test_functions_reject_a_model_that_is_not_a_keras_layer(function):
    with pytest.raises(ValueError, match=r"model must be a keras Layer.*'not a model'"):
        list(function("not a model")) if function is iter_layers else function("not a model")
    with pytest.raises(ValueError, match=r"model must be a keras Layer.*None"):
        freeze_all_but(None, "classify")


# --- Counts ---------------------------------------------------------------------------------


def test_counts_before_and_after_freezing_add_up_to_count_params(observe):
    model = built_subclassed_model()
    total = model.count_params()
    # Dense(4->3), Dense(3->3) per block, twice, then Dense(3->1): kernels and biases.
    assert total == (4 * 3 + 3) + (3 * 3 + 3) + 2 * (3 * 3 + 3) + (3 * 1 + 1)
    assert trainable_counts(model) == {
        "trainable_weights": 10,
        "trainable_parameters": total,
        "non_trainable_weights": 0,
        "non_trainable_parameters": 0,
    }
    freeze_all_but(model, "classify")
    classify_parameters = model.classify.count_params()
    assert classify_parameters == 2 * (3 * 3 + 3)
    assert trainable_counts(model) == {
        "trainable_weights": 4,
        "trainable_parameters": classify_parameters,
        "non_trainable_weights": 6,
        "non_trainable_parameters": total - classify_parameters,
    }
    observe("trainable weights / parameters before and after freeze_all_but", "10/55 -> 4/24")


# --- The recompile rule ---------------------------------------------------------------------


def test_freezing_after_training_is_ignored_by_fit_until_compile_on_every_stack(observe):
    model = compiled(functional_model())
    trunk = model.get_layer("trunk")
    assert changes_during_fit(model, trunk)
    trunk.trainable = False
    assert trunk.trainable is False and len(model.trainable_weights) == 2
    assert changes_during_fit(model, trunk), "fit still trains the frozen layer"
    compiled(model)
    assert not changes_during_fit(model, trunk)
    assert changes_during_fit(model, model.get_layer("classify"))
    observe("trainable=False after the model trained, no recompile", "still updated by fit")
    observe("trainable=False, then compile again", "frozen")


def test_freezing_after_compile_before_the_first_fit_is_ignored_on_keras_2(version_split):
    outcomes = []
    for route in ("fit", "train_on_batch"):
        model = compiled(functional_model())
        trunk = model.get_layer("trunk")
        trunk.trainable = False
        if route == "fit":
            changed = changes_during_fit(model, trunk)
        else:
            changed = changes_during_fit(
                model, trunk, lambda model=model: model.train_on_batch(FEATURES, TARGETS)
            )
        outcomes.append(f"{route}: {'still updated' if changed else 'frozen'}")
        # Compiling again freezes it everywhere.
        compiled(model)
        assert not changes_during_fit(model, trunk)
    version_split(
        "trainable=False after compile() but before the first fit, no recompile",
        ", ".join(outcomes),
        {
            "keras<3": "fit: still updated, train_on_batch: still updated",
            "keras>=3": "fit: frozen, train_on_batch: frozen",
        },
    )


def test_after_fit_a_freeze_reaches_train_on_batch_on_keras_3_only_and_nothing_warns(
    version_split,
):
    """Keras 3 traces the train step once per kind of input (fit's iterator, train_on_batch's
    batch), so the first train_on_batch after a fit traces anew and sees the freeze; Keras 2
    reuses fit's trace. Keras 3.15's `_warn_if_trainable_state_changed` sits after a `raise`
    in `_assert_compile_called`, so no release warns; a release that does is a new outcome."""
    import warnings

    model = compiled(functional_model())
    trunk = model.get_layer("trunk")
    assert changes_during_fit(model, trunk)
    trunk.trainable = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        changed = changes_during_fit(model, trunk, lambda: model.train_on_batch(FEATURES, TARGETS))
        assert changes_during_fit(model, trunk), "the next fit still trains it"
    version_split(
        "trainable=False after fit, no recompile: the next train_on_batch",
        "still updated" if changed else "frozen",
        {"keras<3": "still updated", "keras>=3": "frozen"},
    )
    about_trainable = [
        f"{type(w.message).__name__}: {w.message}" for w in caught if "trainable" in str(w.message)
    ]
    version_split(
        "a warning that trainable changed after compile()",
        "; ".join(about_trainable) or "none",
        {"keras>=2": "none"},
    )


# --- Custom loops ---------------------------------------------------------------------------


def test_tape_loop_with_variables_read_before_the_freeze_keeps_training_the_frozen_layer(observe):
    loss_fn = keras.losses.MeanSquaredError()
    results = {}
    for reading in ("once", "every step"):
        model = functional_model()
        model(FEATURES)
        optimizer = keras.optimizers.SGD(0.1)
        variables_read_once = model.trainable_weights
        model.get_layer("trunk").trainable = False
        trunk_before = model.get_layer("trunk").get_weights()
        classify_before = model.get_layer("classify").get_weights()
        for _ in range(2):
            if reading == "every step":
                freeze_layers.train_step(model, optimizer, loss_fn, FEATURES, TARGETS)
            else:
                with tf.GradientTape() as tape:
                    loss = loss_fn(TARGETS, model(FEATURES, training=True))
                gradients = tape.gradient(loss, variables_read_once)
                optimizer.apply_gradients(zip(gradients, variables_read_once, strict=True))
        trunk_after = model.get_layer("trunk").get_weights()
        classify_after = model.get_layer("classify").get_weights()
        results[reading] = (
            not all(np.array_equal(a, b) for a, b in zip(trunk_before, trunk_after, strict=True)),
            not all(
                np.array_equal(a, b) for a, b in zip(classify_before, classify_after, strict=True)
            ),
        )
    # (frozen trunk changed, classify changed)
    assert results == {"once": (True, True), "every step": (False, True)}
    observe("tape loop with trainable_weights read before the freeze", "frozen layer still updated")
    observe("tape loop reading model.trainable_weights each step", "frozen layer unchanged")


def kernel_changes(layer, action):
    kernel_before = layer.kernel.numpy().copy()
    action()
    return not np.array_equal(kernel_before, layer.kernel.numpy())


def test_a_tf_function_step_traced_before_the_freeze_keeps_training_the_frozen_layer(observe):
    model = functional_model()
    optimizer = keras.optimizers.SGD(0.1)
    loss_fn = keras.losses.MeanSquaredError()
    traced_step = tf.function(freeze_layers.train_step)
    traced_step(model, optimizer, loss_fn, FEATURES, TARGETS)
    trunk = model.get_layer("trunk")
    trunk.trainable = False

    def run(step):
        return lambda: step(model, optimizer, loss_fn, FEATURES, TARGETS)

    assert kernel_changes(trunk, run(traced_step)), "the old trace still trains the trunk"
    new_step = tf.function(freeze_layers.train_step)
    assert not kernel_changes(trunk, run(new_step))
    assert kernel_changes(model.get_layer("classify"), run(new_step))
    observe("tf.function train step traced before the freeze", "frozen layer still updated")
    observe("new tf.function of the step after the freeze", "frozen layer unchanged")


@pytest.mark.parametrize(
    ("optimizer", "loss_fn", "match"),
    [
        ("sgd", keras.losses.MeanSquaredError(), r"optimizer must have apply_gradients.*'sgd'"),
        (keras.optimizers.SGD(0.1), "mse", r"loss_fn must be callable, got 'mse'"),
    ],
)
def test_train_step_rejects_a_bad_optimizer_or_loss(optimizer, loss_fn, match):
    with pytest.raises(ValueError, match=match):
        freeze_layers.train_step(functional_model(), optimizer, loss_fn, FEATURES, TARGETS)


def test_demo_prints_the_layers_and_counts(demo_output):
    printed = demo_output("freeze_layers")
    assert "trunk/inner_dense" in printed and "trunk unchanged by fit: True" in printed
