"""Title: Freeze BatchNormalization layers for fine-tuning, on every Keras.

In short:
    freeze_batchnorm(model)  # layer.trainable = False on every BN layer, nested models too
    model.compile(optimizer="adam", loss="mse")  # compile after every change of trainable
    # Not BatchNormalization(trainable=False): Keras 3.0 and 3.1 still train gamma and beta.
    # Freezing a trunk? Freeze its BN too: freeze_trunk(trunk), BN included by default.
    # In a tape loop call model(x, training=True): a frozen BN stays in inference mode.

Problem: Fine-tuning a pretrained trunk with BatchNormalization (BN) should leave its
gamma, beta and moving statistics alone. There are three ways to "freeze" a BN layer and
they freeze different things: `BatchNormalization(trainable=False)` at construction (the
notes' choice), `layer.trainable = False` later, and calling it with `training=False`. The
notes' choice silently trains gamma and beta on Keras 3.0 and 3.1; Keras 3's `fit` overrides
a `training=False` written into a functional graph; a tape loop that calls `model(x)` bare
never updates the moving statistics even of trainable BN; and freezing every layer except BN
(segmentation_models' encoder freeze) lets the moving statistics drift.

Recipe:
    1. Build the model, then set `layer.trainable = False` on every BN layer
       (`freeze_batchnorm(model)`, nested models included), then `compile()`.
    2. To freeze a whole trunk, freeze its BN layers too: `freeze_trunk(model)`, not
       `freeze_trunk(model, include_batchnorm=False)`.
    3. In a tape loop call `model(x, training=True)`; a BN frozen as in step 1 stays in
       inference mode there.
    4. Check with `batchnorm_state(layer)` before and after training.

Pitfalls:
    - `layer.trainable = False` after construction, then compile: gamma and beta leave
      `model.trainable_weights`, gamma, beta and the moving statistics stay bit-identical
      through `fit` (and a `training=True` tape step), and during `fit` the layer normalizes
      with its moving statistics (inference mode), on every stack.
    - A trainable BN trains gamma, beta and the moving statistics in `fit` and normalizes
      with the batch statistics.
    - A tape loop calling `model(x)` without `training=True` leaves the moving statistics of
      a trainable BN layer unchanged, while gamma and beta train; with `training=True` all
      four change.
    - Freezing every layer of an encoder except BN (segmentation_models' `freeze_model`):
      the Dense kernel stays, but `fit` on new data moves BN's gamma, beta and moving
      statistics and the encoder's inference outputs change. Freezing BN too keeps every
      encoder weight and output bit-identical.

Versions:
    - `BatchNormalization(trainable=False)` or `Dense(..., trainable=False)` at construction:
      Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21) and Keras 3.2 and later freeze the layer.
      Keras 3.0 and 3.1: `layer.trainable` says False, yet gamma and beta (a Dense kernel)
      stay in `model.trainable_weights` and `fit` updates them; BN's moving statistics stay
      and it normalizes with them.
    - BN called with `training=False` inside a functional model: on Keras 2 this holds during
      `fit` (moving statistics frozen and used, gamma and beta still trained). On Keras 3 (3.0
      to 3.15) `fit` calls the model with `training=True`, which replaces the graph's False:
      BN normalizes with the batch statistics and all four variables change, as if unfrozen.

Sources: Keras guide "Transfer learning & fine-tuning" (keras.io/guides/transfer_learning,
    "Important notes about BatchNormalization layer"); TensorFlow API docs
    "tf.keras.layers.BatchNormalization" ("About setting layer.trainable = False on a
    BatchNormalization layer"); keras-team/keras#19398 and #19432 (`trainable=False` at
    construction ignored on Keras 3.1); keras-team/keras#20285 (fit's training=True overrides
    a functional model's training=False); qubvel/segmentation_models `freeze_model` ("Set all
    layers non trainable, excluding BatchNormalization layers"); recipes/training_apis.py.

See also:
    - freeze_layers: freeze by name, compile after the change
    - branch_finetune: a frozen trunk with BN stays bit-identical
    - training_apis: training=True in tape loops

Run: python -m recipes.freeze_batchnorm
"""

import numpy as np
import tensorflow as tf
from tensorflow import keras

WAYS = ("constructor", "attribute", "call", "none")


def _require_model(name, value):
    if not isinstance(value, keras.Model):
        raise ValueError(f"{name} must be a keras.Model, got {value!r}")


def _all_layers(model):
    """Every layer in `model`, inside nested models too (a pretrained trunk is often one)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def freeze_batchnorm(model):
    """Sets `trainable = False` on every BN layer of `model`; returns their names. Compile next."""
    _require_model("model", model)
    frozen = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def freeze_trunk(model, include_batchnorm=True):
    """Freezes every layer of `model` that has weights; returns the frozen names.

    `include_batchnorm=False` is segmentation_models' `freeze_model`, the pitfall: BN layers
    stay trainable, so `fit` keeps updating their moving statistics.
    """
    _require_model("model", model)
    if not isinstance(include_batchnorm, (bool, np.bool_)):
        raise ValueError(f"include_batchnorm must be True or False, got {include_batchnorm!r}")
    frozen = []
    for layer in _all_layers(model):
        if isinstance(layer, keras.Model) or not layer.weights:
            continue
        if include_batchnorm or not isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def batchnorm_state(layer):
    """Copies of gamma, beta, moving_mean and moving_variance, as numpy arrays."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        raise ValueError(f"layer must be a keras.layers.BatchNormalization, got {layer!r}")
    names = ("gamma", "beta", "moving_mean", "moving_variance")
    return {name: getattr(layer, name).numpy().copy() for name in names}


def build_model(way="attribute", input_dim=4, seed=1):
    """Input -> BN "bn" -> Dense(1) "head", with BN frozen by `way`, not yet compiled.

    "constructor": `BatchNormalization(trainable=False)`; "attribute": `trainable = False`
    after construction; "call": `bn(x, training=False)`; "none": a trainable BN.
    """
    if way not in WAYS:
        raise ValueError(f"way must be one of {WAYS}, got {way!r}")
    if isinstance(input_dim, bool) or not isinstance(input_dim, (int, np.integer)) or input_dim < 1:
        raise ValueError(f"input_dim must be an int >= 1, got {input_dim!r}")
    # Seeds >= 1: Keras 3.0's initializers treat seed=0 as "no seed".
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 1:
        raise ValueError(f"seed must be an int >= 1, got {seed!r}")
    inputs = keras.Input(shape=(int(input_dim),))
    batchnorm = keras.layers.BatchNormalization(name="bn", trainable=way != "constructor")
    hidden = batchnorm(inputs, training=False) if way == "call" else batchnorm(inputs)
    head = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(int(seed)), name="head"
    )
    model = keras.Model(inputs, head(hidden))
    if way == "attribute":
        freeze_batchnorm(model)
    return model


def tape_step(model, optimizer, features, targets, training=True):
    """One MSE step; `training=None` calls `model(x)` bare, as the notes' loop does."""
    _require_model("model", model)
    # `1 in (True, False, None)` holds, so compare identities.
    if not any(training is allowed for allowed in (True, False, None)):
        raise ValueError(f"training must be True, False or None, got {training!r}")
    with tf.GradientTape() as tape:
        predictions = model(features) if training is None else model(features, training=training)
        loss = tf.reduce_mean(tf.square(predictions - targets))
    gradients = tape.gradient(loss, model.trainable_weights)
    optimizer.apply_gradients(zip(gradients, model.trainable_weights))  # noqa: B905 - TF 2.12
    return loss


def demo():
    rng = np.random.default_rng(1)
    features = (3 * rng.normal(size=(64, 4)) + 1).astype("float32")
    targets = rng.normal(size=(64, 1)).astype("float32")
    print(f"tensorflow {tf.__version__}, keras module {keras.__name__}")
    for way in WAYS:
        model = build_model(way)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = batchnorm_state(model.get_layer("bn"))
        model.fit(features, targets, batch_size=16, epochs=2, verbose=0)
        after = batchnorm_state(model.get_layer("bn"))
        changed = [name for name in before if not np.array_equal(before[name], after[name])]
        print(f"  frozen by {way:12} fit changed: {', '.join(changed) or 'nothing'}")


if __name__ == "__main__":
    demo()
