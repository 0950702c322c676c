"""The scenarios of tests/test_mixing_keras_packages.py that need a fresh TensorFlow.

TensorFlow resolves `tf.keras` (and `tf.optimizers`) once, at its first use, so these
scenarios need a process in which nothing has used them yet. `main` runs them in order in one
such process, started with TF_USE_LEGACY_KERAS unset, and prints one "REPORT <json>" line.
Importing this module imports neither TensorFlow nor conftest (which uses `tf.keras`).
"""

import json
import logging
import os
import sys

# The first of these found in an error message names the outcome, as conftest's outcome_of does.
FRAGMENTS = (
    "Keras cannot be imported",
    "maximum recursion depth exceeded",
    "Could not interpret optimizer identifier",
)
# What TensorFlow 2.15 and later log when the variable asks for tf_keras and it is missing.
NO_TF_KERAS_LOGGED = "you do not have the tf_keras package installed"


def package_of(cls):
    """ "keras" or "tf_keras": the package a class is defined in."""
    return cls.__module__.partition(".")[0]


def attempt(action):
    """action()'s result, or "ErrorClass: fragment" (the whole message if no fragment is in it)."""
    try:
        return action()
    except Exception as error:  # noqa: BLE001 - RecursionError included: the class is the outcome.
        found = [fragment for fragment in FRAGMENTS if fragment in str(error)]
        return f"{type(error).__name__}: {found[0] if found else error}"


class _Logged(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def compile_with(keras_module, optimizer):
    model = keras_module.Sequential([keras_module.Input(shape=(2,)), keras_module.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return "works"


def dense_from_an_import_statement():
    from tensorflow.keras import layers  # the statement, not the attribute tf.keras.layers

    return package_of(layers.Dense)


def main():
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import tensorflow as tf
    from tensorflow import keras  # binds tf.keras's loader; chooses nothing yet

    # Importing the recipe must use no Keras alias and import no Keras package itself.
    from recipes import mixing_keras_packages

    report = {"tf_keras imported by importing the recipe": "tf_keras" in sys.modules}
    report["tf.optimizers, first used unset"] = package_of(tf.optimizers.Adam)
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    report["tf.optimizers, then set"] = package_of(tf.optimizers.Adam)

    logged = _Logged()
    logging.getLogger("tensorflow").addHandler(logged)
    report["tf.keras, first used after setting"] = attempt(lambda: package_of(keras.layers.Dense))
    logging.getLogger("tensorflow").removeHandler(logged)
    report["logged no tf_keras"] = any(NO_TF_KERAS_LOGGED in message for message in logged.messages)
    report["which_keras"] = attempt(mixing_keras_packages.which_keras)
    report["tf.keras model compiled with tf.optimizers.Adam()"] = attempt(
        lambda: compile_with(keras, tf.optimizers.Adam())
    )

    del os.environ["TF_USE_LEGACY_KERAS"]
    report["tf.keras, after unsetting"] = attempt(lambda: package_of(tf.keras.layers.Dense))
    report["from tensorflow.keras import layers"] = attempt(dense_from_an_import_statement)
    report["tf.keras, after that import"] = attempt(lambda: package_of(tf.keras.layers.Dense))
    report["`from tensorflow import keras` name, after that import"] = attempt(
        lambda: package_of(keras.layers.Dense)
    )
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main()
