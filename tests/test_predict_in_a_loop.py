"""Tests for recipes/predict_in_a_loop.py: the same numbers on every route, traces per route.

A trace is counted with a Python side effect: a Lambda layer whose function adds one to a
counter each time Python runs it. An eager call runs it on every call; a traced function
runs it once per trace and never while it reuses its graph. Counts are taken after the
model is built, so building's own symbolic call is not counted.

TensorFlow logs "N out of the last M calls ... triggered tf.function retracing" at most
twice per function (keyed by its Python code) per process, so the warnings of Keras' own
predict function are observed in a child process (`predict_loops_report`): in this one,
other tests may already have used up its two warnings.
"""

import json
import logging
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes.predict_in_a_loop import batch_signature, make_predict_fn
from tests.child_process import finish, last_report, run_python

FEATURES = 3
HIDDEN = 5
OUTPUTS = 2
VARYING_SIZES = (1, 2, 3, 4, 5, 6)
FIXED_SIZES = (4, 4, 4, 4)
# predict costs 0.05-0.3 s a call on Keras 3, so its loops are shorter: a third size shows
# that no trace follows the second, and a fifth new model brings the process's traces of
# predict to at least 6 on every stack.
PREDICT_SIZES = (1, 2, 3)
PREDICT_FIXED_SIZES = (4, 4)
NEW_MODELS = 5
# float32 through two small Dense layers, against float64 numpy.
ATOL = 1e-5
RETRACING = "triggered tf.function retracing"


class PythonRuns:
    """Counts the runs of a Lambda layer's Python function: eager calls plus traces."""

    def __init__(self):
        self.count = 0

    def identity(self, inputs):
        self.count += 1
        return inputs


def counted_model(runs):
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Lambda(runs.identity),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(OUTPUTS),
        ]
    )


def by_hand(weights, x):
    """The model's output in float64 numpy: relu(x @ W1 + b1) @ W2 + b2."""
    kernel1, bias1, kernel2, bias2 = (weight.astype("float64") for weight in weights)
    return np.maximum(x.astype("float64") @ kernel1 + bias1, 0.0) @ kernel2 + bias2


def batch(size, seed=0):
    return np.random.default_rng(seed + size).standard_normal((size, FEATURES)).astype("float32")


def no_signature_function(model):
    return tf.function(lambda x: model(x, training=False))


ROUTES = {
    "model(x, training=False)": lambda model: lambda x: model(x, training=False),
    "predict_on_batch": lambda model: model.predict_on_batch,
    "make_predict_fn": lambda model: make_predict_fn(model, batch_signature((FEATURES,))),
    "tf.function without input_signature": no_signature_function,
}


def python_runs_per_call(route, sizes):
    """How many times the model's Python ran during each call of `route` over `sizes`."""
    runs = PythonRuns()
    model = counted_model(runs)
    call = ROUTES[route](model)
    per_call = []
    for size in sizes:
        before = runs.count
        call(batch(size))
        per_call.append(runs.count - before)
    return per_call


# --- Outputs ----------------------------------------------------------------------------------


def test_every_route_gives_the_numpy_numbers(observe):
    model = counted_model(PythonRuns())
    for route, make in ROUTES.items():
        call = make(model)
        for size in (1, 3, 4):
            x = batch(size)
            np.testing.assert_allclose(
                np.asarray(call(x)),
                by_hand(model.get_weights(), x),
                rtol=0,
                atol=ATOL,
                err_msg=route,
            )
    observe("every route's outputs", f"relu(x @ W1 + b1) @ W2 + b2 within {ATOL:g}")


# --- Traces -----------------------------------------------------------------------------------


def test_model_call_runs_python_on_every_call(observe):
    for sizes in (VARYING_SIZES, FIXED_SIZES):
        assert python_runs_per_call("model(x, training=False)", sizes) == [1] * len(sizes)
    observe("model(x, training=False): Python runs per call", "1 on every call (never traces)")


def test_make_predict_fn_traces_once_for_every_batch_size(observe):
    per_call = python_runs_per_call("make_predict_fn", VARYING_SIZES + FIXED_SIZES)
    assert per_call == [1] + [0] * (len(VARYING_SIZES + FIXED_SIZES) - 1)
    observe("make_predict_fn: traces over sizes 1-6 then 4, 4, 4, 4", "1, at the first call")


def test_predict_on_batch_traces_twice_then_never(observe):
    assert python_runs_per_call("predict_on_batch", VARYING_SIZES) == [1, 1, 0, 0, 0, 0]
    assert python_runs_per_call("predict_on_batch", FIXED_SIZES) == [1, 0, 0, 0]
    observe("predict_on_batch: traces over sizes 1-6", "2 (first and second call)")


def test_function_without_signature_retraces_per_size_and_warns_at_the_fifth(observe):
    runs = PythonRuns()
    model = counted_model(runs)
    # A function defined here, so its Python code has logged no retracing warning before.
    function = tf.function(lambda x: model(x, training=False))
    messages = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    warned_at = []
    runs.count = 0
    try:
        for call, size in enumerate(VARYING_SIZES, start=1):
            before = len(messages)
            function(batch(size))
            if any(RETRACING in message for message in messages[before:]):
                warned_at.append(call)
    finally:
        logger.removeHandler(handler)
    assert runs.count == len(VARYING_SIZES)
    assert warned_at == [5, 6]
    retracing = [message for message in messages if RETRACING in message]
    assert retracing[0].startswith("5 out of the last 5 calls to <function")
    assert retracing[1].startswith("6 out of the last 6 calls to <function")
    observe(
        "tf.function without input_signature over sizes 1-6",
        "6 traces; retracing WARNING at calls 5 and 6",
    )


# --- predict: traces and the retracing warning -----------------------------------------------


class RetracingLog(logging.Handler):
    """The retracing warnings TensorFlow logs while it is attached."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if RETRACING in record.getMessage():
            self.messages.append(record.getMessage())


def predict_per_call(model, runs, sizes, log):
    """Each predict call's traces, retracing warnings and outputs, over batch `sizes`."""
    seen = []
    for size in sizes:
        before_runs, before_messages = runs.count, len(log.messages)
        outputs = model.predict(batch(size), verbose=0)
        seen.append(
            {
                "traces": runs.count - before_runs,
                "warnings": log.messages[before_messages:],
                "outputs": outputs.tolist(),
                "size": size,
            }
        )
    return seen


def predict_loops_report():
    """In a child process, whose retracing warnings are a fresh process's: one model over
    PREDICT_SIZES, a new model per call (NEW_MODELS calls), then one model at a fixed size,
    in this order. Prints the calls and the first model's weights as one JSON report."""
    runs = PythonRuns()
    log = RetracingLog()
    logging.getLogger("tensorflow").addHandler(log)
    same = counted_model(runs)
    new_models = [counted_model(runs) for _ in range(NEW_MODELS)]
    fixed = counted_model(runs)
    report = {
        "same_model": predict_per_call(same, runs, PREDICT_SIZES, log),
        "same_model_weights": [weight.tolist() for weight in same.get_weights()],
        "new_models": [predict_per_call(model, runs, (4,), log)[0] for model in new_models],
        "fixed_size": predict_per_call(fixed, runs, PREDICT_FIXED_SIZES, log),
    }
    print("REPORT " + json.dumps(report))


def run_predict_loops():
    return run_python(f"from {__name__} import predict_loops_report; predict_loops_report()")


# The child starts when the tests are collected and runs beside them (conftest).
START_EARLY = {"predict_loops": run_predict_loops}


@pytest.fixture(scope="module")
def predict_loops():
    """What `predict_loops_report` saw, arrays as float32 numpy. Computed once for the tests
    below, which only read it."""
    report = json.loads(last_report(finish(run_predict_loops)))
    for call in report["same_model"] + report["new_models"] + report["fixed_size"]:
        call["outputs"] = np.asarray(call["outputs"], dtype="float32")
    report["same_model_weights"] = [
        np.asarray(weight, dtype="float32") for weight in report["same_model_weights"]
    ]
    return report


def calls_that_traced(calls):
    return [number for number, call in enumerate(calls, start=1) if call["traces"]]


def test_predict_traces_once_on_keras_2_and_twice_on_keras_3(predict_loops, version_split):
    same_model = predict_loops["same_model"]
    # Each trace runs the Lambda once; more would mean the count measures something else.
    assert {call["traces"] for call in same_model} <= {0, 1}
    assert calls_that_traced(predict_loops["fixed_size"]) == [1]
    version_split(
        "predict over batch sizes 1, 2, 3: the calls that traced",
        f"calls {calls_that_traced(same_model)}",
        {"keras<3": "calls [1]", "keras>=3": "calls [1, 2]"},
    )


def test_predict_gives_the_numpy_numbers(predict_loops, observe):
    weights = predict_loops["same_model_weights"]
    for call in predict_loops["same_model"]:
        expected = by_hand(weights, batch(call["size"]))
        np.testing.assert_allclose(call["outputs"], expected, rtol=0, atol=ATOL)
    observe(
        "predict's outputs, batch sizes 1, 2, 3", f"relu(x @ W1 + b1) @ W2 + b2 within {ATOL:g}"
    )


def test_one_models_predict_in_a_loop_logs_no_retracing_warning(predict_loops, observe):
    assert [call["warnings"] for call in predict_loops["same_model"]] == [[]] * len(PREDICT_SIZES)
    observe("one model's predict, batch sizes 1, 2, 3: retracing warnings", "none")


def test_predicts_fifth_and_sixth_trace_in_a_process_warn_across_models(predict_loops, observe):
    """A new model per call traces once per call; the warning counts every model's traces."""
    calls = predict_loops["same_model"] + predict_loops["new_models"]
    assert [call["traces"] for call in predict_loops["new_models"]] == [1] * NEW_MODELS
    traces_so_far = np.cumsum([call["traces"] for call in calls])
    warned_at_trace = [
        int(traces_so_far[index]) for index, call in enumerate(calls) if call["warnings"]
    ]
    assert traces_so_far[-1] >= 6
    assert warned_at_trace == [5, 6]
    first = next(call["warnings"][0] for call in calls if call["warnings"])
    assert first.startswith("5 out of the last ")
    assert "make_predict_function" in first
    observe(
        "predict in a loop over new models: retracing warnings",
        "at the 5th and 6th trace of predict in the process, counted over all models",
    )


# --- Bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"feature_shape": 3}, "feature_shape=3"),
        ({"feature_shape": "3"}, "feature_shape='3'"),
        ({"feature_shape": (3, 0)}, "feature_shape=(3, 0)"),
        ({"feature_shape": (True,)}, "feature_shape=(True,)"),
        ({"feature_shape": (3,), "dtype": "float99"}, "dtype='float99'"),
    ],
)
def test_batch_signature_names_the_bad_argument(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        batch_signature(**kwargs)


def test_make_predict_fn_names_the_bad_argument():
    model = counted_model(PythonRuns())
    with pytest.raises(ValueError, match="model=None"):
        make_predict_fn(None, batch_signature((FEATURES,)))
    with pytest.raises(ValueError, match=r"input_signature=\[\]"):
        make_predict_fn(model, [])
    with pytest.raises(ValueError, match=r"input_signature=\(3,\)"):
        make_predict_fn(model, (3,))


def test_demo_reports_small_gaps_and_one_trace(demo_output):
    printed = demo_output("predict_in_a_loop")
    gaps = [float(gap) for gap in re.findall(r" (\d\.\de[-+]\d\d)", printed)]
    assert len(gaps) == 12 and max(gaps) <= ATOL
    assert "make_predict_fn traced 1 time(s) for batch sizes 1 to 4" in printed
