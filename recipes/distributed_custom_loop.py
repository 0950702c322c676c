"""Title: A distributed custom training loop: MirroredStrategy on CPU, then several machines.

In short:
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():  # create the model and the optimizer inside the scope
        model, optimizer = build_model(), keras.optimizers.SGD(0.1)
    # per_example_loss_fn(y, prediction) returns one loss per example, no mean over the batch;
    # each replica divides the sum by the GLOBAL batch size (replica_loss).
    step = make_distributed_train_step(strategy, model, per_example_loss_fn, optimizer, 64)
    for batch in strategy.experimental_distribute_dataset(dataset.batch(64)):
        loss = step(batch)  # the global mean loss; matches one device within 1e-6

Problem: A GradientTape loop that trains well on one device is moved under
`tf.distribute.MirroredStrategy` and trains differently: each replica averages its loss
over its own slice of the batch, the optimizer sums the replicas' gradients, and every step
is too large by the replica count. Keras 3.0 to 3.4 do not sum the replicas' gradients at
all, so the replicas' copies of the weights drift apart without an error. This recipe trains
a model on two replicas to the weights of one device, on every stack, and runs the same code
on several machines with `MultiWorkerMirroredStrategy`.

Recipe:
    1. Before TensorFlow touches a device, split the CPU into logical devices
       (`use_logical_cpus(2)`): two replicas to test on without a second GPU. Once
       TensorFlow is initialized this is refused, and `use_logical_cpus` returns the devices
       that exist (one CPU) and says so.
    2. Create the strategy, then the model and the optimizer inside `strategy.scope()`.
    3. Distribute the global batch: `strategy.experimental_distribute_dataset(dataset)` on
       one machine, or `distribute_datasets_from_function` with each input pipeline's shard
       batched to the per-replica size (`distributed_dataset`).
    4. In each replica compute per-example losses and divide their sum by the GLOBAL batch
       size: `tf.nn.compute_average_loss(per_example_loss, global_batch_size=...)`, plus
       `tf.nn.scale_regularization_loss(sum(model.losses))` (`replica_loss`).
    5. `strategy.run` the step on each replica and `strategy.reduce(SUM, ...)` the replica
       losses into the global mean loss (`make_distributed_train_step`). On Keras 3.0 to 3.4
       the step sums the gradients across replicas itself, as later Keras does in
       `apply_gradients`.
    6. On several machines: set `TF_CONFIG` on each worker (`tf_config(workers, index)`),
       create `tf.distribute.MultiWorkerMirroredStrategy()` first thing, and run the very
       same script on every worker.

Pitfalls:
    - The single-device loss copied into `strategy.run` (mean over the replica's slice,
      `model.losses` added unscaled) gives gradients summed over the replicas that are twice
      the single-device gradients with two replicas (ratio 2 within 1e-5), and an SGD step
      twice as large; `replica_loss` gives the single-device gradients within 1e-6.
    - `model.losses` added without `tf.nn.scale_regularization_loss` counts the regularizer
      once per replica: the summed gradient exceeds the right one by one more
      regularization gradient.
    - Two replicas and one device trained on the same batches agree within 1e-6, not
      bit for bit: the replicas add their halves of the batch separately and the all-reduce
      adds the two sums, a different float32 summation order. The same holds for
      `experimental_distribute_dataset` and for `distribute_datasets_from_function` with
      per-replica batches.
    - Two worker processes on localhost, each with its own `TF_CONFIG` task index, end with
      identical weights, equal to single-device training within 1e-6.

Versions:
    - Keras 3.0 to 3.4: `optimizer.apply_gradients` inside `strategy.run` applies each
      replica's own gradient to its own copy of the weights: after one step the replicas'
      copies differ, and `fit` under `strategy.scope()` does the same.
      `make_distributed_train_step` all-reduces the gradients first on these releases, so
      the custom loop agrees with one device here too.
    - Keras 3.5 to 3.7: the custom loop agrees with one device, but `fit` under
      `strategy.scope()` takes steps twice as large as `fit` on one device
      (keras-team/keras#19891, fixed in 3.8 by keras-team/keras#20609).
    - Keras 2 (2.12, 2.15, tf-keras 2.21) and Keras 3.8 and later: the optimizer sums the
      replicas' gradients, and both the custom loop and `fit` under `strategy.scope()` equal
      single-device training within 1e-6.

Sources: TensorFlow tutorial "Custom training with tf.distribute.Strategy"
(tensorflow.org/tutorials/distribute/custom_training); TensorFlow guide "Distributed training
with TensorFlow" (tensorflow.org/guide/distributed_training); TensorFlow tutorial "Multi-worker
training with Keras" (tensorflow.org/tutorials/distribute/multi_worker_with_keras, TF_CONFIG);
tf.nn.compute_average_loss and tf.nn.scale_regularization_loss API references;
keras-team/keras#19308 (no gradient sum in the Keras 3 TF optimizer); keras-team/keras#19891
and its fix keras-team/keras#20609 (Keras 3 `fit` under MirroredStrategy).

See also:
    - loss_shape_pitfall: a tape loop that does not converge
    - training_apis: the same weights from every training route
    - compiled_train_step: a train step that traces once

Run: python -m recipes.distributed_custom_loop
"""

import json
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
KERAS_VERSION = (
    tuple(int(part) for part in keras.version().split(".")[:2]) if KERAS_MAJOR == 3 else (2, 0)
)
# Keras 3.0 to 3.4 call the gradient all-reduce where no replica context exists, so it does
# nothing (fixed in 3.5); Keras 2 sums the replicas' gradients in apply_gradients.
OPTIMIZER_SUMS_REPLICA_GRADIENTS = KERAS_MAJOR == 2 or KERAS_VERSION >= (3, 5)


def _positive_int(name, value):
    # bool is an int subclass, but global_batch_size=True is a mistake, not a size of one.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    return int(value)


def use_logical_cpus(count=2):
    """Splits the first CPU into `count` logical devices; returns (device names, created).

    Must run before TensorFlow initializes its devices. Afterwards TensorFlow refuses the
    change (RuntimeError): then the devices that exist are returned with created=False.
    """
    count = _positive_int("count", count)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
        created = True
    except RuntimeError:
        created = False
    return [device.name for device in tf.config.list_logical_devices("CPU")], created


def replica_loss(per_example_loss, global_batch_size, regularization_losses=()):
    """One replica's share of the global mean loss: sum / global batch + scaled regularizer.

    Summed over the replicas (the optimizer sums their gradients), this is the loss one
    device computes on the whole global batch.
    """
    global_batch_size = _positive_int("global_batch_size", global_batch_size)
    loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
    regularization_losses = list(regularization_losses)
    if regularization_losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(regularization_losses))
    return loss


def distributed_dataset(strategy, features, targets, global_batch_size, per_replica=False):
    """(features, targets) in global batches, distributed over `strategy`'s replicas.

    per_replica=False: `experimental_distribute_dataset` splits each global batch.
    per_replica=True: `distribute_datasets_from_function`; each input pipeline (one per
    worker) takes its shard of the examples in per-replica batches.
    """
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"strategy must be a tf.distribute.Strategy, got strategy={strategy!r}")
    global_batch_size = _positive_int("global_batch_size", global_batch_size)
    replicas = strategy.num_replicas_in_sync
    if len(features) != len(targets):
        raise ValueError(
            f"features and targets differ in length: {len(features)} != {len(targets)}"
        )
    if not per_replica:
        dataset = tf.data.Dataset.from_tensor_slices((features, targets)).batch(global_batch_size)
        return strategy.experimental_distribute_dataset(dataset)
    if global_batch_size % replicas:
        raise ValueError(
            f"global_batch_size={global_batch_size} must divide by the {replicas} replicas"
        )

    def dataset_fn(input_context):
        dataset = tf.data.Dataset.from_tensor_slices((features, targets))
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return dataset.batch(input_context.get_per_replica_batch_size(global_batch_size))

    return strategy.distribute_datasets_from_function(dataset_fn)


def make_distributed_train_step(
    strategy, model, per_example_loss_fn, optimizer, global_batch_size, loss_fn=replica_loss
):
    """A `tf.function` `step(distributed_batch)` returning the global mean loss of the batch.

    `per_example_loss_fn(y, prediction)` returns one loss per example (no reduction).
    `loss_fn(per_example_loss, global_batch_size, model.losses)` scales them per replica.
    """
    if not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"strategy must be a tf.distribute.Strategy, got strategy={strategy!r}")
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got model={model!r}")
    if not callable(per_example_loss_fn):
        raise ValueError(
            f"per_example_loss_fn must be callable, got per_example_loss_fn={per_example_loss_fn!r}"
        )
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got loss_fn={loss_fn!r}")
    if not hasattr(optimizer, "apply_gradients"):
        raise ValueError(f"optimizer must have apply_gradients, got optimizer={optimizer!r}")
    global_batch_size = _positive_int("global_batch_size", global_batch_size)

    def replica_step(features, targets):
        with tf.GradientTape() as tape:
            per_example_loss = per_example_loss_fn(targets, model(features, training=True))
            loss = loss_fn(per_example_loss, global_batch_size, model.losses)
        gradients = tape.gradient(loss, model.trainable_variables)
        if not OPTIMIZER_SUMS_REPLICA_GRADIENTS:
            context = tf.distribute.get_replica_context()
            gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        # No zip(strict=True): AutoGraph in TensorFlow 2.12 rejects the keyword.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
        return loss

    @tf.function
    def step(distributed_batch):
        replica_losses = strategy.run(replica_step, args=distributed_batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, replica_losses, axis=None)

    return step


def tf_config(workers, task_index):
    """The `TF_CONFIG` JSON for worker `task_index` of a cluster of "host:port" `workers`.

    Set it in the worker's environment before `MultiWorkerMirroredStrategy()` is created.
    Every worker gets the same list and its own index; worker 0 is the chief.
    """
    workers = list(workers) if isinstance(workers, (list, tuple)) else workers
    if not isinstance(workers, list) or not workers:
        raise ValueError(
            f"workers must be a non-empty list of 'host:port', got workers={workers!r}"
        )
    for address in workers:
        host, _, port = str(address).rpartition(":")
        if not isinstance(address, str) or not host or not port.isdigit():
            raise ValueError(f"workers must be 'host:port' strings, got {address!r} in {workers!r}")
    if (
        isinstance(task_index, bool)
        or not isinstance(task_index, numbers.Integral)
        or not 0 <= task_index < len(workers)
    ):
        raise ValueError(
            f"task_index must be in 0..{len(workers) - 1}, got task_index={task_index!r}"
        )
    return json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(task_index)}}
    )


def demo():
    devices, created = use_logical_cpus(2)
    if not created:
        print(f"TensorFlow was already initialized: no logical CPUs added, using {devices}")
    strategy = tf.distribute.MirroredStrategy(devices)
    replicas = strategy.num_replicas_in_sync
    print(f"tensorflow {tf.__version__}, Keras {KERAS_MAJOR}: {replicas} replicas on {devices}")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(32, 4)).astype("float32")
    targets = rng.normal(size=(32, 1)).astype("float32")
    global_batch_size = 8
    with strategy.scope():
        model = keras.Sequential(
            [
                keras.Input(shape=(4,)),
                keras.layers.Dense(
                    8, activation="tanh", kernel_regularizer=keras.regularizers.L2(1e-3)
                ),
                keras.layers.Dense(1),
            ]
        )
        optimizer = keras.optimizers.SGD(0.1)

    def squared_error(y, prediction):
        return tf.reduce_mean(tf.square(y - prediction), axis=-1)

    step = make_distributed_train_step(strategy, model, squared_error, optimizer, global_batch_size)
    for epoch in range(3):
        dataset = distributed_dataset(strategy, features, targets, global_batch_size)
        losses = [float(step(batch)) for batch in dataset]
        print(f"epoch {epoch}: mean loss {np.mean(losses):.4f}")
    print("TF_CONFIG of worker 1 of 2:", tf_config(["localhost:12345", "localhost:12346"], 1))


if __name__ == "__main__":
    demo()
