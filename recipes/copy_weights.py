"""Title: Copy weights between layers and models: get/set_weights, clone_model, and by name.

In short:
    target_layer.set_weights(source_layer.get_weights())  # layers built alike; copies values
    clone = keras.models.clone_model(model)  # fresh initial weights, not the trained ones
    clone.set_weights(model.get_weights())  # now the trained weights, exactly
    clone.compile(optimizer="adam", loss="mse")  # clone_model compiles it on Keras 3.9+ only
    report = copy_weights_by_name(source, target)  # other structure: by name, nested layers too
    print(report.copied, report.mismatched, report.missing)
    copy_weights_by_name(source, target, skip_mismatch=True)  # skip shape mismatches, not raise

Problem: Reusing trained layers in another model is `target.set_weights(source.get_weights())`
when the two are built alike. When they are not (a trunk nested in a Sequential block, a new
head, layers in another order), copying by position puts weights in the wrong place or fails
on a shape, and `keras.models.clone_model`, which looks like a copy, gives the clone fresh
initial weights, not the trained ones.

Recipe:
    1. Between two layers built alike: `target_layer.set_weights(source_layer.get_weights())`.
       A layer inside a nested Sequential block is `model.layers[0].layers[0]`.
    2. A copy of a whole model: `clone = keras.models.clone_model(model)`, then
       `clone.set_weights(model.get_weights())`.
    3. Into a model of a different structure: `report = copy_weights_by_name(source, target)`
       copies every layer whose name is in both models, nested layers included (layers
       that hold other layers are matched through their sub-layers), and returns
       `report.copied`, `report.mismatched` and `report.missing`. A single layer works as
       source or target too.
    4. A shape mismatch raises ValueError naming the layer and both shapes before any weight
       is copied; with `skip_mismatch=True` the layer is left as it was and listed in
       `report.mismatched` as (name, source shapes, target shapes).

Pitfalls:
    - `set_weights` copies values: changing the source afterwards leaves the target as it
      was. It raises ValueError "not compatible with provided weight shape" for a shape
      mismatch, and "expecting 0 weights" into a layer that was never built.
    - `clone_model` re-runs the initializers: the clone of a trained model holds fresh
      initial weights and shares no variable with the original. With seeded initializers
      those are exactly the original's initial weights again; unseeded, new random ones.
      `clone.set_weights(model.get_weights())` then gives exactly equal outputs.
    - `clone_model` rebuilds a nested Sequential block too, with the same layer names.
    - `copy_weights_by_name` refuses a model with two weighted layers of the same name, and
      a source or target without weights (build a subclassed model by calling it first).

Versions:
    - Keras 2 (tf-keras included) and Keras 3.0 to 3.8: the clone of a compiled model is not
      compiled. Keras 3.9 and later compile it from the original's compile config: equal
      loss and metrics entries in `get_compile_config()`, and a new optimizer object of the
      same class and config (its name aside).
    - Keras 3.5 only: `keras.Sequential([keras.Sequential([...], name="inner")])` without an
      input shape raises ValueError "has no defined input shape yet" at construction; 3.4
      and earlier, and 3.6 and later, build it. Start the inner block with `keras.Input`.

Sources: Keras API docs "clone_model" and "Layer weights APIs" (`get_weights`,
    `set_weights`); Keras guide "Transfer learning & fine-tuning"; keras-team/keras#16668
    (clone_model does not copy the trained weights: use set_weights); keras-team/keras#20888
    (Keras 3.9: clone_model keeps the compile config, fixing #20884).

See also:
    - load_weights_by_name: the same copy by name from a file
    - branch_finetune: a pretrained trunk loaded by layer name
    - model_building_styles: nested layers and unbuilt subclassed models
    - port_pytorch_weights: weights from a PyTorch model

Run: python -m recipes.copy_weights
"""

import collections

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2

CopyReport = collections.namedtuple("CopyReport", ["copied", "mismatched", "missing"])


def _weighted_layers(model, argument_name):
    """{name: layer} for every layer in `model` that owns weights and holds no sub-layers."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"{argument_name} must be a Keras model or layer, got {argument_name}={model!r}"
        )
    # `model.layers` lists only the top level; `_flatten_layers` recurses on Keras 2 and 3.
    layers = {}
    # include_self: a single built layer (a Dense) is its own leaf and can be copied too.
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not layer.weights or any(True for _ in layer._flatten_layers(include_self=False)):
            continue
        if layer.name in layers:
            raise ValueError(
                f"{argument_name}={model.name!r} has two layers named {layer.name!r}; "
                "names must be unique to copy by name"
            )
        layers[layer.name] = layer
    if not layers:
        raise ValueError(
            f"{argument_name}={model.name!r} has no weights; build it first (call a "
            "subclassed model on a sample input)"
        )
    return layers


def _shapes(layer):
    return [tuple(int(size) for size in weight.shape) for weight in layer.weights]


def copy_weights_by_name(source, target, skip_mismatch=False):
    """Copies the weights of every layer named alike in `source` and `target`, nested too.

    Returns CopyReport(copied, mismatched, missing): names copied; (name, source shapes,
    target shapes) skipped for a shape mismatch; target layer names not in `source`.
    """
    if not isinstance(skip_mismatch, (bool, np.bool_)):
        raise ValueError(
            f"skip_mismatch must be True or False, got skip_mismatch={skip_mismatch!r}"
        )
    source_layers = _weighted_layers(source, "source")
    target_layers = _weighted_layers(target, "target")
    pairs, mismatched, missing = [], [], []
    for name, target_layer in target_layers.items():
        if name not in source_layers:
            missing.append(name)
            continue
        source_shapes, target_shapes = _shapes(source_layers[name]), _shapes(target_layer)
        if source_shapes != target_shapes:
            if not skip_mismatch:
                raise ValueError(
                    f"layer {name!r}: source weight shapes {source_shapes} do not match "
                    f"target weight shapes {target_shapes}"
                )
            mismatched.append((name, source_shapes, target_shapes))
            continue
        pairs.append((name, source_layers[name], target_layer))
    # Every check ran before this line, so an error above leaves the target untouched.
    for _, source_layer, target_layer in pairs:
        target_layer.set_weights(source_layer.get_weights())
    return CopyReport([name for name, _, _ in pairs], mismatched, missing)


def _dense(units, seed, name):
    # Seeds >= 1: Keras 3.0 treats seed=0 as "no seed".
    return keras.layers.Dense(
        units, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name=name
    )


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    inputs = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    trunk = keras.Sequential([_dense(5, 1, "conv_a"), _dense(5, 2, "conv_b")], name="trunk")
    source = keras.Sequential([keras.Input((3,)), trunk, _dense(2, 3, "head")])
    source.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    source.fit(inputs, np.ones((4, 2)), epochs=2, verbose=0)
    print("nested layer model.layers[0].layers[0]:", source.layers[0].layers[0].name)

    clone = keras.models.clone_model(source)
    same = all(map(np.array_equal, clone.get_weights(), source.get_weights()))
    print("clone_model copies the trained weights:", same)
    clone.set_weights(source.get_weights())
    print("after set_weights, equal outputs:", np.array_equal(clone(inputs), source(inputs)))

    flat_inputs = keras.Input((3,))
    features = _dense(5, 12, "conv_b")(_dense(5, 11, "conv_a")(flat_inputs))
    target = keras.Model(flat_inputs, _dense(7, 13, "new_head")(features))
    print("copy_weights_by_name into a flat model:", copy_weights_by_name(source, target))
    wide = keras.Sequential([keras.Input((3,)), _dense(6, 21, "conv_a")])
    try:
        copy_weights_by_name(source, wide)
    except ValueError as error:
        print(f"shape mismatch: ValueError: {error}")
    print("skip_mismatch=True:", copy_weights_by_name(source, wide, skip_mismatch=True))


if __name__ == "__main__":
    demo()
