"""Runs recipes/distributed_custom_loop.py in a fresh TensorFlow and prints its results as JSON.

tests/test_distributed_custom_loop.py starts this script as a child process, because the
test process has initialized TensorFlow already and can no longer add logical CPUs.

    python tests/distributed_custom_loop_child.py mirrored   # two logical CPUs, every check
    python tests/distributed_custom_loop_child.py worker     # one MultiWorkerMirroredStrategy
                                                             # worker; TF_CONFIG is set

The last line printed is the JSON; the tests assert on it.
"""

import json
import sys

import numpy as np

from recipes import distributed_custom_loop as recipe

SAMPLES = 32
GLOBAL_BATCH_SIZE = 8
EPOCHS = 2
LEARNING_RATE = 0.1
L2_FACTOR = 0.01


def data():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(SAMPLES, 4)).astype("float32")
    targets = rng.normal(size=(SAMPLES, 1)).astype("float32")
    return features, targets


def small_model(keras):
    """Dense(3, tanh, L2) -> Dense(1), seeded initializers (seeds >= 1: Keras 3.0 takes a seed
    of 0 as no seed), so every process and every strategy starts from the same weights."""
    return keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(
                3,
                activation="tanh",
                kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                kernel_regularizer=keras.regularizers.L2(L2_FACTOR),
            ),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(seed=2)),
        ]
    )


def squared_error(tf):
    def per_example(y, prediction):
        return tf.reduce_mean(tf.square(y - prediction), axis=-1)

    return per_example


def single_device_loss(per_example_loss, global_batch_size, regularization_losses):
    """The single-device loss, copied unchanged into strategy.run: the classic pitfall."""
    import tensorflow as tf

    return tf.reduce_mean(per_example_loss) + tf.add_n(list(regularization_losses))


def unscaled_regularization_loss(per_example_loss, global_batch_size, regularization_losses):
    """Data loss scaled right, `model.losses` added without scale_regularization_loss."""
    import tensorflow as tf

    loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
    return loss + tf.add_n(list(regularization_losses))


def weights_of(model):
    return [weight.tolist() for weight in model.get_weights()]


def max_difference(weights, reference):
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(weights, reference, strict=True)
    )


def replica_copies_identical(tf, strategy, model):
    """True when every replica holds the same values of every weight."""
    for variable in model.weights:
        tensor_variable = variable if isinstance(variable, tf.Variable) else variable.value
        copies = [copy.numpy() for copy in strategy.experimental_local_results(tensor_variable)]
        if any(not np.array_equal(copies[0], copy) for copy in copies[1:]):
            return False
    return True


def train_single_device(tf, keras, features, targets, epochs):
    """The reference: a plain tape loop on one device, mean loss plus model.losses."""
    model = small_model(keras)
    optimizer = keras.optimizers.SGD(LEARNING_RATE)
    for _ in range(epochs):
        for start in range(0, len(features), GLOBAL_BATCH_SIZE):
            x = features[start : start + GLOBAL_BATCH_SIZE]
            y = targets[start : start + GLOBAL_BATCH_SIZE]
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(squared_error(tf)(y, model(x, training=True)))
                loss += tf.add_n(model.losses)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    return model


def train_with_recipe(tf, keras, strategy, features, targets, epochs, per_replica, loss_fn=None):
    with strategy.scope():
        model = small_model(keras)
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
    step = recipe.make_distributed_train_step(
        strategy,
        model,
        squared_error(tf),
        optimizer,
        GLOBAL_BATCH_SIZE,
        **({"loss_fn": loss_fn} if loss_fn else {}),
    )
    losses = []
    for _ in range(epochs):
        dataset = recipe.distributed_dataset(
            strategy, features, targets, GLOBAL_BATCH_SIZE, per_replica=per_replica
        )
        losses += [float(step(batch)) for batch in dataset]
    return model, losses


def summed_replica_gradients(tf, keras, strategy, features, targets, loss_fn):
    """The gradients of one global batch, summed over the replicas as the optimizer sums them."""
    with strategy.scope():
        model = small_model(keras)
    batch = next(iter(recipe.distributed_dataset(strategy, features, targets, GLOBAL_BATCH_SIZE)))

    def replica_gradients(x, y):
        with tf.GradientTape() as tape:
            per_example_loss = squared_error(tf)(y, model(x, training=True))
            loss = loss_fn(per_example_loss, GLOBAL_BATCH_SIZE, model.losses)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def summed(distributed_batch):
        per_replica = strategy.run(replica_gradients, args=distributed_batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return [gradient.numpy() for gradient in summed(batch)]


def single_device_gradients(tf, keras, features, targets, regularization_only=False):
    model = small_model(keras)
    x, y = features[:GLOBAL_BATCH_SIZE], targets[:GLOBAL_BATCH_SIZE]
    with tf.GradientTape() as tape:
        data_loss = tf.reduce_mean(squared_error(tf)(y, model(x, training=True)))
        regularization = tf.add_n(model.losses)
        loss = regularization if regularization_only else data_loss + regularization
    # Only the first layer's kernel is regularized: the others get no regularizer gradient.
    return [
        np.zeros(variable.shape, "float32") if gradient is None else gradient.numpy()
        for gradient, variable in zip(
            tape.gradient(loss, model.trainable_variables), model.trainable_variables, strict=True
        )
    ]


def gradient_ratio(gradients, reference):
    """Summed-over-replicas gradients divided by the single-device ones, (min, max) over entries."""
    ratios = np.concatenate(
        [(g / r).ravel() for g, r in zip(gradients, reference, strict=True) if np.any(r)]
    )
    return float(ratios.min()), float(ratios.max())


def norm_ratio(update, reference):
    """The size of an update over the size of the reference update (all weights together)."""
    flat = np.concatenate([np.ravel(part) for part in update])
    flat_reference = np.concatenate([np.ravel(part) for part in reference])
    return float(np.linalg.norm(flat) / np.linalg.norm(flat_reference))


def raw_optimizer_step(tf, keras, strategy, features, targets):
    """One step with `optimizer.apply_gradients` alone inside strategy.run (no all-reduce of our
    own): do the replicas' copies stay identical?"""
    with strategy.scope():
        model = small_model(keras)
        optimizer = keras.optimizers.SGD(LEARNING_RATE)
    batch = next(iter(recipe.distributed_dataset(strategy, features, targets, GLOBAL_BATCH_SIZE)))

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example_loss = squared_error(tf)(y, model(x, training=True))
            loss = recipe.replica_loss(per_example_loss, GLOBAL_BATCH_SIZE, model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        # No zip(strict=True): AutoGraph in TensorFlow 2.12 rejects the keyword.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905

    tf.function(lambda b: strategy.run(replica_step, args=b))(batch)
    return replica_copies_identical(tf, strategy, model)


def fit_update_ratio(tf, keras, strategy, features, targets, steps):
    """`fit` under strategy.scope() against `fit` on one device, over `steps` steps of SGD:
    (replicas identical, max weight difference, norm of the update / single-device update)."""
    initial = small_model(keras).get_weights()
    single = small_model(keras)
    single.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    with strategy.scope():
        mirrored = small_model(keras)
        mirrored.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), loss="mse")
    samples = steps * GLOBAL_BATCH_SIZE
    for model in (single, mirrored):
        model.fit(
            features[:samples],
            targets[:samples],
            batch_size=GLOBAL_BATCH_SIZE,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
    update = [w - i for w, i in zip(mirrored.get_weights(), initial, strict=True)]
    single_update = [w - i for w, i in zip(single.get_weights(), initial, strict=True)]
    return {
        "replicas_identical": replica_copies_identical(tf, strategy, mirrored),
        "difference": max_difference(mirrored.get_weights(), single.get_weights()),
        "update_ratio": norm_ratio(update, single_update),
        "minus_twice_single": max_difference(update, [2 * part for part in single_update]),
    }


def run_mirrored():
    devices, created = recipe.use_logical_cpus(2)
    import tensorflow as tf
    from tensorflow import keras

    strategy = tf.distribute.MirroredStrategy(devices)
    features, targets = data()
    results = {
        "devices": devices,
        "created": created,
        "replicas": strategy.num_replicas_in_sync,
        "second_call": recipe.use_logical_cpus(3),
    }

    reference = single_device_gradients(tf, keras, features, targets)
    regularization_gradients = single_device_gradients(
        tf, keras, features, targets, regularization_only=True
    )
    recipe_gradients = summed_replica_gradients(
        tf, keras, strategy, features, targets, recipe.replica_loss
    )
    pitfall_gradients = summed_replica_gradients(
        tf, keras, strategy, features, targets, single_device_loss
    )
    unscaled_gradients = summed_replica_gradients(
        tf, keras, strategy, features, targets, unscaled_regularization_loss
    )
    results["recipe_gradient_difference"] = max_difference(recipe_gradients, reference)
    results["pitfall_gradient_ratio"] = gradient_ratio(pitfall_gradients, reference)
    # The unscaled regularizer adds one more regularization gradient than the recipe's loss.
    excess = [u - r for u, r in zip(unscaled_gradients, recipe_gradients, strict=True)]
    results["unscaled_regularization_excess_difference"] = max_difference(
        excess, regularization_gradients
    )
    results["regularization_gradient_size"] = max(
        float(np.max(np.abs(g))) for g in regularization_gradients
    )

    # One SGD step through the recipe's step: with the pitfall loss the update doubles.
    initial = small_model(keras).get_weights()
    single_step = train_single_device(tf, keras, features[:8], targets[:8], epochs=1)
    recipe_step, _ = train_with_recipe(tf, keras, strategy, features[:8], targets[:8], 1, False)
    pitfall_step, _ = train_with_recipe(
        tf, keras, strategy, features[:8], targets[:8], 1, False, loss_fn=single_device_loss
    )

    def update_of(model):
        return [w - i for w, i in zip(model.get_weights(), initial, strict=True)]

    single_update = update_of(single_step)
    results["pitfall_step_norm_ratio"] = norm_ratio(update_of(pitfall_step), single_update)
    results["pitfall_step_minus_twice_single"] = max_difference(
        update_of(pitfall_step), [2 * update for update in single_update]
    )
    results["recipe_step_difference"] = max_difference(update_of(recipe_step), single_update)

    # Whole training: two epochs, both input routes, against the single-device tape loop.
    single = train_single_device(tf, keras, features, targets, EPOCHS)
    results["single_device_weights"] = weights_of(single)
    for name, per_replica in (("experimental_distribute_dataset", False), ("from_function", True)):
        model, losses = train_with_recipe(
            tf, keras, strategy, features, targets, EPOCHS, per_replica
        )
        results[name] = {
            "difference": max_difference(model.get_weights(), single.get_weights()),
            "replicas_identical": replica_copies_identical(tf, strategy, model),
            "steps": len(losses),
        }

    try:
        recipe.distributed_dataset(strategy, features, targets, 7, per_replica=True)
        results["indivisible_batch_error"] = None
    except ValueError as error:
        results["indivisible_batch_error"] = str(error)

    results["raw_optimizer_replicas_identical"] = raw_optimizer_step(
        tf, keras, strategy, features, targets
    )
    results["fit_one_step"] = fit_update_ratio(tf, keras, strategy, features, targets, steps=1)
    results["fit_one_epoch"] = fit_update_ratio(tf, keras, strategy, features, targets, steps=4)
    return results


def run_worker():
    # MultiWorkerMirroredStrategy must be created before any other TensorFlow op.
    import tensorflow as tf
    from tensorflow import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    features, targets = data()
    model, losses = train_with_recipe(
        tf, keras, strategy, features, targets, EPOCHS, per_replica=True
    )
    return {
        "replicas": strategy.num_replicas_in_sync,
        "weights": weights_of(model),
        "steps": len(losses),
    }


if __name__ == "__main__":
    mode = sys.argv[1]
    outcome = run_mirrored() if mode == "mirrored" else run_worker()
    print(json.dumps(outcome))
