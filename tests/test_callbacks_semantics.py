"""Tests for recipes/callbacks_semantics.py: which weights, which mode, which rate, when.

The monitored quantity is known by construction. One weight w, no bias, SGD with rate 0.25
on (w * 1 - 1)^2 from w = 0, one step an epoch: each step is w <- w - 0.25 * 2 * (w - 1), so
after epoch k (counted from 0) w = 1 - 2^-(k + 1) exactly in float32 (0.5, 0.75, 0.875, ...).
The monitored quantity plays a validation loss: "val_distance" = (w - t)^2 for a target t,
worked out here with numpy (`hand_validation_losses`); t = 0.8 makes epoch 1 the best,
t = 5 makes every epoch better than the one before but worse than any epoch against 0.8.
The first callback computes it from the weights and puts it in the epoch's logs, where
every later callback reads it as it would read "val_loss", without the cost of a
validation pass (about 45 ms an epoch on Keras 3.15).
"""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from conftest import outcome_of
from recipes.callbacks_semantics import BestWeights, mode_for

ONES = np.ones((1, 1), "float32")
TRAIN = tf.data.Dataset.from_tensors((ONES, ONES))
RATE = 0.25
BEST_TARGET, FAR_TARGET = 0.8, 5.0
CANNOT_TELL = "isn't able to automatically determine"


def hand_weight(epoch):
    """w after epoch `epoch` (from 0) of the SGD run above, worked out by hand."""
    return np.float32(1.0 - 2.0 ** -(epoch + 1))


def hand_validation_losses(target, epochs, first_epoch=0):
    return [(float(hand_weight(k)) - target) ** 2 for k in range(first_epoch, first_epoch + epochs)]


def improving_epochs(losses):
    """The epochs whose loss is below every earlier one (the first epoch always is)."""
    return [k for k, loss in enumerate(losses) if loss < min(losses[:k], default=np.inf)]


class WeightsPerEpoch(keras.callbacks.Callback):
    """Copies of the weights at each epoch end, and logs["val_distance"] = (w - target)^2.

    Listed first, so it copies before any restore, and the others see the distance.
    """

    def __init__(self, target):
        super().__init__()
        self.target, self.weights = target, []

    def on_epoch_end(self, epoch, logs=None):
        weights = [np.array(weight) for weight in self.model.get_weights()]
        self.weights.append(weights)
        logs["val_distance"] = (float(weights[0][0, 0]) - self.target) ** 2


def equal_exactly(weights, other):
    return len(weights) == len(other) and all(
        np.array_equal(a, b) for a, b in zip(weights, other, strict=True)
    )


@pytest.fixture(scope="module")
def mse_model():
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=RATE), loss="mse")
    return model


def reset(model, rate=RATE):
    """w = 0 and the rate back: tests share one compiled model (a compile costs a trace)."""
    model.set_weights([np.zeros_like(weight) for weight in model.get_weights()])
    model.optimizer.learning_rate.assign(rate)
    return model


def fit(model, target, epochs, callbacks):
    """Fits one step an epoch; returns the weights after each epoch and the history."""
    recorder = WeightsPerEpoch(target)
    history = model.fit(
        TRAIN,
        epochs=epochs,
        verbose=0,
        shuffle=False,
        callbacks=[recorder, *callbacks],
    )
    return recorder.weights, history


# --- EarlyStopping(restore_best_weights=True) ----------------------------------------------


def test_early_stopping_that_stops_restores_the_best_epoch_bit_for_bit(mse_model, observe):
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_distance", mode="min", patience=1, restore_best_weights=True
    )
    recorded, history = fit(reset(mse_model), BEST_TARGET, 6, [early_stopping])
    best = int(np.argmin(hand_validation_losses(BEST_TARGET, 6)))
    # Patience 1: the first epoch after the best that does not improve stops the run.
    assert history.epoch == list(range(best + 2))
    assert equal_exactly(mse_model.get_weights(), recorded[best])
    assert mse_model.get_weights()[0][0, 0] == hand_weight(best)
    observe("EarlyStopping(restore_best_weights=True) that stops: weights", "the best epoch's")


def test_early_stopping_restore_when_fit_runs_all_its_epochs(mse_model, version_split):
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_distance", mode="min", patience=10, restore_best_weights=True
    )
    recorded, history = fit(reset(mse_model), BEST_TARGET, 4, [early_stopping])
    # The construction above, checked against numpy: the premise of every test here.
    assert [float(weights[0][0, 0]) for weights in recorded] == [0.5, 0.75, 0.875, 0.9375]
    assert [hand_weight(k) for k in range(4)] == [0.5, 0.75, 0.875, 0.9375]
    losses = hand_validation_losses(BEST_TARGET, 4)
    assert history.history["val_distance"] == losses
    best = int(np.argmin(losses))
    assert history.epoch == [0, 1, 2, 3] and best == 1 and improving_epochs(losses) == [0, 1]
    now = mse_model.get_weights()
    if equal_exactly(now, recorded[best]):
        observed = "the best epoch's weights"
        assert now[0][0, 0] == hand_weight(best)
    elif equal_exactly(now, recorded[-1]):
        observed = "the last epoch's weights"
        assert now[0][0, 0] == hand_weight(3)
    else:
        observed = f"other weights: {now}"
    version_split(
        "EarlyStopping(restore_best_weights=True) when fit runs all its epochs",
        observed,
        {"keras<2.16": "the last epoch's weights", "keras>=2.16": "the best epoch's weights"},
    )


def test_best_weights_restores_the_best_epoch_when_fit_runs_all_its_epochs(mse_model, observe):
    best_weights = BestWeights(monitor="val_distance", mode="min")
    recorded, _ = fit(reset(mse_model), BEST_TARGET, 4, [best_weights])
    best = int(np.argmin(hand_validation_losses(BEST_TARGET, 4)))
    assert best_weights.best_epoch == best
    assert equal_exactly(mse_model.get_weights(), recorded[best])
    assert mse_model.get_weights()[0][0, 0] == hand_weight(best)
    observe("BestWeights when fit runs all its epochs", "the best epoch's weights")


def test_best_weights_restores_when_another_callback_stops_and_starts_afresh_each_fit(
    mse_model, observe
):
    best_weights = BestWeights(monitor="val_distance", mode="min")
    stopper = keras.callbacks.EarlyStopping(monitor="val_distance", mode="min", patience=1)
    recorded, history = fit(reset(mse_model), BEST_TARGET, 6, [stopper, best_weights])
    assert history.epoch == [0, 1, 2]
    assert equal_exactly(mse_model.get_weights(), recorded[1])
    # The second fit goes on from w = 0.75; against the far target every epoch improves,
    # all worse than the first fit's best: a fresh best makes its last epoch the best.
    recorded, _ = fit(mse_model, FAR_TARGET, 2, [best_weights])
    assert best_weights.best_epoch == 1
    assert equal_exactly(mse_model.get_weights(), recorded[1])
    assert mse_model.get_weights()[0][0, 0] == hand_weight(3)
    observe("BestWeights after another callback stops, then reused", "best epoch of each fit")


def test_best_weights_raises_a_value_error_for_a_monitor_that_is_not_logged(mse_model):
    best_weights = BestWeights(monitor="val_auc", mode="max")
    best_weights.set_model(mse_model)
    best_weights.on_train_begin()
    with pytest.raises(
        ValueError, match=r"monitor='val_auc' is not among the logged values \['loss', 'val_loss'\]"
    ):
        best_weights.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})


def test_reused_early_stopping_in_a_second_fit(mse_model, version_split):
    """Patience 1; the second fit improves every epoch but never beats the first fit's best."""
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_distance", mode="min", patience=1)
    _, first = fit(reset(mse_model), BEST_TARGET, 6, [early_stopping])
    assert first.epoch == [0, 1, 2]
    _, second = fit(mse_model, FAR_TARGET, 4, [early_stopping])
    # By hand: w goes on from 0.875, so the second fit's losses are (w_3 - 5)^2, ... .
    losses = hand_validation_losses(FAR_TARGET, 4, first_epoch=3)
    assert improving_epochs(losses) == [0, 1, 2, 3]
    assert min(losses) > min(hand_validation_losses(BEST_TARGET, 3))
    observed = {
        4: "runs all 4 epochs (fresh best)",
        2: "stops after 2 epochs (the first fit's best)",
    }.get(len(second.epoch), f"{len(second.epoch)} epochs")
    version_split(
        "one EarlyStopping reused for a second fit",
        observed,
        {
            "keras<3": "runs all 4 epochs (fresh best)",
            "keras>=3,<3.7": "stops after 2 epochs (the first fit's best)",
            "keras>=3.7,<3.11": "runs all 4 epochs (fresh best)",
            "keras>=3.11,<3.15": "stops after 2 epochs (the first fit's best)",
            "keras>=3.15": "runs all 4 epochs (fresh best)",
        },
    )


def test_reused_reduce_lr_on_plateau_in_a_second_fit(mse_model, version_split):
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="val_distance", mode="min", factor=0.5, patience=1, min_delta=0
    )
    fit(reset(mse_model), BEST_TARGET, 3, [plateau])
    # The second fit starts at the full rate again; every epoch improves on the one before.
    mse_model.optimizer.learning_rate.assign(RATE)
    fit(mse_model, FAR_TARGET, 2, [plateau])
    rate = float(np.asarray(mse_model.optimizer.learning_rate))
    observed = {
        RATE: "rate kept (fresh best)",
        RATE * 0.25: "rate halved after each epoch (the first fit's best)",
    }.get(rate, f"rate {rate}")
    version_split(
        "one ReduceLROnPlateau reused for a second fit",
        observed,
        {
            "keras<3.11": "rate kept (fresh best)",
            "keras>=3.11,<3.15": "rate halved after each epoch (the first fit's best)",
            "keras>=3.15": "rate kept (fresh best)",
        },
    )


# --- ModelCheckpoint(save_best_only=True) --------------------------------------------------


def test_model_checkpoint_writes_only_improving_epochs_and_keeps_its_best_across_fits(
    mse_model, tmp_path, observe
):
    fixed = tmp_path / "best.weights.h5"
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(path),
            monitor="val_distance",
            mode="min",
            save_best_only=True,
            save_weights_only=True,
        )
        for path in (fixed, tmp_path / "ckpt-{epoch:02d}.weights.h5")
    ]
    recorded, _ = fit(reset(mse_model), BEST_TARGET, 4, callbacks)
    improving = improving_epochs(hand_validation_losses(BEST_TARGET, 4))
    expected_files = sorted([f"ckpt-{k + 1:02d}.weights.h5" for k in improving])
    assert expected_files == ["ckpt-01.weights.h5", "ckpt-02.weights.h5"]
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == expected_files
    written = fixed.read_bytes()
    # A second fit that never beats the first fit's best writes nothing.
    fit(mse_model, FAR_TARGET, 1, callbacks)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == expected_files
    assert fixed.read_bytes() == written
    mse_model.load_weights(str(fixed))
    assert equal_exactly(mse_model.get_weights(), recorded[improving[-1]])
    assert mse_model.get_weights()[0][0, 0] == hand_weight(1)
    observe(
        "ModelCheckpoint(save_best_only=True): files written",
        "improving epochs only; best kept across fits",
    )


# --- ReduceLROnPlateau: patience, cooldown, min_lr -----------------------------------------


@pytest.mark.parametrize(
    ("cooldown", "min_lr", "expected"),
    [
        # Monitor "loss" with min_delta 100: no epoch after the first improves.
        # Patience 2, factor 0.5:
        # epochs 1 and 2 count, the rate halves after epoch 2, and again every 2 epochs.
        (0, 0.0, [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
        # cooldown 1 ends in the very next epoch, which counts: the same rates.
        (1, 0.0, [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]),
        # cooldown 3: epochs 3 and 4 are skipped, 5 and 6 count, the next cut is after 6.
        (3, 0.0, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025]),
        # cooldown 2: epoch 3 is skipped, epochs 4 and 5 count, the next cut is after 5,
        # and with min_lr 0.03 it gives max(0.025, 0.03).
        (2, 0.03, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03]),
    ],
)
def test_reduce_lr_on_plateau_cooldown_and_min_lr_in_the_applied_rates(
    mse_model, cooldown, min_lr, expected, observe
):
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="loss",
        mode="min",
        factor=0.5,
        patience=2,
        cooldown=cooldown,
        min_lr=min_lr,
        min_delta=100.0,
    )
    recorded, _ = fit(reset(mse_model, rate=0.1), BEST_TARGET, len(expected), [plateau])
    weights = [0.0] + [float(weights[0][0, 0]) for weights in recorded]
    # One SGD step on (w - 1)^2: w_new = w_old - rate * 2 * (w_old - 1).
    applied = [
        (old - new) / (2.0 * (old - 1.0)) for old, new in zip(weights, weights[1:], strict=False)
    ]
    np.testing.assert_allclose(applied, expected, rtol=1e-5)
    observe(
        f"ReduceLROnPlateau(patience=2, cooldown={cooldown}, min_lr={min_lr}): applied rates",
        "as worked out by hand",
    )


# --- mode="auto" ---------------------------------------------------------------------------

NAMES = [
    "val_loss",
    "val_accuracy",
    "val_acc",
    "val_auc",
    "val_precision",
    "val_fmeasure",
    "fmeasure",
]


def fmeasure(y_true, y_pred):
    """A custom metric function: Keras knows no direction for it."""
    return tf.reduce_mean(y_pred, axis=-1)


@pytest.fixture(scope="module")
def metrics_model():
    """A compiled model whose metrics carry the names above, built by one evaluate."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.BinaryAccuracy(name="acc"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            fmeasure,
        ],
        run_eagerly=True,
    )
    logged = model.evaluate(TRAIN, verbose=0, return_dict=True)
    assert {"loss", "accuracy", "acc", "auc", "precision", "fmeasure"} <= set(logged)
    return model


def direction(kind, monitor, mode, model, directory):
    """Feeds the callback 1.0 then 2.0 as `monitor`: "max" if it took 2.0 as an improvement.

    Read from what the callback did: EarlyStopping (patience 1) stops on no improvement,
    ModelCheckpoint(save_best_only=True) writes a file for an improvement, ReduceLROnPlateau
    (patience 1) cuts the rate on no improvement.
    """
    model.stop_training = False
    model.optimizer.learning_rate.assign(0.1)
    path = directory / f"{kind}-{monitor}-{mode}-{{epoch}}.weights.h5"
    if kind == "EarlyStopping":
        callback = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=1)
    elif kind == "ModelCheckpoint":
        callback = keras.callbacks.ModelCheckpoint(
            str(path), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True
        )
    else:
        callback = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, patience=1, factor=0.5, min_delta=0
        )
    callback.set_model(model)
    # Construction and on_train_begin never fail: a mode Keras cannot tell is found out at
    # the end of the first epoch, after it trained.
    callback.on_train_begin()
    callback.on_epoch_begin(0)

    ended = []

    def run():
        callback.on_epoch_end(0, {monitor: 1.0})
        ended.append(0)
        callback.on_epoch_begin(1)
        callback.on_epoch_end(1, {monitor: 2.0})

    outcome = outcome_of(run, [CANNOT_TELL])
    if outcome != "works":
        assert ended == [], "the first epoch's end raises"
        return outcome
    if kind == "EarlyStopping":
        return "min" if model.stop_training else "max"
    if kind == "ModelCheckpoint":
        assert (directory / path.name.format(epoch=1)).exists()
        return "max" if (directory / path.name.format(epoch=2)).exists() else "min"
    return "min" if float(np.asarray(model.optimizer.learning_rate)) < 0.1 else "max"


def directions(kind, names, mode_of, model, directory):
    return ", ".join(
        f"{name} {direction(kind, name, mode_of(name), model, directory)}" for name in names
    )


KERAS_2_RULES = {
    # Names ending in acc, accuracy or auc.
    "EarlyStopping": "min max max max min min min",
    # Names containing acc or starting with fmeasure.
    "ModelCheckpoint": "min max max min min min max",
    # Names containing acc.
    "ReduceLROnPlateau": "min max max min min min min",
}
NO_DIRECTION = f"ValueError: {CANNOT_TELL}"
METRIC_DIRECTION = ["min", "max", "max", "max", "max", NO_DIRECTION, NO_DIRECTION]


def table(outcomes):
    return ", ".join(f"{name} {outcome}" for name, outcome in zip(NAMES, outcomes, strict=True))


@pytest.mark.parametrize("kind", ["EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"])
def test_mode_auto_direction_by_callback_and_release(kind, metrics_model, tmp_path, version_split):
    observed = directions(kind, NAMES, lambda name: "auto", metrics_model, tmp_path)
    keras_2 = table(KERAS_2_RULES[kind].split())
    keras_3 = table(METRIC_DIRECTION)
    # EarlyStopping reads the metric's direction from Keras 3.0, the others from 3.11.
    first_metric_release = "3" if kind == "EarlyStopping" else "3.11"
    version_split(
        f"{kind}(mode='auto'): direction for {', '.join(NAMES)}",
        observed,
        {f"keras<{first_metric_release}": keras_2, f"keras>={first_metric_release}": keras_3},
    )


def test_explicit_mode_from_mode_for_is_followed_by_every_callback(
    metrics_model, tmp_path, observe
):
    for kind in ["EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"]:
        observed = directions(kind, NAMES, mode_for, metrics_model, tmp_path)
        assert observed == table(["min", "max", "max", "max", "max", "max", "max"])
    observe("explicit mode=mode_for(monitor) in all three callbacks", "followed")


# --- The helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("val_mean_absolute_error", "min"),
        ("val_output_1_categorical_crossentropy", "min"),
        ("val_mse", "min"),
        ("accuracy", "max"),
        ("val_top_k_categorical_accuracy", "max"),
        ("val_acc", "max"),
        ("val_AUC", "max"),
        ("val_precision", "max"),
        ("val_recall", "max"),
        ("val_f1_score", "max"),
        ("fmeasure", "max"),
        ("val_mean_iou", "max"),
    ],
)
def test_mode_for_reads_the_direction_from_the_name_ending(monitor, mode):
    assert mode_for(monitor) == mode


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: mode_for("val_custom"), r"monitor='val_custom'.*mode='min' or mode='max'"),
        (lambda: mode_for(""), r"monitor=''"),
        (lambda: mode_for(None), r"monitor=None"),
        (lambda: BestWeights(monitor=3), r"monitor=3"),
        (lambda: BestWeights(mode="auto"), r"mode='auto'"),
        (lambda: BestWeights(mode="MIN"), r"mode='MIN'"),
        (lambda: BestWeights(min_delta=-1.0), r"min_delta=-1.0"),
        (lambda: BestWeights(min_delta=float("nan")), r"min_delta=nan"),
        (lambda: BestWeights(min_delta=True), r"min_delta=True"),
    ],
)
def test_helpers_reject_bad_input_naming_the_argument_and_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_demo_restores_with_validation_data_as_the_tests_do_with_fed_logs(
    demo_output, version_split
):
    """The tests above feed `val_distance` into the logs; the demo validates on real
    `validation_data` (target 0.8, so epoch 1's w = 0.75 is the best of 0.5, 0.75, 0.875,
    0.9375). EarlyStopping and BestWeights end where they do with the fed value."""
    printed = demo_output("callbacks_semantics").splitlines()

    def weight_after(prefix):
        [line] = [line for line in printed if line.startswith(prefix)]
        return float(line.rpartition("w = ")[2])

    restored = weight_after("EarlyStopping after all 4 epochs:")
    if restored == hand_weight(1):
        observed = "the best epoch's weights"
    elif restored == hand_weight(3):
        observed = "the last epoch's weights"
    else:
        observed = f"other weights: {restored}"
    version_split(
        "EarlyStopping(restore_best_weights=True) with validation_data, when fit runs all "
        "its epochs",
        observed,
        {"keras<2.16": "the last epoch's weights", "keras>=2.16": "the best epoch's weights"},
    )
    assert "BestWeights: best epoch 1, w = 0.75" in printed
    assert weight_after("BestWeights:") == hand_weight(1)
