"""Tests for recipes/freeze_batchnorm.py: what each way of freezing BN freezes, on each stack."""

import numpy as np
import pytest
from tensorflow import keras

from recipes import freeze_batchnorm
from recipes.freeze_batchnorm import batchnorm_state, build_model, freeze_trunk, tape_step

RNG = np.random.default_rng(1)
# Far from the initial moving statistics (mean 0, variance 1), so the two modes differ.
FEATURES = (3 * RNG.normal(size=(32, 4)) + 1).astype("float32")
TARGETS = RNG.normal(size=(32, 1)).astype("float32")
STATE_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")


def changed_names(before, after):
    return [name for name in STATE_NAMES if not np.array_equal(before[name], after[name])]


def normalization_used_during_fit(model):
    """Which statistics BN normalizes with inside `fit`, read from the loss fit reports.

    With a learning rate of 0 the weights stay put, so fit's loss on one full batch is the
    loss of the training-mode forward pass; it is compared with both statistics by hand.
    """
    batchnorm = model.get_layer("bn")
    state = batchnorm_state(batchnorm)
    kernel, bias = model.get_layer("head").get_weights()
    losses = {}
    for mode in ("batch statistics", "moving statistics"):
        if mode == "batch statistics":
            mean, variance = FEATURES.mean(axis=0), FEATURES.var(axis=0)
        else:
            mean, variance = state["moving_mean"], state["moving_variance"]
        normalized = (FEATURES - mean) / np.sqrt(variance + batchnorm.epsilon)
        predictions = (state["gamma"] * normalized + state["beta"]) @ kernel + bias
        losses[mode] = float(np.mean((predictions - TARGETS) ** 2))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    history = model.fit(FEATURES, TARGETS, batch_size=len(FEATURES), epochs=1, verbose=0)
    reported = history.history["loss"][0]
    [mode] = [mode for mode, loss in losses.items() if np.isclose(reported, loss, rtol=1e-4)]
    # The two candidates must be far apart for the answer to mean anything.
    assert abs(losses["batch statistics"] - losses["moving statistics"]) > 0.1
    return mode


def effects_of_fit(way):
    """What `fit` changes for a BN frozen by `way`, and which statistics it normalizes with."""
    model = build_model(way)
    batchnorm = model.get_layer("bn")
    mode = normalization_used_during_fit(build_model(way))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    trainable_ids = {id(weight) for weight in model.trainable_weights}
    gamma_beta_trainable = {id(batchnorm.gamma), id(batchnorm.beta)} <= trainable_ids
    before = batchnorm_state(batchnorm)
    model.fit(FEATURES, TARGETS, batch_size=8, epochs=2, verbose=0)
    changed = changed_names(before, batchnorm_state(batchnorm)) or ["nothing"]
    return (
        f"gamma/beta {'in' if gamma_beta_trainable else 'not in'} trainable_weights; "
        f"fit changes {', '.join(changed)}; normalizes with {mode}"
    )


FROZEN = (
    "gamma/beta not in trainable_weights; fit changes nothing; normalizes with moving statistics"
)
TRAINS_EVERYTHING = (
    "gamma/beta in trainable_weights; fit changes gamma, beta, moving_mean, moving_variance; "
    "normalizes with batch statistics"
)


def test_trainable_bn_trains_everything_and_normalizes_with_batch_statistics(observe):
    assert effects_of_fit("none") == TRAINS_EVERYTHING
    observe("trainable BN during fit", TRAINS_EVERYTHING)


def test_setting_trainable_false_after_construction_freezes_bn_on_every_stack(observe):
    model = build_model("attribute")
    assert model.get_layer("bn").trainable is False
    assert effects_of_fit("attribute") == FROZEN
    observe("BN: layer.trainable = False after construction, then compile", FROZEN)


def test_trainable_false_at_construction_is_ignored_for_training_on_keras_3_0_and_3_1(
    version_split,
):
    model = build_model("constructor")
    assert model.get_layer("bn").trainable is False
    version_split(
        "BatchNormalization(trainable=False) at construction, during fit",
        effects_of_fit("constructor"),
        {
            "keras<3": FROZEN,
            "keras>=3,<3.2": "gamma/beta in trainable_weights; fit changes gamma, beta; "
            "normalizes with moving statistics",
            "keras>=3.2": FROZEN,
        },
    )


def test_dense_trainable_false_at_construction_is_ignored_on_keras_3_0_and_3_1(version_split):
    inputs = keras.Input(shape=(4,))
    frozen_dense = keras.layers.Dense(2, trainable=False, name="frozen_dense")
    model = keras.Model(inputs, keras.layers.Dense(1)(frozen_dense(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    assert frozen_dense.trainable is False
    listed = any(weight is frozen_dense.kernel for weight in model.trainable_weights)
    kernel_before = frozen_dense.kernel.numpy().copy()
    model.fit(FEATURES, TARGETS, epochs=1, verbose=0)
    updated = not np.array_equal(kernel_before, frozen_dense.kernel.numpy())
    version_split(
        "Dense(trainable=False) at construction, during fit",
        f"kernel {'in' if listed else 'not in'} trainable_weights, "
        f"{'updated' if updated else 'unchanged'} by fit",
        {
            "keras<3": "kernel not in trainable_weights, unchanged by fit",
            "keras>=3,<3.2": "kernel in trainable_weights, updated by fit",
            "keras>=3.2": "kernel not in trainable_weights, unchanged by fit",
        },
    )


def test_calling_bn_with_training_false_holds_in_fit_on_keras_2_only(version_split):
    """keras-team/keras#20285: Keras 3's fit passes training=True over the graph's False."""
    version_split(
        "BN called with training=False in a functional model, during fit",
        effects_of_fit("call"),
        {
            "keras<3": "gamma/beta in trainable_weights; fit changes gamma, beta; "
            "normalizes with moving statistics",
            "keras>=3": TRAINS_EVERYTHING,
        },
    )


# --- Tape loops -----------------------------------------------------------------------------


def test_tape_loop_without_training_true_never_updates_moving_statistics(observe):
    changes = {}
    for training in (None, True):
        model = build_model("none")
        batchnorm = model.get_layer("bn")
        before = batchnorm_state(batchnorm)
        optimizer = keras.optimizers.SGD(0.1)
        for start in range(0, len(FEATURES), 8):
            tape_step(
                model, optimizer, FEATURES[start : start + 8], TARGETS[start : start + 8], training
            )
        changes[training] = changed_names(before, batchnorm_state(batchnorm))
    assert changes == {None: ["gamma", "beta"], True: list(STATE_NAMES)}
    observe(
        "tape loop calling model(x) bare, trainable BN", "gamma, beta change; moving stats never"
    )


def test_tape_loop_with_training_true_leaves_a_bn_frozen_after_construction_unchanged(observe):
    model = build_model("attribute")
    batchnorm = model.get_layer("bn")
    before = batchnorm_state(batchnorm)
    head_before = model.get_layer("head").get_weights()
    tape_step(model, keras.optimizers.SGD(0.1), FEATURES, TARGETS, training=True)
    assert changed_names(before, batchnorm_state(batchnorm)) == []
    assert not np.array_equal(head_before[0], model.get_layer("head").get_weights()[0])
    observe("tape loop with training=True, BN trainable=False after construction", "BN unchanged")


# --- segmentation_models' encoder freeze ----------------------------------------------------


def encoder_and_head():
    """A pretrained-style encoder (Dense -> BN) as a nested model, then a Dense head."""
    inputs = keras.Input(shape=(4,))
    hidden = keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(1))(inputs)
    encoder = keras.Model(inputs, keras.layers.BatchNormalization(name="encoder_bn")(hidden))
    outer_inputs = keras.Input(shape=(4,))
    head = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(2))
    return keras.Model(outer_inputs, head(encoder(outer_inputs))), encoder


@pytest.mark.parametrize("include_batchnorm", [False, True])
def test_freezing_an_encoder_but_not_its_bn_lets_moving_statistics_drift(
    include_batchnorm, observe
):
    model, encoder = encoder_and_head()
    # Give the encoder's BN statistics of its own "pretraining" data first.
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    model.fit(FEATURES / 3, TARGETS, batch_size=8, epochs=3, verbose=0)
    encoder_bn = encoder.get_layer("encoder_bn")
    frozen = freeze_trunk(encoder, include_batchnorm=include_batchnorm)
    assert ("encoder_bn" in frozen) is include_batchnorm
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    encoder_weights = [weight.numpy().copy() for weight in encoder.weights]
    dense_kernel = encoder.layers[1].kernel
    kernel_before = dense_kernel.numpy().copy()
    bn_before = batchnorm_state(encoder_bn)
    encoder_outputs_before = encoder.predict(FEATURES, verbose=0)
    # Fine-tuning data from another distribution, as in a new segmentation task.
    model.fit(FEATURES + 2, TARGETS, batch_size=8, epochs=2, verbose=0)
    np.testing.assert_array_equal(dense_kernel.numpy(), kernel_before)
    encoder_outputs_after = encoder.predict(FEATURES, verbose=0)
    if include_batchnorm:
        for before, weight in zip(encoder_weights, encoder.weights, strict=True):
            np.testing.assert_array_equal(before, weight.numpy())
        np.testing.assert_array_equal(encoder_outputs_before, encoder_outputs_after)
        observe("freeze_trunk with BN included, then fit", "encoder bit-identical")
    else:
        assert changed_names(bn_before, batchnorm_state(encoder_bn)) == list(STATE_NAMES)
        assert np.max(np.abs(encoder_outputs_after - encoder_outputs_before)) > 0.1
        observe(
            "segmentation_models freeze (all but BN), then fit",
            "Dense frozen; BN moving stats drift; inference outputs change",
        )


# --- Helpers and input validation -----------------------------------------------------------


def test_freeze_batchnorm_finds_bn_in_nested_models():
    model, encoder = encoder_and_head()
    assert freeze_batchnorm.freeze_batchnorm(model) == ["encoder_bn"]
    assert encoder.get_layer("encoder_bn").trainable is False


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_model("frozen"), r"way must be one of .*'frozen'"),
        (lambda: build_model("none", input_dim=0), r"input_dim must be an int >= 1, got 0"),
        (lambda: build_model("none", input_dim=2.5), r"input_dim must be an int >= 1, got 2.5"),
        (lambda: build_model("none", seed=0), r"seed must be an int >= 1, got 0"),
        (lambda: freeze_trunk(build_model(), include_batchnorm="yes"), r"include_batchnorm.*'yes'"),
        (lambda: freeze_trunk("model"), r"model must be a keras.Model, got 'model'"),
        (lambda: freeze_batchnorm.freeze_batchnorm(None), r"model must be a keras.Model, got None"),
        (
            lambda: batchnorm_state(keras.layers.Dense(1)),
            r"layer must be a keras.layers.Batch.*Dense",
        ),
        (
            lambda: tape_step(build_model(), keras.optimizers.SGD(0.1), FEATURES, TARGETS, 1),
            r"training must be True, False or None, got 1",
        ),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_build_model_accepts_a_numpy_integer_input_dim():
    assert build_model("none", input_dim=np.int64(3), seed=np.int32(2)).input_shape == (None, 3)


def test_demo_prints_one_line_per_way(demo_output):
    printed = demo_output("freeze_batchnorm")
    assert all(f"frozen by {way}" in printed for way in freeze_batchnorm.WAYS)
