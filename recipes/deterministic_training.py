"""Title: Deterministic training: two runs, bit-identical weights.

In short:
    keras.utils.set_random_seed(42)  # Python, NumPy and TensorFlow seeds, first thing
    tf.config.experimental.enable_op_determinism()  # a parallel map keeps the input order too
    dataset = dataset.map(preprocess, num_parallel_calls=4).shuffle(1000).batch(32)
    model = build_model()  # build, compile and fit after the two calls
    model.compile(optimizer="adam", loss="mse")
    model.fit(dataset, epochs=10)  # two runs end with bit-identical weights

Problem: You change a hyperparameter, retrain, and the validation score moves. Was it the
change or the noise? Only runs that repeat exactly can tell. Weight initialisation,
Dropout masks, the shuffle order and a parallel `tf.data` map all draw on randomness or on
thread timing, and leaving any one of them free makes two runs of the same script end
with different weights.

Recipe:
    1. At the start of the program call `make_deterministic(seed)`: it calls
       `keras.utils.set_random_seed(seed)` (Python's, NumPy's and TensorFlow's seeds) and
       `tf.config.experimental.enable_op_determinism()`.
    2. Build the input pipeline as usual (`make_dataset`): parallel map (decoding,
       augmenting), shuffle, batch. Op determinism makes a parallel map keep the input order.
    3. Build, compile and fit the model after the call; two runs of the same program then
       end with bit-identical weights (`weights_are_identical`).

Pitfalls:
    - Without a seed (no `set_random_seed`), two runs in one process end with different
      weights.
    - Without op determinism, `Dataset.map(..., num_parallel_calls=4, deterministic=False)`
      hands out elements in the order they finish: a map whose work is uneven reorders
      them, the shuffle that follows sees them in another order, the batches change and
      so do the weights, although every seed is set.
    - A map directly followed by `batch` keeps the order even with `deterministic=False`:
      tf.data fuses the two (its default `map_and_batch_fusion`), and the fused op writes
      each element into its own slot of the batch (with the fusion turned off in
      `tf.data.Options`, the same pipeline reorders).
    - With op determinism on, `deterministic=False` is overridden: the same map keeps the
      input order in each of six passes, where without op determinism a reorder shows
      within six (as TensorFlow's documentation of `enable_op_determinism` says).
    - `shuffle()` without a seed takes its seed from TensorFlow's global seed: after
      `keras.utils.set_random_seed` its order repeats run to run. Without a global seed
      it does not: of six runs with every layer seeded (initialisers and Dropout), not
      all end with the same weights. `shuffle(seed=...)` repeats.
    - With op determinism on and no TensorFlow seed (`tf.random.set_seed(None)`),
      TensorFlow's random ops (`tf.random.normal`, an unseeded `shuffle`) raise
      RuntimeError "Random ops require a seed".
    - `make_deterministic` raises ValueError for a seed that is not an integer in
      [0, 2**32) (NumPy's limit) and accepts NumPy integers, which
      `keras.utils.set_random_seed` refuses with ValueError on all five stacks. Seed 0
      repeats like any other seed.

Versions:
    - Keras 2 (tf-keras included): with op determinism on and no TensorFlow seed, calling
      a Dropout layer in training raises RuntimeError "Random ops require a seed".
    - Keras 3: the same call works; Keras 3 seeds Dropout from its own seed generator.
    - Several runs in one process (a search, a test suite) start each from
      `keras.backend.clear_session()`. Keras 3.2 made it run a full `gc.collect()` at every
      call, and 3.3 added `clear_session(free_memory=False)` to skip it; Keras 2, tf-keras
      and Keras 3.0 to 3.1 never collect. conftest.py passes `free_memory=False` where the
      argument exists, so only Keras 3.2 collects before each test.

Sources: TensorFlow API docs "tf.config.experimental.enable_op_determinism" (section
    "Determinism and tf.data"), "tf.keras.utils.set_random_seed", "tf.random.set_seed"
    and "tf.data.Dataset": `map`'s `deterministic` ("If set to False, the transformation
    is allowed to yield elements out of order to trade determinism for performance"),
    `shuffle`'s `seed`.

See also:
    - tf_data_pipeline: parallel map order and shuffling
    - resume_after_crash: a resumed run bit-identical to an uninterrupted one
    - training_apis: the same weights from every training route

Run: python -m recipes.deterministic_training
"""

import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
# np.random.seed accepts seeds in [0, 2**32); keras.utils.set_random_seed passes it there.
MAX_SEED = 2**32


def make_deterministic(seed):
    """Seeds Python, NumPy and TensorFlow with `seed` and enables op determinism."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**32)")
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**32)")
    # keras.utils.set_random_seed refuses NumPy integers, so hand it a Python int.
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


def make_dataset(
    features,
    targets,
    batch_size=8,
    shuffle_seed=None,
    preprocess=None,
    deterministic=None,
):
    """parallel map (`preprocess`, 4 calls at once) -> shuffle -> batch, a common pipeline.

    `deterministic=None` leaves the order to tf.data's options (in order by default).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if shuffle_seed is not None and (
        isinstance(shuffle_seed, bool)
        or not isinstance(shuffle_seed, numbers.Integral)
        or shuffle_seed < 0
    ):
        raise ValueError(f"shuffle_seed={shuffle_seed!r} must be None or an integer >= 0")
    if deterministic not in (None, True, False):
        raise ValueError(f"deterministic={deterministic!r} must be None, True or False")
    dataset = tf.data.Dataset.from_tensor_slices((features, targets))
    if preprocess is not None:
        dataset = dataset.map(preprocess, num_parallel_calls=4, deterministic=deterministic)
    dataset = dataset.shuffle(
        len(features), seed=None if shuffle_seed is None else int(shuffle_seed)
    )
    return dataset.batch(int(batch_size))


def build_model(input_dim, seed=None):
    """A small regressor with Dropout; `seed` seeds its initialisers and Dropout itself."""
    if isinstance(input_dim, bool) or not isinstance(input_dim, numbers.Integral) or input_dim < 1:
        raise ValueError(f"input_dim={input_dim!r} must be a positive integer")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise ValueError(f"seed={seed!r} must be None or an integer >= 0")
    # Seeds >= 1 only: Keras 3.0 does not seed an initialiser given seed=0.
    layer_seed = None if seed is None else int(seed) + 1

    def initializer(offset):
        if layer_seed is None:
            return "glorot_uniform"
        return keras.initializers.GlorotUniform(seed=layer_seed + offset)

    model = keras.Sequential(
        [
            keras.Input(shape=(int(input_dim),)),
            keras.layers.Dense(16, activation="relu", kernel_initializer=initializer(0)),
            keras.layers.Dropout(0.5, seed=layer_seed),
            keras.layers.Dense(1, kernel_initializer=initializer(1)),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def weights_are_identical(weights, other_weights):
    """True when both lists of arrays match bit for bit: same dtypes, shapes and bytes."""
    if len(weights) != len(other_weights):
        return False
    for array, other_array in zip(weights, other_weights, strict=True):
        array, other_array = np.asarray(array), np.asarray(other_array)
        if array.dtype != other_array.dtype or array.shape != other_array.shape:
            return False
        if array.tobytes() != other_array.tobytes():
            return False
    return True


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    random = np.random.default_rng(0)
    features = random.normal(size=(64, 4)).astype("float32")
    targets = (features @ random.normal(size=(4, 1))).astype("float32")

    def train_once():
        make_deterministic(42)
        model = build_model(4)
        model.fit(make_dataset(features, targets), epochs=2, verbose=0)
        return model.get_weights()

    first, second = train_once(), train_once()
    identical = weights_are_identical(first, second)
    print("two seeded runs with op determinism, bit-identical:", identical)
    print("first kernel row:", np.round(first[0][0, :4], 6))


if __name__ == "__main__":
    demo()
