"""Tests for recipes/custom_layer_config.py that need torch; run by the `torch` tox env only.

AvgPool2d and its numpy reference against `torch.nn.functional.avg_pool2d` itself.
"""

import hypothesis
import numpy as np
import pytest
import torch

from recipes.custom_layer_config import AvgPool2d, avg_pool2d_reference
from tests.test_custom_layer_config import TOLERANCE, pool_configurations


def torch_avg_pool2d(
    x_nhwc, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
):
    nchw = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    pooled = torch.nn.functional.avg_pool2d(
        nchw, kernel_size, stride, padding, ceil_mode, count_include_pad
    )
    return pooled.numpy().transpose(0, 2, 3, 1)


@hypothesis.given(pool_configurations())
def test_avg_pool2d_and_reference_equal_torch_avg_pool2d(configuration):
    x, kwargs = configuration
    expected = torch_avg_pool2d(x, **kwargs)
    np.testing.assert_allclose(avg_pool2d_reference(x, **kwargs), expected, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(AvgPool2d(**kwargs)(x), expected, atol=TOLERANCE, rtol=0)


def test_ceil_mode_cases_named_in_the_recipe_match_torch():
    ones = np.ones((1, 5, 5, 1), "float32")
    assert torch_avg_pool2d(ones, 2, 2, 1, ceil_mode=True).shape == (1, 3, 3, 1)
    column = np.ones((1, 4, 1, 1), "float32")
    np.testing.assert_allclose(torch_avg_pool2d(column, (2, 1), (3, 1), 0, True)[0, :, 0, 0], 1)


@pytest.mark.parametrize(("kernel_size", "padding"), [(3, 2), ((3, 4), (1, 3)), (1, 1)])
def test_torch_refuses_the_padding_that_avg_pool2d_refuses(kernel_size, padding):
    x = np.ones((1, 8, 8, 1), "float32")
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        torch_avg_pool2d(x, kernel_size, padding=padding)
    with pytest.raises(ValueError, match="padding must be at most half of kernel_size"):
        AvgPool2d(kernel_size, padding=padding)
