"""Samples per second that four input pipelines deliver into a small model's fit, side by side.

Every sample pays a fixed per-sample numpy cost, a stand-in for decoding and augmenting an
image: `--cost-ms` milliseconds (default 1) of numpy ufunc work on a scratch buffer. Like
real numpy image code, the ufuncs release the GIL while they run, so threads can overlap
them. The feeds, each training a fresh copy of the same small CNN (16x16x3 input, one conv
layer, batch 32, SGD) from the same initial weights:

    (a) generator   recipes.generator_dataset.batch_generator(preprocess=cost): the notes'
                    Python generator, corrected; fit pulls its batches one at a time
    (b) sequence    recipes.sequence_dataset.ArrayDataset(preprocess=cost, workers=W):
                    Sequence / PyDataset with W worker threads
    (c) tf.data     recipes.tf_data_pipeline.make_pipeline(batch_map=numpy_map_function(
                    cost over the batch's samples)): from_tensor_slices, batch, a parallel
                    map (AUTOTUNE) of whole batches, repeat, prefetch
    (c') tf.data, per-sample map: the same with decode=numpy_map_function(cost), one
                    numpy_function call per sample (shown to explain the batch map)
    (d) in memory   fit(x, y) on arrays that already paid the cost: the ceiling

Each feed is timed over one fit call of --steps steps (a whole epoch of the --steps *
batch samples), after a warm-up fit that traces the model. The run happens twice in one
process: with the per-sample cost, and with the cost set to zero (every feed still runs
its numpy step, which then returns at once). Within each, the feeds are measured
--repeats times in a rotating order (benchmarks/harness.py); the median samples/s and the
best repeat are reported, as ratios to (d) and to (a).

Goals (from issue #8): with the cost, tf.data at least 1.6 times the generator on 2 cores
(the limit is the core count, 2 times); with zero cost, tf.data at least 0.9 times the
in-memory ceiling. The script prints PASS or FAIL for each and always exits 0: it is a
measurement, not a test. CPU s/s is the process's CPU time per wall second: how many
cores a feed kept busy, which explains a bound.

Run: python benchmarks/input_pipelines.py [--steps N] [--repeats R] [--cost-ms MS]
         [--workers W] [--json PATH]
"""

import argparse
import os
import pathlib
import sys
import threading
import time

# The benchmark imports the recipes from this checkout, wherever it is started from.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# TensorFlow's C++ start-up chatter would bury the table when the script runs outside tox.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402

from benchmarks import harness  # noqa: E402
from recipes.generator_dataset import batch_generator  # noqa: E402
from recipes.sequence_dataset import ArrayDataset  # noqa: E402
from recipes.tf_data_pipeline import make_pipeline, numpy_map_function  # noqa: E402

IMAGE_SHAPE = (16, 16, 3)
NUM_CLASSES = 10
BATCH_SIZE = 32
SEED = 0
DEFAULT_STEPS = 40
DEFAULT_REPEATS = 3
DEFAULT_COST_MS = 1.0
DEFAULT_WORKERS = 2
WARM_UP_STEPS = 4
# The scratch buffer the cost works on: large enough that each ufunc call spends its time
# in the GIL-free inner loop rather than in Python.
SCRATCH_ELEMENTS = 1 << 16
GENERATOR, SEQUENCE, TF_DATA, IN_MEMORY = (
    "(a) generator",
    "(b) sequence",
    "(c) tf.data",
    "(d) in memory",
)
TF_DATA_PER_SAMPLE = "(c') tf.data, per sample"
TF_DATA_OVER_GENERATOR_GOAL = 1.6
TF_DATA_OVER_IN_MEMORY_GOAL = 0.9


class SampleCost:
    """A per-sample numpy step that takes about `milliseconds` and returns the sample.

    It repeats sqrt over a scratch buffer (a fresh output buffer per call, so threads do not
    share one); the number of rounds is calibrated here, on this machine, single-threaded.
    """

    def __init__(self, milliseconds):
        self.milliseconds = milliseconds
        self.scratch = np.random.default_rng(SEED).random(SCRATCH_ELEMENTS).astype("float32") + 1
        self.rounds = 0
        if milliseconds > 0:
            self.rounds = 50
            calibration_seconds = self._time(self.rounds)
            self.rounds = max(1, round(self.rounds * milliseconds / 1000 / calibration_seconds))

    def _time(self, rounds, trials=5):
        saved, self.rounds = self.rounds, rounds
        fastest = min(self._timed_call() for _ in range(trials))
        self.rounds = saved
        return fastest

    def _timed_call(self):
        start = time.perf_counter()
        self(np.zeros(IMAGE_SHAPE, "float32"))
        return time.perf_counter() - start

    def measured_milliseconds(self):
        return 1000 * self._time(self.rounds)

    def __call__(self, sample):
        output = np.empty_like(self.scratch)
        for _ in range(self.rounds):
            np.sqrt(self.scratch, out=output)
        return sample

    def thread_speedup(self, threads, calls=200):
        """How much faster `threads` threads run `calls` cost calls than one thread, now.

        This is the most any parallel feed can gain over the generator on this machine at
        this moment: it counts the cores that other processes leave free, and the GIL.
        """
        sample = np.zeros(IMAGE_SHAPE, "float32")

        def work(count):
            for _ in range(count):
                self(sample)

        start = time.perf_counter()
        work(calls)
        one_thread_seconds = time.perf_counter() - start
        workers = [threading.Thread(target=work, args=(calls // threads,)) for _ in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return one_thread_seconds / (time.perf_counter() - start)


def build_model():
    return keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


class Feed:
    """One way to feed fit; `fit_once(steps)` runs one fit call of that many steps."""

    def __init__(self, name, initial_weights, make_fit_arguments):
        self.name = name
        self.model = build_model()
        self.model.set_weights(initial_weights)
        self.model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        self.make_fit_arguments = make_fit_arguments
        self.rates = harness.Rates()
        self.cores_busy = []

    def fit_once(self, steps):
        arguments = self.make_fit_arguments(steps)
        self.model.fit(epochs=1, verbose=0, shuffle=False, **arguments)

    def measure(self, steps):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        self.fit_once(steps)
        wall_seconds = time.perf_counter() - wall_start
        self.rates.values.append(steps * BATCH_SIZE / wall_seconds)
        self.cores_busy.append((time.process_time() - cpu_start) / wall_seconds)


def make_feeds(images, labels, cost, workers, initial_weights):
    """The four feeds, each with its own model and the data for --steps steps."""
    # With zero cost the numpy step still runs and returns at once, as a cheap step would.
    numpy_step = numpy_map_function(cost, IMAGE_SHAPE)

    def cost_of_a_batch(batch):
        return np.stack([cost(sample) for sample in batch])

    numpy_batch_step = numpy_map_function(cost_of_a_batch, (None, *IMAGE_SHAPE))

    def generator_arguments(steps):
        return {
            "x": batch_generator(images, labels, BATCH_SIZE, preprocess=cost),
            "steps_per_epoch": steps,
        }

    def sequence_arguments(steps):
        dataset = ArrayDataset(
            images[: steps * BATCH_SIZE],
            labels[: steps * BATCH_SIZE],
            BATCH_SIZE,
            preprocess=cost,
            workers=workers,
        )
        return {"x": dataset, **dataset.fit_kwargs()}

    pipeline = make_pipeline(images, labels, BATCH_SIZE, batch_map=numpy_batch_step, repeat=True)
    per_sample = make_pipeline(images, labels, BATCH_SIZE, decode=numpy_step, repeat=True)

    def tf_data_arguments(steps):
        return {"x": pipeline, "steps_per_epoch": steps}

    def tf_data_per_sample_arguments(steps):
        return {"x": per_sample, "steps_per_epoch": steps}

    # The ceiling: arrays that already paid the cost, as if decoded once and kept in memory
    # (the cost returns its sample unchanged, so they are the images themselves).
    def in_memory_arguments(steps):
        count = steps * BATCH_SIZE
        return {"x": images[:count], "y": labels[:count], "batch_size": BATCH_SIZE}

    feeds = [
        Feed(GENERATOR, initial_weights, generator_arguments),
        Feed(SEQUENCE, initial_weights, sequence_arguments),
        Feed(TF_DATA, initial_weights, tf_data_arguments),
        Feed(TF_DATA_PER_SAMPLE, initial_weights, tf_data_per_sample_arguments),
        Feed(IN_MEMORY, initial_weights, in_memory_arguments),
    ]
    for feed in feeds:
        feed.fit_once(WARM_UP_STEPS)
    return {feed.name: feed for feed in feeds}


def run_phase(cost_milliseconds, arguments, initial_weights):
    random = np.random.default_rng(SEED)
    samples = arguments.steps * BATCH_SIZE
    images = random.standard_normal((samples, *IMAGE_SHAPE)).astype("float32")
    labels = random.integers(0, NUM_CLASSES, size=samples).astype("int64")
    cost = SampleCost(cost_milliseconds)
    print(
        f"per-sample cost {cost_milliseconds} ms: {cost.rounds} sqrt rounds, "
        f"measured {cost.measured_milliseconds():.2f} ms; warming up ...",
        flush=True,
    )
    feeds = make_feeds(images, labels, cost, arguments.workers, initial_weights)
    speedups = []

    def measure(feed):
        feed.measure(arguments.steps)
        # Probed once per repeat, beside the feeds, so it sees the load they saw.
        if cost.rounds and feed.name == IN_MEMORY:
            speedups.append(cost.thread_speedup(os.cpu_count() or 1))

    harness.measure_interleaved(feeds.values(), arguments.repeats, measure)
    phase = {
        "cost_ms": cost_milliseconds,
        "measured_cost_ms": cost.measured_milliseconds(),
        "thread_speedup_each_repeat": speedups,
    }
    return phase, feeds


def print_phase(phase, feeds):
    print()
    print(
        f"per-sample cost {phase['cost_ms']} ms (measured {phase['measured_cost_ms']:.2f} ms "
        "single-threaded):"
    )
    if phase["thread_speedup_each_repeat"]:
        speedups = ", ".join(f"{value:.2f}x" for value in phase["thread_speedup_each_repeat"])
        print(
            f"the cost itself runs {speedups} faster in {os.cpu_count()} threads than in one, "
            "probed in each repeat: the most a parallel feed can gain over (a) right now"
        )
    header = (
        f"{'feed':<24} {'median':>9} {'best':>9} {'median':>7} {'best':>7} "
        f"{'median':>7} {'best':>7} {'CPU s/s':>7}"
    )
    print(f"{'':<24} {'samples/s':>19} {'ratio to (d)':>15} {'ratio to (a)':>15}")
    print(header)
    print("-" * len(header))
    for feed in feeds.values():
        to_ceiling = feed.rates.ratios_to(feeds[IN_MEMORY].rates)
        to_generator = feed.rates.ratios_to(feeds[GENERATOR].rates)
        cores = sorted(feed.cores_busy)[len(feed.cores_busy) // 2]
        print(
            f"{feed.name:<24} {feed.rates.median:>9.0f} {feed.rates.best:>9.0f} "
            f"{to_ceiling[0]:>6.2f}x {to_ceiling[1]:>6.2f}x "
            f"{to_generator[0]:>6.2f}x {to_generator[1]:>6.2f}x {cores:>7.2f}"
        )


def phase_results(phase, feeds):
    return {
        **phase,
        "feeds": {
            name: {
                "samples_per_second_median": feed.rates.median,
                "samples_per_second_best": feed.rates.best,
                "samples_per_second_each_repeat": feed.rates.values,
                "ratio_to_in_memory": feed.rates.ratios_to(feeds[IN_MEMORY].rates),
                "ratio_to_generator": feed.rates.ratios_to(feeds[GENERATOR].rates),
                "cpu_seconds_per_second_each_repeat": feed.cores_busy,
            }
            for name, feed in feeds.items()
        },
    }


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="Samples per second four input pipelines deliver into fit, side by side."
    )
    parser.add_argument(
        "--steps",
        type=harness.positive_integer,
        default=DEFAULT_STEPS,
        help=f"timed fit steps of batch {BATCH_SIZE} per feed and repeat (default {DEFAULT_STEPS})",
    )
    parser.add_argument(
        "--cost-ms",
        type=harness.non_negative_number,
        default=DEFAULT_COST_MS,
        help=f"per-sample numpy cost in milliseconds (default {DEFAULT_COST_MS})",
    )
    parser.add_argument(
        "--workers",
        type=harness.positive_integer,
        default=DEFAULT_WORKERS,
        help=f"worker threads of the Sequence/PyDataset feed (default {DEFAULT_WORKERS})",
    )
    harness.add_common_arguments(parser, DEFAULT_REPEATS, contender="feed")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    wall_start = time.perf_counter()
    stack = harness.describe_stack()
    print(f"TensorFlow {tf.__version__}: {arguments.steps} steps of batch {BATCH_SIZE} per feed")
    keras.utils.set_random_seed(SEED)
    initial_weights = build_model().get_weights()
    phases = [
        run_phase(cost, arguments, initial_weights)
        for cost in dict.fromkeys([arguments.cost_ms, 0.0])
    ]
    with_cost = phases[0][1]
    zero_cost = phases[-1][1]
    checks = [
        harness.goal_check(
            f"with {arguments.cost_ms} ms per sample: tf.data >= {TF_DATA_OVER_GENERATOR_GOAL}x "
            "the generator",
            with_cost[TF_DATA].rates,
            with_cost[GENERATOR].rates,
            TF_DATA_OVER_GENERATOR_GOAL,
        ),
        harness.goal_check(
            f"with zero cost: tf.data >= {TF_DATA_OVER_IN_MEMORY_GOAL}x in memory",
            zero_cost[TF_DATA].rates,
            zero_cost[IN_MEMORY].rates,
            TF_DATA_OVER_IN_MEMORY_GOAL,
        ),
    ]
    print()
    harness.print_stack(stack)
    print(
        f"workload: CNN on {IMAGE_SHAPE}, batch {BATCH_SIZE}, SGD; {arguments.steps} steps per "
        f"fit call, median of {arguments.repeats} interleaved repeats; sequence workers "
        f"{arguments.workers}"
    )
    for phase, feeds in phases:
        print_phase(phase, feeds)
    print(
        "\nsamples/s: wall clock over one fit call, median and best repeat. ratio to (d) / (a): "
        "median over median, best over best. CPU s/s: process CPU time per wall second (the "
        "cores a feed kept busy), median."
    )
    print()
    harness.print_goals(checks)
    wall_seconds = time.perf_counter() - wall_start
    print(f"\nwall time {wall_seconds:.0f} s; the exit status is 0 whatever the goals say.")
    if arguments.json:
        harness.write_json(
            arguments.json,
            {
                "stack": stack,
                "arguments": vars(arguments),
                "phases": [phase_results(phase, feeds) for phase, feeds in phases],
                "goals": checks,
                "wall_seconds": wall_seconds,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
