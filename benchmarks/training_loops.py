"""Side-by-side training speed of every Keras training route on the installed stack.

One process builds the same small CNN (two convolution layers, 32x32x3 input, batch 64,
10 classes, sparse categorical crossentropy, Adam) once per route, every copy starting
from the same initial weights, and measures optimizer steps per second for ("the recipe"
is recipes/compiled_train_step.py):

    fit                        model.fit with the default steps_per_execution=1
    fit, steps_per_execution   model.fit compiled with steps_per_execution=K
    train_on_batch             a Python loop over model.train_on_batch
    eager tape loop            a Python loop over a GradientTape step run eagerly
    tf.function tape loop      the recipe's make_train_step(steps_per_call=1)
    multi-step tf.function     the recipe's make_train_step(steps_per_call=K)
    iterator tf.function loop  the recipe's make_iterator_train_step(steps_per_call=1): the
                               tf.data iterator is read inside the function, as fit does
    multi-step iterator        the recipe's make_iterator_train_step(steps_per_call=K)

Every route reads the same in-memory batches through the same kind of tf.data pipeline:
fit consumes it inside its own loop, the Python loops iterate it (or, with
--feed tensors, a list of ready-made tensors), and the multi-step route iterates a
pipeline whose elements stack K batches. Each route is warmed up first (its first trace
and some steps), then timed with time.perf_counter over a fixed number of steps. The
routes are measured R times (--repeats), interleaved in a rotating order, and each
route's median steps/s over the repeats is compared with fit's, which lowers the noise on
a shared machine; the best (fastest) repeat is reported beside it, since other processes
can only slow a run down. A route too slow to run --steps steps in a few seconds (the
eager loop) is timed over fewer; its steps/s is still a rate and compares directly.

The goals come from the issue that asked for this benchmark: the recipe's tf.function
loop at least as fast as fit, and the multi-step function at least 1.2 times fit and
at least as fast as fit with steps_per_execution. The script prints PASS or FAIL for
each and always exits 0: it is a measurement, not a test.

Run: python benchmarks/training_loops.py [--steps N] [--repeats R] [--steps-per-call K]
         [--feed dataset|tensors] [--json PATH]
     or tox -e bench (tf221), tox -e tf215-bench, tox -e tf221-legacy-bench, ...
"""

import argparse
import dataclasses
import os
import pathlib
import statistics
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
from recipes.compiled_train_step import make_iterator_train_step, make_train_step  # noqa: E402

BATCH_SIZE = 64
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
LEARNING_RATE = 1e-3
SEED = 0
DEFAULT_STEPS = 300
DEFAULT_REPEATS = 5
DEFAULT_STEPS_PER_CALL = 50
WARM_UP_STEPS = 10
# A route so slow that --steps would take longer than this (the eager loop; train_on_batch
# where it retraces) is timed over fewer steps, so the whole run stays short. Its steps/s
# is still a rate and compares directly.
MEASUREMENT_SECONDS_LIMIT = 4.0
PROBES = 3
# Keras 3.0's fit unrolls steps_per_execution into that many `next(iterator)` calls in one
# graph, and tf.data refuses more than 32 of them (keras-team/keras#20344, fixed by #20396).
GET_NEXT_CALLS_LIMIT = 32
FEED_DESCRIPTIONS = {
    "dataset": "the same tf.data pipeline as fit",
    "tensors": "a list of ready-made tensors (fit still reads the tf.data pipeline)",
}

FIT = "fit"
FIT_STEPS_PER_EXECUTION = "fit, steps_per_execution"
TRAIN_ON_BATCH = "train_on_batch"
EAGER_LOOP = "eager tape loop"
FUNCTION_LOOP = "tf.function tape loop"
MULTI_STEP_FUNCTION = "multi-step tf.function"
ITERATOR_LOOP = "iterator tf.function loop"
MULTI_STEP_ITERATOR = "multi-step iterator loop"
RECOMMENDED_LOOP_GOAL = 1.0
MULTI_STEP_GOAL = 1.2


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="Steps per second of each Keras training route, side by side."
    )
    parser.add_argument(
        "--steps",
        type=harness.positive_integer,
        default=DEFAULT_STEPS,
        help=f"timed optimizer steps per route and repeat (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--steps-per-call",
        type=harness.positive_integer,
        default=DEFAULT_STEPS_PER_CALL,
        help="optimizer steps per call of the multi-step function, and fit's "
        f"steps_per_execution; at least 2, must divide --steps (default "
        f"{DEFAULT_STEPS_PER_CALL})",
    )
    parser.add_argument(
        "--feed",
        choices=tuple(FEED_DESCRIPTIONS),
        default="dataset",
        help="what the Python loops iterate: the tf.data pipeline fit reads (default, "
        "as a user's loop would) or ready-made tensors (no input cost at all)",
    )
    harness.add_common_arguments(parser, DEFAULT_REPEATS)
    arguments = parser.parse_args(argv)
    # With one step per call the multi-step routes would repeat the single-step ones.
    if arguments.steps_per_call < 2:
        parser.error(f"--steps-per-call must be at least 2, got {arguments.steps_per_call}")
    # Both chunked routes run whole chunks only: Keras 3.0's fit would otherwise run past
    # steps_per_epoch on a repeating dataset, and the multi-step function has no remainder.
    if arguments.steps % arguments.steps_per_call:
        parser.error(
            f"--steps ({arguments.steps}) must be a multiple of "
            f"--steps-per-call ({arguments.steps_per_call})"
        )
    return arguments


def build_model():
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def tracing_count(function):
    """How many times a tf.function has traced, or None for anything else."""
    if hasattr(function, "experimental_get_tracing_count"):
        return function.experimental_get_tracing_count()
    return None


class Workload:
    """The initial weights, the data, the loss and the optimizer that every route shares."""

    def __init__(self, steps_per_call, feed):
        self.feed = feed
        keras.utils.set_random_seed(SEED)
        self.initial_weights = build_model().get_weights()
        random = np.random.default_rng(SEED)
        # One chunk of distinct batches, cycled: enough to defeat any caching of a single
        # batch, small enough (about 40 MB at the defaults) to stay in memory.
        images = random.standard_normal((steps_per_call, BATCH_SIZE, *IMAGE_SHAPE))
        labels = random.integers(0, NUM_CLASSES, size=(steps_per_call, BATCH_SIZE))
        images = tf.constant(images, dtype=tf.float32)
        labels = tf.constant(labels, dtype=tf.int32)
        # The batches are cut once here, so no route pays for batching inside its timing;
        # prefetch is the last stage of a pipeline as the tf.data performance guide advises.
        self.batches = (
            tf.data.Dataset.from_tensor_slices((images, labels)).repeat().prefetch(tf.data.AUTOTUNE)
        )
        self.chunks = (
            tf.data.Dataset.from_tensors((images, labels)).repeat().prefetch(tf.data.AUTOTUNE)
        )
        self.batch_list = [(images[index], labels[index]) for index in range(steps_per_call)]
        self.chunk = (images, labels)

    def batch_stream(self, steps):
        """The (images, labels) batches a Python loop trains on for `steps` steps."""
        if self.feed == "dataset":
            return iter(self.batches.take(steps))
        return (self.batch_list[step % len(self.batch_list)] for step in range(steps))

    def chunk_stream(self, calls):
        """The stacked (steps_per_call, batch, ...) chunks for `calls` multi-step calls."""
        if self.feed == "dataset":
            return iter(self.chunks.take(calls))
        return (self.chunk for _ in range(calls))

    def fresh_model(self):
        model = build_model()
        model.set_weights(self.initial_weights)
        return model

    @staticmethod
    def loss_function():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @staticmethod
    def optimizer():
        return keras.optimizers.Adam(learning_rate=LEARNING_RATE)


@dataclasses.dataclass
class Route:
    """One warmed-up way to train: train(steps) runs that many optimizer steps.

    train only accepts multiples of step_multiple (the steps one call runs).
    """

    name: str
    train: object
    traced_function: object
    step_multiple: int = 1
    notes: dict = dataclasses.field(default_factory=dict)
    timed_steps: int = 0
    steps_per_second: list = dataclasses.field(default_factory=list)
    cpu_milliseconds_per_step: list = dataclasses.field(default_factory=list)
    retraces_while_timed: int = 0

    def choose_timed_steps(self, steps):
        """Times short probe runs and keeps a slow route's measurement to a few seconds."""
        probe_steps = max(self.step_multiple, WARM_UP_STEPS)
        probe_steps -= probe_steps % self.step_multiple
        probe_rates = []
        # The fastest of three probes, so that a burst of load from other processes during
        # one probe does not shorten the measurement of a route that is not slow.
        for _ in range(PROBES):
            start = time.perf_counter()
            self.train(probe_steps)
            probe_rates.append(probe_steps / (time.perf_counter() - start))
        affordable_steps = int(max(probe_rates) * MEASUREMENT_SECONDS_LIMIT)
        affordable_steps -= affordable_steps % self.step_multiple
        self.timed_steps = min(steps, max(affordable_steps, probe_steps))

    def measure(self):
        traces_before = tracing_count(self.traced_function())
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        self.train(self.timed_steps)
        wall_seconds = time.perf_counter() - wall_start
        cpu_seconds = time.process_time() - cpu_start
        self.steps_per_second.append(self.timed_steps / wall_seconds)
        self.cpu_milliseconds_per_step.append(1000 * cpu_seconds / self.timed_steps)
        traces_after = tracing_count(self.traced_function())
        if traces_before is not None and traces_after is not None:
            self.retraces_while_timed += traces_after - traces_before

    @property
    def rates(self):
        return harness.Rates(self.steps_per_second)

    @property
    def median_steps_per_second(self):
        return self.rates.median

    @property
    def best_steps_per_second(self):
        # The fastest repeat is the one other processes disturbed least (see harness).
        return self.rates.best

    def ratios_to(self, reference):
        """(median steps/s over the reference's median, best over the reference's best)."""
        return self.rates.ratios_to(reference.rates)


def fit_route(workload, name, steps_per_execution):
    """fit on a fresh model; a warm-up fit traces it before any timing."""
    model = workload.fresh_model()
    model.compile(
        optimizer=workload.optimizer(),
        loss=workload.loss_function(),
        steps_per_execution=steps_per_execution,
    )

    def train(steps):
        # One epoch of exactly `steps` steps, so the time covers the timed steps plus the
        # per-call cost of fit itself (callbacks, iterator, logs), which a user pays too.
        model.fit(workload.batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)

    # The warm-up runs several executions, so it covers the first trace and first epoch.
    train(max(2 * steps_per_execution, WARM_UP_STEPS))
    # Keras 2 reports None for "not set", which means no XLA, like False.
    notes = {
        "steps_per_execution": steps_per_execution,
        "jit_compile": bool(getattr(model, "jit_compile", False)),
    }
    return Route(name, train, lambda: model.train_function, steps_per_execution, notes)


def fit_steps_per_execution_route(workload, steps, steps_per_call):
    """fit with steps_per_execution=steps_per_call, or the largest value this stack runs."""
    try:
        return fit_route(workload, FIT_STEPS_PER_EXECUTION, steps_per_call)
    except ValueError as error:
        if "get_next" not in str(error) or steps_per_call <= GET_NEXT_CALLS_LIMIT:
            raise
    fallback = max(
        divisor for divisor in range(1, GET_NEXT_CALLS_LIMIT + 1) if steps % divisor == 0
    )
    route = fit_route(workload, FIT_STEPS_PER_EXECUTION, fallback)
    route.notes["fallback"] = (
        f"fit with steps_per_execution={steps_per_call} raises ValueError on this stack "
        f"(tf.data allows {GET_NEXT_CALLS_LIMIT} get_next calls in one graph, "
        f"keras-team/keras#20344), so this row uses {fallback}, the largest divisor of "
        f"--steps up to {GET_NEXT_CALLS_LIMIT}"
    )
    return route


def train_on_batch_route(workload):
    model = workload.fresh_model()
    model.compile(optimizer=workload.optimizer(), loss=workload.loss_function())

    def train(steps):
        for images, labels in workload.batch_stream(steps):
            model.train_on_batch(images, labels)

    train(WARM_UP_STEPS)
    return Route(TRAIN_ON_BATCH, train, lambda: model.train_function)


def eager_loop_route(workload):
    model = workload.fresh_model()
    loss_function = workload.loss_function()
    optimizer = workload.optimizer()

    def eager_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_function(labels, logits)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    def train(steps):
        for images, labels in workload.batch_stream(steps):
            loss = eager_step(images, labels)
        # Reading the last loss waits for every step to finish before the clock stops.
        loss.numpy()

    train(WARM_UP_STEPS)
    return Route(EAGER_LOOP, train, lambda: None)


def function_loop_route(workload):
    model = workload.fresh_model()
    step = make_train_step(model, workload.loss_function(), workload.optimizer())

    def train(steps):
        for images, labels in workload.batch_stream(steps):
            loss = step(images, labels)
        loss.numpy()

    train(WARM_UP_STEPS)
    return Route(FUNCTION_LOOP, train, lambda: step)


def multi_step_function_route(workload, steps_per_call):
    model = workload.fresh_model()
    step = make_train_step(
        model, workload.loss_function(), workload.optimizer(), steps_per_call=steps_per_call
    )

    def train(steps):
        for images, labels in workload.chunk_stream(steps // steps_per_call):
            loss = step(images, labels)
        loss.numpy()

    train(2 * steps_per_call)
    return Route(
        MULTI_STEP_FUNCTION, train, lambda: step, steps_per_call, {"steps_per_call": steps_per_call}
    )


def iterator_route(workload, name, steps_per_call):
    """make_iterator_train_step: the batches never leave the graph, as in fit.

    It always reads the shared tf.data pipeline, whatever --feed says, since reading an
    iterator inside the function is the point of the route.
    """
    model = workload.fresh_model()
    step = make_iterator_train_step(
        model, workload.loss_function(), workload.optimizer(), steps_per_call=steps_per_call
    )
    iterator = iter(workload.batches)

    def train(steps):
        for _ in range(steps // steps_per_call):
            loss = step(iterator)
        loss.numpy()

    train(2 * steps_per_call)
    return Route(name, train, lambda: step, steps_per_call, {"steps_per_call": steps_per_call})


def prepare_routes(workload, steps, steps_per_call):
    """Builds and warms up every route, in the order the table lists them."""
    builders = [
        lambda: fit_route(workload, FIT, 1),
        lambda: fit_steps_per_execution_route(workload, steps, steps_per_call),
        lambda: train_on_batch_route(workload),
        lambda: eager_loop_route(workload),
        lambda: function_loop_route(workload),
        lambda: multi_step_function_route(workload, steps_per_call),
        lambda: iterator_route(workload, ITERATOR_LOOP, 1),
        lambda: iterator_route(workload, MULTI_STEP_ITERATOR, steps_per_call),
    ]
    routes = {}
    for build in builders:
        start = time.perf_counter()
        route = build()
        route.choose_timed_steps(steps)
        route.notes["warm_up_seconds"] = round(time.perf_counter() - start, 2)
        routes[route.name] = route
        print(f"  warmed up {route.name} in {route.notes['warm_up_seconds']:.1f} s", flush=True)
    return routes


def measure(routes, repeats):
    """Times every route once per repeat, starting each repeat one route further along.

    The rotation keeps any route from always running first, or always right after the
    slow eager loop, while the machine's load drifts.
    """
    harness.measure_interleaved(routes.values(), repeats, Route.measure)


def goal_checks(routes):
    """The issue's three goals, for both step styles, judged on median steps/s; best-of ratios
    ride along."""
    fit, fit_spe = routes[FIT], routes[FIT_STEPS_PER_EXECUTION]
    goals = [
        (f"{route} >= {RECOMMENDED_LOOP_GOAL:.1f}x fit", routes[route], fit, RECOMMENDED_LOOP_GOAL)
        for route in (FUNCTION_LOOP, ITERATOR_LOOP)
    ]
    for name in (MULTI_STEP_FUNCTION, MULTI_STEP_ITERATOR):
        route = routes[name]
        goals.append((f"{name} >= {MULTI_STEP_GOAL:.1f}x fit", route, fit, MULTI_STEP_GOAL))
        goals.append((f"{name} >= fit with steps_per_execution", route, fit_spe, 1.0))
    return [
        harness.goal_check(goal, route.rates, reference.rates, threshold)
        for goal, route, reference, threshold in goals
    ]


def row_label(route):
    if route.name == FIT_STEPS_PER_EXECUTION:
        return f"{route.name}={route.notes['steps_per_execution']}"
    if route.name in (MULTI_STEP_FUNCTION, MULTI_STEP_ITERATOR):
        return f"{route.name}, {route.notes['steps_per_call']}/call"
    return route.name


def print_report(stack, arguments, routes, checks, wall_seconds):
    print()
    harness.print_stack(stack)
    print(
        f"workload: 2-conv CNN, input {IMAGE_SHAPE}, batch {BATCH_SIZE}, Adam; "
        f"{arguments.steps} timed steps per route, median of {arguments.repeats} "
        f"interleaved repeat(s); the Python loops read {FEED_DESCRIPTIONS[arguments.feed]}"
    )
    print()
    header = (
        f"{'route':<36} {'median':>8} {'best':>8} {'median':>7} {'best':>7} "
        f"{'ms/step':>7} {'retraces':>8}"
    )
    print(f"{'':<36} {'steps/s':>17} {'ratio to fit':>15} {'CPU':>7}")
    print(header)
    print("-" * len(header))
    for route in routes.values():
        label = row_label(route)
        if route.timed_steps != arguments.steps:
            label += f" ({route.timed_steps} steps)"
        median_ratio, best_ratio = route.ratios_to(routes[FIT])
        traced = tracing_count(route.traced_function()) is not None
        retraces = str(route.retraces_while_timed) if traced else "-"
        print(
            f"{label:<36} {route.median_steps_per_second:>8.1f} "
            f"{route.best_steps_per_second:>8.1f} {median_ratio:>6.2f}x {best_ratio:>6.2f}x "
            f"{statistics.median(route.cpu_milliseconds_per_step):>7.2f} {retraces:>8}"
        )
    print()
    print(
        "steps/s: wall clock (time.perf_counter) over the repeats, median and best (fastest). "
        "ratio to fit: the route's median over fit's median, and its best over fit's best. "
        "CPU ms/step: this process's CPU time (all threads) per step, median. "
        "retraces: traces of the route's tf.function during the timed runs "
        "(0: it reused its graph; -: the stack's function is not a tf.function, or none)."
    )
    shortened = [route for route in routes.values() if route.timed_steps != arguments.steps]
    if shortened:
        print(
            f"Routes marked (N steps) were timed over N steps, what fits in about "
            f"{MEASUREMENT_SECONDS_LIMIT:.0f} s at the speed of a probe run, instead of "
            f"{arguments.steps}; steps/s is a rate, so they compare directly."
        )
    if "fallback" in routes[FIT_STEPS_PER_EXECUTION].notes:
        print(f"Note: {routes[FIT_STEPS_PER_EXECUTION].notes['fallback']}.")
    if routes[FIT].notes["jit_compile"]:
        print("fit runs with XLA (jit_compile=True), the tape loops without it.")
    else:
        print("fit runs without XLA (jit_compile is off), like the tape loops.")
    print("fit is compiled with no metrics, so it computes what the loops compute.")
    print()
    harness.print_goals(checks)
    print(f"\nwall time {wall_seconds:.0f} s; the exit status is 0 whatever the goals say.")


def write_json(path, stack, arguments, routes, checks, wall_seconds):
    results = {
        "stack": stack,
        "arguments": vars(arguments),
        "routes": {
            name: {
                "label": row_label(route),
                "timed_steps": route.timed_steps,
                "steps_per_second_median": route.median_steps_per_second,
                "steps_per_second_best": route.best_steps_per_second,
                "steps_per_second_each_repeat": route.steps_per_second,
                "ratio_to_fit_median": route.ratios_to(routes[FIT])[0],
                "ratio_to_fit_best": route.ratios_to(routes[FIT])[1],
                "cpu_milliseconds_per_step_median": statistics.median(
                    route.cpu_milliseconds_per_step
                ),
                "retraces_while_timed": route.retraces_while_timed,
                "notes": route.notes,
            }
            for name, route in routes.items()
        },
        "goals": checks,
        "wall_seconds": wall_seconds,
    }
    harness.write_json(path, results)


def main(argv=None):
    arguments = parse_arguments(argv)
    wall_start = time.perf_counter()
    stack = harness.describe_stack()
    print(f"warming up every route on TensorFlow {tf.__version__} ...", flush=True)
    workload = Workload(arguments.steps_per_call, arguments.feed)
    routes = prepare_routes(workload, arguments.steps, arguments.steps_per_call)
    measure(routes, arguments.repeats)
    checks = goal_checks(routes)
    wall_seconds = time.perf_counter() - wall_start
    print_report(stack, arguments, routes, checks, wall_seconds)
    if arguments.json:
        write_json(arguments.json, stack, arguments, routes, checks, wall_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
