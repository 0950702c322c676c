"""Title: A compiled train step that traces once, optionally k optimizer steps per call.

In short:
    step = make_train_step(model, keras.losses.MeanSquaredError(), optimizer)  # builds optimizer
    for x, y in dataset:
        loss = step(x, y)  # tensors, not Python floats: at most two traces over batch sizes
    iterator_step = make_iterator_train_step(model, loss_fn, optimizer, steps_per_call=4)
    iterator = iter(dataset.repeat())
    loss = iterator_step(iterator)  # 4 optimizer steps in one call, one trace
    # Your own tf.function: input_signature=[tf.TensorSpec([None, 4]), tf.TensorSpec([None, 1])]

Problem: A GradientTape loop run eagerly is several times slower than `fit`, so it goes under
`tf.function`. Then it retraces silently: once per Python number it is called with, once per
new batch size, and once more in the first call when the optimizer creates its slot
variables there. Each trace costs time, so a loop that retraces on every call loses what
compiling gained. This recipe exports `make_train_step` and `make_iterator_train_step`,
compiled steps that trace once on every stack and can run k steps per call, and proves the
retracing rules.

Recipe:
    1. Build the optimizer before the first trace (`optimizer.build(model.trainable_variables)`)
       so it creates no variables inside the function.
    2. Compile the step with `make_train_step(model, loss_fn, optimizer)`: `training=True`,
       `model.losses` added to the loss, `tf.function(reduce_retracing=True)`.
    3. With `steps_per_call=k`, feed x and y stacked as (k, batch, ...): one call runs k
       optimizer steps in a `tf.range` loop and returns the mean of their losses.
    4. With a `tf.data` pipeline, `make_iterator_train_step` reads the batches inside the
       function, as `fit` does, so no batch crosses from Python per step.
    5. Pass tensors, not Python numbers, to a `tf.function`; for varying batch sizes give it an
       `input_signature` with a `None` batch dimension or `reduce_retracing=True`.

Pitfalls:
    - A `tf.function` traces once per distinct Python float it is called with (1.0, 2.0, 3.0:
      three traces) and once in all for `tf.constant` scalars; `reduce_retracing=True` does not
      help Python floats, an `input_signature` does.
    - Called with ten distinct batch sizes, a plain `tf.function` traces ten times (no stack
      relaxes shapes on its own); with an `input_signature` whose batch dimension is `None` it
      traces once, with `reduce_retracing=True` twice.
    - `make_train_step` traces twice over twelve different batch sizes (the second size
      generalizes the trace to any batch size), and one call with `steps_per_call=k` gives the
      weights of k single-step calls and returns the mean of their losses.
    - `make_train_step` runs the model with `training=True` and adds `model.losses`: one epoch
      of plain SGD ends at the weights of `fit` on arrays within 1e-5, one step at those of
      `train_on_batch` within 1e-6 with an L2 regularizer, and BatchNormalization's moving
      mean moves to 0.99 * old + 0.01 * the batch mean.
    - `make_iterator_train_step` trains one epoch from a `tf.data` iterator, k batches per
      call for k = 1, 2, 4, to the weights of `fit` on arrays with a single trace, and raises
      OutOfRangeError when the iterator runs out inside the function.

Versions:
    - Keras 2 (2.12 to 2.15, tf-keras 2.16 to 2.21): an SGD optimizer that is not built yet
      creates one slot variable per weight inside the first `tf.function` call, even at
      momentum 0, so that call traces twice.
    - Keras 3 (3.0 and later): SGD at momentum 0 creates no slot variables and the first
      call traces once; with momentum it creates one slot per weight in the first call and
      traces twice, as on Keras 2.
    - `make_train_step` builds the optimizer first, so its slots exist before the first call,
      which traces once on every stack.

Sources: TensorFlow guide "Better performance with tf.function" (tensorflow.org/guide/function);
tf.function API reference, `reduce_retracing` and `input_signature`
(tensorflow.org/api_docs/python/tf/function); keras.io guide "Writing a training loop from
scratch in TensorFlow" (keras-team/keras-io guides/writing_a_custom_training_loop_in_tensorflow.py);
TensorFlow guide "Better performance with the tf.data API" (iterating inside tf.function);
keras-team/keras#20344 (Keras 3.0 refuses steps_per_execution above 32).

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
    `train_on_batch` retraces on every call in that run (0.04x).

See also:
    - training_apis: every training route to the same weights
    - tensor_ops: print() and tracing inside a tf.function
    - tf_data_pipeline: a tf.data pipeline to feed the iterator step
    - distributed_custom_loop: the same tape step on several replicas

Run: python -m recipes.compiled_train_step
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
TRACE_COUNT_OPTIONS = ("input_signature", "reduce_retracing")


def _positive_int(name, value):
    # bool is an int subclass, but steps_per_call=True is a mistake, not a count of one.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    # A numpy integer would turn `loss / steps_per_call` into a dtype clash inside the graph.
    return int(value)


def _train_on_batch(model, loss_fn, optimizer, features, targets):
    """One optimizer step, as fit takes it: training=True, and model.losses in the loss."""
    with tf.GradientTape() as tape:
        loss = loss_fn(targets, model(features, training=True))
        if model.losses:
            loss = loss + tf.add_n(model.losses)
    gradients = tape.gradient(loss, model.trainable_variables)
    # No zip(strict=True): AutoGraph in TensorFlow 2.12 rejects the keyword (TypeError).
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
    return loss


def _entry(structure, index):
    """Entry `index` along the leading axis of every tensor in a (possibly nested) batch."""
    return tf.nest.map_structure(lambda tensor: tensor[index], structure)


def _prepare_step(model, loss_fn, optimizer, steps_per_call):
    """Validates a step's arguments, builds the optimizer, returns steps_per_call as an int."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {model!r}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got {optimizer!r}")
    steps_per_call = _positive_int("steps_per_call", steps_per_call)
    # Keras 2 raises its own ValueError when an unbuilt model is asked for its variables.
    if not model.built or not model.trainable_variables:
        raise ValueError(f"model has no trainable variables yet (build it first), got {model!r}")
    # Slots created inside the first call make tf.function trace that call twice; building
    # here, eagerly, keeps it to one trace. Keras 3 marks a built optimizer with `built`,
    # Keras 2 with `_built`; legacy optimizers have no build at all.
    already_built = getattr(optimizer, "built", False) or getattr(optimizer, "_built", False)
    if hasattr(optimizer, "build") and not already_built:
        optimizer.build(model.trainable_variables)
    return steps_per_call


def make_train_step(model, loss_fn, optimizer, steps_per_call=1):
    """A `tf.function` `step(x, y)` that trains `model` and returns the loss as a scalar tensor.

    With `steps_per_call=k > 1`, `x` and `y` carry a leading axis of length k (shape `(k,
    batch, ...)`): one call runs k optimizer steps and returns the mean of their k losses.
    """
    steps_per_call = _prepare_step(model, loss_fn, optimizer, steps_per_call)

    # reduce_retracing lets the last, smaller batch of an epoch reuse one generalized trace
    # instead of tracing again for every new batch size.
    @tf.function(reduce_retracing=True)
    def step(features, targets):
        if steps_per_call == 1:
            return _train_on_batch(model, loss_fn, optimizer, features, targets)
        leading_length = tf.nest.flatten(features)[0].shape[0]
        if leading_length is not None and leading_length != steps_per_call:
            raise ValueError(
                f"x must have a leading axis of length steps_per_call={steps_per_call}, "
                f"got {leading_length}"
            )
        total_loss = tf.constant(0.0)
        for index in tf.range(steps_per_call):
            batch_features, batch_targets = _entry((features, targets), index)
            loss = _train_on_batch(model, loss_fn, optimizer, batch_features, batch_targets)
            total_loss += tf.cast(loss, tf.float32)
        return total_loss / steps_per_call

    return step


def make_iterator_train_step(model, loss_fn, optimizer, steps_per_call=1):
    """A `tf.function` `step(iterator)` that pulls `steps_per_call` (x, y) batches from a
    `tf.data` iterator inside the graph, trains on each, and returns their mean loss.

    The iterator must hold `steps_per_call` more batches at every call (`dataset.repeat()`,
    or a step count that divides the epoch); otherwise TensorFlow raises OutOfRangeError.
    """
    steps_per_call = _prepare_step(model, loss_fn, optimizer, steps_per_call)

    @tf.function
    def step(iterator):
        # A Python generator would be read once, at trace time, and its first batches baked
        # into the graph as constants: every later call would train on them again.
        if not isinstance(iterator, tf.data.Iterator):
            raise ValueError(f"iterator must be iter(a tf.data.Dataset), got {iterator!r}")
        total_loss = tf.constant(0.0)
        for _ in tf.range(steps_per_call):
            features, targets = next(iterator)
            loss = _train_on_batch(model, loss_fn, optimizer, features, targets)
            total_loss += tf.cast(loss, tf.float32)
        return total_loss / steps_per_call

    return step


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
    print(f"tensorflow {tf.__version__}, Keras {KERAS_MAJOR} ({keras.__name__})")
    scalar_calls = [(tf.ones((2, 3)), value) for value in (1.0, 2.0, 3.0)]
    tensor_calls = [(x, tf.constant(value)) for x, value in scalar_calls]
    shape_calls = [(tf.ones((batch, 3)), tf.constant(1.0)) for batch in range(1, 11)]
    signature = [tf.TensorSpec([None, 3]), tf.TensorSpec([])]
    print("Traces of a tf.function:")
    print(f"  Python floats 1.0, 2.0, 3.0:      {count_traces(scalar_calls)}")
    print(f"  tf.constant 1.0, 2.0, 3.0:        {count_traces(tensor_calls)}")
    print(f"  10 batch sizes:                   {count_traces(shape_calls)}")
    with_signature = count_traces(shape_calls, input_signature=signature)
    print(f"  10 batch sizes, input_signature:  {with_signature}")
    print(f"  10 batch sizes, reduce_retracing: {count_traces(shape_calls, reduce_retracing=True)}")

    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 4)).astype("float32")
    targets = rng.normal(size=(32, 1)).astype("float32")
    model = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
    )
    loss_fn = keras.losses.MeanSquaredError()
    step = make_train_step(model, loss_fn, keras.optimizers.SGD(0.1))
    for batch_size in (8, 8, 5, 3, 8, 1):
        step(features[:batch_size], targets[:batch_size])
    print(f"make_train_step, batch sizes 8, 8, 5, 3, 8, 1: {step.experimental_get_tracing_count()}")
    # Four batches of 8 per call: one call is four optimizer steps.
    multi_step = make_train_step(model, loss_fn, keras.optimizers.SGD(0.1), steps_per_call=4)
    mean_loss = multi_step(features.reshape(4, 8, 4), targets.reshape(4, 8, 1))
    print(f"make_train_step(steps_per_call=4), one call: mean loss {float(mean_loss):.3f}")
    dataset = tf.data.Dataset.from_tensor_slices((features, targets)).batch(8)
    iterator_step = make_iterator_train_step(model, loss_fn, keras.optimizers.SGD(0.1), 2)
    iterator = iter(dataset)
    losses = [float(iterator_step(iterator)) for _ in range(2)]
    print(
        f"make_iterator_train_step(steps_per_call=2), one epoch: losses {losses[0]:.3f}, "
        f"{losses[1]:.3f}, {iterator_step.experimental_get_tracing_count()} trace"
    )


if __name__ == "__main__":
    demo()
