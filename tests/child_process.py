"""Run Python code in a fresh child process and read back what it reports.

A child has its own TensorFlow: no op determinism (conftest enables it in the test process),
its own devices, and a crash there is a result instead of a dead test run. Imports nothing
from conftest, so a child may import this module too.

Most children fork from one server process that has imported numpy and TensorFlow and run
nothing (multiprocessing's forkserver), so each child skips the import, about 3 CPU-seconds.
TensorFlow sets up its devices at its first op, so a forked child still adds logical CPUs
(tests/test_distributed_custom_loop.py) and runs without op determinism
(tests/test_deterministic_training.py), as a fresh `python -c` does. A child that must import
TensorFlow itself, under environment variables set for it, asks for `fresh_import=True`.
"""

import atexit
import concurrent.futures
import multiprocessing
import multiprocessing.forkserver
import os
import pathlib
import subprocess
import sys
import tempfile
import threading

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The server imports these once; every forked child finds them imported.
FORKSERVER_PRELOAD = ["numpy", "tensorflow"]
_FORKSERVER = multiprocessing.get_context("forkserver")
_SERVER_LOCK = threading.Lock()


def run_python(code, *args, timeout=600, fresh_import=False):
    """`python -c code *args` from the repository root, with the suite's hash seed.

    Returns a `subprocess.CompletedProcess`: returncode is -N for a child that signal N
    ended, and stdout and stderr hold everything it printed, TensorFlow's C++ logs and an
    abort's last words included.
    """
    if fresh_import:
        return subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONHASHSEED="0"),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    return start_python(code, *args).finish(timeout)


def start_python(code, *args, environment=None):
    """Forks `python -c code *args` from the server, with `environment` added to os.environ;
    returns a `Child`, whose `finish(timeout)` waits for it."""
    return Child(code, [str(arg) for arg in args], environment or {})


class Child:
    """A child forked from the server, writing its output to two files."""

    def __init__(self, code, args, environment):
        self.command = [sys.executable, "-c", code, *args]
        _start_forkserver()
        self.directory = tempfile.TemporaryDirectory(prefix="child_")
        self.outputs = [os.path.join(self.directory.name, name) for name in ("out", "err")]
        self.process = _FORKSERVER.Process(
            target=_run_forked, args=(code, args, environment, *self.outputs)
        )
        self.process.start()

    def finish(self, timeout):
        """The `subprocess.CompletedProcess`; kills the child and raises
        `subprocess.TimeoutExpired` if it runs longer than `timeout` seconds."""
        with self.directory:
            self.process.join(timeout)
            if self.process.exitcode is None:
                self.process.kill()
                self.process.join()
                raise subprocess.TimeoutExpired(self.command, timeout)
            stdout, stderr = (pathlib.Path(path).read_text() for path in self.outputs)
        return subprocess.CompletedProcess(self.command, self.process.exitcode, stdout, stderr)


def _start_forkserver():
    """Starts the server once, with the suite's hash seed, and stops it at exit (so its CPU
    time, and its children's, count towards this process's, as `time` reports it)."""
    server = multiprocessing.forkserver._forkserver
    with _SERVER_LOCK:  # The START_EARLY thread and the tests may both start children.
        if server._forkserver_pid is not None:
            return
        _FORKSERVER.set_forkserver_preload(FORKSERVER_PRELOAD)
        seed = os.environ.get("PYTHONHASHSEED")
        os.environ["PYTHONHASHSEED"] = "0"
        try:
            server.ensure_running()
        finally:
            if seed is None:
                del os.environ["PYTHONHASHSEED"]
            else:
                os.environ["PYTHONHASHSEED"] = seed
        atexit.register(server._stop)


def _run_forked(code, args, environment, stdout, stderr):
    """In the forked child: what `python -c code *args` does in ROOT, output to two files."""
    for descriptor, path in ((1, stdout), (2, stderr)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(opened, descriptor)
        os.close(opened)
    os.environ.update(environment)
    os.chdir(ROOT)
    sys.argv = ["-c", *args]
    sys.path.insert(0, "")
    exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})


def last_report(completed):
    """The text after "REPORT " on the child's last report line; fails if it failed."""
    lines = [line for line in completed.stdout.splitlines() if line.startswith("REPORT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return lines[-1].removeprefix("REPORT ")


# Slow children that tests wait for start while the other tests run (conftest's
# pytest_collection_finish calls `start_early` for each selected test's START_EARLY fixtures),
# one at a time on one thread, so a stack adds at most one child beside its test process.
# Its thread's name lets conftest tell its warnings from a test's.
EARLY_THREAD_NAME = "start_early"
_EARLY_THREAD = concurrent.futures.ThreadPoolExecutor(
    max_workers=1, thread_name_prefix=EARLY_THREAD_NAME
)
_STARTED_EARLY = {}


def start_early(function):
    """Begin `function()` (a zero-argument callable that runs children) in the background."""
    if function not in _STARTED_EARLY:
        _STARTED_EARLY[function] = _EARLY_THREAD.submit(function)


def finish(function):
    """`function()`'s result: waits for the run `start_early` began, else runs it now."""
    started = _STARTED_EARLY.pop(function, None)
    return started.result() if started is not None else function()
