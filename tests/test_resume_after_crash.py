"""Tests for recipes/resume_after_crash.py: crash, resume, compare with a run that never stopped.

The SIGKILL tests run the crashed half in a child process (`child_train_until_killed`,
`child_fit_until_killed`), which imports this module. So this module must not import
conftest, whose import-time setup belongs to the pytest process; the child enables op
determinism itself, as conftest.py does for the parent.
"""

import atexit
import inspect
import os
import pathlib
import shutil
import signal
import tempfile
import warnings

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes.resume_after_crash import (
    batch_rows,
    make_checkpoint,
    restore_latest_good,
    train_resumable,
)
from tests.child_process import finish, run_python

TOTAL_STEPS = 10  # 32 rows in batches of 8: 4 steps an epoch, so the runs cross epochs.
EPOCHS = 3


class Crash(Exception):
    """Raised by a test at a chosen step, standing in for any error that ends a run."""


def regression_data():
    random = np.random.default_rng(0)
    features = random.normal(size=(32, 4)).astype("float32")
    return features, features.sum(axis=1, keepdims=True).astype("float32")


def fresh_model(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ]
    )


def optimizer_state(optimizer):
    variables = optimizer.variables
    # Keras 2.12's optimizer has a `variables()` method; later ones a property.
    return [
        np.asarray(variable) for variable in (variables() if callable(variables) else variables)
    ]


def identical(arrays, other_arrays):
    return len(arrays) == len(other_arrays) and all(
        np.array_equal(a, b) for a, b in zip(arrays, other_arrays, strict=True)
    )


def train_custom_loop(directory, after_step=None):
    model, optimizer = fresh_model(), keras.optimizers.Adam(0.01)
    features, targets = regression_data()
    train_resumable(
        model, optimizer, features, targets, directory, TOTAL_STEPS, after_step=after_step
    )
    return model, optimizer


@pytest.fixture(scope="module")
def uninterrupted_custom_loop(tmp_path_factory):
    keras.backend.clear_session()
    model, optimizer = train_custom_loop(tmp_path_factory.mktemp("uninterrupted"))
    return model.get_weights(), optimizer_state(optimizer)


def crash_at(crash_step):
    def after_step(step):
        if step == crash_step:
            raise Crash(f"step {step}")

    return after_step


# --- The custom loop ---------------------------------------------------------------------


def test_custom_loop_resumes_bit_identical_after_an_exception(tmp_path, uninterrupted_custom_loop):
    with pytest.raises(Crash):
        train_custom_loop(tmp_path, after_step=crash_at(5))
    # Step 5 finished but was not saved: the resumed run must redo it from checkpoint 4.
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-4")
    keras.backend.clear_session()
    model, optimizer = train_custom_loop(tmp_path)
    weights, optimizer_variables = uninterrupted_custom_loop
    assert identical(model.get_weights(), weights)
    assert identical(optimizer_state(optimizer), optimizer_variables)
    assert int(optimizer.iterations.numpy()) == TOTAL_STEPS


def child_train_until_killed(directory):
    """Child process: trains, and SIGKILLs itself after step 7 (checkpoint 6 is on disk)."""
    tf.config.experimental.enable_op_determinism()

    def after_step(step):
        if step == 7:
            os.kill(os.getpid(), signal.SIGKILL)

    train_custom_loop(directory, after_step=after_step)


def test_custom_loop_resumes_bit_identical_after_sigkill(
    killed_children, uninterrupted_custom_loop
):
    directory, completed = killed_children["custom loop"]
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]
    assert tf.train.latest_checkpoint(directory).endswith("ckpt-6")
    model, optimizer = train_custom_loop(directory)
    weights, optimizer_variables = uninterrupted_custom_loop
    assert identical(model.get_weights(), weights)
    assert identical(optimizer_state(optimizer), optimizer_variables)


def test_checkpointing_a_keras_optimizer_object_depends_on_the_keras_version(version_split):
    """make_checkpoint falls back to the optimizer's variables where the object is refused."""
    # Imported here, not at the top: the SIGKILL children import this module (see above).
    from conftest import outcome_of

    optimizer = keras.optimizers.Adam()
    step = tf.Variable(0)
    observed = outcome_of(
        lambda: tf.train.Checkpoint(optimizer=optimizer, step=step),
        ["expecting optimizer to be a trackable object"],
    )
    version_split(
        "tf.train.Checkpoint(optimizer=<a Keras optimizer>)",
        observed,
        {
            "keras<3": "works",
            "keras>=3,<3.1": "ValueError: expecting optimizer to be a trackable object",
            "keras>=3.1": "works",
        },
    )


def test_batch_rows_visits_every_row_once_an_epoch_in_a_new_order_each_epoch():
    epoch_0 = np.concatenate([batch_rows(step, 32, 8) for step in range(4)])
    epoch_1 = np.concatenate([batch_rows(step, 32, 8) for step in range(4, 8)])
    assert sorted(epoch_0) == sorted(epoch_1) == list(range(32))
    assert not np.array_equal(epoch_0, epoch_1)
    # The position is a function of the step alone: asking again gives the same rows.
    assert np.array_equal(batch_rows(5, 32, 8), epoch_1[8:16])


# --- fit with BackupAndRestore -------------------------------------------------------------


class CrashAtBatch(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.crash_at, self.epoch = (epoch, batch), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.crash_at:
            raise Crash(f"epoch {self.epoch} batch {batch}")


class CountBatches(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


def compiled_model(seed):
    model = fresh_model(seed)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def fit(model, callbacks):
    features, targets = regression_data()
    return model.fit(
        features,
        targets,
        batch_size=8,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def crash_in_this_process(backup_dir, save_freq):
    crashed = compiled_model(seed=1)
    with pytest.raises(Crash):
        fit(
            crashed,
            [keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq), CrashAtBatch(1, 3)],
        )


class KillAtBatch(CrashAtBatch):
    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)


def child_fit_until_killed(backup_dir, save_freq):
    """Child process: the crashed fit of `crash_then_resume`, ended by SIGKILL instead."""
    tf.config.experimental.enable_op_determinism()
    callbacks = [keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq)]
    fit(compiled_model(seed=1), [*callbacks, KillAtBatch(1, 3)])


def run_killed_children():
    """Both SIGKILL children, each in its own fresh directory: {name: (directory, completed)}.

    They start when the tests are collected and run beside them (conftest, START_EARLY); the
    tests then resume from what each child left on disk.
    """
    base = tempfile.mkdtemp(prefix="resume_after_crash_")
    atexit.register(shutil.rmtree, base, True)
    calls = {
        "custom loop": "child_train_until_killed as child; child({directory!r})",
        "fit, save_freq='epoch'": "child_fit_until_killed as child; child({directory!r}, 'epoch')",
    }
    runs = {}
    for index, (name, call) in enumerate(calls.items()):
        directory = os.path.join(base, str(index))
        code = f"from {__name__} import " + call.format(directory=directory)
        runs[name] = (directory, run_python(code))
    return runs


START_EARLY = {"killed_children": run_killed_children}


@pytest.fixture(scope="module")
def killed_children():
    return finish(run_killed_children)


@pytest.fixture(scope="module")
def uninterrupted_fit():
    """(weights, optimizer state) after an uninterrupted fit: fitted once for every test."""
    reference = compiled_model(seed=1)
    fit(reference, [])
    return reference.get_weights(), optimizer_state(reference.optimizer)


def crash_then_resume(backup_dir, save_freq, reference, crash=crash_in_this_process):
    """A fit crashed at epoch 1 batch 3, resumed in a new model, against `reference`."""
    reference_weights, reference_optimizer = reference
    crash(backup_dir, save_freq)
    # A restarted process builds its model afresh: other initial weights, a new optimizer.
    resumed, counter = compiled_model(seed=5), CountBatches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(
            resumed, [keras.callbacks.BackupAndRestore(backup_dir, save_freq=save_freq), counter]
        )
    skipped_optimizer = any(
        "Skipping variable loading for optimizer" in str(w.message) for w in caught
    )
    same = identical(resumed.get_weights(), reference_weights) and identical(
        optimizer_state(resumed.optimizer), reference_optimizer
    )
    return {
        "batches": counter.batches,
        "weights": identical(resumed.get_weights(), reference_weights),
        "summary": f"{len(history.history['loss'])} epochs run after the restart: "
        + (
            "bit-identical"
            if same
            else "weights differ" + (", optimizer skipped" if skipped_optimizer else "")
        ),
    }


# What a fit with BackupAndRestore(save_freq="epoch") does after a crash mid-epoch 1 of 3.
EPOCH_BACKUP_RESUME = {
    "keras<3": "2 epochs run after the restart: bit-identical",
    "keras>=3,<3.1": "3 epochs run after the restart: weights differ, optimizer skipped",
    "keras>=3.1,<3.3": "2 epochs run after the restart: weights differ, optimizer skipped",
    "keras>=3.3": "2 epochs run after the restart: bit-identical",
}


def test_backup_and_restore_every_epoch_resumes_a_crash_mid_epoch(
    tmp_path, uninterrupted_fit, version_split
):
    result = crash_then_resume(str(tmp_path / "backup"), "epoch", uninterrupted_fit)
    version_split(
        "BackupAndRestore(save_freq='epoch'), a crash mid-epoch 1 of 3, then fit again",
        result["summary"],
        EPOCH_BACKUP_RESUME,
    )


def test_backup_and_restore_every_epoch_resumes_a_sigkill_mid_epoch(
    killed_children, uninterrupted_fit, version_split
):
    """The same, with the crashed fit in a child process killed by SIGKILL."""
    backup_dir, completed = killed_children["fit, save_freq='epoch'"]

    def killed_in_the_child(backup_dir, save_freq):
        assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]

    result = crash_then_resume(backup_dir, "epoch", uninterrupted_fit, killed_in_the_child)
    version_split(
        "BackupAndRestore(save_freq='epoch'), SIGKILL mid-epoch 1 of 3, then fit again",
        result["summary"],
        EPOCH_BACKUP_RESUME,
    )


def test_backup_and_restore_every_n_batches_does_not_resume_mid_epoch_exactly(
    tmp_path, uninterrupted_fit, version_split
):
    result = crash_then_resume(str(tmp_path / "backup"), 2, uninterrupted_fit)
    assert result["weights"] is False
    version_split(
        "BackupAndRestore(save_freq=2), crash before batch 3 of epoch 1 (4 a epoch), fit again: "
        "batches trained",
        f"{result['batches']} batches",
        {"keras<3": "6 batches", "keras>=3,<3.1": "12 batches", "keras>=3.1": "8 batches"},
    )


def test_backup_and_restore_arguments_depend_on_the_keras_version(version_split):
    parameters = inspect.signature(keras.callbacks.BackupAndRestore.__init__).parameters
    observed = ", ".join(name for name in parameters if name != "self")
    version_split(
        "BackupAndRestore's arguments",
        observed,
        {
            "keras<3": "backup_dir, save_freq, delete_checkpoint, save_before_preemption",
            "keras>=3,<3.7": "backup_dir, save_freq, delete_checkpoint",
            "keras>=3.7": "backup_dir, save_freq, double_checkpoint, delete_checkpoint",
        },
    )


class StateAtEpochEnd(keras.callbacks.Callback):
    """The weights and optimizer state at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_epoch_end(self, epoch, logs=None):
        self.states.append((self.model.get_weights(), optimizer_state(self.model.optimizer)))


class StateAtTrainBegin(keras.callbacks.Callback):
    """The state `fit` starts from, once the callbacks listed before this one restored it."""

    def on_train_begin(self, logs=None):
        self.state = (self.model.get_weights(), optimizer_state(self.model.optimizer))


def same_state(state, other_state):
    return identical(state[0], other_state[0]) and identical(state[1], other_state[1])


def resume_from_a_damaged_newest_backup(backup_dir):
    """Keras 3.7+: two backups kept, a crash in epoch 2 of 3, the newest backup truncated.

    Then `fit` again with the previous backup there, and (the control) without it.
    """
    from conftest import outcome_of  # not at the top: the SIGKILL children import this module

    at_epoch_end = StateAtEpochEnd()
    callback = keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)
    with pytest.raises(Crash):
        fit(compiled_model(seed=1), [callback, at_epoch_end, CrashAtBatch(2, 1)])
    backup = pathlib.Path(backup_dir)
    weights_files = sorted(path.name for path in backup.glob("latest.weights.h5*"))
    assert weights_files == ["latest.weights.h5", "latest.weights.h5.bkp"]
    newest = backup / "latest.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    # The control, on a copy without the previous backup.
    control = backup.with_name("control")
    control.mkdir()
    for path in backup.iterdir():
        if path.suffix != ".bkp":
            (control / path.name).write_bytes(path.read_bytes())
    control_outcome = outcome_of(
        lambda: fit(compiled_model(seed=5), [keras.callbacks.BackupAndRestore(str(control))])
    )

    start, counter = StateAtTrainBegin(), CountBatches()
    callback = keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)
    history = fit(compiled_model(seed=5), [callback, start, counter])
    restored = [
        name
        for name, state in zip(["epoch 1's", "epoch 2's"], at_epoch_end.states, strict=True)
        if same_state(start.state, state)
    ]
    return (
        f"resumes from {' and '.join(restored) or 'neither'} backup exactly, "
        f"{len(history.history['loss'])} epochs run; without the previous one: "
        f"{control_outcome}"
    )


def test_double_checkpoint_resumes_from_the_previous_backup_when_the_newest_is_damaged(
    tmp_path, version_split
):
    from conftest import outcome_of  # not at the top: the SIGKILL children import this module

    backup_dir = str(tmp_path / "backup")
    observed = outcome_of(
        lambda: keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        ["double_checkpoint"],
    )
    if observed == "works":
        observed = resume_from_a_damaged_newest_backup(backup_dir)
    version_split(
        "BackupAndRestore(double_checkpoint=True), crash in epoch 2 of 3, newest backup "
        "truncated, fit again",
        observed,
        {
            "keras<3.7": "TypeError: double_checkpoint",
            "keras>=3.7": "resumes from epoch 1's backup exactly, 2 epochs run; "
            "without the previous one: OSError",
        },
    )


@pytest.mark.parametrize("delete_checkpoint", [True, False])
def test_delete_checkpoint_decides_whether_the_backup_outlives_a_finished_fit(
    tmp_path, delete_checkpoint
):
    backup_dir = tmp_path / "backup"
    callback = keras.callbacks.BackupAndRestore(
        str(backup_dir), delete_checkpoint=delete_checkpoint
    )
    fit(compiled_model(seed=1), [callback])
    files_left = [path for path in backup_dir.rglob("*") if path.is_file()]
    assert bool(files_left) is (not delete_checkpoint)


# --- Corrupt checkpoints -------------------------------------------------------------------


def truncate_data(prefix):
    path = pathlib.Path(f"{prefix}.data-00000-of-00001")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def overwrite_data(prefix):
    path = pathlib.Path(f"{prefix}.data-00000-of-00001")
    data = bytearray(path.read_bytes())
    data[10:200] = bytes(190)
    path.write_bytes(bytes(data))


def truncate_index(prefix):
    path = pathlib.Path(f"{prefix}.index")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def six_steps_of_checkpoints(tmp_path):
    """Checkpoints 2, 4 and 6 of a custom loop, and the weights checkpoint 4 holds."""
    train_resumable(
        fresh_model(),
        keras.optimizers.Adam(0.01),
        *regression_data(),
        str(tmp_path),
        total_steps=6,
    )
    model = fresh_model(seed=7)
    make_checkpoint(model, keras.optimizers.Adam(0.01)).restore(str(tmp_path / "ckpt-4"))
    return tmp_path, model.get_weights()


@pytest.mark.parametrize(
    "damage, error, fragment",
    [
        (truncate_data, IndexError, "Read less bytes than requested"),
        (overwrite_data, tf.errors.DataLossError, "ckpt-6"),
        (truncate_index, tf.errors.OpError, "not an sstable"),
    ],
)
def test_a_corrupt_checkpoint_raises_and_restore_latest_good_falls_back(
    six_steps_of_checkpoints, damage, error, fragment
):
    directory, weights_at_step_4 = six_steps_of_checkpoints
    damage(directory / "ckpt-6")
    model = fresh_model(seed=7)
    checkpoint = make_checkpoint(model, keras.optimizers.Adam(0.01))
    with pytest.raises(error, match=fragment):
        checkpoint.restore(str(directory / "ckpt-6")).assert_existing_objects_matched()

    model = fresh_model(seed=7)
    checkpoint = make_checkpoint(model, keras.optimizers.Adam(0.01))
    with pytest.warns(UserWarning, match="ckpt-6 is unreadable"):
        restored = restore_latest_good(str(directory), checkpoint)
    assert restored.endswith("ckpt-4") and int(checkpoint.step) == 4
    assert identical(model.get_weights(), weights_at_step_4)


def test_restore_latest_good_raises_naming_every_path_when_none_reads(six_steps_of_checkpoints):
    directory, _ = six_steps_of_checkpoints
    for number in (2, 4, 6):
        truncate_index(directory / f"ckpt-{number}")
    checkpoint = make_checkpoint(fresh_model(), keras.optimizers.Adam(0.01))
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="ckpt-6.*ckpt-4.*ckpt-2"):
        restore_latest_good(str(directory), checkpoint)


def test_restore_latest_good_returns_none_for_an_empty_directory(tmp_path):
    checkpoint = make_checkpoint(fresh_model(), keras.optimizers.Adam(0.01))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=3)
    assert restore_latest_good(manager, checkpoint) is None
    assert restore_latest_good(str(tmp_path), checkpoint) is None


# --- Bad input -----------------------------------------------------------------------------


def test_restore_latest_good_rejects_bad_arguments(tmp_path):
    checkpoint = make_checkpoint(fresh_model(), keras.optimizers.Adam(0.01))
    with pytest.raises(ValueError, match="manager_or_directory=42"):
        restore_latest_good(42, checkpoint)
    missing = str(tmp_path / "missing")
    with pytest.raises(ValueError, match="manager_or_directory=.*missing"):
        restore_latest_good(missing, checkpoint)
    with pytest.raises(ValueError, match="checkpoint='ckpt'"):
        restore_latest_good(str(tmp_path), "ckpt")


def test_make_checkpoint_rejects_bad_arguments():
    with pytest.raises(ValueError, match="model='net'"):
        make_checkpoint("net", keras.optimizers.Adam())
    with pytest.raises(ValueError, match="optimizer='adam'"):
        make_checkpoint(fresh_model(), "adam")


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((-1, 32, 8), "step=-1"),
        ((np.int64(2), 32, 0), "batch_size=0"),
        ((0, 0, 8), "num_examples=0"),
        ((0, 4, 8), "batch_size=8 must be <= num_examples=4"),
        ((1.5, 32, 8), "step=1.5"),
    ],
)
def test_batch_rows_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        batch_rows(*arguments)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"total_steps": 0}, "total_steps=0"),
        ({"total_steps": 4, "save_every": 1.5}, "save_every=1.5"),
    ],
)
def test_train_resumable_rejects_bad_arguments(tmp_path, arguments, message):
    features, targets = regression_data()
    with pytest.raises(ValueError, match=message):
        train_resumable(
            fresh_model(), keras.optimizers.Adam(), features, targets, str(tmp_path), **arguments
        )
    with pytest.raises(ValueError, match=r"features \(32 rows\) and targets \(31\)"):
        train_resumable(
            fresh_model(), keras.optimizers.Adam(), features, targets[:31], str(tmp_path), 4
        )
