"""Tests for recipes/torch_dataloader.py that need no torch, on all five stacks.

A re-iterable class of NCHW numpy batches stands in for the DataLoader here; the tests that
need torch itself live in tests_torch/ and run in the `torch` tox env only.
"""

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.torch_dataloader import make_tape_step, nchw_to_nhwc, numpy_batches, to_numpy

BATCH_SIZE = 4
TOLERANCE = 1e-5


class ListLoader:
    """Re-iterable like a DataLoader: each `iter()` starts a new pass over its batches."""

    def __init__(self, images_nchw, labels, batch_size):
        self.batches = [
            (images_nchw[start : start + batch_size], labels[start : start + batch_size])
            for start in range(0, len(images_nchw), batch_size)
        ]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def regression_data(samples=16, seed=0):
    random = np.random.default_rng(seed)
    images_nchw = random.normal(size=(samples, 3, 5, 4)).astype("float32")
    labels = random.normal(size=(samples, 1)).astype("float32")
    return images_nchw, labels


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(5, 4, 3)),
            keras.layers.Conv2D(2, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def max_difference(weights, reference):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights, reference, strict=True))


def assert_train_on_batch_and_tape_loop_reach(reference, loader):
    """One epoch of `numpy_batches(loader)` by train_on_batch, then by a tape step."""
    on_batch_model = small_model()
    for images, batch_labels in numpy_batches(loader, epochs=1):
        on_batch_model.train_on_batch(images, batch_labels)
    assert max_difference(on_batch_model.get_weights(), reference) <= TOLERANCE
    tape_model = small_model()
    step = make_tape_step(tape_model, keras.losses.MeanSquaredError(), keras.optimizers.SGD(0.05))
    for images, batch_labels in numpy_batches(loader, epochs=1):
        step(images, batch_labels)
    assert max_difference(tape_model.get_weights(), reference) <= TOLERANCE


@hypothesis.given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=4, max_dims=4, max_side=5),
        elements=st.floats(-9, 9, width=32),
    )
)
def test_nchw_to_nhwc_moves_the_channel_axis_last(batch):
    converted = nchw_to_nhwc(batch)
    n, c, h, w = batch.shape
    assert converted.shape == (n, h, w, c) and converted.flags["C_CONTIGUOUS"]
    for index in np.ndindex(batch.shape):
        sample, channel, row, column = index
        assert converted[sample, row, column, channel] == batch[index]


def test_conversions_reject_a_wrong_rank_or_type():
    with pytest.raises(ValueError, match=r"rank 4 \(N, C, H, W\), got shape \(2, 3, 4\)"):
        nchw_to_nhwc(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="batch must be a torch tensor or a numpy array, got list"):
        to_numpy([1, 2])
    with pytest.raises(ValueError, match="loader must be iterable, got 3"):
        numpy_batches(3)
    with pytest.raises(ValueError, match="epochs must be None or an int >= 1, got 0"):
        numpy_batches([], epochs=0)
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        make_tape_step("model", keras.losses.MeanSquaredError(), keras.optimizers.SGD())
    assert len(list(numpy_batches([], epochs=np.int64(2)))) == 0


def test_numpy_batches_repeats_the_loader_every_epoch_in_nhwc():
    images_nchw, labels = regression_data(10)
    loader = ListLoader(images_nchw, labels, BATCH_SIZE)
    batches = list(numpy_batches(loader, epochs=2))
    assert [len(batch_labels) for _, batch_labels in batches] == [4, 4, 2] * 2
    np.testing.assert_array_equal(
        np.concatenate([images for images, _ in batches[:3]]), images_nchw.transpose(0, 2, 3, 1)
    )
    np.testing.assert_array_equal(batches[3][0], batches[0][0])


def test_train_on_batch_and_tape_loop_on_converted_batches_match_fit_on_arrays(observe):
    images_nchw, labels = regression_data()
    reference_model = small_model()
    initial_weights = reference_model.get_weights()
    reference_model.fit(
        images_nchw.transpose(0, 2, 3, 1), labels, batch_size=BATCH_SIZE, shuffle=False, verbose=0
    )
    reference = reference_model.get_weights()
    assert max_difference(reference, initial_weights) > 1e-3
    assert_train_on_batch_and_tape_loop_reach(
        reference, ListLoader(images_nchw, labels, BATCH_SIZE)
    )
    observe("train_on_batch and tape loop over numpy_batches(loader)", "weights of fit on arrays")


def test_fit_rejects_a_reiterable_loader_and_takes_numpy_batches(version_split):
    images_nchw, labels = regression_data()
    loader = ListLoader(images_nchw, labels, BATCH_SIZE)
    version_split(
        "fit(x=a re-iterable loader object, not a generator)",
        outcome_of(
            lambda: small_model().fit(loader, epochs=1, verbose=0),
            ["Failed to find data adapter", "Unrecognized data type"],
        ),
        {
            "keras<3": "ValueError: Failed to find data adapter",
            "keras>=3": "ValueError: Unrecognized data type",
        },
    )
    history = small_model().fit(
        numpy_batches(loader), steps_per_epoch=len(loader), epochs=2, shuffle=False, verbose=0
    )
    assert len(history.epoch) == 2


def test_demo_trains_with_or_without_torch(demo_output):
    printed = demo_output("torch_dataloader")
    assert printed.count("train_on_batch on (8, 8, 8, 3)") == 3
    assert "steps_per_epoch=3): 2 epochs" in printed
