"""Tests for recipes/sequence_dataset.py: indexing, shuffling, loader options, fit per stack."""

import threading
import warnings

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes import sequence_dataset
from recipes.sequence_dataset import ArrayDataset, DatasetBase


def numbered_samples(num_samples):
    """Images (N, 2) whose values hold the sample's index, and the index as the label."""
    images = np.repeat(np.arange(num_samples, dtype="float32")[:, None], 2, axis=1)
    return images, np.arange(num_samples, dtype="float32")


def small_model():
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


class RecordingDataset(ArrayDataset):
    """ArrayDataset that logs every batch index requested and every on_epoch_end call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def __getitem__(self, index):
        self.log.append(index)
        return super().__getitem__(index)

    def on_epoch_end(self):
        self.log.append("end")
        super().on_epoch_end()


def segments_between_epoch_ends(log):
    """The batch indices requested before each on_epoch_end call, in order."""
    segments, current = [], []
    for entry in log:
        if entry == "end":
            segments.append(current)
            current = []
        else:
            current.append(entry)
    return segments


def requested_per_epoch(log, epochs, batches):
    """The batch indices each of the last `epochs` epochs requested, peeks left out.

    Keras requests one or two batches before the first epoch to learn the input shapes;
    they land before the first epoch's batches, so each epoch's requests are the last
    `batches` entries before its on_epoch_end.
    """
    return [segment[-batches:] for segment in segments_between_epoch_ends(log)[-epochs:]]


class ThreadRecordingDataset(RecordingDataset):
    """RecordingDataset that also notes which thread calls on_epoch_end: main or loader."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.end_threads = []
        self.called_from_loader = threading.Event()

    def on_epoch_end(self):
        if threading.current_thread() is threading.main_thread():
            self.end_threads.append("main")
        else:
            self.end_threads.append("loader")
            self.called_from_loader.set()
        super().on_epoch_end()


# --- The base class and the dataset itself ------------------------------------------------


def test_pydataset_exists_on_keras_3_only_and_sequence_is_the_same_class(version_split):
    pydataset = getattr(keras.utils, "PyDataset", None)
    version_split(
        "keras.utils.PyDataset",
        "absent"
        if pydataset is None
        else f"present, Sequence is PyDataset: {keras.utils.Sequence is pydataset}",
        {"keras<3": "absent", "keras>=3": "present, Sequence is PyDataset: True"},
    )
    dataset = ArrayDataset(*numbered_samples(4), batch_size=2)
    assert isinstance(dataset, keras.utils.Sequence) and isinstance(dataset, DatasetBase)


@hypothesis.given(num_samples=st.integers(1, 30), batch_size=st.integers(1, 8))
def test_len_and_getitem_cover_every_sample_in_order_with_a_partial_last_batch(
    num_samples, batch_size
):
    images, labels = numbered_samples(num_samples)
    dataset = ArrayDataset(images, labels, batch_size)
    assert len(dataset) == -(-num_samples // batch_size)
    batches = [dataset[index] for index in range(len(dataset))]
    assert all(len(batch_labels) == batch_size for _, batch_labels in batches[:-1])
    assert 1 <= len(batches[-1][1]) <= batch_size
    np.testing.assert_array_equal(np.concatenate([b for _, b in batches]), labels)
    np.testing.assert_array_equal(np.concatenate([i for i, _ in batches]), images)
    with pytest.raises(IndexError, match=f"got {len(dataset)}"):
        dataset[len(dataset)]
    # Iterating a Sequence stops at the first IndexError.
    assert len(list(dataset)) == len(dataset)


def test_on_epoch_end_reshuffles_with_the_seed_and_keeps_images_with_labels(observe):
    images, labels = numbered_samples(20)

    def orders_over_epochs(seed):
        dataset = ArrayDataset(images, labels, batch_size=20, shuffle_seed=seed)
        orders = []
        for _ in range(3):
            batch_images, batch_labels = dataset[0]
            np.testing.assert_array_equal(batch_images[:, 0], batch_labels)
            orders.append(tuple(batch_labels))
            dataset.on_epoch_end()
        return orders

    orders = orders_over_epochs(seed=1)
    assert orders[0] == tuple(range(20)), "the first epoch is in order until on_epoch_end"
    assert len(set(orders)) == 3 and all(sorted(order) == list(range(20)) for order in orders)
    assert orders_over_epochs(seed=1) == orders and orders_over_epochs(seed=2) != orders
    unshuffled = ArrayDataset(images, labels, batch_size=20)
    unshuffled.on_epoch_end()
    np.testing.assert_array_equal(unshuffled[0][1], labels)
    observe("ArrayDataset.on_epoch_end with a seed", "new order, same for the same seed")


def test_preprocess_runs_on_each_sample_of_a_requested_batch():
    images, labels = numbered_samples(5)
    dataset = ArrayDataset(images, labels, batch_size=3, preprocess=lambda image: image + 100)
    np.testing.assert_array_equal(dataset[1][0], images[3:] + 100)


def test_bad_arguments_raise_value_error_naming_them():
    images, labels = numbered_samples(4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        ArrayDataset(images, labels, 0)
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        ArrayDataset(images, labels, 2, workers=0)
    with pytest.raises(ValueError, match="use_multiprocessing must be a bool, got 'yes'"):
        ArrayDataset(images, labels, 2, use_multiprocessing="yes")
    with pytest.raises(ValueError, match="max_queue_size must be an int >= 1, got 0"):
        ArrayDataset(images, labels, 2, max_queue_size=0)
    with pytest.raises(ValueError, match="shuffle_seed must be an int >= 0, got -3"):
        ArrayDataset(images, labels, 2, shuffle_seed=-3)
    with pytest.raises(ValueError, match=r"labels must have one entry per image \(4\), got 3"):
        ArrayDataset(images, labels[:3], 2)
    with pytest.raises(ValueError, match="images must be a non-empty numpy array"):
        ArrayDataset(images[:0], labels[:0], 2)
    with pytest.raises(ValueError, match="preprocess must be None or callable, got 'x'"):
        ArrayDataset(images, labels, 2, preprocess="x")
    with pytest.raises(TypeError, match="index must be an int, got 0.5"):
        ArrayDataset(images, labels, 2)[0.5]
    assert len(ArrayDataset(images, labels, np.int64(3), shuffle_seed=np.int32(0))) == 2


# --- Where the loader options go ----------------------------------------------------------


def test_workers_go_to_the_constructor_on_keras_3_and_to_fit_on_keras_2(version_split):
    class Bare(DatasetBase):
        def __init__(self, **options):
            super().__init__(**options)

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return numbered_samples(2)

    version_split(
        "base-class constructor with workers=2",
        outcome_of(lambda: Bare(workers=2), ["takes exactly one argument"]),
        {"keras<3": "TypeError: takes exactly one argument", "keras>=3": "works"},
    )
    # Keras 2's enqueuer waits up to 5 s for the queue at the end of every epoch with
    # workers > 1, so this test fits with workers on each stack as few times as it can.
    images, labels = numbered_samples(12)
    dataset = RecordingDataset(images, labels, batch_size=3, workers=2)
    version_split(
        "fit(dataset, workers=2)",
        outcome_of(
            lambda: small_model().fit(dataset, workers=2, epochs=1, shuffle=False, verbose=0),
            ["unexpected keyword argument 'workers'"],
        ),
        {"keras<3": "works", "keras>=3": "TypeError: unexpected keyword argument 'workers'"},
    )
    # The portable call: Keras 2 gets the options from fit_kwargs(), Keras 3 from the
    # constructor. On Keras 2 the call above was this very call.
    expected_options = {"workers": 2, "use_multiprocessing": False, "max_queue_size": 10}
    if sequence_dataset.KERAS_MAJOR >= 3:
        assert dataset.fit_kwargs() == {} and dataset.workers == 2
        dataset.log.clear()
        history = small_model().fit(
            dataset, epochs=1, shuffle=False, verbose=0, **dataset.fit_kwargs()
        )
        assert len(history.epoch) == 1
    else:
        assert dataset.fit_kwargs() == expected_options
    # The epoch's four batches are the first four requests in a row without an epoch end
    # between them (peeks come before). Keras 2's loader thread may call on_epoch_end and
    # start the next epoch before fit stops it (the next test), so later segments vary.
    first_epoch = next(s for s in segments_between_epoch_ends(dataset.log) if len(s) >= 4)
    assert sorted(first_epoch[-4:]) == [0, 1, 2, 3]


# With workers > 1, the loader thread of Keras 2 and Keras 3.0 to 3.5 checks every 0.1 s
# whether fit has taken all of the epoch's batches, then calls on_epoch_end itself and starts
# the next epoch, unless fit has stopped it first. Keras 3.0 to 3.5 stop it as the epoch's
# last step ends, before the epoch-end callbacks; Keras 2 after them.
LOADER_ON_EPOCH_END = {
    "last step": {
        "keras<3.6": "loader, main",
        "keras>=3.6,<3.7": "main",
        "keras>=3.7": "main, main",
    },
    "epoch-end callback": {
        "keras<3": "loader, main",
        "keras>=3,<3.7": "main",
        "keras>=3.7": "main, main",
    },
}


@pytest.mark.parametrize("slow", sorted(LOADER_ON_EPOCH_END))
def test_with_workers_the_loader_thread_calls_on_epoch_end_when_the_epoch_ends_slowly(
    version_split, slow
):
    images, labels = numbered_samples(12)
    dataset = ThreadRecordingDataset(images, labels, batch_size=3, workers=2)

    class Slow(keras.callbacks.Callback):
        """A slow last step or epoch end: waits (2 s at most) for a loader on_epoch_end."""

        def on_train_batch_end(self, batch, logs=None):
            if slow == "last step" and batch == len(dataset) - 1:
                dataset.called_from_loader.wait(timeout=2.0)

        def on_epoch_end(self, epoch, logs=None):
            if slow == "epoch-end callback":
                dataset.called_from_loader.wait(timeout=2.0)

    history = small_model().fit(
        dataset, epochs=1, shuffle=False, verbose=0, callbacks=[Slow()], **dataset.fit_kwargs()
    )
    assert len(history.epoch) == 1
    version_split(
        f"threads calling on_epoch_end in fit(epochs=1) with workers=2 and a slow {slow}",
        ", ".join(dataset.end_threads),
        LOADER_ON_EPOCH_END[slow],
    )


def test_a_subclass_that_skips_super_init_trains_with_a_warning_on_keras_3_only(version_split):
    images, labels = numbered_samples(4)

    class NoSuperInit(DatasetBase):
        def __init__(self):
            self.images, self.labels = images, labels

        def __len__(self):
            return 2

        def __getitem__(self, index):
            return self.images[2 * index : 2 * index + 2], self.labels[2 * index : 2 * index + 2]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = small_model().fit(NoSuperInit(), epochs=1, verbose=0)
    assert len(history.epoch) == 1
    warned = any("should call `super().__init__(**kwargs)`" in str(w.message) for w in caught)
    version_split(
        "a dataset subclass whose __init__ skips super().__init__()",
        "trains, UserWarning: should call super().__init__" if warned else "trains, no warning",
        {
            "keras<3": "trains, no warning",
            "keras>=3": "trains, UserWarning: should call super().__init__",
        },
    )


# --- What fit does with the dataset -------------------------------------------------------


def test_fit_calls_on_epoch_end_once_more_before_the_first_epoch_on_keras_3_15(version_split):
    images, labels = numbered_samples(8)
    dataset = RecordingDataset(images, labels, batch_size=2, shuffle_seed=0)
    small_model().fit(dataset, epochs=3, shuffle=False, verbose=0)
    calls = dataset.log.count("end")
    # Requests before the first on_epoch_end: the peeks plus, on most stacks, a whole epoch.
    requests_before_first_end = dataset.log.index("end")
    when = "before" if requests_before_first_end < len(dataset) else "after"
    version_split(
        "on_epoch_end calls during fit(epochs=3)",
        f"{calls}, the first {when} the first epoch's batches",
        {
            "keras<3.7": "3, the first after the first epoch's batches",
            "keras>=3.7": "4, the first before the first epoch's batches",
        },
    )


def test_fit_shuffle_true_reorders_the_batches_and_shuffle_false_keeps_them(observe):
    images, labels = numbered_samples(16)
    in_order = RecordingDataset(images, labels, batch_size=2)
    small_model().fit(in_order, epochs=3, shuffle=False, verbose=0)
    assert requested_per_epoch(in_order.log, 3, 8) == [list(range(8))] * 3
    requests = [entry for entry in in_order.log if entry != "end"]
    assert len(requests) - 3 * 8 in (1, 2)
    observe("batches requested beyond the epochs' own during fit(epochs=3)", "1 or 2 peeks")
    shuffled = RecordingDataset(images, labels, batch_size=2)
    small_model().fit(shuffled, epochs=3, verbose=0)
    epochs = requested_per_epoch(shuffled.log, 3, 8)
    assert all(sorted(epoch) == list(range(8)) for epoch in epochs)
    assert all(epoch != list(range(8)) for epoch in epochs)
    observe("fit(dataset) with the default shuffle=True", "batches requested in random order")
    observe("fit(dataset, shuffle=False)", "batches requested 0, 1, 2, ...")
