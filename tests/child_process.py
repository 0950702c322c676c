"""Run Python code in a fresh child process and read back what it reports.

A child has its own TensorFlow: no op determinism (conftest enables it in the test process),
its own devices, and a crash there is a result instead of a dead test run. Imports nothing
from conftest, so a child may import this module too.
"""

import concurrent.futures
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_python(code, *args, timeout=600):
    """`python -c code *args` from the repository root, with the suite's hash seed."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONHASHSEED="0"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_report(completed):
    """The text after "REPORT " on the child's last report line; fails if it failed."""
    lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return lines[-1].removeprefix("REPORT ")


# Slow children that tests wait for start while the other tests run (conftest's
# pytest_collection_finish calls `start_early` for each selected test's START_EARLY fixtures),
# one at a time on one thread, so a stack adds at most one child beside its test process.
_EARLY_THREAD = concurrent.futures.ThreadPoolExecutor(max_workers=1)
_STARTED_EARLY = {}


def start_early(function):
    """Begin `function()` (a zero-argument callable that runs children) in the background."""
    if function not in _STARTED_EARLY:
        _STARTED_EARLY[function] = _EARLY_THREAD.submit(function)


def finish(function):
    """`function()`'s result: waits for the run `start_early` began, else runs it now."""
    started = _STARTED_EARLY.pop(function, None)
    return started.result() if started is not None else function()
