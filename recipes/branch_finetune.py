"""Title: Train a new branch on a frozen, pretrained trunk loaded by layer name.

In short:
    model, branch = build_trunk_with_branch()  # trunk layer names as saved, plus "classify"
    load_trunk_by_name("trunk.keras", model)  # copies weights layer by layer, matched by name
    freeze_all_but_branch(model)  # trainable = False after construction, BN included
    branch.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    branch.fit(features, labels, epochs=10)  # the trunk stays bit-identical

Problem: You trained a trunk model (with BatchNormalization) and saved it. Now you build the
same trunk with a new "classify" branch, load the trunk's weights by layer name, freeze
everything but the branch and train the branch, with `fit` or with a GradientTape loop. The
field notes do it with `load_weights(path, by_name=True)`, which fails on several stacks,
and with `BatchNormalization(trainable=False)`, which Keras 3.0 and 3.1 ignore (see the
freeze_batchnorm recipe). The proof that it worked is a trunk that did not move at all.

Recipe:
    1. Build the trunk, train it, `model.save(path)` (`.keras`, or `.h5` for legacy code).
    2. Build the trunk again with the same layer names and add the branch; its layers
       carry "classify" in their names.
    3. `load_trunk_by_name(path, model)`: load the saved model and copy its weights layer by
       layer, matched by name, with get_weights/set_weights (`copy_weights_by_name`). A
       shape mismatch raises ValueError naming the layer and both shapes.
    4. `freeze_all_but_branch(model)`: `layer.trainable = False` on every layer whose name
       lacks "classify", BatchNormalization included, set after construction; then compile.
    5. Train the branch with `fit`, or with `train_branch_with_tape`, which reads
       `model.trainable_weights` (the branch only) and calls the model with training=True:
       a frozen BatchNormalization runs in inference mode even then.

Pitfalls:
    - After branch training with `fit` or with the tape loop, the trunk's weights and BN
      moving statistics are bit-identical to the saved trunk's, the trunk's outputs are
      unchanged, and the branch's loss has fallen.
    - `load_weights(path, by_name=True)` cannot be relied on (see Versions), hence the
      name-matching copy: it loads the trunk from a `.keras` file on every stack, and from
      a legacy `.h5` file too when the trunk was compiled with a loss object.
    - keras-yolo3's `load_weights(path, by_name=True, skip_mismatch=True)` loads a legacy
      `.h5` trunk bit-identical on every stack, Keras 3.0 to 3.7 included, but it loads what
      fits and only warns about the rest: from a `.keras` file Keras 2.13 and later Keras 2
      load by position and leave `trunk_output` at its initial weights (see Versions).
    - A trunk whose layer names differ from the new model's loads nothing by name;
      `copy_weights_by_name` raises ValueError instead of copying nothing.
    - A trunk saved to legacy `.h5` after compiling with `loss="mse"` does not load on every
      stack, even with compile=False (see Versions); compile it with
      `keras.losses.MeanSquaredError()` (or "mean_squared_error"), as the recipe does.

Versions:
    - `load_weights("trunk.h5", by_name=True)` (a full model saved by `model.save`): Keras 2
      (tf-keras included) and Keras 3.8 and later load the trunk's layers; Keras 3.0 to 3.7
      raise ValueError "Weight count mismatch for top-level weights".
    - `load_weights("trunk.keras", by_name=True)`: Keras 2.12 writes `.keras` as HDF5 and
      loads it by name; Keras 2.13 and later Keras 2 (tf-keras included) ignore by_name and
      load by position, so the trunk head's kernel meets the branch's first layer: ValueError
      "Shape mismatch"; Keras 3.0 to 3.10 raise ValueError "Invalid keyword arguments";
      Keras 3.11 and later raise ValueError "`by_name` only supports loading legacy '.h5'".
    - `load_weights("trunk.h5", by_name=True, skip_mismatch=True)`: the trunk loads
      bit-identical on every stack; Keras 3.0 to 3.7 warn (UserWarning "Skipping loading
      top-level weights") where by_name alone raises.
    - `load_weights("trunk.keras", by_name=True, skip_mismatch=True)`: Keras 2.12 loads the
      trunk by name; Keras 2.13 and later Keras 2 (tf-keras included) load `trunk_dense` and
      `trunk_bn` by position, leave `trunk_output` at its initial weights and warn
      (UserWarning "Could not load weights in object"); Keras 3 raises the same ValueErrors
      as without skip_mismatch.
    - `load_model("trunk.h5", compile=False)` of a trunk compiled with `loss="mse"`: Keras 2
      and Keras 3.3 and later load it; Keras 3.0 to 3.2 drop compile=False for `.h5` and
      raise TypeError "Could not locate function 'mse'".

Sources: Keras guide "Transfer learning & fine-tuning" (keras.io/guides/transfer_learning);
    TensorFlow API docs "tf.keras.Model.load_weights" (by_name, HDF5 only);
    Keras 3 `load_weights` source (keras/src/saving/saving_api.py; by_name checked per
    format from 3.11); Keras 3.3 `load_model` source (passes compile to the `.h5` loader);
    qqwweee/keras-yolo3 `train.py` (`load_weights(weights_path, by_name=True,
    skip_mismatch=True)`).

See also:
    - load_weights_by_name: by-name loading from .h5, .keras and .weights.h5
    - copy_weights: get/set_weights, clone_model and by name
    - freeze_batchnorm: why BatchNormalization(trainable=False) is not enough
    - freeze_layers: freeze nested layers by pattern

Run: python -m recipes.branch_finetune
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
BRANCH_MARKER = "classify"


def build_trunk(input_dim=4):
    """The pretrained part: Dense, BatchNormalization, and a regression head."""
    inputs = keras.Input((input_dim,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="trunk_dense")(inputs)
    features = keras.layers.BatchNormalization(name="trunk_bn")(hidden)
    output = keras.layers.Dense(1, name="trunk_output")(features)
    return keras.Model(inputs, output, name="trunk")


def build_trunk_with_branch(input_dim=4, num_classes=3):
    """The trunk, same layer names, plus a "classify" branch on its BN features.

    Returns (model, branch): `model` outputs [trunk output, class probabilities]; `branch`
    shares its layers and outputs the probabilities only, so it is what `fit` trains.
    """
    inputs = keras.Input((input_dim,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="trunk_dense")(inputs)
    features = keras.layers.BatchNormalization(name="trunk_bn")(hidden)
    output = keras.layers.Dense(1, name="trunk_output")(features)
    branch_hidden = keras.layers.Dense(8, activation="relu", name="classify_hidden")(features)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="classify")(
        branch_hidden
    )
    model = keras.Model(inputs, [output, probabilities], name="trunk_with_branch")
    return model, keras.Model(inputs, probabilities, name="branch")


def _require_model(argument_name, value):
    if not isinstance(value, keras.Model):
        raise ValueError(f"{argument_name} must be a keras.Model, got {value!r}")


def copy_weights_by_name(source, target):
    """Copies every weighted layer of `source` into the `target` layer of the same name.

    Layers only one model has are left alone. Returns the copied layer names. Raises
    ValueError when no name matches (a by-name load that would load nothing) or when a
    matched layer's weight shapes differ. Only top-level layers are matched.
    """
    _require_model("source", source)
    _require_model("target", target)
    target_layers = {layer.name: layer for layer in target.layers}
    copied = []
    for layer in source.layers:
        weights = layer.get_weights()
        destination = target_layers.get(layer.name)
        if not weights or destination is None:
            continue
        source_shapes = [tuple(weight.shape) for weight in weights]
        target_shapes = [tuple(weight.shape) for weight in destination.get_weights()]
        if source_shapes != target_shapes:
            raise ValueError(
                f"layer {layer.name!r}: source weight shapes {source_shapes} differ from "
                f"target weight shapes {target_shapes}"
            )
        destination.set_weights(weights)
        copied.append(layer.name)
    if not copied:
        raise ValueError(
            f"no weighted layer of source {source.name!r} has a namesake in target "
            f"{target.name!r}; source layers: {[layer.name for layer in source.layers]}"
        )
    return copied


def load_trunk_by_name(path, model):
    """Loads the model saved at `path` and copies its weights into `model` by layer name.

    `load_weights(path, by_name=True)` refuses `.keras` and `.weights.h5` files on Keras 3
    and fails on Keras 3.0 to 3.7 even for a legacy `.h5`; this works on every stack.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path must name a saved model file, got {path!r}")
    _require_model("model", model)
    saved = keras.models.load_model(path, compile=False)
    return copy_weights_by_name(saved, model)


def freeze_all_but_branch(model, branch_marker=BRANCH_MARKER):
    """Sets `trainable = False` on every layer whose name lacks `branch_marker`.

    Set after construction: Keras 3.0 and 3.1 ignore `trainable=False` given to a constructor.
    Compile (again) afterwards. Returns the names of the layers left trainable.
    """
    _require_model("model", model)
    if not isinstance(branch_marker, str) or not any(
        branch_marker in layer.name for layer in model.layers
    ):
        raise ValueError(
            f"branch_marker must be a string found in a layer name, got {branch_marker!r}"
        )
    for layer in model.layers:
        if branch_marker not in layer.name:
            layer.trainable = False
    return [layer.name for layer in model.layers if layer.trainable and layer.weights]


def train_branch_with_tape(branch, features, labels, optimizer, epochs=1, batch_size=16):
    """A GradientTape loop over the branch's trainable weights; returns the mean loss per epoch."""
    _require_model("branch", branch)
    loss_function = keras.losses.SparseCategoricalCrossentropy()
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(batch_size)
    epoch_losses = []
    for _ in range(epochs):
        batch_losses = []
        for batch_features, batch_labels in dataset:
            with tf.GradientTape() as tape:
                # training=True is safe: a BatchNormalization with trainable=False runs in
                # inference mode regardless, so its moving statistics stay put.
                loss = loss_function(batch_labels, branch(batch_features, training=True))
            # Read at each step: the freeze decides what trains.
            variables = branch.trainable_weights
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            batch_losses.append(float(loss))
        epoch_losses.append(float(np.mean(batch_losses)))
    return epoch_losses


def example_data(samples=96, input_dim=4, num_classes=3, seed=1):
    """Regression targets for the trunk and class labels for the branch."""
    random = np.random.default_rng(seed)
    features = random.normal(size=(samples, input_dim)).astype("float32")
    targets = (features @ random.normal(size=(input_dim, 1))).astype("float32")
    labels = np.argmax(features[:, :num_classes], axis=1).astype("int64")
    return features, targets, labels


def train_and_save_trunk(path, features, targets, epochs=5):
    """Step 1: trains the trunk (BN moving statistics included) and saves it to `path`."""
    trunk = build_trunk(features.shape[1])
    # A loss object, not "mse": Keras 3.0 to 3.2 cannot load a legacy .h5 compiled with "mse".
    trunk.compile(optimizer=keras.optimizers.Adam(0.01), loss=keras.losses.MeanSquaredError())
    trunk.fit(features, targets, epochs=epochs, batch_size=16, verbose=0)
    trunk.save(path)
    return trunk


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    features, targets, labels = example_data()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "trunk.keras")
        trunk = train_and_save_trunk(path, features, targets)
        model, branch = build_trunk_with_branch(features.shape[1])
        print("copied by name:", load_trunk_by_name(path, model))
    print("trainable after freezing:", freeze_all_but_branch(model))
    branch.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    history = branch.fit(features, labels, epochs=10, batch_size=16, verbose=0)
    losses = history.history["loss"]
    print(f"branch fit: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    tape_losses = train_branch_with_tape(
        branch, features, labels, keras.optimizers.Adam(0.01), epochs=5
    )
    print(f"branch tape loop: loss {tape_losses[0]:.3f} -> {tape_losses[-1]:.3f}")
    same = all(
        np.array_equal(saved, now)
        for saved, now in zip(
            trunk.get_weights(),
            keras.Model(model.input, model.outputs[0]).get_weights(),
            strict=True,
        )
    )
    print("trunk weights and BN statistics unchanged:", same)
    trunk_output = model.predict(features, verbose=0)[0]
    print(
        "trunk outputs unchanged:", np.array_equal(trunk_output, trunk.predict(features, verbose=0))
    )


if __name__ == "__main__":
    demo()
