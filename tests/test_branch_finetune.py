"""Tests for recipes/branch_finetune.py: the trunk stays bit-identical, the branch learns."""

import os

import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.branch_finetune import (
    build_trunk,
    build_trunk_with_branch,
    copy_weights_by_name,
    example_data,
    freeze_all_but_branch,
    load_trunk_by_name,
    train_and_save_trunk,
    train_branch_with_tape,
)
from tests.keras_said import outcome_and_said, weight_status

TRUNK_LAYERS = ("trunk_dense", "trunk_bn", "trunk_output")


_SAVED_TRUNKS = {}


def saved_trunk(tmp_path, extension=".keras"):
    """A trained trunk saved as `extension`: (path, trunk, features, targets, labels).

    Trained and saved once per file kind, in the first test's tmp_path; no test writes to it.
    """
    if extension not in _SAVED_TRUNKS:
        features, targets, labels = example_data()
        path = os.fspath(tmp_path / f"trunk{extension}")
        trunk = train_and_save_trunk(path, features, targets, epochs=2)
        _SAVED_TRUNKS[extension] = path, trunk, features, targets, labels
    return _SAVED_TRUNKS[extension]


def trunk_weights(model):
    """{layer name: its weights}, BN moving statistics included, copied."""
    return {name: [w.copy() for w in model.get_layer(name).get_weights()] for name in TRUNK_LAYERS}


def assert_trunk_bit_identical(trunk, model, features):
    saved, now = trunk_weights(trunk), trunk_weights(model)
    for name in TRUNK_LAYERS:
        assert len(saved[name]) == len(now[name]) > 0
        for saved_weight, current_weight in zip(saved[name], now[name], strict=True):
            np.testing.assert_array_equal(current_weight, saved_weight, err_msg=name)
    # gamma, beta, moving mean and moving variance: the trunk's BN was trained, so its
    # statistics are not the initial zeros and ones that would also compare equal.
    assert len(now["trunk_bn"]) == 4
    assert not np.array_equal(now["trunk_bn"][2], np.zeros_like(now["trunk_bn"][2]))
    np.testing.assert_array_equal(model.predict(features, verbose=0)[0], trunk_output(trunk))


_TRUNK_OUTPUTS = {}


def trunk_output(trunk):
    """The saved trunk's predictions on its features, once per trunk: no test trains it."""
    [(path, features)] = [(p, f) for p, saved, f, _, _ in _SAVED_TRUNKS.values() if saved is trunk]
    if path not in _TRUNK_OUTPUTS:
        _TRUNK_OUTPUTS[path] = trunk.predict(features, verbose=0)
    return _TRUNK_OUTPUTS[path]


def branch_loss(branch, features, labels):
    probabilities = branch(features, training=False)
    return float(keras.losses.SparseCategoricalCrossentropy()(labels, probabilities))


def loaded_and_frozen(tmp_path, extension=".keras"):
    path, trunk, features, _, labels = saved_trunk(tmp_path, extension)
    model, branch = build_trunk_with_branch(features.shape[1])
    assert load_trunk_by_name(path, model) == list(TRUNK_LAYERS)
    assert_trunk_bit_identical(trunk, model, features)
    assert freeze_all_but_branch(model) == ["classify_hidden", "classify"]
    # Only the branch's two Dense layers (kernel and bias each) are left to train.
    branch_weights = [
        w for name in ("classify_hidden", "classify") for w in model.get_layer(name).weights
    ]
    assert len(branch.trainable_weights) == len(branch_weights) == 4
    assert all(any(w is b for b in branch_weights) for w in branch.trainable_weights)
    return trunk, model, branch, features, labels


def test_fit_trains_the_branch_and_leaves_the_trunk_bit_identical(tmp_path, observe):
    trunk, model, branch, features, labels = loaded_and_frozen(tmp_path)
    branch.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    loss_before = branch_loss(branch, features, labels)
    branch.fit(features, labels, epochs=8, batch_size=16, verbose=0)
    assert branch_loss(branch, features, labels) < 0.8 * loss_before
    assert_trunk_bit_identical(trunk, model, features)
    observe("branch fit on a frozen trunk", "trunk bit-identical, branch loss falls")


def test_tape_loop_trains_the_branch_and_leaves_the_trunk_bit_identical(tmp_path, observe):
    """The loop calls the model with training=True; frozen BN still uses moving statistics."""
    trunk, model, branch, features, labels = loaded_and_frozen(tmp_path)
    loss_before = branch_loss(branch, features, labels)
    epoch_losses = train_branch_with_tape(
        branch, features, labels, keras.optimizers.Adam(0.02), epochs=8
    )
    assert len(epoch_losses) == 8 and epoch_losses[-1] < epoch_losses[0]
    assert branch_loss(branch, features, labels) < 0.8 * loss_before
    assert_trunk_bit_identical(trunk, model, features)
    observe("branch tape loop on a frozen trunk", "trunk bit-identical, branch loss falls")


def test_name_matching_copy_loads_a_legacy_h5_trunk_too(tmp_path, observe):
    path, trunk, features, _, _ = saved_trunk(tmp_path, ".h5")
    model, _ = build_trunk_with_branch(features.shape[1])
    assert load_trunk_by_name(path, model) == list(TRUNK_LAYERS)
    assert_trunk_bit_identical(trunk, model, features)
    observe("load_trunk_by_name from .keras and legacy .h5", "loads the trunk")


def load_weights_by_name_outcome(path, trunk, features):
    model, _ = build_trunk_with_branch(features.shape[1])
    outcome = outcome_of(
        lambda: model.load_weights(path, by_name=True),
        [
            "Weight count mismatch for top-level weights",
            "Invalid keyword arguments",
            "`by_name` only supports loading legacy '.h5'",
            "Shape mismatch",
        ],
    )
    if outcome == "works":
        # Loading "works" only if the trunk's weights really arrived.
        assert_trunk_bit_identical(trunk, model, features)
    return outcome


def test_load_weights_by_name_of_a_full_model_h5_depends_on_the_keras_version(
    tmp_path, version_split
):
    path, trunk, features, _, _ = saved_trunk(tmp_path, ".h5")
    version_split(
        'load_weights("trunk.h5", by_name=True) into trunk plus branch',
        load_weights_by_name_outcome(path, trunk, features),
        {
            "keras<3": "works",
            "keras>=3,<3.8": "ValueError: Weight count mismatch for top-level weights",
            "keras>=3.8": "works",
        },
    )


def test_load_weights_by_name_of_a_keras_file_depends_on_the_keras_version(tmp_path, version_split):
    path, trunk, features, _, _ = saved_trunk(tmp_path, ".keras")
    version_split(
        'load_weights("trunk.keras", by_name=True) into trunk plus branch',
        load_weights_by_name_outcome(path, trunk, features),
        {
            "keras<2.13": "works",
            "keras>=2.13,<3": "ValueError: Shape mismatch",
            "keras>=3,<3.11": "ValueError: Invalid keyword arguments",
            "keras>=3.11": "ValueError: `by_name` only supports loading legacy '.h5'",
        },
    )


def branch_weights(model):
    return [
        weight.copy()
        for name in ("classify_hidden", "classify")
        for weight in model.get_layer(name).get_weights()
    ]


def test_skip_mismatch_loads_a_full_model_h5_trunk_by_name_on_every_stack(tmp_path, version_split):
    """keras-yolo3's call: on Keras 3.0 to 3.7 the top-level weight count mismatch that
    by_name alone raises becomes a UserWarning, and the trunk's layers load."""
    path, trunk, features, _, _ = saved_trunk(tmp_path, ".h5")
    model, _ = build_trunk_with_branch(features.shape[1])
    branch_before = branch_weights(model)
    outcome, said = outcome_and_said(
        lambda: model.load_weights(path, by_name=True, skip_mismatch=True),
        said_fragments=["Skipping loading top-level weights", "Skipping loading weights for layer"],
    )
    assert outcome == "works"
    assert_trunk_bit_identical(trunk, model, features)
    for kept, now in zip(branch_before, branch_weights(model), strict=True):
        np.testing.assert_array_equal(now, kept)
    version_split(
        'load_weights("trunk.h5", by_name=True, skip_mismatch=True) into trunk plus branch: '
        "the trunk loads bit-identical, and Keras says",
        said,
        {
            "keras<3": "nothing",
            "keras>=3,<3.8": "UserWarning: Skipping loading top-level weights",
            "keras>=3.8": "nothing",
        },
    )


def test_skip_mismatch_with_a_keras_file_leaves_the_trunk_head_unloaded_on_keras_2(
    tmp_path, version_split
):
    """Keras 2.13 and later load a .keras by position: the shape mismatch that by_name alone
    raises becomes warnings, and trunk_output keeps its initial weights."""
    path, trunk, features, _, _ = saved_trunk(tmp_path, ".keras")
    model, _ = build_trunk_with_branch(features.shape[1])
    before = trunk_weights(model)
    outcome, said = outcome_and_said(
        lambda: model.load_weights(path, by_name=True, skip_mismatch=True),
        ["Invalid keyword arguments", "`by_name` only supports loading legacy '.h5'"],
        ["Could not load weights in object"],
    )
    if outcome == "works":
        saved, now = trunk_weights(trunk), trunk_weights(model)
        loaded = [
            f"{name} {weight_status(now[name], before[name], saved[name])}" for name in TRUNK_LAYERS
        ]
        outcome = f"works: {', '.join(loaded)}; says {said}"
    version_split(
        'load_weights("trunk.keras", by_name=True, skip_mismatch=True) into trunk plus branch',
        outcome,
        {
            "keras<2.13": "works: trunk_dense loaded, trunk_bn loaded, trunk_output loaded; "
            "says nothing",
            "keras>=2.13,<3": "works: trunk_dense loaded, trunk_bn loaded, trunk_output kept; "
            "says UserWarning: Could not load weights in object",
            "keras>=3,<3.11": "ValueError: Invalid keyword arguments",
            "keras>=3.11": "ValueError: `by_name` only supports loading legacy '.h5'",
        },
    )


def test_legacy_h5_trunk_compiled_with_mse_loads_depending_on_the_keras_version(
    tmp_path, version_split
):
    features, targets, _ = example_data()
    trunk = build_trunk(features.shape[1])
    trunk.compile(optimizer="adam", loss="mse")
    trunk.fit(features, targets, epochs=1, verbose=0)
    path = os.fspath(tmp_path / "trunk.h5")
    trunk.save(path)
    model, _ = build_trunk_with_branch(features.shape[1])
    outcome = outcome_of(
        lambda: load_trunk_by_name(path, model), ["Could not locate function 'mse'"]
    )
    if outcome == "works":
        np.testing.assert_array_equal(
            model.predict(features, verbose=0)[0], trunk.predict(features, verbose=0)
        )
    version_split(
        'load_model("trunk.h5", compile=False) of a trunk compiled with loss="mse"',
        outcome,
        {
            "keras<3": "works",
            "keras>=3,<3.3": "TypeError: Could not locate function 'mse'",
            "keras>=3.3": "works",
        },
    )


# --- Bad input ------------------------------------------------------------------------


def test_copy_raises_naming_the_layer_and_both_shapes_on_a_mismatch():
    source = build_trunk(input_dim=5)
    target, _ = build_trunk_with_branch(input_dim=4)
    before = target.get_layer("trunk_dense").get_weights()
    with pytest.raises(ValueError, match=r"'trunk_dense'.*\(5, 8\).*\(4, 8\)"):
        copy_weights_by_name(source, target)
    for kept, weight in zip(before, target.get_layer("trunk_dense").get_weights(), strict=True):
        np.testing.assert_array_equal(weight, kept)


def test_copy_raises_when_no_layer_name_matches():
    source = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, name="other_dense")], name="other"
    )
    target, _ = build_trunk_with_branch(input_dim=4)
    with pytest.raises(ValueError, match=r"no weighted layer of source 'other'.*other_dense"):
        copy_weights_by_name(source, target)


def test_bad_arguments_raise_value_errors_naming_them(tmp_path):
    model, _ = build_trunk_with_branch()
    with pytest.raises(ValueError, match=r"source must be a keras.Model, got None"):
        copy_weights_by_name(None, model)
    with pytest.raises(ValueError, match=r"target must be a keras.Model, got 'model'"):
        copy_weights_by_name(model, "model")
    missing = os.fspath(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match=r"path must name a saved model file, got .*missing"):
        load_trunk_by_name(missing, model)
    with pytest.raises(ValueError, match=r"path must name a saved model file, got 3"):
        load_trunk_by_name(3, model)
    with pytest.raises(ValueError, match=r"branch_marker must be .*, got 'head'"):
        freeze_all_but_branch(model, "head")
    with pytest.raises(ValueError, match=r"branch_marker must be .*, got 3"):
        freeze_all_but_branch(model, 3)
    with pytest.raises(ValueError, match=r"model must be a keras.Model, got \[\]"):
        freeze_all_but_branch([])
    with pytest.raises(ValueError, match=r"branch must be a keras.Model, got None"):
        train_branch_with_tape(None, np.zeros((2, 4)), np.zeros(2), keras.optimizers.Adam())
    # Nothing was frozen by the refused calls.
    assert all(layer.trainable for layer in model.layers)


def test_demo_reports_an_unchanged_trunk(demo_output):
    printed = demo_output("branch_finetune")
    assert "trunk weights and BN statistics unchanged: True" in printed
    assert "trunk outputs unchanged: True" in printed
