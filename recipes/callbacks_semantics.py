"""Title: EarlyStopping, ModelCheckpoint and ReduceLROnPlateau: best weights, mode and cooldown.

In short:
    mode = mode_for("val_auc")  # "max"; never leave mode="auto" to the callbacks
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_auc", mode=mode, patience=5),
        keras.callbacks.ModelCheckpoint("best.weights.h5", monitor="val_auc", mode=mode,
                                        save_best_only=True, save_weights_only=True),
        BestWeights(monitor="val_auc", mode=mode),  # the best epoch's weights at the end
    ]  # new callback objects for every fit
    model.fit(x, y, validation_data=(x_val, y_val), epochs=50, callbacks=callbacks)

Problem: `EarlyStopping(restore_best_weights=True)` is meant to leave the model at its best
epoch, but on Keras 2.12 to 2.15 it does so only when it stopped the training itself: when
`fit` runs all its epochs the model keeps the last epoch's weights (keras-team/keras#12511).
One EarlyStopping or ReduceLROnPlateau object passed to a second `fit` compares the new
run with the old run's best on some releases, and stops it early or cuts its rate. And
`mode="auto"` is guessed differently by each callback: with `monitor="val_auc"` on Keras 2
EarlyStopping maximises while ModelCheckpoint and ReduceLROnPlateau minimise, so the
checkpoint keeps the epoch with the lowest AUC (keras-team/keras#21118); on Keras 3,
EarlyStopping on a custom metric fails at the end of the first epoch with ValueError
"isn't able to automatically determine whether that metric should be maximized or
minimized".

Recipe:
    1. Pass `mode="min"` or `mode="max"` to every callback that monitors a quantity;
       `mode_for(monitor)` gives it from how the name ends, and refuses names it cannot
       tell with a ValueError.
    2. To end `fit` at the best epoch on every stack, add `BestWeights(monitor, mode)`:
       it keeps a copy of the weights of the best epoch and puts them back when `fit`
       ends, however it ends, and starts afresh at every `fit`.
    3. Build new EarlyStopping and ReduceLROnPlateau objects for each `fit`.
    4. `ModelCheckpoint(path, save_best_only=True)` writes at the end of each epoch that
       beats its best; with a fixed path the file ends with the best epoch's weights.
       For file names that work on every Keras, see the save_paths recipe.
    5. Compare restored weights exactly (`np.array_equal` on each array of
       `get_weights()`), not within a tolerance: a restore is a copy.

Pitfalls:
    - When `fit` runs all its epochs, `EarlyStopping(restore_best_weights=True)` on Keras
      2.12 to 2.15 leaves the last epoch's weights; `BestWeights` leaves exactly the best
      epoch's weights on every stack, also when another callback stopped the training
      and when it is reused for a second `fit`. When EarlyStopping stops the training
      itself, every stack restores exactly the best epoch's weights.
    - `ModelCheckpoint(save_best_only=True)` writes only at the end of the epochs that
      improve on the best so far (`{epoch}` in the name counts from 1), so a fixed path
      holds exactly the best epoch's weights. It keeps its best across `fit` calls on
      every stack: a second `fit` that never beats the first one's best writes nothing.
    - ReduceLROnPlateau(patience=2, factor=0.5) cuts the rate after 2 epochs without
      improvement. After a cut, `cooldown=c` leaves only c - 1 epochs uncounted, because
      the epoch in which the cooldown runs out already counts: `cooldown=1` gives the same
      rates as `cooldown=0` (a cut every 2 epochs), `cooldown=2` a cut every 3 epochs,
      `cooldown=3` every 4 (patience 2). A cut below `min_lr` gives `min_lr`. These are
      the rates the optimizer applied, measured from the SGD weight steps, within 1e-5
      relative.
    - With `mode="auto"`, "val_precision" is minimised by all three callbacks on Keras 2,
      and "val_auc" by ModelCheckpoint and ReduceLROnPlateau up to Keras 3.10. With
      `mode=mode_for(monitor)` passed explicitly, all three callbacks follow it on every
      stack for every name tested ("val_loss", "val_accuracy", "val_acc", "val_auc",
      "val_precision", and a custom metric "fmeasure" with and without "val_").

Versions:
    - EarlyStopping(restore_best_weights=True) when `fit` runs all its epochs: Keras 2.12
      to 2.15 keep the last epoch's weights; tf-keras 2.16 and later and Keras 3.0 and
      later restore the best epoch's weights (keras-team/tf-keras#693 for tf-keras).
    - `mode="auto"`, Keras 2 (tf-keras included), for the names above: EarlyStopping
      maximises "val_accuracy", "val_acc" and "val_auc"; ModelCheckpoint "val_accuracy",
      "val_acc" and "fmeasure" (its rule: "acc" in the name, or a name starting with
      "fmeasure", so not "val_fmeasure"); ReduceLROnPlateau "val_accuracy" and "val_acc".
      Each minimises the other names.
    - `mode="auto"`, Keras 3.0 to 3.10: EarlyStopping follows the compiled metric's own
      direction (loss min; accuracy, AUC and precision max) and raises ValueError "isn't
      able to automatically determine" at the end of the first epoch for the custom
      metric; ModelCheckpoint and ReduceLROnPlateau still decide as on Keras 2. Keras
      3.11 and later: all three follow the metric's direction and all three raise that
      ValueError for the custom metric.
    - One EarlyStopping reused for a second `fit`: Keras 2 and tf-keras, Keras 3.7 to 3.10
      and 3.15 and later start from a fresh best; Keras 3.0 to 3.6 and 3.11 to 3.14 keep
      the first fit's best, so with patience 1 a second fit that improves every epoch
      stops after 2 epochs (keras-team/keras#20521, #22967).
    - One ReduceLROnPlateau reused for a second `fit`: Keras 2, tf-keras, Keras 3.0 to 3.10
      and 3.15 and later start from a fresh best; Keras 3.11 to 3.14 keep the first fit's
      best and, with patience 1, halve the rate after each epoch of a second fit that
      improves every epoch (keras-team/keras#22967).

Sources: Keras API docs "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau"
    (keras.io/api/callbacks); keras-team/keras#12511 and tensorflow/tensorflow#35634
    (restore_best_weights only when stopping early), keras-team/tf-keras#693 (restore
    after the last epoch; its Keras 3 twin keras-team/keras#18822 was closed for a
    separate commit); keras-team/keras#21118 (mode
    "auto" differs between callbacks), tensorflow/tensorflow#40604 and
    keras-team/keras#18798 (the name rules); keras-team/keras#20521, #20533 and #22967
    (reusing EarlyStopping and ReduceLROnPlateau across `fit` calls).

See also:
    - save_paths: the file names ModelCheckpoint accepts on every Keras
    - lr_schedules: ReduceLROnPlateau and LearningRateScheduler in fit, history keys
    - resume_after_crash: continue a run from its checkpoints

Run: python -m recipes.callbacks_semantics
"""

import math
import numbers

import numpy as np
import tensorflow as tf
from tensorflow import keras

KERAS_MAJOR = 3 if hasattr(keras, "version") else 2

# Name endings whose direction is not in doubt; anything else needs an explicit mode.
MINIMISED_ENDINGS = (
    "loss",
    "error",
    "crossentropy",
    "mse",
    "mae",
    "mape",
    "msle",
    "hinge",
    "divergence",
)
MAXIMISED_ENDINGS = (
    "accuracy",
    "acc",
    "auc",
    "precision",
    "recall",
    "fmeasure",
    "f1",
    "f1_score",
    "fbeta_score",
    "iou",
)


def mode_for(monitor):
    """ "min" or "max" for a monitored name such as "val_loss" or "val_auc".

    Decided by how the name ends, the same for every callback and every Keras; a name
    that ends in none of the known words raises ValueError: pass the mode yourself.
    """
    if not isinstance(monitor, str) or not monitor:
        raise ValueError(f"monitor must be a non-empty metric name, got monitor={monitor!r}")
    name = monitor.lower()
    # Keras may add "val_" and an output name in front ("val_output_1_accuracy").
    if name.endswith(MINIMISED_ENDINGS):
        return "min"
    if name.endswith(MAXIMISED_ENDINGS):
        return "max"
    raise ValueError(
        f"cannot tell whether monitor={monitor!r} should be minimised or maximised; pass "
        "mode='min' or mode='max' to the callback"
    )


class BestWeights(keras.callbacks.Callback):
    """Puts the weights of the best epoch back into the model when `fit` ends.

    Unlike EarlyStopping(restore_best_weights=True), it restores however `fit` ends (all
    epochs run, another callback stopped it), starts afresh at every `fit`, and never
    guesses the mode. `best_epoch` (counted from 0) and `best` are kept for inspection.
    """

    def __init__(self, monitor="val_loss", mode="min", min_delta=0.0):
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a non-empty metric name, got monitor={monitor!r}")
        if mode not in ("min", "max"):
            raise ValueError(
                f"mode must be 'min' or 'max' (use mode_for(monitor)), got mode={mode!r}"
            )
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, numbers.Real)
            or not math.isfinite(min_delta)
            or min_delta < 0
        ):
            raise ValueError(f"min_delta must be a finite number >= 0, got min_delta={min_delta!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, float(min_delta)
        self.best = self.best_epoch = self.best_weights = None

    def on_train_begin(self, logs=None):
        # A new fit is a new run: never compare it with an earlier run's best.
        self.best = self.best_epoch = self.best_weights = None

    def _improves(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(
                f"BestWeights: monitor={self.monitor!r} is not among the logged values "
                f"{sorted(logs or {})}"
            )
        value = float(value)
        if not math.isnan(value) and self._improves(value):
            self.best, self.best_epoch = value, epoch
            # get_weights returns numpy copies: later steps cannot change them.
            self.best_weights = [np.array(weight) for weight in self.model.get_weights()]

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


def demo():
    print(f"tensorflow {tf.__version__}, {keras.__name__}, Keras {KERAS_MAJOR}")
    for monitor in ["val_loss", "val_accuracy", "val_auc", "val_precision"]:
        print(f"mode_for({monitor!r}) = {mode_for(monitor)!r}")
    try:
        mode_for("val_custom")
    except ValueError as error:
        print(f"mode_for('val_custom'): ValueError: {error}")

    # One weight w, SGD on (w - 1)^2 from w = 0 with rate 0.25: w = 0.5, 0.75, 0.875, 0.9375
    # after each epoch. The validation target 0.8 makes epoch 1 (w = 0.75) the best.
    ones = np.ones((1, 1), "float32")
    train = tf.data.Dataset.from_tensors((ones, ones))
    validation = tf.data.Dataset.from_tensors((ones, np.full((1, 1), 0.8, "float32")))
    model = keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.25), loss="mse")
    early_stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=10, restore_best_weights=True
    )
    model.fit(
        train,
        validation_data=validation,
        epochs=4,
        verbose=0,
        shuffle=False,
        callbacks=[early_stopping],
    )
    print(f"EarlyStopping after all 4 epochs: w = {model.get_weights()[0][0, 0]}")
    model.set_weights([np.zeros((1, 1), "float32")])
    best = BestWeights(monitor="val_loss", mode="min")
    model.fit(
        train, validation_data=validation, epochs=4, verbose=0, shuffle=False, callbacks=[best]
    )
    print(f"BestWeights: best epoch {best.best_epoch}, w = {model.get_weights()[0][0, 0]}")


if __name__ == "__main__":
    demo()
