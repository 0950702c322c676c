"""Title: Losses, loss weights and metrics for a model with several outputs, on every Keras.

In short:
    arguments = portable_compile_arguments(
        model,  # functional, output layers named "height" and "age"
        loss={"height": "mse", "age": keras.losses.MeanAbsoluteError()},
        loss_weights={"height": 0.5, "age": 2.0},
        metrics={"height": ["mae"], "age": ["mse"]},
    )  # checked dicts in, lists in model.output_names order out
    model.compile(optimizer="adam", **arguments)
    history = model.fit(x, [y_height, y_age], epochs=5)  # labels in output order
    per_output_losses(history.history, model.output_names)  # unweighted, every Keras

Problem: A model with two heads is compiled with one loss per output, loss weights and
metrics, and the user watches each head's loss in `fit` and `evaluate`. What `compile`
accepts and what the logs hold depend on the release. Keras 3.0 to 3.4 log only the total
`loss`, no "height_loss" (keras-team/keras#18993, #19159); 3.5 brought them back multiplied
by the loss weights, 3.7 unweighted as in Keras 2. Keras 3.5 and 3.6 apply a loss dict to the
outputs in sorted-name order, silently training each head on the other's loss
(keras-team/keras#20596). A flat metrics list changed meaning: `metrics=["accuracy"]` for two
outputs raises "For a model with multiple outputs, when providing the `metrics` argument as a
list, it should have as many entries as the model has outputs" on Keras 3
(tensorflow/tensorflow#100319). A model whose outputs are a dict keyed by other names than its
layers' cannot take loss or metrics dicts keyed by those keys before Keras 3.12: "In the dict
argument `metrics`, key ... does not correspond to any model output" (keras-team/keras#21259,
#21675).

Recipe:
    1. Name every output layer (`Dense(1, name="height")`) and build the model on a list of
       outputs; `model.output_names` is then the same on every release.
    2. Write loss, loss_weights and metrics as dicts keyed by those names and pass them
       through `portable_compile_arguments(model, loss, loss_weights, metrics)`: it checks
       the keys before TensorFlow runs and returns lists in `model.output_names` order, which
       every release pairs with the outputs the same way.
    3. It also gives each output a metric "unweighted_loss", its loss without the weight,
       logged as "<output>_unweighted_loss" by every release.
    4. Pass labels as a list in `model.output_names` order.
    5. Read each output's loss with `per_output_losses(logs, model.output_names)` from
       `history.history`, `evaluate(..., return_dict=True)` or a callback's logs
       (`prefix="val_"` for validation), never from "<output>_loss".

Pitfalls:
    - With `portable_compile_arguments`, the total `loss` in `fit`'s training and validation
      logs and in `evaluate` equals each output's loss times its loss weight, summed,
      exactly (data chosen so float32 rounds nothing), and "<output>_unweighted_loss" equals
      each output's own loss exactly, on every stack. Plain lists in output order
      (`loss=[...]`, `loss_weights=[...]`, `metrics=[["mae"], ["mse"]]`) log the same keys and
      values, the mirrors aside.
    - A loss dict is not safe when the outputs are not in sorted-name order: Keras 3.5 and
      3.6 give each output the other output's loss and weight (see Versions), and the model
      trains on the wrong objective without an error.
    - "<output>_loss" is absent on Keras 3.0 to 3.4 and multiplied by the loss weight on 3.5
      and 3.6 (see Versions): a callback or a plot reading it is not portable.
    - A flat metrics list is read differently: Keras 2 applies every entry to every output,
      so `metrics=["mae", "mse"]` logs four metrics and `["mae", "mae"]` raises ValueError
      "Found two metrics with the same name: height_mae"; Keras 3 pairs entry i with output
      i. One list per output (`[["mae"], ["mse"]]`) means the same everywhere.
    - A metrics dict with a key that names no output passes `compile` and raises ValueError
      at the first batch, on every stack; the message changed twice (see Versions).

Versions:
    - Fit and evaluate log keys of the two-output model compiled with
      `portable_compile_arguments` (metrics "mae" on height, "mse" on age): Keras 2 (2.12 to
      2.15, tf-keras 2.16 to 2.21) and Keras 3.5 and later: "loss", "height_loss",
      "age_loss", "height_mae", "age_mse", "height_unweighted_loss", "age_unweighted_loss".
      Keras 3.0 to 3.4: the same without "height_loss" and "age_loss".
    - "<output>_loss" with loss weights 0.5 and 2: Keras 2 and Keras 3.7 and later: that
      output's unweighted loss; Keras 3.5 and 3.6: its loss times its weight; 3.0 to 3.4:
      absent.
    - `loss`, `loss_weights` and `metrics` as dicts keyed by output names, outputs (height,
      age): Keras 2, Keras 3.0 to 3.4 and 3.7 and later (3.14.0 not tested) pair each entry
      with its output, labels given as a list or a dict. Keras 3.5 and 3.6 lay the dicts'
      sorted entries over the outputs: with list labels each output gets the other output's
      loss and weight; with dict labels each prediction is scored against the other output's
      labels, loss and weight. Metrics dicts are paired right.
    - `metrics=["mae"]` (one entry, two outputs): Keras 2 applies it to both outputs; Keras
      3.0 to 3.13 raise ValueError "For a model with multiple outputs, when providing the
      `metrics` argument as a list, it should have as many entries as the model has
      outputs"; 3.14 and later raise ValueError "tuple arity mismatch; expected: 2, got: 1;
      tuple: ('mae',). Invalid `metrics`".
    - A metrics dict key that names no output: Keras 2: ValueError "Found unexpected losses
      or metrics that do not correspond to any Model output"; Keras 3.0 to 3.13: ValueError
      "In the dict argument `metrics`, key 'wrong' does not correspond to any model output";
      3.14 and later: ValueError "Expected an instance of tuple, got {'wrong': 'mae'}.
      Invalid `metrics`".
    - Outputs as a dict {"h": height layer, "a": age layer}, loss and metrics dicts keyed
      "h" and "a": Keras 2 accepts them and logs the metrics under the layers' names
      ("height_mae"); Keras 3.0 to 3.4 raise ValueError "In the dict argument `loss`, key
      'h' does not correspond to any model output"; 3.5 to 3.11 the same for `metrics`;
      3.12 and later accept them and log the metrics under the keys ("h_mae", "a_mse").

Sources: Keras API docs "Model training APIs" (keras.io/api/models/model_training_apis:
    `compile`'s loss, loss_weights and metrics); Keras guide "The Functional API", "Models
    with multiple inputs and outputs"; keras-team/keras#18993, #19159 and #19219 (Keras 3 logs
    only the total loss), #20023 (per-output losses back, 3.5), #20343 and #20476 (logged
    unweighted, 3.7); keras-team/keras#20596 and #20346 (3.5 applies a loss dict in sorted
    order); tensorflow/tensorflow#100319 (one metric for ten outputs raises);
    keras-team/keras#21259 and #21675 (metrics dict keyed by dict-output keys raises), #21694
    (fixed in 3.12); keras-team/keras#22625 (3.14.0 pairs metrics with the wrong labels when
    labels are a dict; fixed in 3.14.1; 3.14.0 is not among the releases tested here).

See also:
    - loss_shape_pitfall: each head's labels must match its prediction's shape
    - training_apis: fit, train_on_batch and a tape loop agree
    - model_building_styles: a model with two heads, functional or subclassed

Run: python -m recipes.multi_output_models
"""

import math
import numbers

import numpy as np
from tensorflow import keras

# The metric that mirrors each output's loss, logged as "<output>_unweighted_loss".
UNWEIGHTED_LOSS = "unweighted_loss"
# The reductions under which a loss is the mean of its per-sample values: Keras 2 calls the
# default "auto", Keras 3 "sum_over_batch_size".
_MEAN_REDUCTIONS = ("auto", "sum_over_batch_size")


def _output_names(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras Model, got {model!r}")
    names = list(getattr(model, "output_names", None) or [])
    if len(names) < 2:
        raise ValueError(
            f"model must be a functional model with two or more named outputs, got "
            f"output_names={names!r}"
        )
    return names


def _check_keys(argument_name, value, names, every_output):
    unknown = [key for key in value if key not in names]
    missing = [name for name in names if name not in value] if every_output else []
    if unknown or missing:
        raise ValueError(
            f"{argument_name} must be keyed by the model's output names {names}; got "
            f"{argument_name}={value!r} (unknown keys {unknown}, missing {missing})"
        )


def _per_sample_function(output, loss):
    """The function whose mean over samples is `loss`, for the metric that mirrors it."""
    if isinstance(loss, keras.losses.Loss):
        if getattr(loss, "reduction", None) not in _MEAN_REDUCTIONS:
            raise ValueError(
                f"loss for output {output!r} must reduce by the mean over the batch to be "
                f"mirrored, got reduction={getattr(loss, 'reduction', None)!r}"
            )
        return loss.call
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except ValueError:
            raise ValueError(
                f"loss for output {output!r} is not a Keras loss name: {loss!r}"
            ) from None
    if callable(loss):
        return loss
    raise ValueError(
        f"loss for output {output!r} must be a loss name, a keras Loss or a function of "
        f"(y_true, y_pred), got {loss!r}"
    )


def _metric_list(output, value):
    entries = list(value) if isinstance(value, (list, tuple)) else [value]
    for entry in entries:
        if not (isinstance(entry, str) or callable(entry)):
            raise ValueError(
                f"metrics for output {output!r} must be metric names, keras Metrics or "
                f"functions, got {value!r}"
            )
    return entries


def _copy_of(metric):
    """A fresh metric for one more output: a Metric object holds the state of one output."""
    if isinstance(metric, keras.metrics.Metric):
        return type(metric).from_config(metric.get_config())
    return metric


def portable_compile_arguments(model, loss, loss_weights=None, metrics=None):
    """`loss`, `loss_weights` and `metrics` for `model.compile(**...)`, from dicts.

    loss: a dict {output name: loss} naming every output, or one loss for all outputs.
    loss_weights: None (every output 1.0) or a dict {output name: weight >= 0}; outputs
    left out weigh 1.0.
    metrics: None, a dict {output name: metric or list of metrics}, or a list applied to
    every output (what Keras 2 did with a flat list).

    The dicts are checked against `model.output_names` and returned as lists in that order
    (metrics as one list per output): Keras 3.5 and 3.6 pair a loss dict with the outputs in
    sorted-name order, and a list means the same on every release. Each output's metrics end
    with "unweighted_loss": the mean over samples of its loss function, which is its loss
    when the loss reduces by the batch mean and no sample or class weights are given.
    """
    names = _output_names(model)

    if isinstance(loss, dict):
        _check_keys("loss", loss, names, every_output=True)
        losses = [loss[name] for name in names]
    elif loss is None or isinstance(loss, (list, tuple)):
        raise ValueError(
            f"loss must be a dict keyed by the output names {names} or one loss for every "
            f"output, got loss={loss!r}"
        )
    else:
        losses = [loss] * len(names)
    mirrors = [_per_sample_function(name, each) for name, each in zip(names, losses, strict=True)]

    if loss_weights is None:
        loss_weights = {}
    if not isinstance(loss_weights, dict):
        raise ValueError(
            f"loss_weights must be a dict keyed by the output names {names}, got "
            f"loss_weights={loss_weights!r}"
        )
    _check_keys("loss_weights", loss_weights, names, every_output=False)
    for name, weight in loss_weights.items():
        valid = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
        if not valid or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"loss_weights[{name!r}] must be a finite number >= 0, got {weight!r}")
    weights = [float(loss_weights.get(name, 1.0)) for name in names]

    if metrics is None:
        metrics = {}
    if isinstance(metrics, dict):
        _check_keys("metrics", metrics, names, every_output=False)
        chosen = [_metric_list(name, metrics.get(name, [])) for name in names]
    else:
        shared = _metric_list("every output", metrics)
        chosen = [[_copy_of(metric) for metric in shared] for _ in names]
    metrics_by_output = [
        own + [keras.metrics.MeanMetricWrapper(mirror, name=UNWEIGHTED_LOSS)]
        for own, mirror in zip(chosen, mirrors, strict=True)
    ]
    return {"loss": losses, "loss_weights": weights, "metrics": metrics_by_output}


def per_output_losses(logs, output_names, prefix=""):
    """{output name: its unweighted loss} from logs compiled by `portable_compile_arguments`.

    logs: `history.history` (values are lists, one per epoch), `evaluate(...,
    return_dict=True)` or a callback's `logs`. prefix: "val_" for validation entries.
    """
    if not isinstance(logs, dict):
        raise ValueError(f"logs must be a dict of logged values, got {logs!r}")
    names = list(output_names) if isinstance(output_names, (list, tuple)) else output_names
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"output_names must be a list of output names, got {output_names!r}")
    if not isinstance(prefix, str):
        raise ValueError(f"prefix must be a string such as 'val_', got {prefix!r}")
    keys = {name: f"{prefix}{name}_{UNWEIGHTED_LOSS}" for name in names}
    missing = [key for key in keys.values() if key not in logs]
    if missing:
        raise ValueError(
            f"logs have no {missing}: compile with portable_compile_arguments; "
            f"logs hold {sorted(logs)}"
        )
    return {name: logs[key] for name, key in keys.items()}


def two_output_model(input_dim=2):
    """Input -> Dense(1) "height" and Dense(1) "age": the model the tests and demo use."""
    inputs = keras.Input(shape=(input_dim,))
    height = keras.layers.Dense(1, name="height")(inputs)
    age = keras.layers.Dense(1, name="age")(inputs)
    return keras.Model(inputs, [height, age])


def demo():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(64, 2)).astype("float32")
    heights = features @ np.array([[1.0], [-2.0]], "float32") + 0.5
    ages = features @ np.array([[0.5], [0.25]], "float32") - 1.0
    keras.utils.set_random_seed(0)
    model = two_output_model()
    loss_weights = {"height": 0.5, "age": 2.0}
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        **portable_compile_arguments(
            model, {"height": "mse", "age": "mae"}, loss_weights, {"height": ["mae"]}
        ),
    )
    history = model.fit(features, [heights, ages], batch_size=64, epochs=3, verbose=0)
    print("output_names:", list(model.output_names))
    print("logged keys:", sorted(history.history))
    by_output = per_output_losses(history.history, model.output_names)
    for epoch, total in enumerate(history.history["loss"]):
        parts = {name: round(float(values[epoch]), 4) for name, values in by_output.items()}
        weighted = sum(loss_weights[name] * values[epoch] for name, values in by_output.items())
        print(f"epoch {epoch}: loss {total:.4f} = weighted sum {weighted:.4f} of {parts}")
    evaluated = model.evaluate(features, [heights, ages], verbose=0, return_dict=True)
    by_output = per_output_losses(evaluated, model.output_names)
    print("evaluate:", {name: round(float(value), 4) for name, value in by_output.items()})


if __name__ == "__main__":
    demo()
