"""Tests for recipes/torch_dataloader.py that need torch; run by the `torch` tox env only.

They live outside `tests/`, which the five stack envs run, so those envs neither collect nor
skip them. The root conftest.py still applies (seeds, fixtures, version_split).
"""

import numpy as np
import pytest
import torch

from conftest import outcome_of
from recipes import torch_dataloader
from recipes.torch_dataloader import make_loader, numpy_batches, to_numpy

# The data, model and tolerance of the torch-free tests, so both prove the same numbers.
from tests.test_torch_dataloader import (
    BATCH_SIZE,
    TOLERANCE,
    assert_train_on_batch_and_tape_loop_reach,
    max_difference,
    regression_data,
    small_model,
)


def weights_of_fit_on_arrays(images_nchw, labels):
    model = small_model()
    initial = model.get_weights()
    model.fit(
        images_nchw.transpose(0, 2, 3, 1), labels, batch_size=BATCH_SIZE, shuffle=False, verbose=0
    )
    assert max_difference(model.get_weights(), initial) > 1e-3
    return model.get_weights()


class NhwcDataset(torch.utils.data.Dataset):
    """A map-style dataset that permutes each CHW sample to HWC, for fit on Keras 3."""

    def __init__(self, images_nchw, labels):
        self.images = torch.from_numpy(images_nchw)
        self.labels = torch.from_numpy(labels)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].permute(1, 2, 0).contiguous(), self.labels[index]


def test_the_recipe_sees_torch_and_converts_its_tensors():
    assert torch_dataloader.torch is torch
    tensor = torch.arange(6.0, requires_grad=True).reshape(1, 1, 2, 3) * 2
    array = to_numpy(tensor)
    assert isinstance(array, np.ndarray) and array.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(array.ravel(), np.arange(6.0) * 2)


def test_dataloader_batches_convert_to_the_transposed_arrays_in_order(observe):
    images_nchw, labels = regression_data(10)
    loader = make_loader(images_nchw, labels, BATCH_SIZE)
    batches = list(numpy_batches(loader, epochs=1))
    assert [images.shape for images, _ in batches] == [(4, 5, 4, 3), (4, 5, 4, 3), (2, 5, 4, 3)]
    np.testing.assert_array_equal(
        np.concatenate([images for images, _ in batches]), images_nchw.transpose(0, 2, 3, 1)
    )
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), labels)
    observe("numpy_batches(DataLoader of NCHW tensors)", "NHWC numpy batches, in order")


def test_dataloader_into_train_on_batch_and_tape_loop_matches_fit_on_arrays(observe):
    images_nchw, labels = regression_data()
    reference = weights_of_fit_on_arrays(images_nchw, labels)
    assert_train_on_batch_and_tape_loop_reach(
        reference, make_loader(images_nchw, labels, BATCH_SIZE)
    )
    observe("DataLoader -> train_on_batch and tape loop", "weights of fit on arrays")


def test_fit_takes_an_nhwc_dataloader_directly(version_split):
    images_nchw, labels = regression_data()
    reference = weights_of_fit_on_arrays(images_nchw, labels)
    loader = torch.utils.data.DataLoader(NhwcDataset(images_nchw, labels), batch_size=BATCH_SIZE)
    model = small_model()

    def fit_and_compare():
        model.fit(loader, epochs=1, shuffle=False, verbose=0)
        assert max_difference(model.get_weights(), reference) <= TOLERANCE

    # Only Keras 3.15 runs here (the torch env); other stacks would be news.
    version_split(
        "fit(x=torch DataLoader of NHWC batches)",
        outcome_of(fit_and_compare),
        {"keras>=3.15": "works"},
    )


def test_fit_on_an_nchw_dataloader_fails_for_a_channels_last_model(observe):
    images_nchw, labels = regression_data()
    loader = make_loader(images_nchw, labels, BATCH_SIZE)
    with pytest.raises(ValueError, match="expected axis -1 of input shape to have value 3"):
        small_model().fit(loader, epochs=1, shuffle=False, verbose=0)
    observe("fit(x=torch DataLoader of NCHW batches), channels-last model", "ValueError")


def test_make_loader_rejects_a_bad_batch_size():
    images_nchw, labels = regression_data(4)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        make_loader(images_nchw, labels, 0)
    assert len(make_loader(images_nchw, labels, np.int64(2))) == 2
