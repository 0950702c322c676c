"""The small regression data both training test modules use: batches, strategies, arrays."""

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np

INPUT_DIM = 4


def finite_floats(bound):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=32)


def batches_of(leading_shape, bound=3.0):
    """Arrays of shape leading_shape + (INPUT_DIM + 1,): features in front, the target last."""
    return hnp.arrays(np.float32, (*leading_shape, INPUT_DIM + 1), elements=finite_floats(bound))


def split_features_and_targets(array):
    return array[..., :INPUT_DIM], array[..., INPUT_DIM:]


def regression_data(samples=32, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(samples, INPUT_DIM)).astype("float32")
    targets = rng.normal(size=(samples, 1)).astype("float32")
    return features, targets
