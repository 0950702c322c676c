"""Tests for recipes/tf_data_pipeline.py: every stage's rule, and the same samples as the
generator recipe (the test imports both recipes; the recipes never import each other)."""

import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes import generator_dataset
from recipes.tf_data_pipeline import (
    dataset_from_generator,
    dataset_from_plans,
    make_pipeline,
    numpy_map_function,
)

# A wait that never times out in a passing run; it only keeps a broken run from hanging.
SAFETY_TIMEOUT_SECONDS = 30


def numbered_samples(num_samples, size=3):
    images = np.broadcast_to(
        np.arange(num_samples, dtype="float32")[:, None, None, None], (num_samples, size, size, 1)
    ).copy()
    return images, np.arange(num_samples, dtype="int64")


def labels_per_epoch(dataset, epochs, batches_per_epoch):
    labels = [
        batch_labels.numpy().tolist()
        for _, batch_labels in dataset.take(epochs * batches_per_epoch)
    ]
    return [
        sum(labels[e * batches_per_epoch : (e + 1) * batches_per_epoch], []) for e in range(epochs)
    ]


# --- from_generator -----------------------------------------------------------------------


def test_from_generator_checks_shapes_when_iterated_and_converts_dtypes_silently(observe):
    def wrong_shape():
        yield np.zeros((3,), "float32")

    dataset = dataset_from_generator(wrong_shape, tf.TensorSpec((2,), tf.float32))
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"yielded an element of shape \(3,\) where an element of shape \(2,\) was expected",
    ):
        list(dataset)
    observe(
        "from_generator: a yielded shape that differs from output_signature",
        "InvalidArgumentError at iteration",
    )
    for dtype in ("float64", "int64"):

        def other_dtype(dtype=dtype):
            yield np.array([1.5, 2.0]).astype(dtype)

        [element] = list(dataset_from_generator(other_dtype, tf.TensorSpec((2,), tf.float32)))
        assert element.dtype == tf.float32
        np.testing.assert_array_equal(element.numpy(), np.array([1.5, 2.0]).astype(dtype))
    observe("from_generator: float64 or int64 against a float32 signature", "converted silently")


@pytest.mark.parametrize(
    "num_samples, batch_size, last_batch", [(10, 4, "keep"), (10, 4, "drop"), (9, 3, "keep")]
)
def test_from_generator_and_from_plans_give_the_generators_samples_exactly(
    num_samples, batch_size, last_batch, observe
):
    random = np.random.default_rng(5)
    images = random.normal(size=(num_samples, 7, 6, 2)).astype("float32")
    labels = random.integers(0, 100, size=num_samples)
    crop_size, seed, epochs = (4, 3), 11, 3

    def generator():
        return generator_dataset.batch_generator(
            images, labels, batch_size, crop_size, last_batch, seed=seed, epochs=epochs
        )

    expected = list(generator())
    signature = (
        tf.TensorSpec((None, *crop_size, 2), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    plans = [
        generator_dataset.epoch_plan(num_samples, (7, 6), crop_size, seed, epoch)
        for epoch in range(epochs)
    ]
    from_plans = dataset_from_plans(
        images,
        labels,
        [np.stack(part) for part in zip(*plans, strict=True)],
        batch_size,
        crop_size,
        drop_remainder=last_batch == "drop",
    )
    for dataset in (dataset_from_generator(generator, signature), from_plans):
        produced = [(x.numpy(), y.numpy()) for x, y in dataset]
        assert len(produced) == len(expected)
        for (x, y), (x_expected, y_expected) in zip(produced, expected, strict=True):
            np.testing.assert_array_equal(x, x_expected)
            np.testing.assert_array_equal(y, y_expected)
    # The comparison means something: the epochs differ from each other.
    per_epoch = len(expected) // epochs
    assert not np.array_equal(expected[0][0], expected[per_epoch][0])
    observe("dataset_from_plans with the generator's epoch_plan", "every sample identical")


# --- make_pipeline ------------------------------------------------------------------------


def test_every_sample_once_per_epoch_and_a_seeded_new_order_every_epoch(observe):
    images, labels = numbered_samples(12)

    def orders():
        pipeline = make_pipeline(images, labels, 5, shuffle_seed=3, repeat=True)
        return labels_per_epoch(pipeline, epochs=3, batches_per_epoch=3)

    first = orders()
    assert all(sorted(order) == list(range(12)) for order in first)
    assert len({tuple(order) for order in first}) == 3
    assert orders() == first
    observe("make_pipeline shuffle with a seed", "new order each epoch, same orders when rebuilt")


def test_batch_shapes_with_and_without_drop_remainder():
    images, labels = numbered_samples(10)
    kept = make_pipeline(images, labels, 4)
    dropped = make_pipeline(images, labels, 4, drop_remainder=True)
    assert [len(y) for _, y in kept] == [4, 4, 2]
    assert [len(y) for _, y in dropped] == [4, 4]
    assert kept.element_spec[0].shape.as_list() == [None, 3, 3, 1]
    assert dropped.element_spec[0].shape.as_list() == [4, 3, 3, 1]


def blocking_map(released, waits, timeout=SAFETY_TIMEOUT_SECONDS):
    """A map whose element 0 waits for `released` (recording whether it came) and whose
    element 1 sets it when `element_1_releases`; every other element returns at once."""

    def wait_or_release(index, element_1_releases):
        if index == 0:
            waits.append(released.wait(timeout))
        if index == 1 and element_1_releases:
            released.set()
        return index

    def mapped(index, element_1_releases):
        return tf.numpy_function(wait_or_release, [index, element_1_releases], tf.int64)

    return mapped


def test_batch_map_runs_once_per_batch_and_gives_the_per_sample_maps_result():
    images, labels = numbered_samples(10)
    calls = []

    def brighten(array):
        calls.append(array.shape)
        return array + 1

    per_sample = make_pipeline(images, labels, 4, augment=numpy_map_function(brighten, (3, 3, 1)))
    per_batch = make_pipeline(
        images, labels, 4, batch_map=numpy_map_function(brighten, (None, 3, 3, 1))
    )
    expected = [x.numpy() for x, _ in per_sample]
    assert len(calls) == 10
    calls.clear()
    produced = [x.numpy() for x, _ in per_batch]
    # The map runs in parallel, so the calls may start in any order.
    assert sorted(calls) == [(2, 3, 3, 1), (4, 3, 3, 1), (4, 3, 3, 1)]
    assert per_batch.element_spec[0].shape.as_list() == [None, 3, 3, 1]
    for x, x_expected in zip(produced, expected, strict=True):
        np.testing.assert_array_equal(x, x_expected)


def test_deterministic_map_keeps_the_order_when_a_later_element_finishes_first(
    observe, op_determinism_off
):
    released, waits = threading.Event(), []
    mapped = blocking_map(released, waits)
    dataset = tf.data.Dataset.range(4).map(
        lambda index: mapped(index, True), num_parallel_calls=2, deterministic=True
    )
    # Element 0 finishes only after element 1 has run, yet it comes out first.
    assert [int(value) for value in dataset] == [0, 1, 2, 3]
    assert waits == [True], "element 0 timed out: the map did not run in parallel"
    observe("parallel map, deterministic=True, element 1 done first", "input order")


def test_nondeterministic_map_hands_out_the_element_that_is_ready(observe, op_determinism_off):
    released, waits = threading.Event(), []
    mapped = blocking_map(released, waits)
    dataset = tf.data.Dataset.range(2).map(
        lambda index: mapped(index, False), num_parallel_calls=2, deterministic=False
    )
    iterator = iter(dataset)
    # Element 0 waits until we have received an element, so the first can only be 1.
    first = int(next(iterator))
    released.set()
    rest = [int(value) for value in iterator]
    assert [first, *rest] == [1, 0]
    assert waits == [True]
    observe("parallel map, deterministic=False, element 0 blocked", "element 1 first")


def test_op_determinism_runs_a_stateful_parallel_map_one_element_at_a_time(observe):
    # conftest has enabled it already (recipes/deterministic_training.py); again, to be plain.
    tf.config.experimental.enable_op_determinism()
    # Element 0 waits (briefly) for element 1, which can only run beside it in parallel.
    released, waits = threading.Event(), []
    mapped = blocking_map(released, waits, timeout=0.5)
    dataset = tf.data.Dataset.range(2).map(
        lambda index: mapped(index, True), num_parallel_calls=2, deterministic=False
    )
    assert [int(value) for value in dataset] == [0, 1]
    assert waits == [False], "element 1 ran beside element 0: the map ran in parallel"
    observe("parallel stateful map under enable_op_determinism", "one element at a time")


def test_cache_replays_decode_and_augment_after_it_runs_every_epoch(observe):
    images, labels = numbered_samples(6)
    calls = {"decode": 0, "augment": 0}

    def counted(name):
        # Returns a new value at every call, as a random step would.
        def count(image):
            calls[name] += 1
            return image + calls[name]

        return numpy_map_function(count, (3, 3, 1))

    for cache, expected_decodes in ((True, 6), (False, 18)):
        calls["decode"] = 0
        pipeline = make_pipeline(images, labels, 3, decode=counted("decode"), cache=cache)
        # Three whole epochs, each iterated to its end, so prefetch cannot read ahead.
        epochs = [np.concatenate([x.numpy() for x, _ in pipeline]) for _ in range(3)]
        assert calls["decode"] == expected_decodes
        assert np.array_equal(epochs[0], epochs[2]) == cache
    augmented = make_pipeline(images, labels, 3, augment=counted("augment"), cache=True)
    for _ in range(3):
        assert len(list(augmented)) == 2
    assert calls["augment"] == 18
    observe("make_pipeline, 3 epochs of 6 samples, cache=True", "decode 6 calls, augment 18")


def test_numpy_function_output_has_unknown_rank_and_keras_3_fit_rejects_it(version_split):
    images, labels = numbered_samples(8)
    labels = labels.astype("float32")

    def brighten(image):
        return image + 1

    bare = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .map(lambda image, label: (tf.numpy_function(brighten, [image], tf.float32), label))
        .batch(4)
    )
    shaped = make_pipeline(images, labels, 4, decode=numpy_map_function(brighten, (3, 3, 1)))
    assert bare.element_spec[0].shape.rank is None
    assert shaped.element_spec[0].shape.as_list() == [None, 3, 3, 1]

    def fit(dataset):
        model = keras.Sequential(
            [keras.Input(shape=(3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        model.fit(dataset, epochs=1, shuffle=False, verbose=0)

    version_split(
        "fit on a dataset mapped by tf.numpy_function (unknown rank)",
        outcome_of(lambda: fit(bare), ["Cannot take the length of shape with unknown rank"]),
        {
            "keras<3": "works",
            "keras>=3": "ValueError: Cannot take the length of shape with unknown rank",
        },
    )
    fit(shaped)


def test_bad_arguments_raise_value_error_naming_them():
    images, labels = numbered_samples(4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        make_pipeline(images, labels, 0)
    with pytest.raises(ValueError, match="deterministic must be a bool, got 'no'"):
        make_pipeline(images, labels, 2, deterministic="no")
    with pytest.raises(ValueError, match="decode must be None or callable, got 1"):
        make_pipeline(images, labels, 2, decode=1)
    with pytest.raises(ValueError, match="got 4 and 3"):
        make_pipeline(images, labels[:3], 2)
    with pytest.raises(ValueError, match="shuffle_seed must be an int >= 0, got -1"):
        make_pipeline(images, labels, 2, shuffle_seed=-1)
    with pytest.raises(ValueError, match="generator_function must be a callable"):
        dataset_from_generator(iter([]), tf.TensorSpec((2,)))
    with pytest.raises(ValueError, match="output_signature must be a tf.TensorSpec"):
        dataset_from_generator(lambda: iter([]), (tf.float32,))
    with pytest.raises(
        ValueError, match=r"output_shape must be a tuple of ints >= 1 or None, got \(0, 2\)"
    ):
        numpy_map_function(np.abs, (0, 2))
    with pytest.raises(ValueError, match=r"plans must be three \(epochs, N\) arrays"):
        dataset_from_plans(
            images, labels, (np.zeros((1, 4)), np.zeros((1, 3)), np.zeros((1, 4))), 2, (2, 2)
        )
    assert len(list(make_pipeline(images, labels, np.int64(2), shuffle_seed=np.int32(1)))) == 2


def test_demo_prints_the_spec_and_the_generator_check(demo_output):
    printed = demo_output("tf_data_pipeline")
    shapes = "[(16, 12, 12, 3), (16, 12, 12, 3), (16, 12, 12, 3), (2, 12, 12, 3)]"
    assert f"batch shapes of one epoch: {shapes}" in printed
    assert "from_generator gives the generator's batches: True" in printed
