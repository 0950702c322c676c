"""Tests for recipes/mixing_keras_packages.py: which Keras is which, objects of two packages in
one model, and when TensorFlow reads TF_USE_LEGACY_KERAS.

When the variable is read needs a TensorFlow whose Keras aliases nothing has used yet, so those
scenarios run in one child process (tests/mixing_keras_packages_child.py), started when the
tests are collected; everything else runs here. "standalone" below is `import keras`: Keras 3
beside tf-keras, and on every other stack the very package `tf.keras` is.
"""

import importlib
import importlib.util
import json
import types

import numpy as np
import pytest
from tensorflow import keras

from conftest import outcome_of
from recipes.mixing_keras_packages import keras_package_of, same_keras, which_keras
from tests.child_process import finish, last_report, run_python
from tests.keras_said import outcome_and_said
from tests.mixing_keras_packages_child import NO_TF_KERAS_LOGGED, package_of

FEATURES = np.ones((4, 2), "float32")
TARGETS = np.full((4, 1), 3.0, "float32")

# The stack families of the boundary sweep: conftest counts tf-keras 2.21 as keras 2.21.0.
BUNDLED_KERAS_2 = "keras<3 and tf<2.16"
TF_KERAS = "keras<3 and tf>=2.16"
KERAS_3 = "keras>=3"


@pytest.fixture(scope="module")
def standalone():
    """`import keras`, imported only when a test asks (with tf-keras it loads Keras 3)."""
    return importlib.import_module("keras")


def fake_object(module_name, class_name="Dense"):
    """An instance of a class defined in `module_name`: what `same_keras` reads of a class."""
    return type(class_name, (), {"__module__": module_name})()


# --- which_keras ------------------------------------------------------------------------------


def test_which_keras_names_the_package_and_version_behind_tf_keras_and_import_keras(standalone):
    report = which_keras()
    # Independent of the recipe: where tf.keras's Dense is defined, and the packages' own
    # `__version__` (the recipe reads the installed distributions instead).
    package = package_of(keras.layers.Dense)
    version = importlib.import_module(package).__version__
    assert report["tf.keras"] == {"package": package, "version": version}
    assert report["keras"] == {"package": "keras", "version": standalone.__version__}


def test_which_keras_reports_none_for_import_keras_when_keras_is_not_installed(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *rest: None if name == "keras" else find_spec(name),
    )
    report = which_keras()
    assert report["keras"] is None
    assert report["tf.keras"]["package"] == package_of(keras.layers.Dense)


def test_tf_keras_and_import_keras_are_one_package_except_with_tf_keras(standalone, version_split):
    report = which_keras()
    one_package = keras.layers.Dense is standalone.layers.Dense
    assert one_package == (report["tf.keras"]["package"] == report["keras"]["package"])
    standalone_major = standalone.__version__.partition(".")[0]
    observed = (
        "one package"
        if one_package
        else f"tf.keras is {report['tf.keras']['package']}, import keras is Keras "
        f"{standalone_major}"
    )
    version_split(
        "tf.keras and `import keras`",
        observed,
        {
            BUNDLED_KERAS_2: "one package",
            TF_KERAS: "tf.keras is tf_keras, import keras is Keras 3",
            KERAS_3: "one package",
        },
    )


def test_import_tf_keras_fails_where_tf_keras_is_not_installed(version_split):
    observed = outcome_of(lambda: importlib.import_module("tf_keras"), ["No module named"])
    missing = "ModuleNotFoundError: No module named"
    version_split(
        "import tf_keras",
        observed,
        {BUNDLED_KERAS_2: missing, TF_KERAS: "works", KERAS_3: missing},
    )


# --- Objects of the two packages in one model -------------------------------------------------


def tiny_model(package):
    return package.Sequential([package.Input(shape=(2,)), package.layers.Dense(1)])


# name: (the objects, what the user does with them, the fragment of the error, the outcome
# with tf-keras). Everywhere else `import keras` is tf.keras's own package and all of it works.
MISTAKES = {
    "a standalone-keras optimizer in a tf.keras model's compile": (
        lambda standalone: (tiny_model(keras), standalone.optimizers.SGD()),
        lambda model, optimizer: model.compile(optimizer=optimizer, loss="mse"),
        "Could not interpret optimizer identifier",
        "ValueError: Could not interpret optimizer identifier",
    ),
    "a tf.keras optimizer in a standalone-keras model's compile": (
        lambda standalone: (tiny_model(standalone), keras.optimizers.SGD()),
        lambda model, optimizer: model.compile(optimizer=optimizer, loss="mse"),
        "Could not interpret optimizer identifier",
        "ValueError: Could not interpret optimizer identifier",
    ),
    "a tf.keras layer in a standalone-keras Sequential": (
        lambda standalone: (standalone.Input(shape=(2,)), keras.layers.Dense(1), standalone),
        lambda inputs, layer, standalone: standalone.Sequential([inputs, layer]),
        "Only instances of `keras.Layer` can be added to a Sequential model",
        "ValueError: Only instances of `keras.Layer` can be added to a Sequential model",
    ),
    "a standalone-keras layer in a tf.keras Sequential": (
        lambda standalone: (keras.Input(shape=(2,)), standalone.layers.Dense(1)),
        lambda inputs, layer: keras.Sequential([inputs, layer]),
        "The added layer must be an instance of class Layer",
        "TypeError: The added layer must be an instance of class Layer",
    ),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_objects_of_two_packages_in_one_model_fail_only_with_tf_keras(
    mistake, standalone, version_split
):
    make_objects, action, fragment, with_tf_keras = MISTAKES[mistake]
    objects = make_objects(standalone)
    observed = outcome_of(lambda: action(*objects), [fragment])
    # same_keras says so before Keras does, exactly where Keras fails.
    keras_objects = [value for value in objects if not isinstance(value, types.ModuleType)]
    caught = outcome_of(lambda: same_keras(*keras_objects), ["two Keras packages"])
    assert caught == ("works" if observed == "works" else "ValueError: two Keras packages")
    version_split(
        mistake,
        observed,
        {BUNDLED_KERAS_2: "works", TF_KERAS: with_tf_keras, KERAS_3: "works"},
    )


def test_isinstance_across_the_two_packages_is_false_only_with_tf_keras(standalone, version_split):
    observed = (
        f"standalone Dense is a tf.keras Layer: "
        f"{isinstance(standalone.layers.Dense(1), keras.layers.Layer)}; "
        f"tf.keras Dense is a standalone Layer: "
        f"{isinstance(keras.layers.Dense(1), standalone.layers.Layer)}"
    )
    both = "standalone Dense is a tf.keras Layer: {0}; tf.keras Dense is a standalone Layer: {0}"
    version_split(
        "isinstance across tf.keras and `import keras`",
        observed,
        {
            BUNDLED_KERAS_2: both.format(True),
            TF_KERAS: both.format(False),
            KERAS_3: both.format(True),
        },
    )


def test_a_standalone_layer_on_a_tf_keras_input_is_silently_left_out_with_tf_keras(
    standalone, version_split
):
    dense = standalone.layers.Dense(1)
    built = []

    def build():
        inputs = keras.Input(shape=(2,))
        built.append(keras.Model(inputs, dense(inputs)))

    outcome, said = outcome_and_said(build, said_fragments=["not present in its tracked objects"])
    assert outcome == "works"
    [model] = built
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    kernel = np.array(dense.get_weights()[0])
    model.train_on_batch(FEATURES, TARGETS)
    # With the loss (x @ w + b - 3)^2 and x all ones, one SGD step moves every kernel entry.
    moved = not np.array_equal(kernel, np.array(dense.get_weights()[0]))
    observed = (
        f"{len(model.trainable_weights)} trainable weights; said: {said}; "
        f"train_on_batch {'changes' if moved else 'leaves'} the layer's kernel"
    )
    trained = "2 trainable weights; said: nothing; train_on_batch changes the layer's kernel"
    version_split(
        "a standalone-keras layer called on a tf.keras Input",
        observed,
        {
            BUNDLED_KERAS_2: trained,
            TF_KERAS: "0 trainable weights; said: logged: not present in its tracked objects; "
            "train_on_batch leaves the layer's kernel",
            KERAS_3: trained,
        },
    )


# --- same_keras and keras_package_of ------------------------------------------------------------


class UsersBlock(keras.layers.Layer):
    """A user's subclass: defined in this module, a Keras layer through its base."""


def test_same_keras_returns_the_one_package_of_instances_classes_modules_and_subclasses(observe):
    package = package_of(keras.layers.Dense)
    model = tiny_model(keras)
    objects = [model, keras.optimizers.SGD(), *model.layers, keras.layers.Dense, UsersBlock()]
    assert same_keras(*objects, keras) == package
    assert [keras_package_of(value) for value in (UsersBlock, keras, 3, "adam")] == [
        package,
        package,
        None,
        None,
    ]
    observe("same_keras on one package's objects", "returns the package")


@pytest.mark.parametrize("first", ["keras.src.models", "tf_keras.src.engine"])
def test_same_keras_names_both_packages_when_objects_come_from_two(first):
    """Stand-ins named like each package's classes: this runs on every stack."""
    second = "tf_keras.src.optimizers" if first.startswith("keras") else "keras.src.optimizers"
    objects = (fake_object(first, "Sequential"), fake_object(first), fake_object(second, "Adam"))
    with pytest.raises(ValueError) as raised:
        same_keras(*objects)
    message = str(raised.value)
    first_package, second_package = first.partition(".")[0], second.partition(".")[0]
    assert f"objects[0] (Sequential) from {first_package} " in message
    assert f"objects[2] (Adam) from {second_package} " in message


@pytest.mark.parametrize(
    "objects, named",
    [
        ((), "objects=()"),
        ((3,), "objects[0]=3"),
        ((keras.layers.Dense, "adam"), "objects[1]='adam'"),
        ((fake_object("torch.nn"),), "objects[0]=<"),
    ],
)
def test_same_keras_rejects_what_is_not_a_keras_object(objects, named):
    with pytest.raises(ValueError) as raised:
        same_keras(*objects)
    assert named in str(raised.value)


def test_demo_reports_which_keras_and_same_keras(demo_output):
    printed = demo_output("mixing_keras_packages")
    report = which_keras()
    assert f"tf.keras: {report['tf.keras']['package']} {report['tf.keras']['version']}" in printed
    assert f"same_keras(model, optimizer, *model.layers): {report['tf.keras']['package']}" in (
        printed
    )
    if report["tf.keras"]["package"] == "tf_keras":
        assert "objects come from two Keras packages" in printed
    else:
        assert "its objects mix with tf.keras's" in printed


# --- When TF_USE_LEGACY_KERAS is read (the child process) ---------------------------------------


def run_late_setting():
    return run_python(
        "from tests.mixing_keras_packages_child import main; main()", fresh_import=True
    )


# The child starts when the tests are collected and runs beside them (conftest).
START_EARLY = {"late_setting": run_late_setting}


@pytest.fixture(scope="module")
def late_setting():
    """What the child saw: TF_USE_LEGACY_KERAS unset at `import tensorflow`, set to "1"
    afterwards, then unset again (tests/mixing_keras_packages_child.py)."""
    report = json.loads(last_report(finish(run_late_setting)))
    # Importing the recipe (and with it TensorFlow) loaded no tf_keras: nothing had asked yet.
    assert report["tf_keras imported by importing the recipe"] is False
    return report


def test_tf_optimizers_used_before_the_variable_is_set_stays_on_keras(late_setting, observe):
    assert late_setting["tf.optimizers, first used unset"] == "keras"
    assert late_setting["tf.optimizers, then set"] == "keras"
    observe("tf.optimizers used, then TF_USE_LEGACY_KERAS=1 set", "stays on keras")


def test_the_variable_set_after_import_tensorflow_decides_at_the_first_tf_keras_use(
    late_setting, version_split
):
    first_use = late_setting["tf.keras, first used after setting"]
    if late_setting["logged no tf_keras"]:
        first_use += f"; logged: {NO_TF_KERAS_LOGGED}"
    # which_keras, called then, reports that package with its version, or the same error.
    reported = late_setting["which_keras"]
    if isinstance(reported, dict):
        assert reported["tf.keras"]["package"] == late_setting["tf.keras, first used after setting"]
    else:
        assert reported == "RecursionError: maximum recursion depth exceeded"
    missing = f"ImportError: Keras cannot be imported; logged: {NO_TF_KERAS_LOGGED}"
    version_split(
        "TF_USE_LEGACY_KERAS=1 set after `import tensorflow`, then the first tf.keras use",
        first_use,
        {
            "keras<3 and tf<2.15": "keras",
            "keras<3 and tf>=2.15,<2.16": missing,
            TF_KERAS: "tf_keras",
            KERAS_3: missing,
        },
    )


def test_unsetting_the_variable_after_the_first_use_changes_nothing(late_setting, version_split):
    recursion = "RecursionError: maximum recursion depth exceeded"
    version_split(
        "TF_USE_LEGACY_KERAS unset again after that first tf.keras use",
        late_setting["tf.keras, after unsetting"],
        {
            "keras<3 and tf<2.15": "keras",
            "keras<3 and tf>=2.15,<2.16": recursion,
            TF_KERAS: "tf_keras",
            KERAS_3: recursion,
        },
    )


def test_tf_optimizers_and_tf_keras_can_end_up_on_two_packages(late_setting, version_split):
    version_split(
        "a tf.keras model compiled with tf.optimizers.Adam() after the late setting",
        late_setting["tf.keras model compiled with tf.optimizers.Adam()"],
        {
            "keras<3 and tf<2.15": "works",
            "keras<3 and tf>=2.15,<2.16": "RecursionError: maximum recursion depth exceeded",
            TF_KERAS: "ValueError: Could not interpret optimizer identifier",
            KERAS_3: "RecursionError: maximum recursion depth exceeded",
        },
    )


def test_from_tensorflow_keras_import_follows_the_variable_as_it_was_at_import_tensorflow(
    late_setting, observe, version_split
):
    assert late_setting["from tensorflow.keras import layers"] == "keras"
    assert late_setting["tf.keras, after that import"] == "keras"
    observe(
        "`from tensorflow.keras import layers` after the late setting",
        "keras package; tf.keras rebound to it",
    )
    version_split(
        "the name bound by `from tensorflow import keras`, after that import",
        late_setting["`from tensorflow import keras` name, after that import"],
        {
            "keras<3 and tf<2.15": "keras",
            "keras<3 and tf>=2.15,<2.16": "RecursionError: maximum recursion depth exceeded",
            TF_KERAS: "tf_keras",
            KERAS_3: "RecursionError: maximum recursion depth exceeded",
        },
    )


def test_a_fresh_tf_keras_loader_here_does_what_tf_keras_did_in_the_child(
    late_setting, monkeypatch
):
    """TensorFlow's own loader class, made anew in this process as `import tensorflow` makes
    `tf.keras`, repeats the child's late setting, so its whole messages are recorded here."""
    lazy_loader = importlib.import_module("tensorflow.python.util.lazy_loader")
    if not hasattr(lazy_loader, "KerasLazyLoader"):  # TensorFlow 2.12 to 2.14 read no variable.
        assert late_setting["tf.keras, first used after setting"] == "keras"
        return
    monkeypatch.delenv("TF_USE_LEGACY_KERAS", raising=False)
    fresh = lazy_loader.KerasLazyLoader({})
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    found = []
    outcome, said = outcome_and_said(
        lambda: found.append(package_of(fresh.layers.Dense)),
        ["Keras cannot be imported"],
        [NO_TF_KERAS_LOGGED],
    )
    assert (found[0] if outcome == "works" else outcome) == late_setting[
        "tf.keras, first used after setting"
    ]
    assert (said != "nothing") == late_setting["logged no tf_keras"]
    monkeypatch.delenv("TF_USE_LEGACY_KERAS")
    found.clear()
    outcome = outcome_of(
        lambda: found.append(package_of(fresh.layers.Dense)),
        ["maximum recursion depth exceeded"],
    )
    assert (found[0] if outcome == "works" else outcome) == late_setting[
        "tf.keras, after unsetting"
    ]
