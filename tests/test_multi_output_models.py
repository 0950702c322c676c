"""Tests for recipes/multi_output_models.py: what compile, fit and evaluate compute per output.

Every value is checked against numpy. The data and weights are small dyadic numbers (k / 2^n),
so every product, square, sum and batch mean below is exact in float32 and the logs are
compared with `==`, not a tolerance.

The one `fit` and `evaluate` run traced, as a user's do. The single batches that check a
form or an error run eagerly (`run_eagerly=True`): the same Keras code without the cost of a
trace, and Keras 2 raises errors as they are instead of wrapped in "in user code:" and a
graph traceback.
"""

import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.multi_output_models import (
    UNWEIGHTED_LOSS,
    per_output_losses,
    portable_compile_arguments,
    two_output_model,
)

FEATURES = np.array([[1.0, 0.5], [0.25, -1.0], [2.0, 0.0], [-0.5, 1.5]], "float32")
HEIGHTS = np.array([[1.0], [0.0], [0.5], [-1.0]], "float32")
AGES = np.array([[0.25], [2.0], [-0.5], [1.0]], "float32")
# The model's output order; a dict of outputs would sort them, so this order is not sorted.
OUTPUTS = ["height", "age"]
LABELS = [HEIGHTS, AGES]
# Each Dense starts from constant weights: kernel value, bias value.
START = {"height": (0.5, 0.25), "age": (-0.25, 0.5)}
LOSS_WEIGHTS = {"height": 0.5, "age": 2.0}


def numpy_prediction(output):
    kernel, bias = START[output]
    return FEATURES.astype("float64") @ np.full((2, 1), kernel) + bias


def numpy_mse(output, labels):
    return float(np.mean((numpy_prediction(output) - labels) ** 2))


def numpy_mae(output, labels):
    return float(np.mean(np.abs(numpy_prediction(output) - labels)))


# The losses: mse on height (a name), mae on age (a Loss object); the metrics the other way.
LOSS_OF = {"height": numpy_mse("height", HEIGHTS), "age": numpy_mae("age", AGES)}
METRIC_OF = {"height_mae": numpy_mae("height", HEIGHTS), "age_mse": numpy_mse("age", AGES)}
TOTAL = sum(LOSS_WEIGHTS[name] * LOSS_OF[name] for name in OUTPUTS)
NUMPY_METRIC = {"mae": numpy_mae, "mse": numpy_mse}
LABELS_OF = dict(zip(OUTPUTS, LABELS, strict=True))


def prediction_against(output, labels_of, metric):
    return NUMPY_METRIC[metric](output, LABELS_OF[labels_of])


# What a release that lays a dict's sorted entries (age, height) over the outputs' order
# (height, age) computes. With labels as a list, each output gets the other output's loss and
# weight; with labels as a dict too, each output's prediction is scored against the other
# output's labels, with that output's loss and weight.
LOSS_AND_WEIGHT_SWAPPED = {
    "height": LOSS_WEIGHTS["age"] * numpy_mae("height", HEIGHTS),
    "age": LOSS_WEIGHTS["height"] * numpy_mse("age", AGES),
}
PREDICTIONS_SWAPPED = {
    "height": LOSS_WEIGHTS["age"] * numpy_mae("height", AGES),
    "age": LOSS_WEIGHTS["height"] * numpy_mse("age", HEIGHTS),
}
SWAPPED_TOTALS = {
    "each output gets the other output's loss and weight": sum(LOSS_AND_WEIGHT_SWAPPED.values()),
    "each prediction is scored as the other output": sum(PREDICTIONS_SWAPPED.values()),
}


def started(model):
    for output, (kernel, bias) in START.items():
        layer = model.get_layer(output)
        layer.set_weights([np.full((2, 1), kernel, "float32"), np.full((1,), bias, "float32")])
    return model


def model_with_start_weights():
    return started(two_output_model())


def losses():
    return {"height": "mse", "age": keras.losses.MeanAbsoluteError()}


def compiled(model, run_eagerly=True, **arguments):
    # A learning rate of 0 keeps the weights, so fit's logs and evaluate see the same model.
    optimizer = keras.optimizers.SGD(learning_rate=0.0)
    model.compile(optimizer=optimizer, run_eagerly=run_eagerly, **arguments)
    return model


def as_floats(logs):
    return {key: float(np.asarray(value).reshape(-1)[0]) for key, value in logs.items()}


@pytest.fixture(scope="module")
def portable_logs():
    """One traced fit (one batch, one epoch, validation on the same batch) and evaluate."""
    model = model_with_start_weights()
    compiled(
        model,
        run_eagerly=False,
        **portable_compile_arguments(
            model, losses(), LOSS_WEIGHTS, {"height": ["mae"], "age": ["mse"]}
        ),
    )
    history = model.fit(
        FEATURES,
        LABELS,
        batch_size=4,
        epochs=1,
        shuffle=False,
        verbose=0,
        validation_data=(FEATURES, LABELS),
    )
    fitted = as_floats(history.history)
    training = {key: value for key, value in fitted.items() if not key.startswith("val_")}
    validation = {key[4:]: value for key, value in fitted.items() if key.startswith("val_")}
    evaluated = model.evaluate(FEATURES, LABELS, batch_size=4, verbose=0, return_dict=True)
    evaluated = as_floats(evaluated)
    return {"fit": training, "validation": validation, "evaluate": evaluated, "history": history}


# --- The numbers every stack agrees on ------------------------------------------------------


def test_the_hand_computed_numbers_are_distinct_and_dyadic():
    """Guards the oracle: weighted and unweighted differ, and float32 holds every value."""
    values = [*LOSS_OF.values(), *METRIC_OF.values(), TOTAL]
    assert all(float(np.float32(value)) == value for value in values)
    weighted = {name: LOSS_WEIGHTS[name] * LOSS_OF[name] for name in OUTPUTS}
    assert len({*LOSS_OF.values(), *weighted.values()}) == 4
    assert len({TOTAL, sum(LOSS_OF.values()), *SWAPPED_TOTALS.values()}) == 4
    swapped_metrics = [
        prediction_against("height", "age", "mae"),
        prediction_against("age", "height", "mse"),
    ]
    assert not set(swapped_metrics) & set(METRIC_OF.values())


def test_total_loss_is_the_weighted_sum_of_the_output_losses_exactly(portable_logs, observe):
    for run in ("fit", "validation", "evaluate"):
        assert portable_logs[run]["loss"] == TOTAL, run
    observe("total loss vs loss_weights-weighted sum of output losses (numpy)", "equal exactly")


def test_unweighted_loss_metric_is_each_outputs_own_loss_on_every_stack(portable_logs, observe):
    for run in ("fit", "validation", "evaluate"):
        assert per_output_losses(portable_logs[run], OUTPUTS) == LOSS_OF, run
    history = portable_logs["history"].history
    assert per_output_losses(history, OUTPUTS, prefix="val_") == {
        name: [value] for name, value in LOSS_OF.items()
    }
    observe("per_output_losses from fit, validation and evaluate logs", "unweighted, exact")


def test_each_outputs_metrics_are_computed_on_that_output(portable_logs, observe):
    for run in ("fit", "validation", "evaluate"):
        assert {key: portable_logs[run][key] for key in METRIC_OF} == METRIC_OF, run
    observe("metrics {'height': ['mae'], 'age': ['mse']}, portable form", "exact")


# --- What differs by release ----------------------------------------------------------------

PORTABLE_KEYS = ["age_mse", "age_unweighted_loss", "height_mae", "height_unweighted_loss", "loss"]
WITH_OUTPUT_LOSSES = sorted([*PORTABLE_KEYS, "age_loss", "height_loss"])


def test_fit_and_evaluate_log_keys(portable_logs, version_split):
    keys = sorted(portable_logs["fit"])
    assert sorted(portable_logs["validation"]) == keys
    assert sorted(portable_logs["evaluate"]) == keys
    assert set(PORTABLE_KEYS) <= set(keys)
    version_split(
        "fit/evaluate log keys, two outputs compiled with portable_compile_arguments",
        ", ".join(keys),
        {
            "keras<3": ", ".join(WITH_OUTPUT_LOSSES),
            "keras>=3,<3.5": ", ".join(PORTABLE_KEYS),
            "keras>=3.5": ", ".join(WITH_OUTPUT_LOSSES),
        },
    )


def describe_output_loss_entries(logs):
    """What "<output>_loss" holds, judged against numpy: absent, weighted or unweighted."""
    found = set()
    for name in OUTPUTS:
        value = logs.get(f"{name}_loss")
        if value is None:
            found.add("absent")
        elif value == LOSS_OF[name]:
            found.add("the output's loss, unweighted")
        elif value == LOSS_WEIGHTS[name] * LOSS_OF[name]:
            found.add("the output's loss times its loss weight")
        else:
            found.add(f"{name}_loss={value!r}, neither")
    return "; ".join(sorted(found))


def test_keras_own_output_loss_entries_are_absent_weighted_or_unweighted_by_release(
    portable_logs, version_split
):
    seen = {
        run: describe_output_loss_entries(portable_logs[run])
        for run in ("fit", "validation", "evaluate")
    }
    assert len(set(seen.values())) == 1, seen
    version_split(
        "'<output>_loss' in fit, validation and evaluate logs (loss_weights 0.5 and 2)",
        seen["fit"],
        {
            "keras<3": "the output's loss, unweighted",
            "keras>=3,<3.5": "absent",
            "keras>=3.5,<3.7": "the output's loss times its loss weight",
            "keras>=3.7": "the output's loss, unweighted",
        },
    )


# --- List and dict forms --------------------------------------------------------------------


def first_batch_logs(metrics, model=None, labels=LABELS, **arguments):
    """Compile with `metrics` and evaluate one batch: errors about metrics surface here.

    A freshly compiled model's first `test_on_batch` logs that batch alone, as `evaluate`
    would.
    """
    model = compiled(model or model_with_start_weights(), metrics=metrics, **arguments)
    return as_floats(model.test_on_batch(FEATURES, labels, return_dict=True))


def test_portable_arguments_are_lists_in_output_order_and_log_what_plain_lists_log(
    portable_logs, observe
):
    arguments = portable_compile_arguments(
        two_output_model(), losses(), LOSS_WEIGHTS, {"height": ["mae"], "age": ["mse"]}
    )
    assert arguments["loss"][0] == "mse" and isinstance(
        arguments["loss"][1], keras.losses.MeanAbsoluteError
    )
    assert arguments["loss_weights"] == [0.5, 2.0]
    assert [[getattr(m, "name", m) for m in each] for each in arguments["metrics"]] == [
        ["mae", UNWEIGHTED_LOSS],
        ["mse", UNWEIGHTED_LOSS],
    ]
    logs = first_batch_logs(
        [["mae"], ["mse"]],
        loss=[losses()["height"], losses()["age"]],
        loss_weights=[LOSS_WEIGHTS["height"], LOSS_WEIGHTS["age"]],
    )
    without_mirrors = {
        key: value
        for key, value in portable_logs["evaluate"].items()
        if not key.endswith(UNWEIGHTED_LOSS)
    }
    assert logs == without_mirrors
    assert logs["loss"] == TOTAL
    observe("loss=[...], loss_weights=[...], metrics=[[...], [...]] in output order", "exact")


def describe_dict_form(logs):
    total = logs["loss"]
    swapped = [what for what, value in SWAPPED_TOTALS.items() if value == total]
    loss = "right" if total == TOTAL else (swapped or [f"{total!r}, none of these"])[0]
    metric_values = {key: logs[key] for key in METRIC_OF}
    if metric_values == METRIC_OF:
        metrics = "right"
    elif metric_values == {
        "height_mae": prediction_against("height", "age", "mae"),
        "age_mse": prediction_against("age", "height", "mse"),
    }:
        metrics = "each output's metric sees the other output's labels"
    else:
        metrics = repr(metric_values)
    return f"loss {loss}, metrics {metrics}"


def test_plain_dicts_pair_losses_by_name_except_on_keras_3_5_and_3_6(version_split):
    """keras-team/keras#20596, #20346 (losses), #22625 (metrics with dict labels).

    The outputs are (height, age), not in sorted order, so a release that lays a dict's
    sorted entries over the outputs pairs each with the other output's entry.
    """
    seen = []
    for labels in (LABELS, {"height": HEIGHTS, "age": AGES}):
        logs = first_batch_logs(
            {"height": ["mae"], "age": ["mse"]},
            labels=labels,
            loss=losses(),
            loss_weights=LOSS_WEIGHTS,
        )
        form = "dict" if isinstance(labels, dict) else "list"
        seen.append(f"{form} labels: {describe_dict_form(logs)}")
    version_split(
        "loss, loss_weights and metrics as dicts keyed by output names, outputs (height, age)",
        "; ".join(seen),
        {
            "keras<3.5": "list labels: loss right, metrics right; "
            "dict labels: loss right, metrics right",
            "keras>=3.5,<3.7": "list labels: loss each output gets the other output's loss "
            "and weight, metrics right; dict labels: loss each prediction is scored as the "
            "other output, metrics right",
            # 3.14.0 is left out: keras-team/keras#22625 reports its metrics paired with the
            # wrong labels when the labels are a dict (fixed in 3.14.1); not tested here.
            "keras>=3.7,<3.14": "list labels: loss right, metrics right; "
            "dict labels: loss right, metrics right",
            "keras>=3.14.1": "list labels: loss right, metrics right; "
            "dict labels: loss right, metrics right",
        },
    )


# --- Flat metrics lists and wrong names -----------------------------------------------------


def flat_list_outcome(metrics):
    """What metrics=<a flat list> does with losses ["mse", "mse"]: the error, or "works: " and
    the metric entries logged, each checked against numpy for the output its name says."""
    result = {}

    def run():
        result["logs"] = first_batch_logs(metrics, loss=["mse", "mse"])

    observed = outcome_of(
        run, ("as many entries as the model has outputs", "Invalid `metrics`", "two metrics")
    )
    if observed != "works":
        return observed
    logs = result["logs"]
    metric_keys = sorted(key for key in logs if key.endswith(("_mae", "_mse")))
    for key in metric_keys:
        output, metric = key.rsplit("_", 1)
        assert logs[key] == NUMPY_METRIC[metric](output, LABELS_OF[output]), key
    other_keys = sorted(set(logs) - set(metric_keys))
    assert other_keys in (["loss"], ["age_loss", "height_loss", "loss"]), logs
    return "works: " + ", ".join(metric_keys)


def test_one_entry_metrics_list_applies_to_every_output_on_keras_2_and_raises_on_keras_3(
    version_split,
):
    """tensorflow/tensorflow#100319: metrics=['accuracy'] for a ten-output model."""
    version_split(
        "metrics=['mae'] (one entry) for a two-output model",
        flat_list_outcome(["mae"]),
        {
            "keras<3": "works: age_mae, height_mae",
            "keras>=3,<3.14": "ValueError: as many entries as the model has outputs",
            "keras>=3.14": "ValueError: Invalid `metrics`",
        },
    )


def test_one_entry_per_output_flat_list_means_every_metric_everywhere_on_keras_2(version_split):
    """Keras 2 applies each entry to each output; Keras 3 gives entry i to output i."""
    observed = "; ".join(
        f"{metrics}: {flat_list_outcome(metrics)}" for metrics in (["mae", "mse"], ["mae", "mae"])
    )
    version_split(
        "metrics=['mae', 'mse'] and ['mae', 'mae'] (one entry per output), two outputs",
        observed,
        {
            "keras<3": "['mae', 'mse']: works: age_mae, age_mse, height_mae, height_mse; "
            "['mae', 'mae']: ValueError: two metrics",
            "keras>=3": "['mae', 'mse']: works: age_mse, height_mae; "
            "['mae', 'mae']: works: age_mae, height_mae",
        },
    )


UNKNOWN_KEY = (
    "Found unexpected losses or metrics that do not correspond to any Model output",
    "key 'wrong' does not correspond to any model output",
    "Invalid `metrics`",
)


def test_metrics_dict_with_a_key_that_names_no_output_raises_at_the_first_batch(version_split):
    # compile accepts it on every stack; the first batch raises.
    model = compiled(model_with_start_weights(), loss=["mse", "mse"], metrics={"wrong": "mae"})
    observed = outcome_of(
        lambda: model.test_on_batch(FEATURES, LABELS, return_dict=True), UNKNOWN_KEY
    )
    assert observed.startswith("ValueError")
    version_split(
        "metrics={'wrong': 'mae'}: a key that names no output",
        observed,
        {
            "keras<3": f"ValueError: {UNKNOWN_KEY[0]}",
            "keras>=3,<3.14": f"ValueError: {UNKNOWN_KEY[1]}",
            "keras>=3.14": f"ValueError: {UNKNOWN_KEY[2]}",
        },
    )


def dict_output_model(keys):
    """Outputs given as a dict keyed by `keys`; the layers are named "height" and "age"."""
    model = model_with_start_weights()
    return keras.Model(model.inputs[0], dict(zip(keys, model.outputs, strict=True)))


def test_dict_outputs_keyed_by_other_names_than_their_layers(version_split):
    """keras-team/keras#21259, #21675: loss and metrics dicts keyed by the dict's own keys."""
    result = {}

    def run():
        model = dict_output_model(["h", "a"])
        result["names"] = list(model.output_names)
        result["logs"] = first_batch_logs(
            {"h": ["mae"], "a": ["mse"]},
            model=model,
            labels={"h": HEIGHTS, "a": AGES},
            loss={"h": "mse", "a": "mae"},
        )

    observed = outcome_of(run, ("dict argument `loss`", "dict argument `metrics`"))
    if observed == "works":
        logs = result["logs"]
        metric_keys = sorted(key for key in logs if key.endswith(("_mae", "_mse")))
        for key in metric_keys:
            prefix, metric = key.rsplit("_", 1)
            output = {"h": "height", "a": "age"}.get(prefix, prefix)
            assert logs[key] == NUMPY_METRIC[metric](output, LABELS_OF[output]), logs
        assert logs["loss"] == numpy_mse("height", HEIGHTS) + numpy_mae("age", AGES)
        observed = f"works, output_names {result['names']}, metrics logged as {metric_keys}"
    version_split(
        "outputs={'h': height, 'a': age}, loss and metrics dicts keyed 'h' and 'a'",
        observed,
        {
            "keras<3": "works, output_names ['age', 'height'], metrics logged as "
            "['age_mse', 'height_mae']",
            "keras>=3,<3.5": "ValueError: dict argument `loss`",
            "keras>=3.5,<3.12": "ValueError: dict argument `metrics`",
            "keras>=3.12": "works, output_names ['age', 'height'], metrics logged as "
            "['a_mse', 'h_mae']",
        },
    )


# --- The helpers' own checks ----------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_model():
    """One model for the argument checks, which only read its output names."""
    return two_output_model()


def test_portable_compile_arguments_fills_weights_copies_shared_metrics_and_adds_mirrors(
    plain_model,
):
    shared = keras.metrics.MeanAbsoluteError(name="mae")
    arguments = portable_compile_arguments(plain_model, "mse", {"age": 2}, [shared])
    assert arguments["loss"] == ["mse", "mse"]
    assert arguments["loss_weights"] == [1.0, 2.0]
    height_metrics, age_metrics = arguments["metrics"]
    assert [metric.name for metric in height_metrics] == ["mae", UNWEIGHTED_LOSS]
    assert [metric.name for metric in age_metrics] == ["mae", UNWEIGHTED_LOSS]
    assert height_metrics[0] is not age_metrics[0], "one Metric object per output"
    assert list(plain_model.output_names) == OUTPUTS


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"loss": {"height": "mse"}}, r"loss must be keyed.*missing \['age'\]"),
        ({"loss": {"height": "mse", "age": "mse", "x": "mse"}}, r"unknown keys \['x'\]"),
        ({"loss": ["mse", "mse"]}, r"loss must be a dict.*loss=\['mse', 'mse'\]"),
        ({"loss": None}, r"loss=None"),
        ({"loss": "msee"}, r"output 'height' is not a Keras loss name: 'msee'"),
        ({"loss": 3}, r"loss for output 'height' must be.*got 3"),
        ({"loss": "mse", "loss_weights": [1.0, 2.0]}, r"loss_weights=\[1.0, 2.0\]"),
        ({"loss": "mse", "loss_weights": {"hieght": 1.0}}, r"unknown keys \['hieght'\]"),
        ({"loss": "mse", "loss_weights": {"age": -1.0}}, r"loss_weights\['age'\].*-1.0"),
        ({"loss": "mse", "loss_weights": {"age": float("nan")}}, r"loss_weights\['age'\].*nan"),
        ({"loss": "mse", "loss_weights": {"age": True}}, r"loss_weights\['age'\].*True"),
        ({"loss": "mse", "metrics": {"wrong": "mae"}}, r"metrics must be keyed.*'wrong'"),
        ({"loss": "mse", "metrics": {"age": [3]}}, r"metrics for output 'age'.*\[3\]"),
    ],
)
def test_portable_compile_arguments_rejects_bad_input_naming_it(plain_model, arguments, message):
    with pytest.raises(ValueError, match=message):
        portable_compile_arguments(plain_model, **arguments)


def test_portable_compile_arguments_rejects_a_loss_it_cannot_mirror_and_a_one_output_model(
    plain_model,
):
    summed = keras.losses.MeanSquaredError(reduction="sum")
    with pytest.raises(ValueError, match=r"output 'height'.*reduction='sum'"):
        portable_compile_arguments(plain_model, summed)
    inputs = keras.Input(shape=(2,))
    single = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    with pytest.raises(ValueError, match=r"two or more named outputs"):
        portable_compile_arguments(single, "mse")
    with pytest.raises(ValueError, match=r"model must be a keras Model, got 'model'"):
        portable_compile_arguments("model", "mse")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: per_output_losses({"loss": 1.0}, OUTPUTS), r"no \['height_unweighted_loss'"),
        (lambda: per_output_losses([], OUTPUTS), r"logs must be a dict.*\[\]"),
        (lambda: per_output_losses({}, "height"), r"output_names.*'height'"),
        (lambda: per_output_losses({}, OUTPUTS, prefix=None), r"prefix.*None"),
    ],
)
def test_per_output_losses_rejects_bad_input_naming_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()
