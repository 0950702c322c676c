"""Time per call and memory growth of each way to call a Keras model on small batches in a loop.

One process builds one small model (Dense(64, relu) + Dense(10) on 32 features) and calls
it on the same batch of 8 samples (numpy float32) through each route ("the recipe" is
recipes/predict_in_a_loop.py):

    model(x, training=False)   the model's __call__, eager: the reference of every ratio
    predict                    model.predict(x, verbose=0)
    predict_on_batch           model.predict_on_batch(x)
    make_predict_fn            the recipe's tf.function with an input_signature

Each route is warmed up first (its traces and some calls), then timed with
time.perf_counter over --calls calls, and reading the last output's numpy value stops the
clock only when the work is done. The routes are measured --repeats times, interleaved in
a rotating order (benchmarks/harness.py); each route's median time per call is reported as
a ratio to model(x, training=False)'s median, the best (fastest) repeat beside it.

Memory: the process's resident set size (RSS, from /proc/self/statm, after gc.collect())
is read before and after every timed block, and each route's growth over all its blocks is
reported in KiB per call. Memory freed by one route can be reused by the next, so a small
number is noise; a steady growth of tens of KiB per call is the leak of
tensorflow/tensorflow#44711 and keras-team/keras#13118. It is a measurement, not a test,
and it always exits 0.

Run: python benchmarks/predict_in_a_loop.py [--calls N] [--repeats R] [--json PATH]
"""

import argparse
import gc
import os
import pathlib
import sys
import time

# The benchmark imports the recipe from this checkout, wherever it is started from.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# TensorFlow's C++ start-up chatter would bury the table when the script runs outside tox.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402

from benchmarks import harness  # noqa: E402
from recipes.predict_in_a_loop import batch_signature, make_predict_fn  # noqa: E402

FEATURES = 32
HIDDEN = 64
CLASSES = 10
BATCH_SIZE = 8
SEED = 0
DEFAULT_CALLS = 100
DEFAULT_REPEATS = 3
WARM_UP_CALLS = 5

CALL = "model(x, training=False)"
PREDICT = "predict"
PREDICT_ON_BATCH = "predict_on_batch"
RECIPE = "make_predict_fn"


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="Time per call of each way to call a Keras model on small batches."
    )
    parser.add_argument(
        "--calls",
        type=harness.positive_integer,
        default=DEFAULT_CALLS,
        help=f"timed calls per route and repeat (default {DEFAULT_CALLS})",
    )
    harness.add_common_arguments(parser, DEFAULT_REPEATS)
    return parser.parse_args(argv)


def resident_kib():
    """This process's resident set size in KiB, after a garbage collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024


class Route:
    """One warmed-up way to call the model; measure() times `calls` calls of it."""

    def __init__(self, name, call, calls):
        self.name = name
        self.call = call
        self.calls = calls
        self.rates = harness.Rates()
        self.memory_growth_kib = 0.0
        self.timed_calls = 0
        for _ in range(WARM_UP_CALLS):
            np.asarray(call())

    def measure(self):
        before = resident_kib()
        start = time.perf_counter()
        for _ in range(self.calls):
            output = self.call()
        # Reading the last output waits for every call's work before the clock stops.
        np.asarray(output)
        seconds = time.perf_counter() - start
        self.memory_growth_kib += resident_kib() - before
        self.timed_calls += self.calls
        self.rates.values.append(self.calls / seconds)

    @property
    def milliseconds_per_call(self):
        return 1000 / self.rates.median

    def time_ratio_to(self, reference):
        """(median time per call over the reference's, best over the reference's best)."""
        median_ratio, best_ratio = reference.rates.ratios_to(self.rates)
        return median_ratio, best_ratio


def prepare_routes(calls):
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    x = np.random.default_rng(SEED).standard_normal((BATCH_SIZE, FEATURES)).astype("float32")
    predict_fn = make_predict_fn(model, batch_signature((FEATURES,)))
    builders = {
        CALL: lambda: model(x, training=False),
        PREDICT: lambda: model.predict(x, verbose=0),
        PREDICT_ON_BATCH: lambda: model.predict_on_batch(x),
        RECIPE: lambda: predict_fn(x),
    }
    routes = {}
    for name, call in builders.items():
        start = time.perf_counter()
        routes[name] = Route(name, call, calls)
        print(f"  warmed up {name} in {time.perf_counter() - start:.1f} s", flush=True)
    # Every route must compute the same numbers, or the timings compare different work.
    reference = np.asarray(routes[CALL].call())
    for route in routes.values():
        np.testing.assert_allclose(np.asarray(route.call()), reference, atol=1e-5)
    return routes, predict_fn


def print_report(stack, arguments, routes, predict_fn, wall_seconds):
    print()
    harness.print_stack(stack)
    print(
        f"workload: Dense({HIDDEN}, relu) + Dense({CLASSES}) on {FEATURES} features, one numpy "
        f"batch of {BATCH_SIZE}; {arguments.calls} timed calls per route, median of "
        f"{arguments.repeats} interleaved repeat(s)"
    )
    print()
    header = f"{'route':<26} {'ms/call':>8} {'median':>7} {'best':>7} {'RSS KiB/call':>13}"
    print(f"{'':<26} {'':>8} {'time ratio':>12}")
    print(header)
    print("-" * len(header))
    reference = routes[CALL]
    for route in routes.values():
        median_ratio, best_ratio = route.time_ratio_to(reference)
        growth = route.memory_growth_kib / route.timed_calls
        print(
            f"{route.name:<26} {route.milliseconds_per_call:>8.3f} {median_ratio:>6.2f}x "
            f"{best_ratio:>6.2f}x {growth:>13.2f}"
        )
    print()
    print(
        "ms/call: wall clock per call, median over the repeats. time ratio: the route's time "
        f"per call over {CALL}'s (median over median, best repeat over best repeat); "
        "above 1 is slower. RSS KiB/call: growth of the resident set over the route's timed "
        f"calls, per call. make_predict_fn traced {predict_fn.experimental_get_tracing_count()} "
        "time(s) in the whole run."
    )
    print(f"\nwall time {wall_seconds:.0f} s; the exit status is always 0.")


def write_json(path, stack, arguments, routes, wall_seconds):
    reference = routes[CALL]
    results = {
        "stack": stack,
        "arguments": vars(arguments),
        "routes": {
            name: {
                "milliseconds_per_call_median": route.milliseconds_per_call,
                "calls_per_second_each_repeat": route.rates.values,
                "time_ratio_to_call_median": route.time_ratio_to(reference)[0],
                "time_ratio_to_call_best": route.time_ratio_to(reference)[1],
                "rss_growth_kib_per_call": route.memory_growth_kib / route.timed_calls,
            }
            for name, route in routes.items()
        },
        "wall_seconds": wall_seconds,
    }
    harness.write_json(path, results)


def main(argv=None):
    arguments = parse_arguments(argv)
    wall_start = time.perf_counter()
    stack = harness.describe_stack()
    print(f"warming up every route on TensorFlow {tf.__version__} ...", flush=True)
    routes, predict_fn = prepare_routes(arguments.calls)
    harness.measure_interleaved(routes.values(), arguments.repeats, Route.measure)
    wall_seconds = time.perf_counter() - wall_start
    print_report(stack, arguments, routes, predict_fn, wall_seconds)
    if arguments.json:
        write_json(arguments.json, stack, arguments, routes, wall_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
