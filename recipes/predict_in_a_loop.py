"""Title: Call a model on small batches in a loop: model(x), predict_on_batch, tf.function, predict.

In short:
    predict_fn = make_predict_fn(model, batch_signature(model.input_shape[1:]))
    for x in small_batches:  # any batch size, traced once
        y = predict_fn(x).numpy()
    # or, simplest: y = model(x, training=False).numpy(); never model.predict(x) in a loop

Problem: A server or a game loop calls `model.predict(x)` on a few samples at a time, and it
is slow (tensorflow/tensorflow#40261), its memory grows (tensorflow/tensorflow#44711,
keras-team/keras#13118), and the log may show "5 out of the last 13 calls to <function
Model.make_predict_function.<locals>.predict_function ...> triggered tf.function retracing".
`predict` is built for one large pass: every call wraps `x` in a dataset, an iterator and a
callback list before it runs the model. For small batches call the model directly, or trace
it once yourself with an `input_signature`.

Recipe:
    1. `model(x, training=False)` runs the model eagerly: no tracing, no dataset, the same
       numbers as `predict`. Start here.
    2. For a faster call, `make_predict_fn(model, batch_signature(feature_shape))`: a
       `tf.function` with an `input_signature` whose batch dimension is None, so one trace
       serves every batch size.
    3. `model.predict_on_batch(x)` also skips the dataset; it traces twice, then reuses its
       graph for other batch sizes (see Speed: slow on Keras 2).
    4. Keep `model.predict(x)` for one call over a large array, and build the model once,
       outside the loop: every new model's `predict` traces again.

Pitfalls:
    - Every route gives relu(x @ W1 + b1) @ W2 + b2 of a two-Dense model within 1e-5 of
      numpy: `model(x, training=False)`, `predict_on_batch`, `make_predict_fn` and a
      `tf.function` without a signature for batch sizes 1, 3 and 4, `predict` for 1, 2, 3.
    - `model(x, training=False)` runs the model's Python code once on every call, over batch
      sizes 1 to 6 and over 4, 4, 4, 4: it runs eagerly and never reuses a traced graph.
    - `make_predict_fn` traces once, at its first call, for batch sizes 1 to 6 followed by
      4, 4, 4, 4.
    - `predict_on_batch` traces at its first and second call over batch sizes 1 to 6, and
      only at the first when the size never changes.
    - A `tf.function` without an `input_signature` traces once per new batch size (6 traces
      for sizes 1 to 6), and its 5th and 6th calls log the tensorflow WARNING "5 out of the
      last 5 calls to <function ...> triggered tf.function retracing", then "6 out of the
      last 6 calls ...".
    - One model's `predict` over batch sizes 1, 2, 3 logs no retracing warning. The warning
      counts the traces of Keras' predict function over every model in the process: a loop
      that builds a new model and calls its `predict` traces once per iteration, and the
      5th and 6th traces of predict in the process log "5 out of the last ... calls to
      <function ...make_predict_function...> triggered tf.function retracing" and "6 out
      of ...".

Versions:
    - Keras 2.12 to 2.15 and tf-keras 2.16 to 2.21: `predict` on one model traces at the
      first call only, over batch sizes 1, 2, 3.
    - Keras 3.0 and later: `predict` traces at the first and the second call over batch
      sizes 1, 2, 3.
    - Every stack: `predict` at one fixed batch size traces at the first call only.

Sources: Keras API docs "Model.predict" (keras.io/api/models/model_training_apis: "not
    intended for use inside of loops that iterate over your data and process small numbers
    of inputs at a time ... directly use __call__() for faster execution") and the Keras FAQ
    "What's the difference between Model methods predict() and __call__()?"; TensorFlow guide
    "Better performance with tf.function" (retracing, `input_signature`);
    tensorflow/tensorflow#40261 ("model.predict is much slower on TF 2.1+": a maintainer
    measured 100 calls of predict at about 300x the time of calling the model, on a tiny
    model); tensorflow/tensorflow#44711 and keras-team/keras#13118 (memory grows while
    predict is called repeatedly; calling the model directly is the workaround given there).

Speed: benchmarks/predict_in_a_loop.py, measured 2026-12-07 on a shared 2-core Intel Xeon CPU
    (no GPU, load average under 1), each stack in one process, one after another:
    Dense(64, relu) + Dense(10) on one numpy batch of 8 x 32, 100 calls per route, 3
    interleaved repeats. Time per call as a ratio to `model(x, training=False)`, median (best
    repeat), and resident memory growth:
        stack                         model(x)  predict           predict_on_batch  make_predict_fn
        TF 2.21.0 + Keras 3.15.1      1.5 ms    34x (33x)  11 KiB  0.36x (0.33x)     0.31x (0.31x)
        TF 2.16.2 + Keras 3.0.5       1.0 ms    44x (42x)  16 KiB  0.54x (0.54x)     0.47x (0.47x)
        TF 2.21.0 + tf-keras 2.21.0   0.9 ms    45x (49x)  20 KiB  5.8x (6.3x)       0.65x (0.70x)
        TF 2.15.1 + Keras 2.15.0      0.6 ms    72x (70x)  25 KiB  7.0x (6.9x)       0.75x (0.72x)
        TF 2.12.1 + Keras 2.12.0      0.7 ms    48x (52x) 230 KiB  4.9x (5.5x)       0.70x (0.73x)
    (KiB: resident set growth per predict call over its 300 calls; the other routes grew by
    0.1 KiB per call or less; whether the growth levels off after 300 calls was not
    measured.) A benchmark result, not a tested claim: `predict` cost 35-52 ms a call, 34x
    to 72x a call of the model; on Keras 2.12 it grew the process by about 0.2 MiB a call,
    the growth reported in tensorflow/tensorflow#44711; on Keras 2 (2.12, 2.15 and tf-keras
    2.21) `predict_on_batch` was 5x to 7x slower than calling the model, while on Keras 3 it
    was faster; `make_predict_fn` was the fastest route on every stack.

See also:
    - compiled_train_step: input_signature and reduce_retracing for a train step
    - tensor_ops: print() and tracing inside a tf.function

Run: python -m recipes.predict_in_a_loop
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras


def batch_signature(feature_shape, dtype="float32"):
    """The input_signature of one batch of `feature_shape` samples, any batch size."""
    if isinstance(feature_shape, (str, bytes)) or not isinstance(feature_shape, (tuple, list)):
        raise ValueError(
            f"feature_shape must be a tuple of sizes, got feature_shape={feature_shape!r}"
        )
    for size in feature_shape:
        valid = size is None or (
            isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0
        )
        if not valid:
            raise ValueError(
                "feature_shape must hold positive integers or None, got "
                f"feature_shape={feature_shape!r}"
            )
    try:
        dtype = tf.dtypes.as_dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must name a TensorFlow dtype, got dtype={dtype!r}") from None
    return [tf.TensorSpec((None, *feature_shape), dtype)]


def make_predict_fn(model, input_signature):
    """model(x, training=False) as a tf.function that traces once for every batch size."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got model={model!r}")
    if (
        not isinstance(input_signature, (tuple, list))
        or not input_signature
        or not all(isinstance(spec, tf.TensorSpec) for spec in input_signature)
    ):
        raise ValueError(
            "input_signature must be a non-empty list of tf.TensorSpec, got "
            f"input_signature={input_signature!r}"
        )

    @tf.function(input_signature=list(input_signature))
    def predict_fn(*inputs):
        return model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    return predict_fn


def demo():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    kernel, bias = model.get_weights()
    predict_fn = make_predict_fn(model, batch_signature((3,)))
    random = np.random.default_rng(0)
    for batch_size in (1, 2, 3, 4):
        x = random.standard_normal((batch_size, 3)).astype("float32")
        by_hand = x.astype("float64") @ kernel + bias
        routes = {
            "model(x, training=False)": model(x, training=False).numpy(),
            "predict_on_batch": np.asarray(model.predict_on_batch(x)),
            "make_predict_fn": predict_fn(x).numpy(),
        }
        gaps = ", ".join(f"{name} {np.abs(y - by_hand).max():.1e}" for name, y in routes.items())
        print(f"batch {batch_size}: largest gap to x @ W + b in numpy: {gaps}")
    traces = predict_fn.experimental_get_tracing_count()
    print(f"make_predict_fn traced {traces} time(s) for batch sizes 1 to 4")


if __name__ == "__main__":
    demo()
