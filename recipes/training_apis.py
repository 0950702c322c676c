"""Title: Train one model by every Keras route and end with the same weights.

In short:
    with tf.GradientTape() as tape:
        predictions = model(x, training=True)  # BatchNormalization and Dropout train
        loss = loss_fn(y, predictions)
        if model.losses:
            loss = loss + tf.add_n(model.losses)  # the regularization fit adds for you
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    model.fit(generator, steps_per_epoch=steps, epochs=1, shuffle=False)  # no fit_generator
    model.reset_metrics()  # Keras 3.0 to 3.14: else train_on_batch reports a running mean
    batch_loss = model.train_on_batch(x, y)

Problem: Keras trains a model through `fit` on arrays, `fit` on a Python generator, the old
`fit_generator`, a `train_on_batch` loop, or a hand-written `tf.GradientTape` loop, eager or
under `tf.function`. With the same start, the same batches and plain SGD they should all land on
the same weights, but hand-written loops drift silently: a forgotten `training=True` leaves
BatchNormalization and Dropout in inference mode, and a forgotten `model.losses` drops the
regularization that `fit` optimizes. The numbers Keras reports mislead too: `fit_generator` is
gone on Keras 3, and some Keras 3 releases return a running mean from `train_on_batch`. This
recipe trains one small model by every route, proves they agree, and proves each pitfall.

Recipe:
    1. Build the model once and copy its weights into a clone per route
       (`clone_with_same_weights`), so every route starts from the same point.
    2. Feed every route the same batches in the same order: `shuffle=False`, a sample count
       divisible by the batch size, and a generator that yields exactly the `fit` batches
       (`repeat_batches`).
    3. In a tape loop call `model(x, training=True)` and add `tf.add_n(model.losses)` to the
       loss before taking gradients (`tape_step`).
    4. Compare the routes' weights with `max_weight_difference`; read one batch's loss from
       `train_on_batch` after `model.reset_metrics()`.

Pitfalls:
    - With the same initial weights, the same batch order and plain SGD, one epoch by `fit` on
      a Python generator, `train_on_batch`, an eager tape loop and a tape step under
      `tf.function` ends with the weights of `fit` on arrays within an absolute tolerance of
      1e-5.
    - A tape step that calls `model(x)` without `training=True` still changes the weights, but
      leaves BatchNormalization's `moving_mean` and `moving_variance` exactly unchanged; with
      `training=True` they move to 0.99 * old + 0.01 * the batch mean and biased batch variance.
    - Without `training=True` Dropout is off: `model(x)` equals `model(x, training=False)`
      exactly; with `training=True` every unit is either zeroed or scaled by 1 / (1 - rate).
    - The loss `evaluate` reports is the compiled loss plus `sum(model.losses)`. A tape step
      that leaves out `model.losses` ends at weights that differ from `train_on_batch`'s by
      learning_rate times the regularizer's gradient (within 1e-6); with them it matches
      within 1e-6.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): `model.fit_generator` still trains, to the
      same weights as `fit`, and warns (UserWarning) that it is deprecated. Keras 3.0 and
      later: `model.fit_generator` raises AttributeError; pass the generator to `fit`.
    - Keras 3.0 to 3.14: `train_on_batch` and `test_on_batch` return the mean of every batch
      loss since the last `compile()`, `reset_metrics()`, `evaluate()` or start of a `fit()`
      epoch, that call's own batches included and train and test batches alike (`predict()`
      does not reset it), not this batch's loss; call `reset_metrics()` first to read one
      batch. 3.15 and later, like Keras 2, return this batch's loss.

Sources: keras.io guide "Writing a training loop from scratch in TensorFlow"
(keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py);
keras-team/keras#19225 (fit_generator gone in Keras 3); tensorflow/tensorflow#43298
(fit_generator deprecated, fit takes generators); tensorflow/tensorflow#32864 (BatchNormalization
updates in a GradientTape loop need training=True); hunglc007/tensorflow-yolov4-tflite#369
(kernel regularizers silently unused by a GradientTape loss); keras-team/keras#22617
(train_on_batch and test_on_batch returned a cumulative loss). The compiled step and the speed
of each route: recipes/compiled_train_step.py.

See also:
    - loss_shape_pitfall: a tape loop that does not converge
    - compiled_train_step: the tape step compiled, traced once, and its speed
    - generator_dataset: a generator for fit now that fit_generator is gone, inputs as a tuple

Run: python -m recipes.training_apis
"""

import itertools
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2

ROUTES = (
    "fit_arrays",
    "fit_python_generator",
    "fit_generator",
    "train_on_batch",
    "tape_eager",
    "tape_tf_function",
)
EQUIVALENCE_TOLERANCE = 1e-5


def _require_int(name, value, minimum):
    # bool is an int subclass, but batch_size=True is a mistake, not a size of one. numpy
    # integers are accepted and converted, so Keras and range() see a plain int.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _require_real(name, value, requirement, is_met):
    # Comparing a string or None with a number would raise TypeError; NaN fails every is_met.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not is_met(value):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")
    return float(value)


def _require_model(name, model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"{name} must be a keras.Model, got {model!r}")


def _require_same_length(features, targets):
    if len(features) != len(targets):
        raise ValueError(
            "features and targets must have the same length, "
            f"got {len(features)} and {len(targets)}"
        )


def build_small_model(
    input_dim=4, hidden_units=8, l2_factor=0.0, batch_normalization=False, dropout_rate=0.0, seed=0
):
    """A deterministic Input -> [BatchNormalization] -> Dense(tanh) -> [Dropout] -> Dense(1) net.

    BatchNormalization sits on the input so its moving statistics follow the data directly;
    the seeded initializers make two calls with the same arguments build the same weights.
    """
    # Seeds start at seed + 1: Keras 3.0's initializers take `seed or a random seed`, so a
    # seed of 0 would draw different weights on every call.
    input_dim = _require_int("input_dim", input_dim, 1)
    hidden_units = _require_int("hidden_units", hidden_units, 1)
    l2_factor = _require_real(
        "l2_factor", l2_factor, "a finite number >= 0", lambda value: 0 <= value < np.inf
    )
    dropout_rate = _require_real("dropout_rate", dropout_rate, "in [0, 1)", lambda v: 0 <= v < 1)
    # "yes" or 1 would silently mean True; numpy's bool_ is not a bool subclass.
    if not isinstance(batch_normalization, (bool, np.bool_)):
        raise ValueError(f"batch_normalization must be True or False, got {batch_normalization!r}")
    seed = _require_int("seed", seed, 0)
    inputs = keras.Input(shape=(input_dim,))
    hidden = inputs
    if batch_normalization:
        hidden = keras.layers.BatchNormalization(name="batch_normalization")(hidden)
    regularizer = keras.regularizers.L2(l2_factor) if l2_factor > 0 else None
    hidden = keras.layers.Dense(
        hidden_units,
        activation="tanh",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
        kernel_regularizer=regularizer,
        name="hidden",
    )(hidden)
    if dropout_rate > 0:
        hidden = keras.layers.Dropout(dropout_rate, seed=seed + 1, name="dropout")(hidden)
    outputs = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 2), name="output"
    )(hidden)
    return keras.Model(inputs, outputs)


def clone_with_same_weights(model):
    """A fresh copy of `model` (new variables) that starts from the same weights."""
    _require_model("model", model)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def tape_step(
    model, loss_fn, optimizer, features, targets, training=True, include_model_losses=True
):
    """One optimizer step by hand; returns the loss the gradients were taken of.

    `training=None` reproduces the pitfall of calling `model(features)` bare, and
    `include_model_losses=False` the pitfall of leaving regularization out of the loss.
    """
    _require_model("model", model)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got {optimizer!r}")
    if training not in (True, False, None):
        raise ValueError(f"training must be True, False or None, got {training!r}")
    with tf.GradientTape() as tape:
        # training=None calls the model bare, exactly as the pitfall does.
        predictions = model(features) if training is None else model(features, training=training)
        loss = loss_fn(targets, predictions)
        # Layer regularizers only reach the optimizer through model.losses: fit adds them for
        # you, a hand-written loss has to add them itself.
        if include_model_losses and model.losses:
            loss = loss + tf.add_n(model.losses)
    gradients = tape.gradient(loss, model.trainable_variables)
    # No zip(strict=True): AutoGraph in TensorFlow 2.12 rejects the keyword (TypeError).
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
    return loss


def repeat_batches(features, targets, batch_size):
    """Yields the batches `fit(batch_size=..., shuffle=False)` sees, in order, forever."""
    # Validate here, not in the generator body, which would only run at the first next().
    _require_same_length(features, targets)
    batch_size = _require_int("batch_size", batch_size, 1)

    def batches_forever():
        while True:
            for start in range(0, len(features), batch_size):
                yield features[start : start + batch_size], targets[start : start + batch_size]

    return batches_forever()


def train_one_epoch(route, model, features, targets, batch_size, learning_rate):
    """Trains `model` in place for one epoch of plain SGD and MSE by `route`; returns its weights.

    On Keras 3 the "fit_generator" route raises AttributeError (the method is gone).
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    _require_model("model", model)
    _require_same_length(features, targets)
    batch_size = _require_int("batch_size", batch_size, 1)
    # A last partial batch would be a smaller step that some routes weigh differently.
    if len(features) % batch_size:
        raise ValueError(f"batch_size must divide the {len(features)} samples, got {batch_size!r}")
    learning_rate = _require_real(
        "learning_rate", learning_rate, "a finite number > 0", lambda value: 0 < value < np.inf
    )
    steps = len(features) // batch_size
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    if route.startswith("fit") or route == "train_on_batch":
        model.compile(optimizer=optimizer, loss=loss_fn)
    if route == "fit_arrays":
        model.fit(features, targets, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return model.get_weights()
    batches = repeat_batches(features, targets, batch_size)
    if route == "fit_python_generator":
        model.fit(batches, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    elif route == "fit_generator":
        model.fit_generator(batches, steps_per_epoch=steps, epochs=1, verbose=0)
    else:
        if route == "train_on_batch":
            train_on = model.train_on_batch
        elif route == "tape_eager":

            def train_on(batch_features, batch_targets):
                return tape_step(model, loss_fn, optimizer, batch_features, batch_targets)

        else:
            # The plain way to compile a tape step; recipes/compiled_train_step.py shows how
            # to keep it to one trace and run several steps per call.
            @tf.function
            def train_on(batch_features, batch_targets):
                return tape_step(model, loss_fn, optimizer, batch_features, batch_targets)

        for batch_features, batch_targets in itertools.islice(batches, steps):
            train_on(batch_features, batch_targets)
    return model.get_weights()


def max_weight_difference(weights, reference_weights):
    """The largest absolute difference between two equal-length lists of same-shape arrays."""
    if len(weights) != len(reference_weights) or not weights:
        raise ValueError(
            f"weights must hold as many arrays as reference_weights ({len(reference_weights)}), "
            f"at least one, got {len(weights)}"
        )
    differences = []
    for index, (weight, reference) in enumerate(zip(weights, reference_weights, strict=True)):
        # numpy would broadcast (8,) against (4, 8) and compare weights that do not correspond.
        if np.shape(weight) != np.shape(reference):
            raise ValueError(
                f"weights[{index}] must have the shape of reference_weights[{index}] "
                f"{np.shape(reference)}, got shape {np.shape(weight)}"
            )
        differences.append(float(np.max(np.abs(np.asarray(weight) - np.asarray(reference)))))
    return max(differences)


def demo():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 4)).astype("float32")
    targets = rng.normal(size=(32, 1)).astype("float32")
    loss_fn = keras.losses.MeanSquaredError()
    base_model = build_small_model()

    def one_epoch(route):
        model = clone_with_same_weights(base_model)
        return train_one_epoch(route, model, features, targets, batch_size=8, learning_rate=0.1)

    reference = one_epoch("fit_arrays")
    print(f"tensorflow {tf.__version__}, Keras {KERAS_MAJOR} ({keras.__name__})")
    print("One SGD epoch by each route: max |weight - weight after fit on arrays|")
    for route in ROUTES[1:]:
        try:
            difference = f"{max_weight_difference(one_epoch(route), reference):.1e}"
        except AttributeError as error:
            difference = f"AttributeError: {error}"
        print(f"  {route:22} {difference}")

    bn_model = build_small_model(batch_normalization=True)
    moving_mean = bn_model.get_layer("batch_normalization").moving_mean
    for training in (None, True):
        before = moving_mean.numpy().copy()
        tape_step(bn_model, loss_fn, keras.optimizers.SGD(0.1), features, targets, training)
        changed = not np.array_equal(before, moving_mean.numpy())
        print(f"Tape step, training={training}: BatchNormalization moving_mean changed: {changed}")

    l2_model = build_small_model(l2_factor=0.1)
    weights_by_choice = {}
    for include_model_losses in (False, True):
        model = clone_with_same_weights(l2_model)
        optimizer = keras.optimizers.SGD(0.1)
        tape_step(model, loss_fn, optimizer, features, targets, True, include_model_losses)
        weights_by_choice[include_model_losses] = model.get_weights()
    l2_model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_fn)
    l2_model.train_on_batch(features, targets)
    for include_model_losses, weights in weights_by_choice.items():
        gap = max_weight_difference(weights, l2_model.get_weights())
        print(
            f"Tape step, model.losses included={include_model_losses}: vs train_on_batch {gap:.1e}"
        )

    # A zero learning rate keeps the weights, so each batch's own loss stays the same.
    l2_model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss_fn)
    first, second = (features[:8], targets[:8]), (3 * features[8:16], targets[8:16])
    alone = []
    for batch in (first, second):
        l2_model.reset_metrics()
        alone.append(float(l2_model.train_on_batch(*batch)))
    l2_model.reset_metrics()
    l2_model.train_on_batch(*first)
    reported = float(l2_model.train_on_batch(*second))
    print(
        f"train_on_batch: batch losses {alone[0]:.3f} and {alone[1]:.3f} alone; "
        f"the second right after the first reports {reported:.3f}"
    )


if __name__ == "__main__":
    demo()
