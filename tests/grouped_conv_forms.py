"""Grouped and split forms of one convolution, for tests/test_grouped_conv.py and its child.

No conftest import here: the child process that fits with XLA must start without op
determinism, which conftest turns on.
"""

import numpy as np
from tensorflow import keras

from recipes.grouped_conv import GroupedConv2D, grouped_to_split_weights, split_to_grouped_weights

# |actual - expected| <= 1e-5 + 1e-5 * |expected|, as the recipe says. Not atol alone: the
# float32 forms differ by up to 3.8e-6 on small random convolutions, too close to 1e-5.
TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}


def random_input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def randomize_weights(layer, seed=1):
    """Bias included (Keras initializes it to zero, which would hide a wrong bias mapping)."""
    random = np.random.default_rng(seed)
    layer.set_weights([random.normal(size=w.shape).astype("float32") for w in layer.weights])


def grouped_and_split_pair(input_shape, filters=4, groups=2):
    grouped = keras.layers.Conv2D(filters, 3, groups=groups, padding="same")
    grouped.build(input_shape)
    randomize_weights(grouped)
    split = GroupedConv2D(filters, 3, groups, padding="same")
    split.build(input_shape)
    split.set_weights(grouped_to_split_weights(grouped.get_weights(), groups))
    return grouped, split


def fit_grouped_and_split(jit_compile):
    """One SGD epoch in fit for each form; returns both compiled models and the layers."""
    x = random_input((8, 6, 6, 4))
    targets = random_input((8, 6, 6, 4), seed=3)
    grouped, split = grouped_and_split_pair(x.shape)
    models = []
    for layer in (grouped, split):
        model = keras.Sequential([keras.Input((6, 6, 4)), layer])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit_compile)
        models.append(model)
    before = grouped.get_weights()[0].copy()
    for model in models:
        model.fit(x, targets, batch_size=4, epochs=1, shuffle=False, verbose=0)
    assert not np.allclose(grouped.get_weights()[0], before)
    mapped = split_to_grouped_weights(split.get_weights(), 2)
    for trained, expected in zip(mapped, grouped.get_weights(), strict=True):
        np.testing.assert_allclose(trained, expected, **TOLERANCE)
    return models
