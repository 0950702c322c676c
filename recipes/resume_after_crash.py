"""Title: Resume after a crash: nothing lost when training dies.

In short:
    checkpoint = make_checkpoint(model, optimizer)  # model, optimizer and a step counter
    manager = tf.train.CheckpointManager(checkpoint, "checkpoints", max_to_keep=3)
    restore_latest_good(manager, checkpoint)  # skips damaged checkpoints; None on a fresh start
    while int(checkpoint.step) < total_steps:
        rows = batch_rows(int(checkpoint.step), len(x), batch_size, seed)  # data from the step
        train_step(x[rows], y[rows])
        checkpoint.step.assign_add(1)
        if int(checkpoint.step) % 100 == 0:
            manager.save(checkpoint_number=int(checkpoint.step))
    # fit: keras.callbacks.BackupAndRestore("backup"), shuffle=False; exact on Keras 2 and 3.3+

Problem: A long run dies: an exception, an out-of-memory kill, a preempted machine. Without
a backup the hours are gone; with a naive one (weights only, every epoch) the resumed run
silently differs from the run that never stopped: the optimizer's moments restart from
zero, the consumed batches are fed again, and a half-written file can break the restore.

Recipe:
    1. With `fit`: pass `keras.callbacks.BackupAndRestore(backup_dir)` and keep the data
       order reproducible (here `shuffle=False`); run the same `fit` again after a crash
       and it continues from the last completed epoch (see Versions).
    2. In a custom loop: `make_checkpoint(model, optimizer)` puts the model, the optimizer
       and a step counter into one `tf.train.Checkpoint`; a `tf.train.CheckpointManager`
       writes it every few steps and keeps the last few.
    3. Make the data position a function of the step counter (`batch_rows`: the epoch's
       permutation comes from (seed, epoch)), so a resumed loop feeds exactly the batches
       the crashed one had not trained on.
    4. On start, `restore_latest_good(manager, checkpoint)` restores the newest checkpoint
       that reads back whole, skipping corrupt or truncated ones with a warning.

Pitfalls:
    - A custom loop with model, optimizer and step in one checkpoint, and the data position
      derived from the step, resumes to weights and optimizer state bit-identical to an
      uninterrupted run on all five stacks, whether the crash is an exception or SIGKILL.
    - `BackupAndRestore(save_freq=N)` (a backup every N batches) does not resume a crash
      mid-epoch exactly on any of the five stacks: the final weights differ from an
      uninterrupted run's (see Versions for what each trains after the restart).
    - A damaged checkpoint fails to restore: a truncated data file raises IndexError "Read
      less bytes than requested", overwritten bytes `tf.errors.DataLossError`, a truncated
      index file `tf.errors.OpError` "not an sstable". `restore_latest_good` then warns and
      falls back to the previous checkpoint, raises RuntimeError naming every path when
      none reads back, and returns None when there is no checkpoint yet.
    - `BackupAndRestore(delete_checkpoint=True)` leaves no backup file after a finished
      `fit`; `delete_checkpoint=False` keeps it.

Versions:
    - Keras 2 (tf-keras included) and Keras 3.3 and later: with `save_freq="epoch"` a
      crash mid-epoch (an exception or SIGKILL) resumes at the interrupted epoch and ends
      bit-identical to an uninterrupted run, weights and optimizer state.
    - Keras 3.0: `BackupAndRestore` restores neither the epoch nor the optimizer state
      (warning "Skipping variable loading for optimizer"): the resumed `fit` runs every
      epoch again and ends with different weights. Keras 3.1 to 3.2 resume at the
      interrupted epoch but still skip the optimizer state, so the weights differ too.
    - After a crash before batch 3 of epoch 1 (4 batches an epoch, a backup every 2), the
      resumed `fit` trains 6 batches on Keras 2 (it skips the 2 backed-up batches and
      still ends elsewhere), 12 on Keras 3.0 (every epoch) and 8 on Keras 3.1 and later
      (the interrupted epoch from its first batch).
    - Keras 3.0: `tf.train.Checkpoint(optimizer=<Keras optimizer>)` raises ValueError
      "`Checkpoint` was expecting optimizer to be a trackable object"; `make_checkpoint`
      then checkpoints the optimizer's variables instead. Keras 2 and Keras 3.1 and later
      accept the optimizer itself.
    - Arguments: Keras 2 has `backup_dir, save_freq, delete_checkpoint,
      save_before_preemption`; Keras 3.0 to 3.6 `backup_dir, save_freq,
      delete_checkpoint`; Keras 3.7 and later add `double_checkpoint` (earlier releases
      refuse it with TypeError).
    - On Keras 3.7 and later, `double_checkpoint=True` keeps the previous backup too
      (`latest.weights.h5.bkp`). After a crash in epoch 2 of 3 and a truncated newest
      backup, `fit` resumes from the previous one, the weights and optimizer state of the
      end of epoch 1 exactly, and runs the last 2 epochs; without the previous backup the
      same damage makes `fit` raise OSError.

Sources: Keras API docs "BackupAndRestore" for Keras 3
    (keras.io/api/callbacks/backup_and_restore) and Keras 2
    (keras.io/2/api/callbacks/backup_and_restore); TensorFlow guides "Training
    checkpoints" (tensorflow.org/guide/checkpoint) and "Migrate the fault tolerance
    mechanism" (tensorflow.org/guide/migrate/fault_tolerance); TensorFlow API docs
    "tf.train.CheckpointManager".

See also:
    - save_paths: file names for ModelCheckpoint and save_weights
    - deterministic_training: runs that repeat bit for bit

Run: python -m recipes.resume_after_crash
"""

import numbers
import os
import warnings

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(value)


def make_checkpoint(model, optimizer):
    """One `tf.train.Checkpoint` with the model, the optimizer and an int64 step counter."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"model={model!r} must be a keras.Model")
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(f"optimizer={optimizer!r} must be a keras optimizer")
    # Create the optimizer's slots now, so a restore fills real variables at once instead
    # of deferring (and hiding a bad file until the first step).
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    try:
        return tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    except ValueError:
        # Keras 3.0's optimizer is not trackable; its variables (iterations, learning rate,
        # slots, in a fixed order) are.
        return tf.train.Checkpoint(
            model=model, optimizer_variables=list(optimizer.variables), step=step
        )


def batch_rows(step, num_examples, batch_size, seed=0):
    """Row indices of the batch at global `step`: epoch = step // steps per epoch."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"step={step!r} must be an integer >= 0")
    num_examples = _check_positive_int("num_examples", num_examples)
    batch_size = _check_positive_int("batch_size", batch_size)
    if batch_size > num_examples:
        raise ValueError(f"batch_size={batch_size} must be <= num_examples={num_examples}")
    # The last partial batch of an epoch is dropped, so every step has a full batch.
    epoch, position = divmod(int(step), num_examples // batch_size)
    order = np.random.default_rng([int(seed), epoch]).permutation(num_examples)
    return order[position * batch_size : (position + 1) * batch_size]


def _checkpoint_paths(manager_or_directory):
    if isinstance(manager_or_directory, tf.train.CheckpointManager):
        return list(manager_or_directory.checkpoints)
    if isinstance(manager_or_directory, (str, os.PathLike)):
        directory = os.fspath(manager_or_directory)
        if not os.path.isdir(directory):
            raise ValueError(f"manager_or_directory={directory!r} is not a directory")
        state = tf.train.get_checkpoint_state(directory)
        return list(state.all_model_checkpoint_paths) if state else []
    raise ValueError(
        f"manager_or_directory={manager_or_directory!r} must be a "
        "tf.train.CheckpointManager or a directory"
    )


# A truncated data file raises IndexError "Read less bytes than requested", not an OpError.
UNREADABLE_CHECKPOINT_ERRORS = (tf.errors.OpError, ValueError, IndexError, AssertionError)


def restore_latest_good(manager_or_directory, checkpoint):
    """Restores the newest checkpoint that reads back whole; returns its path or None."""
    if not isinstance(checkpoint, tf.train.Checkpoint):
        raise ValueError(f"checkpoint={checkpoint!r} must be a tf.train.Checkpoint")
    paths = _checkpoint_paths(manager_or_directory)
    failures = []
    for path in reversed(paths):
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
            return path
        except UNREADABLE_CHECKPOINT_ERRORS as error:
            failures.append(f"{path}: {type(error).__name__}")
            warnings.warn(
                f"checkpoint {path} is unreadable ({type(error).__name__}), "
                "trying the previous one",
                stacklevel=2,
            )
    if failures:
        raise RuntimeError("no checkpoint reads back: " + "; ".join(failures))
    return None


def train_resumable(
    model,
    optimizer,
    features,
    targets,
    directory,
    total_steps,
    batch_size=8,
    save_every=2,
    seed=0,
    after_step=None,
):
    """Trains to `total_steps`, resuming from `directory`; `after_step(step)` after each step."""
    total_steps = _check_positive_int("total_steps", total_steps)
    save_every = _check_positive_int("save_every", save_every)
    features, targets = np.asarray(features), np.asarray(targets)
    if len(features) != len(targets):
        raise ValueError(f"features ({len(features)} rows) and targets ({len(targets)}) differ")
    checkpoint = make_checkpoint(model, optimizer)
    manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=3)
    restore_latest_good(manager, checkpoint)

    @tf.function
    def train_step(batch_features, batch_targets):
        with tf.GradientTape() as tape:
            predictions = model(batch_features, training=True)
            loss = tf.reduce_mean(tf.square(predictions - batch_targets))
        gradients = tape.gradient(loss, model.trainable_variables)
        # No `strict=`: TensorFlow 2.12's autograph `zip` does not take it.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # noqa: B905
        return loss

    while int(checkpoint.step) < total_steps:
        rows = batch_rows(int(checkpoint.step), len(features), batch_size, seed)
        train_step(features[rows], targets[rows])
        checkpoint.step.assign_add(1)
        if int(checkpoint.step) % save_every == 0:
            manager.save(checkpoint_number=int(checkpoint.step))
        if after_step is not None:
            after_step(int(checkpoint.step))
    return manager


def demo():
    import tempfile

    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    random = np.random.default_rng(0)
    features = random.normal(size=(32, 4)).astype("float32")
    targets = features.sum(axis=1, keepdims=True).astype("float32")

    def fresh():
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
        return model, keras.optimizers.Adam(0.01)

    class Crash(Exception):
        pass

    def crash_at_step_5(step):
        if step == 5:
            raise Crash()

    with tempfile.TemporaryDirectory() as uninterrupted, tempfile.TemporaryDirectory() as crashed:
        model, optimizer = fresh()
        train_resumable(model, optimizer, features, targets, uninterrupted, total_steps=10)
        resumed_model, resumed_optimizer = fresh()
        try:
            train_resumable(
                resumed_model,
                resumed_optimizer,
                features,
                targets,
                crashed,
                10,
                after_step=crash_at_step_5,
            )
        except Crash:
            print("crashed after step 5; checkpoints:", sorted(os.listdir(crashed)))
        resumed_model, resumed_optimizer = fresh()
        train_resumable(resumed_model, resumed_optimizer, features, targets, crashed, 10)
        identical = all(
            np.array_equal(a, b)
            for a, b in zip(model.get_weights(), resumed_model.get_weights(), strict=True)
        )
        print("resumed run equals the uninterrupted one bit for bit:", identical)


if __name__ == "__main__":
    demo()
