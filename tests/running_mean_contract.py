"""What `train_on_batch` and `test_on_batch` report, at every point that may reset it.

Keras 3.0 to 3.14 report the mean of every batch loss since the last `compile()`,
`reset_metrics()`, `evaluate()` or start of a `fit()` epoch; Keras 2 and 3.15 and later
report this batch's loss. Two recipes state the rule (training_apis, loss_shape_pitfall),
so both their tests call `check_running_mean` with a model and two batches of their own.
"""

import pytest
from tensorflow import keras


def compile_frozen(model):
    # A learning rate of zero keeps the weights, so each batch's own loss stays 4 or 0.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")


def check_running_mean(version_split, build_model, loss_4_batch, loss_0_batch):
    """`build_model()` gives a model on which the two batches have MSE losses 4 and 0."""
    # What may reset the running mean, run between the loss-4 and the loss-0 batch, and what
    # Keras 3.0 to 3.14 then report for the loss-0 batch: the mean of every loss they hold.
    between_the_batches = {
        "nothing": (lambda model: None, 2.0),
        "compile()": (compile_frozen, 0.0),
        "reset_metrics()": (lambda model: model.reset_metrics(), 0.0),
        # Two epochs tell "reset at each epoch" (mean of 4 and 0) from "at fit's start" (8/3).
        "fit() for 2 epochs of loss 4": (
            lambda model: model.fit(*loss_4_batch, batch_size=4, epochs=2, verbose=0),
            2.0,
        ),
        "evaluate() of loss 4": (lambda model: model.evaluate(*loss_4_batch, verbose=0), 2.0),
        "predict()": (lambda model: model.predict(loss_4_batch[0], verbose=0), 2.0),
    }

    def loss_reported_for_the_loss_0_batch(first_method, between, second_method):
        model = build_model()
        compile_frozen(model)
        assert float(getattr(model, first_method)(*loss_4_batch)) == pytest.approx(4.0)
        between(model)
        return float(getattr(model, second_method)(*loss_0_batch))

    for point, (between, running_mean) in between_the_batches.items():
        reported = [
            loss_reported_for_the_loss_0_batch(method, between, method)
            for method in ("train_on_batch", "test_on_batch")
        ]
        version_split(
            f"train_on_batch / test_on_batch: batch of loss 4, {point}, batch of loss 0",
            " / ".join(f"{value:.2f}" for value in reported),
            {
                "keras<3": "0.00 / 0.00",
                "keras>=3,<3.15": f"{running_mean:.2f} / {running_mean:.2f}",
                "keras>=3.15": "0.00 / 0.00",
            },
        )
    crossed = [
        loss_reported_for_the_loss_0_batch("train_on_batch", lambda model: None, "test_on_batch"),
        loss_reported_for_the_loss_0_batch("test_on_batch", lambda model: None, "train_on_batch"),
    ]
    version_split(
        "loss 4 by train_on_batch, loss 0 by test_on_batch / the other way round",
        " / ".join(f"{value:.2f}" for value in crossed),
        {"keras<3": "0.00 / 0.00", "keras>=3,<3.15": "2.00 / 2.00", "keras>=3.15": "0.00 / 0.00"},
    )
