"""What every benchmark in this folder shares: the stack and machine it ran on, interleaved
repeats, medians beside the best repeat, goal checks and JSON output.

A benchmark measures rates (steps/s, samples/s) of several contenders in one process. It
times each contender once per repeat, in a rotating order (`measure_interleaved`), so no
contender always runs first or right after the slowest one while the machine's load
drifts. It compares medians over the repeats, and reports the best (fastest) repeat beside
them: other processes can only slow a run down, so the best repeat is the one they
disturbed least (the reasoning behind timeit's advice to take the minimum time).
"""

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics


def positive_integer(text):
    """An argparse type that accepts only whole numbers above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_number(text):
    """An argparse type that accepts any finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_common_arguments(parser, default_repeats, contender="route"):
    """Adds the options every benchmark takes: --repeats and --json."""
    parser.add_argument(
        "--repeats",
        type=positive_integer,
        default=default_repeats,
        help=f"interleaved measurements per {contender}; the median and the best are "
        f"reported (default {default_repeats})",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results to this JSON file")


def describe_stack():
    """The TensorFlow, Keras and machine this run measures, as a dict of short values."""
    import tensorflow as tf
    from tensorflow import keras

    if keras.__name__.startswith("tf_keras"):
        keras_version = importlib.metadata.version("tf-keras") + " (tf-keras)"
    elif hasattr(keras, "version"):
        keras_version = keras.version()
    else:
        keras_version = importlib.metadata.version("keras")
    cpu_model = platform.processor() or platform.machine()
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    usable_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras_version,
        "tox_env": os.environ.get("TOX_ENV_NAME", ""),
        "cpu": cpu_model,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
        "load_average_at_start": [round(load, 2) for load in os.getloadavg()],
    }


def print_stack(stack):
    """Prints the stack and machine lines, and a warning when the machine was busy."""
    tox_env = f" (tox env {stack['tox_env']})" if stack["tox_env"] else ""
    print(
        f"stack: tensorflow {stack['tensorflow']}, keras {stack['keras']}, "
        f"python {stack['python']}{tox_env}"
    )
    print(
        f"machine: {stack['cpu']}, {stack['cpu_count']} CPUs ({stack['usable_cpus']} usable); "
        f"load average {stack['load_average_at_start'][0]} at start, "
        f"{os.getloadavg()[0]:.2f} at end"
    )
    cpus = stack["usable_cpus"] or stack["cpu_count"] or 1
    if stack["load_average_at_start"][0] > cpus:
        print(
            f"warning: the load average exceeded the {cpus} CPUs before timing began, so "
            "other processes compete for them and the timings include waiting for a CPU; "
            "the best-of ratios are steadier than the medians."
        )


@dataclasses.dataclass
class Rates:
    """The rates one contender reached, one per repeat."""

    values: list = dataclasses.field(default_factory=list)

    @property
    def median(self):
        return statistics.median(self.values)

    @property
    def best(self):
        return max(self.values)

    def ratios_to(self, reference):
        """(median over the reference's median, best over the reference's best)."""
        return self.median / reference.median, self.best / reference.best


def measure_interleaved(contenders, repeats, measure_one, label="repeat"):
    """Calls `measure_one(contender)` for every contender once per repeat, starting each
    repeat one contender further along, and prints progress."""
    order = list(contenders)
    for repeat in range(repeats):
        shift = repeat % len(order)
        for contender in order[shift:] + order[:shift]:
            measure_one(contender)
        print(f"  {label} {repeat + 1}/{repeats} done", flush=True)


def goal_check(goal, rates, reference, threshold):
    """One goal, judged on the median ratio; the best-of-repeats ratio rides along."""
    median_ratio, best_ratio = rates.ratios_to(reference)
    return {
        "goal": goal,
        "ratio": median_ratio,
        "best_of_repeats_ratio": best_ratio,
        "passed": median_ratio >= threshold,
    }


def print_goals(checks):
    print("Goals, judged on the median ratio (best-of-repeats ratio in brackets):")
    for check in checks:
        verdict = "PASS" if check["passed"] else "FAIL"
        print(
            f"{verdict}  {check['goal']}: {check['ratio']:.2f}x "
            f"({check['best_of_repeats_ratio']:.2f}x)"
        )


def write_json(path, results):
    pathlib.Path(path).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {path}")
