"""Tests for recipes/deterministic_training.py: what makes two runs bit-identical, what breaks it.

conftest.py enables op determinism for the whole test process, and TensorFlow offers no
public way to turn it off again, so every run that needs it off happens in one child
process (`child_report`, started once per session by the `without_op_determinism`
fixture). The child imports this module, so this module must not import conftest, which
would switch op determinism on in the child too.
"""

import gc
import inspect
import json
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes.deterministic_training import (
    build_model,
    make_dataset,
    make_deterministic,
    weights_are_identical,
)
from tests.child_process import finish, last_report, run_python

# Runs with a difference expected retry up to this many times before the test gives up, so
# a claim that something changes rests on 1 + ATTEMPTS runs; a claim that nothing changes is
# checked over as many.
ATTEMPTS = 5


def regression_data(rows=32):
    random = np.random.default_rng(0)
    features = random.normal(size=(rows, 4)).astype("float32")
    targets = (features @ random.normal(size=(4, 1))).astype("float32")
    return features, targets


def uneven_work(features, target):
    """Identity on (features, target); rows with features[0] > 0.8 first spin 500 steps.

    The work is stateless, so op determinism does not serialise the map (rule 3 of
    `enable_op_determinism`'s docs): only the `deterministic` flag decides the order.
    """
    steps = tf.where(features[0] > 0.8, 500, 0)
    _, spin = tf.while_loop(
        lambda step, value: step < steps,
        lambda step, value: (step + 1, tf.sin(value) + 1.0),
        (tf.constant(0), tf.ones([256])),
    )
    return features + 0.0 * tf.reduce_sum(spin), target


def map_order(deterministic, followed_by="shuffle"):
    """The row numbers in the order the pipeline hands them out, for one pass.

    `followed_by="shuffle"` is `make_dataset`'s map -> shuffle -> batch; "batch" puts the
    batch straight after the map, where tf.data fuses the two; "batch, unfused" turns
    that fusion off.
    """
    features, _ = regression_data()
    row_numbers = np.arange(len(features), dtype="float32")
    if followed_by == "shuffle":
        dataset = make_dataset(
            features,
            row_numbers,
            batch_size=8,
            shuffle_seed=0,
            preprocess=uneven_work,
            deterministic=deterministic,
        )
    else:
        dataset = tf.data.Dataset.from_tensor_slices((features, row_numbers))
        dataset = dataset.map(uneven_work, num_parallel_calls=4, deterministic=deterministic)
        dataset = dataset.batch(8)
        if followed_by == "batch, unfused":
            options = tf.data.Options()
            options.experimental_optimization.map_and_batch_fusion = False
            dataset = dataset.with_options(options)
    return [int(row) for _, rows in dataset for row in rows.numpy()]


def order_differs_within_attempts(followed_by):
    """True as soon as the unordered map's order differs from the ordered one's."""
    ordered = map_order(True, followed_by)
    return any(map_order(False, followed_by) != ordered for _ in range(ATTEMPTS))


def fit_weights(
    seed=None,
    layer_seed=None,
    shuffle_seed=0,
    preprocess=None,
    deterministic=None,
    seeder=keras.utils.set_random_seed,
):
    """One training run: a fresh session, `seeder(seed)` if `seed` is given, 2 epochs of fit."""
    keras.backend.clear_session()
    if seed is not None:
        seeder(seed)
    features, targets = regression_data()
    dataset = make_dataset(
        features,
        targets,
        shuffle_seed=shuffle_seed,
        preprocess=preprocess,
        deterministic=deterministic,
    )
    model = build_model(4, seed=layer_seed)
    model.fit(dataset, epochs=2, verbose=0)
    return model.get_weights()


def differs_within_attempts(run):
    """True as soon as one of ATTEMPTS repeats of `run()` differs from the first run."""
    first = run()
    return any(not weights_are_identical(first, run()) for _ in range(ATTEMPTS))


def child_report():
    """Runs every determinism-off scenario in this (child) process; prints one JSON line."""
    from tensorflow.python.framework import config as tf_config

    report = {"op_determinism": bool(tf_config.is_op_determinism_enabled())}
    # Seeded layers, no global seed: only the shuffle seed decides the order.
    report["unseeded_shuffle_differs"] = differs_within_attempts(
        lambda: fit_weights(layer_seed=0, shuffle_seed=None)
    )
    report["seeded_shuffle_identical"] = weights_are_identical(
        fit_weights(layer_seed=0, shuffle_seed=5), fit_weights(layer_seed=0, shuffle_seed=5)
    )
    report["no_seed_differs"] = not weights_are_identical(fit_weights(), fit_weights())
    report["ordered_map_identical"] = weights_are_identical(
        fit_weights(seed=3, preprocess=uneven_work, deterministic=True),
        fit_weights(seed=3, preprocess=uneven_work, deterministic=True),
    )
    report["unordered_map_differs"] = differs_within_attempts(
        lambda: fit_weights(seed=3, preprocess=uneven_work, deterministic=False)
    )
    report["unordered_map_then_shuffle_reorders"] = order_differs_within_attempts("shuffle")
    report["unordered_map_then_batch_reorders"] = order_differs_within_attempts("batch")
    report["unordered_map_then_unfused_batch_reorders"] = order_differs_within_attempts(
        "batch, unfused"
    )
    print("REPORT " + json.dumps(report))


def run_child_report():
    return run_python(f"from {__name__} import child_report; child_report()")


# The child starts when the tests are collected and runs beside them (conftest).
START_EARLY = {"without_op_determinism": run_child_report}


@pytest.fixture(scope="module")
def without_op_determinism():
    """What the scenarios of `child_report` did in a process without op determinism."""
    report = json.loads(last_report(finish(run_child_report)))
    assert report["op_determinism"] is False
    return report


# --- With seeds and op determinism (this process) ------------------------------------------


def test_two_runs_after_make_deterministic_give_bit_identical_weights():
    def run():
        return fit_weights(
            seed=0,
            seeder=make_deterministic,
            shuffle_seed=None,
            preprocess=uneven_work,
            deterministic=False,
        )

    first, second = run(), run()
    assert weights_are_identical(first, second)
    # The runs did train: the weights moved away from a fresh model's.
    make_deterministic(0)
    assert not weights_are_identical(first, build_model(4).get_weights())


def test_different_seeds_give_different_weights():
    first = fit_weights(seed=1, seeder=make_deterministic)
    assert not weights_are_identical(first, fit_weights(seed=2, seeder=make_deterministic))


def test_make_deterministic_accepts_numpy_integers_like_python_ints():
    with pytest.raises(ValueError, match="seed"):
        keras.utils.set_random_seed(np.int64(7))
    make_deterministic(np.int64(7))
    from_numpy = tf.random.uniform([4]).numpy()
    make_deterministic(7)
    assert np.array_equal(from_numpy, tf.random.uniform([4]).numpy())


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "1", True, None])
def test_make_deterministic_rejects_a_seed_outside_0_to_2_32(seed):
    with pytest.raises(ValueError, match=re.escape(f"seed={seed!r}")):
        make_deterministic(seed)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2.0}, "batch_size=2.0"),
        ({"shuffle_seed": -3}, "shuffle_seed=-3"),
        ({"deterministic": "yes"}, "deterministic='yes'"),
    ],
)
def test_make_dataset_rejects_bad_arguments(arguments, message):
    features, targets = regression_data()
    with pytest.raises(ValueError, match=message):
        make_dataset(features, targets, **arguments)


@pytest.mark.parametrize(
    "arguments, message",
    [({"input_dim": 0}, "input_dim=0"), ({"input_dim": 4, "seed": -1}, "seed=-1")],
)
def test_build_model_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        build_model(**arguments)


def test_unseeded_shuffle_repeats_after_set_random_seed():
    features, targets = regression_data()

    def order():
        keras.utils.set_random_seed(4)
        dataset = make_dataset(features, np.arange(32), batch_size=32, shuffle_seed=None)
        return next(iter(dataset))[1].numpy().tolist()

    first = order()
    assert first == order()
    assert first != list(range(32))


def test_op_determinism_overrides_deterministic_false_in_a_parallel_map(without_op_determinism):
    """In this process (op determinism on) the uneven map keeps the input order; without, not.

    As many passes as the control without op determinism may take to show a reorder: the
    ordered pass, then ATTEMPTS unordered ones, every one in the ordered pass's order.
    """
    ordered = map_order(deterministic=True)
    assert ordered != list(range(32))
    unordered = [map_order(deterministic=False) for _ in range(ATTEMPTS)]
    assert all(order == ordered for order in unordered)
    assert without_op_determinism["unordered_map_then_shuffle_reorders"] is True


def test_a_map_fused_with_the_next_batch_keeps_the_order(without_op_determinism):
    """Without op determinism, map(deterministic=False).batch() still hands rows out in order."""
    assert without_op_determinism["unordered_map_then_batch_reorders"] is False
    # The fusion is why: with map_and_batch_fusion off, the same pipeline reorders.
    assert without_op_determinism["unordered_map_then_unfused_batch_reorders"] is True
    assert map_order(deterministic=False, followed_by="batch") == list(range(32))


def test_op_determinism_without_a_tensorflow_seed_refuses_random_ops():
    features, targets = regression_data()
    tf.random.set_seed(None)
    with pytest.raises(RuntimeError, match="Random ops require a seed"):
        tf.random.normal([2])
    with pytest.raises(RuntimeError, match="Random ops require a seed"):
        next(iter(make_dataset(features, targets, shuffle_seed=None)))


def test_dropout_without_a_tensorflow_seed_under_op_determinism_depends_on_keras(version_split):
    tf.random.set_seed(None)
    dropout = keras.layers.Dropout(0.5)
    observed = "works"
    try:
        dropout(np.ones((2, 8), "float32"), training=True)
    except RuntimeError as error:
        assert "Random ops require a seed" in str(error)
        observed = "RuntimeError: Random ops require a seed"
    version_split(
        "Dropout(training=True) with op determinism on and no TensorFlow seed",
        observed,
        {"keras<3": "RuntimeError: Random ops require a seed", "keras>=3": "works"},
    )


def test_clear_session_collects_garbage_depending_on_the_keras_version(monkeypatch, version_split):
    collections = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or collect(*args))
    keras.backend.clear_session()
    observed = f"default: {len(collections)} gc.collect()"
    if "free_memory" in inspect.signature(keras.backend.clear_session).parameters:
        collections.clear()
        keras.backend.clear_session(free_memory=False)
        observed += f"; free_memory=False: {len(collections)}"
    version_split(
        "gc.collect() calls of one keras.backend.clear_session()",
        observed,
        {
            "keras<3.2": "default: 0 gc.collect()",
            "keras>=3.2,<3.3": "default: 1 gc.collect()",
            "keras>=3.3": "default: 1 gc.collect(); free_memory=False: 0",
        },
    )


# --- Without op determinism (the child process) --------------------------------------------


def test_without_a_seed_two_runs_give_different_weights(without_op_determinism):
    assert without_op_determinism["no_seed_differs"] is True
    # Control: two runs with every seed set (and an order-keeping map) are identical there.
    assert without_op_determinism["ordered_map_identical"] is True


def test_parallel_map_with_deterministic_false_changes_weights(without_op_determinism):
    assert without_op_determinism["unordered_map_differs"] is True
    # Control: with deterministic=True the same map and seeds repeat bit for bit.
    assert without_op_determinism["ordered_map_identical"] is True


def test_unseeded_shuffle_without_a_global_seed_changes_weights(without_op_determinism):
    """Every layer seeded, no global seed: only shuffle(seed=...) repeats."""
    assert without_op_determinism["unseeded_shuffle_differs"] is True
    assert without_op_determinism["seeded_shuffle_identical"] is True


def test_weights_are_identical_compares_bits_not_values():
    weights = [np.array([0.0, 1.0], "float32"), np.ones((2, 2), "float32")]
    assert weights_are_identical(weights, [array.copy() for array in weights])
    # -0.0 == 0.0 as a value, but the bits differ.
    assert not weights_are_identical(weights, [np.array([-0.0, 1.0], "float32"), weights[1]])
    assert not weights_are_identical(weights, [weights[0].astype("float64"), weights[1]])
    assert not weights_are_identical(weights, weights[:1])
