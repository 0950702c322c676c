"""Title: One model built three ways (Functional, Sequential, subclassed), and its nested layers.

In short:
    inputs = keras.Input((4,))  # two heads on one trunk: Functional or subclassed, not Sequential
    features = keras.layers.Dense(8, activation="relu")(inputs)
    heads = [keras.layers.Dense(2)(features), keras.layers.Dense(1)(features)]
    two_heads = keras.Model(inputs, heads)
    model = MySubclassedModel()  # a subclassed model has no weights until it is called
    build_and_load_weights(model, "model.weights.h5", sample_batch)  # calls it, then loads
    freeze_by_name(model, ["block_dense"])  # finds nested layers, which model.layers misses
    model.compile(optimizer="adam", loss="mse")  # compile after freezing

Problem: The same network can be written as a `keras.Sequential` stack, a Functional graph or
a `keras.Model` subclass. The three give the same numbers once they hold the same weights,
but they differ where it hurts: Sequential cannot branch into two heads, a subclassed model
has no weights until it is called (so `load_weights` into a fresh one fails, or on some
releases silently loads nothing), and its `model.layers` lists only the top-level layers,
so freezing a nested layer by name finds nothing there.

Recipe:
    1. `sequential_model`, `functional_model` and `SubclassedModel` build the same two Dense
       layers ("hidden", "output"); `target.set_weights(source.get_weights())` copies the
       weights across, in the same order for all three.
    2. Two outputs from one trunk: `functional_two_heads` (a Functional model with two
       outputs) or `TwoHeadedModel` (a subclass whose `call` returns a tuple).
    3. Build a subclassed model before loading weights: `build_and_load_weights(model, path,
       sample_input)` calls it on a sample input, then loads.
    4. `walk_layers(model)` lists every layer inside the model, nested ones included;
       `freeze_by_name(model, names)` sets `trainable = False` on the named ones. Freeze
       before `compile()`.

Pitfalls:
    - The three styles give exactly equal outputs once the weights are copied across.
    - Keras 2 (tf-keras included) refuses any layer that returns two tensors inside a
      Sequential model: ValueError "should have a single output tensor", when the model is
      built. Keras 3 accepts it as the last layer (the model then returns a tuple), but a
      layer after it raises ValueError (it takes "1 input(s)" and received two):
      a Sequential trunk cannot feed two heads, so write those Functional or subclassed.
    - A subclassed model has no weights until it is called. `load_weights` of a
      `.weights.h5` into one that was never called raises ValueError "expected 0
      variables" on Keras 2 and "has not yet been built" on Keras 3.7 and later, and on Keras
      3.0 to 3.6 returns without error having loaded nothing (see Versions). After calling the model
      on a sample input, the weights load exactly, from every format the stack writes.
    - Keras 2 also writes a legacy `.h5` (`save_weights("w.h5")`) and a TensorFlow
      checkpoint (`save_weights("ckpt")`). Loading the `.h5` into an unbuilt subclassed
      model raises ValueError "Call the Model first"; a checkpoint loads without error and
      restores the weights exactly when the model is first called (deferred restoration).
    - `model.layers` of a subclassed model lists only the layers assigned to the model
      itself; a Dense inside a block inside a block is not there. `walk_layers` finds it,
      and freezing it by name keeps its weights exactly unchanged through `fit` while the
      other layers train.
    - `walk_layers` uses `Layer._flatten_layers`, private but present on every stack
      tested; `Layer.submodules` (public, from `tf.Module`) exists on Keras 2 only.

Versions:
    - Keras 2 (tf-keras included): a multi-output layer in Sequential raises ValueError
      "should have a single output tensor"; `save_weights` writes `.weights.h5`, legacy
      `.h5` and TensorFlow checkpoints; `layer.submodules` exists.
    - Keras 3: `save_weights` accepts only `.weights.h5` (ValueError "must end in
      `.weights.h5`" for "w.h5" and "ckpt"); layers have no `submodules`.
    - Keras 3.0 to 3.6: `load_weights` of a `.weights.h5` into a never-called subclassed
      model returns without error and loads nothing: called afterwards, the model has
      its fresh initial weights. 3.7 and later raise ValueError "has not yet been built".

Sources: Keras guides "The Sequential model" (keras.io/guides/sequential_model/: "not
    appropriate when ... your model has multiple inputs or multiple outputs"), "The
    Functional API" and "Making new layers and models via subclassing"; TensorFlow guide
    "Training checkpoints" (deferred restoration); keras-team/keras#20530 (Keras 3.7: raise
    on `load_weights` into an unbuilt model); tensorflow/tensorflow#44240 (why a subclassed
    model must be built before `load_weights`).

See also:
    - freeze_layers: freeze nested layers by name
    - load_weights_by_name: load weights into a model of another structure
    - copy_weights: copy weights between models

Run: python -m recipes.model_building_styles
"""

import numbers
import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _positive_int(argument_name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument_name} must be an integer >= 1, got {argument_name}={value!r}")
    return int(value)


def _seeded(seed):
    # Seeds >= 1: Keras 3.0 treats seed=0 as "no seed".
    return keras.initializers.GlorotUniform(seed=seed)


def _sizes(input_size, hidden_size, output_size, seed):
    return (
        _positive_int("input_size", input_size),
        _positive_int("hidden_size", hidden_size),
        _positive_int("output_size", output_size),
        _positive_int("seed", seed),
    )


def _hidden(hidden_size, seed):
    return keras.layers.Dense(
        hidden_size, activation="relu", kernel_initializer=_seeded(seed), name="hidden"
    )


def _head(output_size, seed, name="output"):
    return keras.layers.Dense(output_size, kernel_initializer=_seeded(seed), name=name)


def sequential_model(input_size=4, hidden_size=8, output_size=2, seed=1):
    input_size, hidden_size, output_size, seed = _sizes(input_size, hidden_size, output_size, seed)
    return keras.Sequential(
        [keras.Input((input_size,)), _hidden(hidden_size, seed), _head(output_size, seed + 1)]
    )


def functional_model(input_size=4, hidden_size=8, output_size=2, seed=1):
    input_size, hidden_size, output_size, seed = _sizes(input_size, hidden_size, output_size, seed)
    inputs = keras.Input((input_size,))
    outputs = _head(output_size, seed + 1)(_hidden(hidden_size, seed)(inputs))
    return keras.Model(inputs, outputs)


class SubclassedModel(keras.Model):
    """The same two Dense layers; no weights until called (or built)."""

    def __init__(self, hidden_size=8, output_size=2, seed=1, **kwargs):
        hidden_size, output_size, seed = _sizes(1, hidden_size, output_size, seed)[1:]
        super().__init__(**kwargs)
        self.hidden = _hidden(hidden_size, seed)
        # Not `self.output`: Keras models already have an `output` property.
        self.head = _head(output_size, seed + 1)

    def call(self, inputs):
        return self.head(self.hidden(inputs))


def functional_two_heads(input_size=4, hidden_size=8, output_size=2, seed=1):
    """One trunk, two outputs: `model(x)` returns a list of two tensors."""
    input_size, hidden_size, output_size, seed = _sizes(input_size, hidden_size, output_size, seed)
    inputs = keras.Input((input_size,))
    features = _hidden(hidden_size, seed)(inputs)
    first = _head(output_size, seed + 1, name="head_a")(features)
    second = _head(output_size, seed + 2, name="head_b")(features)
    return keras.Model(inputs, [first, second])


class TwoHeadedModel(keras.Model):
    """One trunk, two outputs: `model(x)` returns a tuple of two tensors."""

    def __init__(self, hidden_size=8, output_size=2, seed=1, **kwargs):
        hidden_size, output_size, seed = _sizes(1, hidden_size, output_size, seed)[1:]
        super().__init__(**kwargs)
        self.hidden = _hidden(hidden_size, seed)
        self.head_a = _head(output_size, seed + 1, name="head_a")
        self.head_b = _head(output_size, seed + 2, name="head_b")

    def call(self, inputs):
        features = self.hidden(inputs)
        return self.head_a(features), self.head_b(features)


class Block(keras.layers.Layer):
    """A layer that owns a Dense layer: one level of nesting."""

    def __init__(self, units=4, seed=1, **kwargs):
        units, seed = _positive_int("units", units), _positive_int("seed", seed)
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(
            units, kernel_initializer=_seeded(seed), name=f"{self.name}_dense"
        )

    def call(self, inputs):
        return tf.nn.relu(self.dense(inputs))


class Stage(keras.layers.Layer):
    """A layer that owns a Block: the Block's Dense is two levels below the model."""

    def __init__(self, units=4, seed=1, **kwargs):
        units, seed = _positive_int("units", units), _positive_int("seed", seed)
        super().__init__(**kwargs)
        self.block = Block(units, seed, name=f"{self.name}_block")

    def call(self, inputs):
        return self.block(inputs)


class NestedModel(keras.Model):
    """`layers` lists "stage" and "head"; "stage_block_dense" sits two levels deeper."""

    def __init__(self, units=4, output_size=2, seed=1, **kwargs):
        units = _positive_int("units", units)
        output_size, seed = _sizes(1, 1, output_size, seed)[2:]
        super().__init__(**kwargs)
        self.stage = Stage(units, seed, name="stage")
        self.head = _head(output_size, seed + 1, name="head")

    def call(self, inputs):
        return self.head(self.stage(inputs))


def walk_layers(model):
    """Every layer inside `model` (a Keras layer or model), depth first, nested included.

    `model.layers` stops at the top level and `submodules` exists on Keras 2 only;
    `_flatten_layers` is what Keras itself uses to recurse, on Keras 2 and 3 alike.
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(f"model must be a Keras layer or model, got model={model!r}")
    return list(model._flatten_layers(include_self=False, recursive=True))


def freeze_by_name(model, names):
    """Sets trainable=False on every layer in `model` (nested too) named in `names`.

    Returns the frozen layers. Call it before compile().
    """
    if not isinstance(names, (list, tuple, set)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names must be a list of layer names, got names={names!r}")
    layers = [layer for layer in walk_layers(model) if layer.name in set(names)]
    missing = sorted(set(names) - {layer.name for layer in layers})
    if missing:
        raise ValueError(f"names={missing!r} name no layer in the model")
    for layer in layers:
        layer.trainable = False
    return layers


def build_and_load_weights(model, weights_path, sample_input):
    """Calls `model` on `sample_input` so its weights exist, then loads `weights_path`."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got model={model!r}")
    if not isinstance(weights_path, (str, os.PathLike)):
        raise ValueError(f"weights_path must be a path, got weights_path={weights_path!r}")
    if sample_input is None:
        raise ValueError("sample_input must be a batch the model accepts, got sample_input=None")
    model(sample_input)
    model.load_weights(weights_path)
    return model


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    inputs = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    functional = functional_model(seed=1)
    sequential, subclassed = sequential_model(seed=11), SubclassedModel(seed=21)
    subclassed(inputs)
    for model in (sequential, subclassed):
        model.set_weights(functional.get_weights())
    outputs = [np.asarray(model(inputs)) for model in (functional, sequential, subclassed)]
    print(
        "three styles, copied weights, equal outputs:",
        all(np.array_equal(outputs[0], out) for out in outputs),
    )

    nested = NestedModel()
    nested(inputs)
    print("model.layers:", [layer.name for layer in nested.layers])
    print("walk_layers: ", [layer.name for layer in walk_layers(nested)])

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "nested.weights.h5")
        nested.save_weights(path)
        unbuilt = NestedModel(seed=5)
        try:
            unbuilt.load_weights(path)
            unbuilt(inputs)
            loaded = np.array_equal(unbuilt.head.get_weights()[0], nested.head.get_weights()[0])
            print(f"load_weights before building: no error, weights loaded: {loaded}")
        except ValueError as error:
            print(f"load_weights before building: ValueError: {str(error)[:70]}")
        restored = build_and_load_weights(NestedModel(seed=5), path, inputs)
        same = all(
            np.array_equal(a, b)
            for a, b in zip(nested.get_weights(), restored.get_weights(), strict=True)
        )
        print("build_and_load_weights: exact weights", same)


if __name__ == "__main__":
    demo()
