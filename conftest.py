"""Shared test setup: the stack under test, determinism, hypothesis profiles, observations.

Every test module sees the installed stack through the constants and fixtures below, so a
version split is written once (``if keras_major >= 3: ... else: ...``) and asserted on both
sides in every environment.
"""

import contextlib
import gc
import importlib
import inspect
import io
import json
import linecache
import os
import pathlib
import re
import sys
import threading
import warnings

import hypothesis
import numpy as np
import pytest
import tensorflow as tf
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from tensorflow import keras

from recipes import installed_keras_version
from tests import child_process
from tools.behavior_matrix import source_digest

# `keras.version()` exists on every Keras 3 and on no Keras 2 (see RECIPE_STYLE.md).
KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
# With TF_USE_LEGACY_KERAS=1, `from tensorflow import keras` is the tf_keras package.
USES_TF_KERAS = keras.__name__.startswith("tf_keras")
TF_VERSION = tuple(int(part) for part in tf.__version__.split(".")[:2])
# "2.12.0", "2.15.0", "3.0.5", "3.15.1" or "2.21.0 (tf-keras)".
KERAS_VERSION = installed_keras_version()
# Comparable versions, for splits written as ranges: `KERAS < Version("3.15")`. tf-keras
# continues Keras 2's numbering (tf-keras 2.21 is KERAS == Version("2.21.0")), so "keras<3"
# is every Keras 2, bundled or tf-keras.
KERAS = Version(KERAS_VERSION.split()[0])
TF = Version(tf.__version__)
# The tox env name labels the stack in the behaviour matrix; outside tox, describe it.
STACK = os.environ.get("TOX_ENV_NAME") or f"tf{tf.__version__}-keras{KERAS_VERSION}"
SOURCE_DIGEST = source_digest()
STACK_DESCRIPTION = f"TensorFlow {tf.__version__} with Keras {KERAS_VERSION}"

# TensorFlow's first trace of anything is slow, so no profile keeps the 200 ms deadline.
hypothesis.settings.register_profile("dev", max_examples=20, deadline=None)
hypothesis.settings.register_profile(
    "ci", parent=hypothesis.settings.get_profile("ci"), max_examples=30, deadline=None
)
hypothesis.settings.register_profile("thorough", max_examples=300, deadline=None)
# HYPOTHESIS_PROFILE wins; otherwise CI=true picks "ci", as Hypothesis itself does.
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI") else "dev"
)
hypothesis.settings.load_profile(HYPOTHESIS_PROFILE)

# The suite runs as recipes/deterministic_training.py advises: op determinism for the whole
# process, and every seed set before each test (below), so a test's numbers repeat run to run.
tf.config.experimental.enable_op_determinism()
# Devices are set up now, not by whichever test touches them first: a test run in any order
# sees the same devices (recipes/distributed_custom_loop.py adds logical CPUs only before).
tf.config.list_logical_devices("CPU")


def pytest_report_header(config):
    return (
        f"stack {STACK}: tensorflow {tf.__version__}, keras {KERAS_VERSION}, "
        f"numpy {np.__version__}, hypothesis profile {HYPOTHESIS_PROFILE}"
    )


_CLEAR_SESSION_KWARGS = (
    {"free_memory": False}
    if "free_memory" in inspect.signature(keras.backend.clear_session).parameters
    else {}
)


@pytest.fixture(autouse=True)
def fresh_seeded_keras(request):
    """Each test starts from a clean Keras session with every random seed set to 0.

    Together with op determinism (enabled above), two runs of a test compute the same numbers.

    Clearing only before each test, and without `gc.collect()` where Keras offers to skip it
    (`free_memory=False`, Keras 3.3 and later): the collection cost about 0.26 s a call, most
    of tf221's time. Keras 3.2 always collects (recipes/deterministic_training.py).
    """
    keras.backend.clear_session(**_CLEAR_SESSION_KWARGS)
    keras.utils.set_random_seed(0)
    _CURRENT_TEST["nodeid"] = request.node.nodeid
    _CURRENT_TEST["line"] = request.node.location[1] + 1
    yield
    _CURRENT_TEST["nodeid"] = None


@pytest.fixture
def op_determinism_off():
    """Op determinism off for one test (the default in a user's program), on again after.

    TensorFlow exports only `enable_op_determinism`; its counterpart has been in
    `tensorflow.python.framework.config` since both arrived (TF 2.8), on every stack here.
    """
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()
    yield
    tf_config.enable_op_determinism()


@pytest.fixture
def keras_major():
    return KERAS_MAJOR


@pytest.fixture
def keras_version():
    """The installed Keras as a `packaging.version.Version`; tf-keras 2.21 is 2.21.0."""
    return KERAS


@pytest.fixture
def tf_version():
    """The installed TensorFlow as a `packaging.version.Version`."""
    return TF


@pytest.fixture
def uses_tf_keras():
    return USES_TF_KERAS


# --- Version splits written as ranges ------------------------------------------------------


def in_range(spec):
    """True when the installed stack lies in `spec`, e.g. "keras>=3,<3.15" or "tf<2.16".

    Clauses joined by " and " must all hold: "keras<3 and tf>=2.16" is tf-keras.
    """
    versions = {"keras": KERAS, "tf": TF}
    for clause in spec.split(" and "):
        clause = clause.strip()
        name = clause.rstrip("<>=!~.,0123456789 ")
        if name not in versions:
            raise ValueError(f"range {spec!r}: clause {clause!r} must start with keras or tf")
        if not SpecifierSet(clause[len(name) :].replace(" ", "")).contains(versions[name]):
            return False
    return True


def expected_outcome(behaviour, known):
    """The outcome `known` ({range: outcome}) gives for the installed stack.

    Exactly one range must hold; a stack that no range covers is news, and says so.
    """
    matching = [spec for spec in known if in_range(spec)]
    if len(matching) != 1:
        raise AssertionError(
            f"{behaviour!r}: {len(matching)} known ranges hold for {STACK_DESCRIPTION} "
            f"({', '.join(matching) or 'none'}); known outcomes: {_describe(known)}"
        )
    return known[matching[0]]


def _describe(known):
    return "; ".join(f"{spec}: {outcome!r}" for spec, outcome in known.items())


def outcome_of(action, fragments=()):
    """Runs `action()`: "works" if it returns, else the exception's class name.

    The first of `fragments` found in the error message is appended ("ValueError: Cannot
    squeeze"), so an outcome names a stable part of the message, not all of it.
    """
    try:
        action()
    except Exception as error:  # noqa: BLE001 - the class of any error is the outcome.
        saw_error(error)
        found = [fragment for fragment in fragments if fragment in str(error)]
        return f"{type(error).__name__}: {found[0]}" if found else type(error).__name__
    return "works"


# --- Whole messages for docs/errors.md ------------------------------------------------------
#
# Outcomes name a stable fragment of an error ("ValueError: Cannot squeeze"), because the rest
# of the text changes between releases. Users paste the whole text, so every error a test
# caught (through `outcome_of` or `pytest.raises`) and every warning raised while a test ran is
# kept too, as the stack printed it, with only what changes between runs masked.

_CURRENT_TEST = {"nodeid": None, "line": None}
_MESSAGES = {}

_VOLATILE = [
    # Memory addresses: "<... object at 0x7f3a...>".
    (re.compile(r"0x[0-9a-fA-F]+"), "<address>"),
    # Absolute paths (temporary directories, site-packages), not "dense/kernel" in a name.
    (re.compile(r"(?<![\w.<>/-])~?(?:/[^\s'\"`,;:()\[\]{}<>|]+){2,}/?"), "<path>"),
    # Names Keras generates with a session counter: dense_3, sequential_12, input_layer_1.
    (re.compile(r"\b([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z][A-Za-z0-9]*)*)_\d+\b"), r"\1_<n>"),
    # TensorFlow's counters of traced functions and resources, which grow with every test
    # that runs before: "__inference_predict_function_298480", "Resource-9085-at-".
    (re.compile(r"\b__inference_(\w+?)_\d+\b"), r"__inference_\1_<n>"),
    (re.compile(r"\bResource-\d+-at"), "Resource-<n>-at"),
    # CPython names where the recursion limit struck ("... while calling a Python object",
    # "... in comparison"), which changes from run to run.
    (re.compile(r"^(maximum recursion depth exceeded)\b.*$"), r"\1"),
]
# Longer texts are cut at a sentence end before this many characters.
_MESSAGE_LIMIT = 600


# A printed set of strings and None ("Expected one of {'sum', 'none', None}"): Python 3.11
# hashes None by its address, so the order changes from process to process.
_PRINTED_SET = re.compile(r"\{((?:'[^']*'|None)(?:, (?:'[^']*'|None))+)\}")


def mask_volatile(text):
    """`text` with addresses, absolute paths and generated layer names replaced by placeholders,
    and printed sets of strings in sorted order."""
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return _PRINTED_SET.sub(lambda found: "{" + ", ".join(sorted(found[1].split(", "))) + "}", text)


def whole_message(text):
    """The message as a user pastes it: its first paragraph, lines joined, volatile parts masked.

    Keras 3 wraps a layer's error in "Exception encountered when calling ...", so the
    paragraph after that line is kept too.
    """
    paragraphs = [
        " ".join(line.strip() for line in block.splitlines() if line.strip())
        for block in re.split(r"\n\s*\n", str(text))
    ]
    paragraphs = [paragraph for paragraph in paragraphs if paragraph]
    if not paragraphs:
        return ""
    message = paragraphs[0]
    if message.startswith("Exception encountered when calling") and len(paragraphs) > 1:
        message += " " + paragraphs[1]
    message = mask_volatile(message)
    if len(message) > _MESSAGE_LIMIT:
        cut = message.rfind(". ", 0, _MESSAGE_LIMIT)
        message = message[: cut + 1 if cut > 0 else _MESSAGE_LIMIT] + " ..."
    return message


# What users paste comes from Keras, TensorFlow and the libraries below them. This
# repository's own messages are left out: the recipes' argument checks (a ValueError naming the
# argument, hundreds of them under hypothesis) and what the tests raise or warn themselves.
_OWN_CODE = tuple(
    str(pathlib.Path(__file__).resolve().parent / folder) for folder in ("recipes", "tests")
) + (str(pathlib.Path(__file__).resolve()),)
_NOT_MESSAGES = ("AssertionError", "SystemExit", "KeyboardInterrupt")


def _is_own_code(filename):
    return str(pathlib.Path(str(filename)).resolve()).startswith(_OWN_CODE)


def _saw(kind, type_name, text):
    nodeid = _CURRENT_TEST["nodeid"]
    message = whole_message(text)
    if nodeid is None or not message or type_name in _NOT_MESSAGES:
        return
    # Inside a property test the message names the drawn example (its shapes, its values),
    # and which examples a full run draws was seen to differ between two runs of tf216; an
    # index that changed from run to run would fail `matrix --check`. Tests outside
    # Hypothesis raise the same errors on fixed inputs.
    if hypothesis.currently_in_test_context():
        return
    key = (nodeid, kind, type_name, message)
    _MESSAGES.setdefault(key, {"test": nodeid, "kind": kind, "type": type_name, "message": message})


def saw_error(error):
    """Keep the whole message of an error a test caught on purpose, unless our code raised it.

    Ours means a `raise` statement in the repository. Keras and TensorFlow cut their own
    frames from a traceback, so an error they raise inside a test's layer (`self.add_weight`
    in `call`, a Python `if` on a tensor) can end on a line of ours that is not a `raise`:
    that error is theirs, and users paste it.
    """
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is not None:
        filename = traceback.tb_frame.f_code.co_filename
        line = linecache.getline(filename, traceback.tb_lineno).strip()
        if _is_own_code(filename) and line.startswith("raise"):
            return
    _saw("error", type(error).__name__, error)


class _RecordingRaises:
    """`pytest.raises` as a context manager, keeping the message of what it caught."""

    def __init__(self, context):
        self._context = context

    def __enter__(self):
        self._excinfo = self._context.__enter__()
        return self._excinfo

    def __exit__(self, *exc_info):
        suppressed = self._context.__exit__(*exc_info)
        if suppressed and exc_info[1] is not None:
            saw_error(exc_info[1])
        return suppressed


_pytest_raises = pytest.raises


def _raises_and_records(expected_exception, *args, **kwargs):
    if args:  # The old call form, pytest.raises(Error, function, *arguments).
        excinfo = _pytest_raises(expected_exception, *args, **kwargs)
        saw_error(excinfo.value)
        return excinfo
    return _RecordingRaises(_pytest_raises(expected_exception, **kwargs))


# Every test's `pytest.raises(...)` goes through here (tests call it as `pytest.raises`).
pytest.raises = _raises_and_records

# Warnings: CPython builds a `warnings.WarningMessage` for every warning it shows or records
# (pytest's own capture, `pytest.warns` and `catch_warnings(record=True)` alike), so a subclass
# sees each warning a test met, whoever catches it. Filtered-out warnings never get here.
# Nor is a warning kept that the suite's own background thread raised while a test ran: it
# starts child processes (START_EARLY below), and multiprocessing's "resource_tracker: process
# died unexpectedly, relaunching" once landed there, in the first test of a tf216 run.
_IGNORED_WARNING_SOURCES = ("hypothesis", "_pytest", "pluggy")


class _RecordingWarningMessage(warnings.WarningMessage):
    def __init__(self, message, category, filename, lineno, *args, **kwargs):
        super().__init__(message, category, filename, lineno, *args, **kwargs)
        ignored = any(part in str(filename) for part in _IGNORED_WARNING_SOURCES) or (
            threading.current_thread().name.startswith(child_process.EARLY_THREAD_NAME)
        )
        if not ignored and not _is_own_code(filename):
            _saw("warning", getattr(category, "__name__", str(category)), message)


warnings.WarningMessage = _RecordingWarningMessage


# --- Observations for docs/behavior-matrix.md and docs/version-boundaries.md -----------------

_OBSERVATIONS = {}
# What every version-split test saw, recorded before its assert, so that a run on a stack
# between ours reports a new outcome instead of only failing (tools/boundaries.py reads it).
_SPLITS = {}


def _recipe_of(request):
    return request.module.__name__.rpartition(".")[2].removeprefix("test_")


def _message_behind(outcome):
    """The whole message of the error this test caught that `outcome` names, if any."""
    for item in reversed(list(_MESSAGES.values())):
        if item["test"] != _CURRENT_TEST["nodeid"] or item["kind"] != "error":
            continue
        if f"{item['type']}: " in f"{outcome}: " or outcome == item["type"]:
            return item["message"]
    return None


def _recorder(recipe):
    def record(behaviour, outcome):
        key = (recipe, behaviour)
        earlier = _OBSERVATIONS.get(key)
        if earlier is not None and earlier["outcome"] != outcome:
            raise AssertionError(
                f"{behaviour!r} observed as both {earlier['outcome']!r} and {outcome!r}"
            )
        # The test that asserted it, for the recipe page's link, and the whole message behind
        # an error outcome, for the error index. The outcome alone is what splits compare.
        _OBSERVATIONS[key] = {
            "outcome": outcome,
            "test": _CURRENT_TEST["nodeid"],
            "line": _CURRENT_TEST["line"],
            "message": _message_behind(outcome),
        }

    return record


@pytest.fixture
def observe(request):
    """Record what a behaviour did on this stack, once the test has asserted it.

    ``observe("fit_generator", "removed: AttributeError")`` files the outcome under the
    recipe this test module covers (``tests/test_<recipe>.py``). Call it after the assert
    that proves the outcome; a failing session writes nothing.
    """
    return _recorder(_recipe_of(request))


@pytest.fixture
def version_split(request):
    """Assert a behaviour that differs across releases, and record it for both pages.

    ``version_split(behaviour, observed, {"keras<3": "absent", "keras>=3": "present"})``:
    `observed` is what the test just saw (computed from the real result, never copied from
    the table); the ranges name the releases where each outcome starts. The assert fails
    with "new outcome on <stack>" when the installed stack does something the table does
    not predict. Tests that use this fixture are marked `version_split`, so
    `pytest -m version_split` runs just the splits (tools/boundaries.py does).
    """
    recipe = _recipe_of(request)
    record = _recorder(recipe)

    def check(behaviour, observed, known):
        _SPLITS[(recipe, behaviour)] = {"observed": observed, "known": known}
        expected = expected_outcome(behaviour, known)
        assert observed == expected, (
            f"new outcome on {STACK_DESCRIPTION}: {behaviour!r} gave {observed!r}, where "
            f"{expected!r} was expected; known outcomes: {_describe(known)}"
        )
        record(behaviour, observed)

    return check


# The five pinned stacks (tox.ini). Tests marked `stack_independent` (the repository's rules,
# the tools, numpy against numpy) cannot change with TensorFlow or Keras, so of the five they
# run on REFERENCE_STACK alone; any other stack, yours included, runs them too.
PINNED_STACKS = ("tf212", "tf215", "tf216", "tf221", "tf221-legacy")
REFERENCE_STACK = "tf221"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "version_split: the test asserts a behaviour that differs across releases"
    )
    config.addinivalue_line(
        "markers",
        f"stack_independent: runs on {REFERENCE_STACK} alone of the pinned stacks (no "
        "TensorFlow or Keras behaviour in it)",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "version_split" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.version_split)
    if STACK in PINNED_STACKS and STACK != REFERENCE_STACK:
        elsewhere = [item for item in items if item.get_closest_marker("stack_independent")]
        if elsewhere:
            config.hook.pytest_deselected(items=elsewhere)
            items[:] = [item for item in items if item not in elsewhere]


def pytest_collection_finish(session):
    """Start the slow child processes that the selected tests will wait for.

    A test module lists them as START_EARLY = {fixture name: zero-argument function}, and the
    fixture returns `child_process.finish(function)`. Each runs in the background, one at a
    time, while the other tests run, and only when a selected test uses its fixture.
    """
    # TensorFlow, Keras and the test modules are imported now and stay to the end. Frozen,
    # Python's garbage collector no longer walks them on each full collection: those took
    # 16.6 s of tf221's 164 s, 7.2 s once frozen (measured with gc.callbacks). Collected
    # before the background thread starts, so no finalizer of the imports' garbage runs while
    # that thread opens multiprocessing's pipes.
    gc.collect()
    gc.freeze()
    for item in session.items:
        early = getattr(getattr(item, "module", None), "START_EARLY", {})
        for name in getattr(item, "fixturenames", ()):
            if name in early:
                child_process.start_early(early[name])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After each test, its teardown done: collect its garbage, then freeze what outlives it.

    Otherwise the objects that outlive tests pile up, and each automatic full collection walks
    all of them: 37 of them took 10.9 s of tf221's run, one of them 3.5 s inside a single
    test. Collected here, each collection walks only what the last test made.
    """
    yield
    gc.collect()
    gc.freeze()


_DEMO_OUTPUT = {}


@pytest.fixture
def demo_output():
    """demo_output(name): what `recipes.<name>.demo()` printed. Each demo runs once a session:
    the demo check in test_repository and a recipe's own test of its output share the run."""

    def printed_by(name):
        if name not in _DEMO_OUTPUT:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                importlib.import_module(f"recipes.{name}").demo()
            _DEMO_OUTPUT[name] = printed.getvalue()
        return _DEMO_OUTPUT[name]

    return printed_by


def _ran_whole_suite(session):
    """True when this session collected every test, so its observations are complete."""
    option = session.config.option
    narrowed = [
        getattr(option, name, None)
        for name in ("keyword", "markexpr", "lf", "deselect", "ignore", "ignore_glob")
    ]
    if any(narrowed) or session.testscollected == 0:
        return False
    tests_dir = pathlib.Path(session.config.rootpath, "tests").resolve()
    arguments = session.config.args or [str(tests_dir)]
    return all(pathlib.Path(argument).resolve() == tests_dir for argument in arguments)


def _stack_record(observations):
    return {
        "stack": STACK,
        "tensorflow": tf.__version__,
        "keras": KERAS_VERSION,
        "python": sys.version.split()[0],
        # The merger refuses observations written by other code than the checkout's.
        "source_digest": SOURCE_DIGEST,
        "observations": observations,
    }


def pytest_sessionfinish(session, exitstatus):
    """Writes this stack's observations after a full, green run; otherwise deletes them.

    A failed or partial run must not leave an older file behind for the matrix to merge.
    """
    directory = os.environ.get("OBSERVATIONS_DIR")
    if directory:
        path = pathlib.Path(directory, f"{STACK}.json")
        if exitstatus != 0 or not _ran_whole_suite(session):
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            observations = [
                {"recipe": recipe, "behaviour": behaviour, **seen}
                for (recipe, behaviour), seen in sorted(_OBSERVATIONS.items())
            ]
            record = _stack_record(observations)
            record["messages"] = sorted(
                _MESSAGES.values(), key=lambda item: (item["test"], item["kind"], item["message"])
            )
            path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    # tools/boundaries.py: every split's observation, whatever the exit status.
    splits_path = os.environ.get("SPLITS_OUTPUT")
    if splits_path:
        splits = [
            {"recipe": recipe, "behaviour": behaviour, **seen}
            for (recipe, behaviour), seen in sorted(_SPLITS.items())
        ]
        record = _stack_record(splits)
        record["exitstatus"] = int(exitstatus)
        pathlib.Path(splits_path).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(splits_path).write_text(json.dumps(record, indent=2) + "\n")
