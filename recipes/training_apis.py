"""Title: Train one model by every Keras route and end with the same weights.

Problem: Keras trains a model through `fit` on arrays, `fit` on a Python generator, the old
`fit_generator`, a `train_on_batch` loop, or a hand-written `tf.GradientTape` loop, eager or
under `tf.function`. With the same start, the same batches and plain SGD they should all land on
the same weights, but hand-written loops drift silently: a forgotten `training=True` leaves
BatchNormalization and Dropout in inference mode, a forgotten `model.losses` drops the
regularization that `fit` optimizes, and a `tf.function` fed Python numbers or new shapes
retraces on every call. This recipe trains one small model by every route, proves they agree,
proves each pitfall, and exports `make_train_step`, a compiled step that works on every stack.

Recipe:
    1. Build the model once and copy its weights into a clone per route
       (`clone_with_same_weights`), so every route starts from the same point.
    2. Feed every route the same batches in the same order: `shuffle=False`, a sample count
       divisible by the batch size, and a generator that yields exactly the `fit` batches.
    3. In a tape loop call `model(x, training=True)` and add `tf.add_n(model.losses)` to the
       loss before taking gradients (`tape_step`).
    4. Compile the step with `make_train_step(model, loss_fn, optimizer)`. It builds the
       optimizer before the first trace, traces with `reduce_retracing=True`, and with
       `steps_per_call=k` runs k optimizer steps in one call and returns their mean loss.
       With a `tf.data` pipeline, `make_iterator_train_step` reads the batches inside the
       function, as `fit` does, so no batch crosses from Python per step.
    5. Pass tensors, not Python numbers, to a `tf.function`; for varying batch sizes give it an
       `input_signature` with a `None` batch dimension or `reduce_retracing=True`.

Pitfalls:
    - With the same initial weights, the same batch order and plain SGD, one epoch by `fit` on
      a Python generator, `train_on_batch`, an eager tape loop and `make_train_step` ends with
      the weights of `fit` on arrays within an absolute tolerance of 1e-5.
    - A tape step that calls `model(x)` without `training=True` still changes the weights, but
      leaves BatchNormalization's `moving_mean` and `moving_variance` exactly unchanged; with
      `training=True` they move to 0.99 * old + 0.01 * the batch mean and biased batch variance.
    - Without `training=True` Dropout is off: `model(x)` equals `model(x, training=False)`
      exactly; with `training=True` every unit is either zeroed or scaled by 1 / (1 - rate).
    - The loss `evaluate` reports is the compiled loss plus `sum(model.losses)`. A tape step
      that leaves out `model.losses` ends at weights that differ from `train_on_batch`'s by
      exactly learning_rate times the regularizer's gradient; with them it matches within 1e-6.
    - A `tf.function` traces once per distinct Python float it is called with (1.0, 2.0, 3.0:
      three traces) and once in all for `tf.constant` scalars; `reduce_retracing=True` does not
      help Python floats, an `input_signature` does.
    - Called with ten distinct batch sizes, a plain `tf.function` traces ten times (no stack
      relaxes shapes on its own); with an `input_signature` whose batch dimension is `None` it
      traces once, with `reduce_retracing=True` twice.
    - `make_iterator_train_step` trains one epoch from a `tf.data` iterator, k batches per
      call for k = 1, 2, 4, to the weights of `fit` on arrays with a single trace, and raises
      OutOfRangeError when the iterator runs out inside the function.
    - `make_train_step` traces twice over twelve different batch sizes (the second size
      generalizes the trace to any batch size), and one call with `steps_per_call=k` gives the
      weights of k single-step calls and returns the mean of their losses.

Versions:
    - Keras 2.12 / 2.15 / tf-keras 2.21: `model.fit_generator` still trains, to the same weights
      as `fit`, and warns (UserWarning) that it is deprecated.
    - Keras 3.0 / 3.15: `model.fit_generator` raises AttributeError; pass the generator to `fit`.
    - Keras 2.12 / 2.15 / tf-keras 2.21: an SGD optimizer (momentum 0) that is not built yet
      creates one slot per weight inside the first `tf.function` call, so that call traces
      twice. Keras 3.0 / 3.15: SGD without momentum creates no slots and traces once; with
      momentum it traces twice too. `make_train_step` builds first and traces once everywhere.
    - Keras 3.0: `train_on_batch` and `test_on_batch` return the running mean of every loss
      since the last `fit`, `evaluate` or `model.reset_metrics()`, not this batch's loss; call
      `reset_metrics()` first to read one batch. Keras 2.12 / 2.15 / tf-keras 2.21 / Keras 3.15
      return this batch's loss.

Sources: keras.io guide "Writing a training loop from scratch in TensorFlow"
(keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py); TensorFlow guide
"Better performance with tf.function" (tensorflow.org/guide/function); tf.function API
reference, `reduce_retracing` and `input_signature` (tensorflow.org/api_docs/python/tf/function);
keras-team/keras#19225 (fit_generator gone in Keras 3); tensorflow/tensorflow#43298
(fit_generator deprecated, fit takes generators); tensorflow/tensorflow#32864 (BatchNormalization
updates in a GradientTape loop need training=True); hunglc007/tensorflow-yolov4-tflite#369
(kernel regularizers silently unused by a GradientTape loss); keras-team/keras#22617
(train_on_batch and test_on_batch returned a cumulative loss).

Speed: benchmarks/training_loops.py, measured 2026-11-26 on a 2-core AMD EPYC CPU (no GPU),
    each stack in one process: a 2-conv CNN, 32x32x3, batch 64, Adam, 600 steps per route, 7
    interleaved repeats. Ratios to default `fit`, median (best repeat); medians move by
    10-30% on this shared machine, the best repeats by a few percent.
        stack          make_train_step  iterator step  k=50 per call  k=50 iterator  fit spe=50
        tf212 K2.12    0.97 (0.97)      1.05 (1.02)    1.16 (1.13)    1.17 (1.13)    1.16 (1.13)
        tf215 K2.15    0.66 (0.97)      1.03 (1.02)    1.26 (1.20)    1.25 (1.20)    1.24 (1.21)
        tf216 K3.0     1.30 (1.00)      1.45 (0.97)    1.86 (1.21)    1.89 (1.21)    1.77 (1.17)*
        tf221 K3.15    1.32 (1.01)      1.40 (1.07)    1.65 (1.23)    1.72 (1.25)    1.14 (1.23)
        tf221-legacy   1.18 (1.01)      1.29 (1.10)    1.22 (1.25)    1.52 (1.25)    1.14 (1.26)
    (* Keras 3.0 refuses steps_per_execution above 32; that row uses 30.) The step fed (x, y)
    from Python is at `fit`'s speed, not above it; reading the iterator inside the function
    gains a few percent; k steps per call gains about 1.2x, as `fit`'s own
    steps_per_execution does. An eager tape loop runs at 0.13-0.28x `fit`, and Keras 3.0's
    `train_on_batch` retraces on every call (0.04x).

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
TRACE_COUNT_OPTIONS = ("input_signature", "reduce_retracing")


def _require_positive_int(name, value):
    # bool is an int subclass, but steps_per_call=True is a mistake, not a count of one.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _require_real(name, value, requirement, is_met):
    # Comparing a string or None with a number would raise TypeError; NaN fails every is_met.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not is_met(value):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")


def _require_model(name, model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"{name} must be a keras.Model, got {model!r}")


def build_small_model(
    input_dim=4, hidden_units=8, l2_factor=0.0, batch_normalization=False, dropout_rate=0.0, seed=0
):
    """A deterministic Input -> [BatchNormalization] -> Dense(tanh) -> [Dropout] -> Dense(1) net.

    BatchNormalization sits on the input so its moving statistics follow the data directly;
    the seeded initializers make two calls with the same arguments build the same weights.
    """
    _require_positive_int("input_dim", input_dim)
    _require_positive_int("hidden_units", hidden_units)
    _require_real("l2_factor", l2_factor, "a finite number >= 0", lambda value: 0 <= value < np.inf)
    _require_real("dropout_rate", dropout_rate, "in [0, 1)", lambda value: 0 <= value < 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    inputs = keras.Input(shape=(input_dim,))
    hidden = inputs
    if batch_normalization:
        hidden = keras.layers.BatchNormalization(name="batch_normalization")(hidden)
    regularizer = keras.regularizers.L2(l2_factor) if l2_factor > 0 else None
    hidden = keras.layers.Dense(
        hidden_units,
        activation="tanh",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        kernel_regularizer=regularizer,
        name="hidden",
    )(hidden)
    if dropout_rate > 0:
        hidden = keras.layers.Dropout(dropout_rate, seed=seed, name="dropout")(hidden)
    outputs = keras.layers.Dense(
        1, kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1), name="output"
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


def _entry(structure, index):
    """Entry `index` along the leading axis of every tensor in a (possibly nested) batch."""
    return tf.nest.map_structure(lambda tensor: tensor[index], structure)


def _prepare_step(model, loss_fn, optimizer, steps_per_call):
    """Validates a step's arguments and builds the optimizer before the first trace."""
    _require_model("model", model)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got {optimizer!r}")
    _require_positive_int("steps_per_call", steps_per_call)
    # Keras 2 raises its own ValueError when an unbuilt model is asked for its variables.
    if not model.built or not model.trainable_variables:
        raise ValueError(f"model has no trainable variables yet (build it first), got {model!r}")
    # An optimizer that creates its slots inside the first call makes tf.function trace that
    # call twice; building it here, eagerly, keeps it to one trace on every stack. Keras 3
    # marks a built optimizer with `built`, Keras 2 with `_built`; legacy ones have no build.
    already_built = getattr(optimizer, "built", False) or getattr(optimizer, "_built", False)
    if hasattr(optimizer, "build") and not already_built:
        optimizer.build(model.trainable_variables)


def make_train_step(model, loss_fn, optimizer, steps_per_call=1):
    """A `tf.function` `step(x, y)` that trains `model` and returns the loss as a scalar tensor.

    The loss includes `sum(model.losses)` and the model runs with `training=True`. With
    `steps_per_call=k > 1`, `x` and `y` carry a leading axis of length k (shape `(k, batch,
    ...)`): one call runs k optimizer steps inside a `tf.range` loop and returns the mean of
    their k losses.
    """
    _prepare_step(model, loss_fn, optimizer, steps_per_call)

    # reduce_retracing lets the last, smaller batch of an epoch reuse one generalized trace
    # instead of tracing again for every new batch size.
    @tf.function(reduce_retracing=True)
    def step(features, targets):
        if steps_per_call == 1:
            return tape_step(model, loss_fn, optimizer, features, targets)
        leading_length = tf.nest.flatten(features)[0].shape[0]
        if leading_length is not None and leading_length != steps_per_call:
            raise ValueError(
                f"x must have a leading axis of length steps_per_call={steps_per_call}, "
                f"got {leading_length}"
            )
        total_loss = tf.constant(0.0)
        for index in tf.range(steps_per_call):
            loss = tape_step(
                model, loss_fn, optimizer, _entry(features, index), _entry(targets, index)
            )
            total_loss += tf.cast(loss, tf.float32)
        return total_loss / steps_per_call

    return step


def make_iterator_train_step(model, loss_fn, optimizer, steps_per_call=1):
    """A `tf.function` `step(iterator)` that pulls `steps_per_call` (x, y) batches from a
    `tf.data` iterator inside the graph, trains on each, and returns their mean loss.

    This is how `fit` reads its data: no batch crosses from Python into the function. The
    iterator must hold `steps_per_call` more batches at every call (`dataset.repeat()`, or a
    step count that divides the epoch); otherwise TensorFlow raises OutOfRangeError.
    """
    _prepare_step(model, loss_fn, optimizer, steps_per_call)

    @tf.function
    def step(iterator):
        total_loss = tf.constant(0.0)
        for _ in tf.range(steps_per_call):
            features, targets = next(iterator)
            loss = tape_step(model, loss_fn, optimizer, features, targets)
            total_loss += tf.cast(loss, tf.float32)
        return total_loss / steps_per_call

    return step


def repeat_batches(features, targets, batch_size):
    """Yields the batches `fit(batch_size=..., shuffle=False)` sees, in order, forever."""
    # Validate here, not in the generator body, which would only run at the first next().
    _require_positive_int("batch_size", batch_size)

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
    if len(features) != len(targets):
        raise ValueError(
            "features and targets must have the same length, "
            f"got {len(features)} and {len(targets)}"
        )
    _require_positive_int("batch_size", batch_size)
    # A last partial batch would be a smaller step that some routes weigh differently.
    if len(features) % batch_size:
        raise ValueError(f"batch_size must divide the {len(features)} samples, got {batch_size!r}")
    _require_real(
        "learning_rate", learning_rate, "a finite number > 0", lambda value: 0 < value < np.inf
    )
    steps = len(features) // batch_size
    loss_fn = keras.losses.MeanSquaredError()
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate)
    if route.startswith("fit") or route == "train_on_batch":
        model.compile(optimizer=optimizer, loss=loss_fn)
    if route == "fit_arrays":
        model.fit(features, targets, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    elif route == "fit_python_generator":
        model.fit(
            repeat_batches(features, targets, batch_size),
            steps_per_epoch=steps,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
    elif route == "fit_generator":
        model.fit_generator(
            repeat_batches(features, targets, batch_size),
            steps_per_epoch=steps,
            epochs=1,
            verbose=0,
        )
    else:
        if route == "train_on_batch":
            train_on = model.train_on_batch
        elif route == "tape_eager":

            def train_on(batch_features, batch_targets):
                return tape_step(model, loss_fn, optimizer, batch_features, batch_targets)

        else:
            train_on = make_train_step(model, loss_fn, optimizer)
        for batch_features, batch_targets in itertools.islice(
            repeat_batches(features, targets, batch_size), steps
        ):
            train_on(batch_features, batch_targets)
    return model.get_weights()


def max_weight_difference(weights, reference_weights):
    """The largest absolute difference between two lists of weight arrays."""
    if len(weights) != len(reference_weights):
        raise ValueError(
            f"weights must hold as many arrays as reference_weights ({len(reference_weights)}), "
            f"got {len(weights)}"
        )
    return max(
        float(np.max(np.abs(np.asarray(weight) - np.asarray(reference))))
        for weight, reference in zip(weights, reference_weights, strict=True)
    )


def count_traces(calls, **function_options):
    """Calls `tf.function(mean(x) * scale, **function_options)` on each `(x, scale)` pair.

    Returns how many times TensorFlow traced it: the Python counter inside only runs while
    tracing, never when a traced graph is reused.
    """
    calls = list(calls)
    if not calls or not all(isinstance(call, tuple) and len(call) == 2 for call in calls):
        raise ValueError(f"calls must be a non-empty list of (x, scale) pairs, got {calls!r}")
    unknown = sorted(set(function_options) - set(TRACE_COUNT_OPTIONS))
    if unknown:
        raise ValueError(f"function_options must be among {TRACE_COUNT_OPTIONS}, got {unknown!r}")
    trace_count = [0]

    def scaled_mean(features, scale):
        trace_count[0] += 1
        return tf.reduce_mean(features) * scale

    traced_function = tf.function(scaled_mean, **function_options)
    for features, scale in calls:
        traced_function(features, scale)
    return trace_count[0]


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

    scalar_calls = [(tf.ones((2, 3)), value) for value in (1.0, 2.0, 3.0)]
    tensor_calls = [(x, tf.constant(value)) for x, value in scalar_calls]
    shape_calls = [(tf.ones((batch, 3)), tf.constant(1.0)) for batch in range(1, 11)]
    signature = [tf.TensorSpec([None, 3]), tf.TensorSpec([])]
    print("Traces of a tf.function:")
    print(f"  Python floats 1.0, 2.0, 3.0:     {count_traces(scalar_calls)}")
    print(f"  tf.constant 1.0, 2.0, 3.0:       {count_traces(tensor_calls)}")
    print(f"  10 batch sizes:                  {count_traces(shape_calls)}")
    print(
        f"  10 batch sizes, input_signature: {count_traces(shape_calls, input_signature=signature)}"
    )
    print(f"  10 batch sizes, reduce_retracing: {count_traces(shape_calls, reduce_retracing=True)}")
    step = make_train_step(build_small_model(), loss_fn, keras.optimizers.SGD(0.1))
    for batch_size in (8, 8, 5, 3, 8, 1):
        step(features[:batch_size], targets[:batch_size])
    print(
        f"  make_train_step, batch sizes 8, 8, 5, 3, 8, 1: {step.experimental_get_tracing_count()}"
    )


if __name__ == "__main__":
    demo()
