"""Shared test setup: the stack under test, determinism, hypothesis profiles, observations.

Every test module sees the installed stack through the constants and fixtures below, so a
version split is written once (``if keras_major >= 3: ... else: ...``) and asserted on both
sides in every environment.
"""

import inspect
import json
import os
import pathlib
import sys

import hypothesis
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from recipes import installed_keras_version

# `keras.version()` exists on every Keras 3 and on no Keras 2 (see RECIPE_STYLE.md).
KERAS_MAJOR = 3 if hasattr(keras, "version") else 2
# With TF_USE_LEGACY_KERAS=1, `from tensorflow import keras` is the tf_keras package.
USES_TF_KERAS = keras.__name__.startswith("tf_keras")
TF_VERSION = tuple(int(part) for part in tf.__version__.split(".")[:2])
# "2.12.0", "2.15.0", "3.0.5", "3.15.1" or "2.21.0 (tf-keras)".
KERAS_VERSION = installed_keras_version()
# The tox env name labels the stack in the behaviour matrix; outside tox, describe it.
STACK = os.environ.get("TOX_ENV_NAME") or f"tf{tf.__version__}-keras{KERAS_VERSION}"

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
def fresh_seeded_keras():
    """Each test starts from a clean Keras session with every random seed set to 0.

    Clearing only before each test, and without `gc.collect()` where Keras 3.15 offers to skip
    it (`free_memory=False`): the collection cost about 0.26 s a call, most of tf221's time.
    """
    keras.backend.clear_session(**_CLEAR_SESSION_KWARGS)
    keras.utils.set_random_seed(0)


@pytest.fixture
def keras_major():
    return KERAS_MAJOR


@pytest.fixture
def tf_version():
    return TF_VERSION


@pytest.fixture
def uses_tf_keras():
    return USES_TF_KERAS


# --- Observations for docs/behavior-matrix.md -------------------------------------------

_OBSERVATIONS = {}


@pytest.fixture
def observe(request):
    """Record what a behaviour did on this stack, once the test has asserted it.

    ``observe("fit_generator", "removed: AttributeError")`` files the outcome under the
    recipe this test module covers (``tests/test_<recipe>.py``). Call it after the assert
    that proves the outcome; a failing session writes nothing.
    """
    module = request.module.__name__.rpartition(".")[2]
    recipe = module.removeprefix("test_")

    def record(behaviour, outcome):
        key = (recipe, behaviour)
        earlier = _OBSERVATIONS.get(key)
        if earlier is not None and earlier != outcome:
            raise AssertionError(f"{behaviour!r} observed as both {earlier!r} and {outcome!r}")
        _OBSERVATIONS[key] = outcome

    return record


def _ran_whole_suite(session):
    """True when this session collected every test, so its observations are complete."""
    option = session.config.option
    if option.keyword or option.markexpr or option.lf or option.deselect:
        return False
    tests_dir = pathlib.Path(session.config.rootpath, "tests").resolve()
    arguments = session.config.args or [str(tests_dir)]
    return all(pathlib.Path(argument).resolve() == tests_dir for argument in arguments)


def pytest_sessionfinish(session, exitstatus):
    directory = os.environ.get("OBSERVATIONS_DIR")
    if not directory or exitstatus != 0 or not _ran_whole_suite(session):
        return
    path = pathlib.Path(directory, f"{STACK}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "stack": STACK,
        "tensorflow": tf.__version__,
        "keras": KERAS_VERSION,
        "python": sys.version.split()[0],
        "observations": [
            {"recipe": recipe, "behaviour": behaviour, "outcome": outcome}
            for (recipe, behaviour), outcome in sorted(_OBSERVATIONS.items())
        ],
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
