"""Title: Freeze layers by name, nested ones included, and make the freeze take effect.

In short:
    frozen = freeze_all_but(model, "classify")  # every layer, nested ones too, by its path
    model.compile(optimizer="adam", loss="mse")  # compile after every change of trainable
    print(trainable_counts(model))  # trainable weights and parameters, before and after
    # In a tape loop read model.trainable_weights at every step, in a tf.function made anew.

Problem: Fine-tuning freezes most of a model and trains a few layers, as the notes do with
`for layer in model.layers: if 'classify' in layer.name: continue; layer.trainable = False`.
Three things go wrong quietly. `model.layers` lists only the top-level layers of a subclassed
model, so a pattern that names a nested layer never sees it. `fit` ignores a change of
`trainable` made after training until the model is compiled again, and on Keras 2 one made
between `compile()` and the first `fit` too. And a hand-written training loop that took
`model.trainable_weights` once, before the freeze, keeps training the frozen layers.

Recipe:
    1. Walk every layer, nested ones included, with its path ("block/inner_dense"):
       `iter_layers(model)`.
    2. `freeze_all_but(model, pattern)`: layers without sub-layers whose path does not match
       the regular expression `pattern` (`re.search`) are frozen, the rest made trainable;
       a match on a container ("block") keeps all of it trainable.
    3. Call `model.compile(...)` after every change of `trainable`.
    4. In a custom loop read `model.trainable_weights` at every step (`train_step`); under
       `tf.function` that read happens at trace time, so wrap the step anew after a freeze.
    5. Check the result with `trainable_counts(model)`: weights and parameters, trainable
       and not.

Pitfalls:
    - `model.layers` of a subclassed model lists only its top-level layers; `iter_layers`
      also yields the layers nested inside them (a plain layer's sub-layers through its public
      attributes: `self.dense`, not `self._dense`).
    - Setting `trainable = False` on a layer of a model that has already trained is ignored by the
      next `fit` on every stack: the "frozen" layer keeps training until `compile()` is
      called again, after which it stays unchanged. No stack warns about it: Keras 3.15's
      check for a changed `trainable` sits after a `raise` and never runs.
    - A tape loop that read `model.trainable_weights` once, before the freeze, keeps updating
      the frozen layer; reading it at every step leaves the frozen layer unchanged. A
      `tf.function` of that step traced before the freeze still updates the frozen layer; a
      new `tf.function` of it does not.
    - After `freeze_all_but`, the trainable parameters are exactly those of the matching
      layers, and trainable plus non-trainable parameters equal `model.count_params()`.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): setting `trainable = False` after
      `compile()` but before the first `fit`, without compiling again, is ignored: `fit`
      and `train_on_batch` still update the layer. Keras 3.0 and later: the layer is frozen.
    - After a `fit`, `trainable = False` without compiling again: the next `train_on_batch`
      still updates the layer on Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21); on Keras 3.0
      and later it leaves it unchanged (Keras 3 traces the step anew for a batch instead of
      fit's iterator, and the new trace sees the freeze), while the next `fit` still trains it.

Sources: Keras guide "Transfer learning & fine-tuning" (keras.io/guides/transfer_learning,
    "the trainable attribute" and "recompile after changing trainable"); TensorFlow API docs
    "tf.keras.layers.Layer" (trainable, trainable_weights).

See also:
    - freeze_batchnorm: BatchNormalization needs its own freeze
    - branch_finetune: train a new branch on a frozen trunk
    - gan_trainable_toggle: trainable toggled between two compiled models
    - per_layer_learning_rates: slow layers down instead of freezing them

Run: python -m recipes.freeze_layers
"""

import re

import numpy as np
import tensorflow as tf
from tensorflow import keras


def _require_layer(name, value):
    if not isinstance(value, keras.layers.Layer):
        raise ValueError(f"{name} must be a keras Layer or Model, got {value!r}")


def _children(value):
    """The layers held by one attribute value: a layer, or a list, tuple or dict of them."""
    if isinstance(value, keras.layers.Layer):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, keras.layers.Layer)]
    return []


def _sub_layers(layer):
    # A model lists its own layers in `model.layers` (top-level ones only). A plain layer has
    # no public list: Keras tracks its sub-layers through the attributes they are assigned to
    # (`self.dense = Dense(...)`, lists and dicts of layers too), so read its public ones.
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    found = []
    for attribute, value in vars(layer).items():
        if not attribute.startswith("_"):
            found.extend(child for child in _children(value) if child is not layer)
    return found


def iter_layers(model):
    """Yields (path, layer) for every layer inside `model`, parents before their children.

    `path` joins the names from the top ("block/inner_dense"); each layer comes once.
    """
    _require_layer("model", model)
    seen = {id(model)}

    def walk(layer, prefix):
        for child in _sub_layers(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = prefix + child.name
            yield path, child
            yield from walk(child, path + "/")

    yield from walk(model, "")


def freeze_all_but(model, pattern):
    """Freezes every layer whose path does not match `pattern`; returns the frozen paths.

    Only layers without sub-layers are frozen, so a layer inside a frozen container can
    still be the one left trainable. Compile the model afterwards.
    """
    _require_layer("model", model)
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty regular expression string, got {pattern!r}")
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"pattern={pattern!r} is not a valid regular expression: {error}"
        ) from None
    # Setting trainable on a container sets it on everything inside, so start from all True.
    model.trainable = True
    frozen = []
    for path, layer in iter_layers(model):
        if _sub_layers(layer):
            continue
        layer.trainable = bool(regex.search(path))
        if not layer.trainable:
            frozen.append(path)
    return frozen


def trainable_counts(model):
    """Weights and scalar parameters of `model`, trainable and not, as a dict of ints."""
    _require_layer("model", model)

    def parameters(weights):
        return int(sum(np.prod(weight.shape) for weight in weights))

    return {
        "trainable_weights": len(model.trainable_weights),
        "trainable_parameters": parameters(model.trainable_weights),
        "non_trainable_weights": len(model.non_trainable_weights),
        "non_trainable_parameters": parameters(model.non_trainable_weights),
    }


def train_step(model, optimizer, loss_fn, features, targets):
    """One tape step that reads `model.trainable_weights` now, so a freeze made since counts."""
    _require_layer("model", model)
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got {optimizer!r}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    # Under tf.function this line runs only while tracing: the list is then fixed.
    variables = model.trainable_weights
    with tf.GradientTape() as tape:
        loss = loss_fn(targets, model(features, training=True))
    gradients = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))  # noqa: B905 - AutoGraph on TF 2.12
    return loss


class Block(keras.layers.Layer):
    """A layer holding two layers: a subclassed model's `layers` does not list them."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.inner_dense = keras.layers.Dense(units, activation="tanh", name="inner_dense")
        self.output_dense = keras.layers.Dense(units, name="output_dense")

    def call(self, inputs):
        return self.output_dense(self.inner_dense(inputs))


class TrunkAndClassifier(keras.Model):
    """A subclassed model: a trunk block, then a block named "classify" and a Dense head."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.trunk = Block(name="trunk")
        self.classify = Block(name="classify")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, inputs):
        return self.head(self.classify(self.trunk(inputs)))


def demo():
    features = np.random.default_rng(1).normal(size=(16, 4)).astype("float32")
    targets = np.ones((16, 1), "float32")
    model = TrunkAndClassifier()
    model(features)
    print("model.layers:", [layer.name for layer in model.layers])
    print("iter_layers: ", [path for path, _ in iter_layers(model)])
    print("before:", trainable_counts(model))
    print("frozen:", freeze_all_but(model, "classify"))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    print("after: ", trainable_counts(model))
    kernel = model.trunk.inner_dense.kernel.numpy().copy()
    model.fit(features, targets, epochs=2, verbose=0)
    print("trunk unchanged by fit:", np.array_equal(kernel, model.trunk.inner_dense.kernel.numpy()))


if __name__ == "__main__":
    demo()
