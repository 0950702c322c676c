"""Title: `keras`, `tf.keras` and `tf_keras` in one process: which Keras you got, and one per model.

In short:
    import os
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf-keras only, and before tf.keras is first used
    from tensorflow import keras  # build every object from this one name, never `import keras` too
    print(which_keras())  # the package and version behind tf.keras and behind `import keras`
    same_keras(model, optimizer, *model.layers)  # ValueError naming both packages when mixed

Problem: TensorFlow 2.16 and later install Keras 3 as `keras`, and `tf.keras` is Keras 3 too.
Keras 2 lives on as the separate tf-keras package (`import tf_keras`), and the environment
variable TF_USE_LEGACY_KERAS=1 routes `tf.keras` to it. Code that uses `tf.keras` in one place
and `import keras` in another (tutorials, TF Hub layers, libraries built on tf-keras) then hands
objects of one package to the other: "ValueError: Could not interpret optimizer identifier:
<keras.src.optimizers.adam.Adam object at 0x...>" (tensorflow/tensorflow#64250), "ValueError:
Only instances of `keras.Layer` can be added to a Sequential model" (tensorflow/tensorflow#65419),
`isinstance(layer, tf.keras.layers.Layer)` False for a layer that is plainly a layer. Setting the
variable inside the program works or not depending on whether `tf.keras` was used already, and
`tf.keras` and `from tensorflow.keras import ...` can end up on different packages.

Recipe:
    1. Pick one Keras. For tf-keras, set TF_USE_LEGACY_KERAS=1 before Python starts; in code,
       set it before `import tensorflow` (then `from tensorflow.keras import ...` follows it
       too), at the latest before the first use of `tf.keras`, `tf.optimizers` and friends.
    2. Build every layer, model, optimizer, loss and callback from `from tensorflow import keras`;
       do not also `import keras` (with tf-keras it is Keras 3, another package).
    3. `which_keras()` reports the package and version behind `tf.keras` and behind
       `import keras`. It uses `tf.keras`, which fixes TensorFlow's choice: call it after step 1.
       (`python -m recipes --stack` predicts the same without importing TensorFlow.)
    4. `same_keras(model, optimizer, ...)` before `compile` or `Sequential`: it returns the
       package, or raises ValueError naming the two packages and the objects from each.

Pitfalls:
    - TensorFlow 2.15 and later read TF_USE_LEGACY_KERAS when `tf.keras` is first used
      (`tf.keras.layers`, or `keras.layers` after `from tensorflow import keras`), not at
      `import tensorflow`. `tf.optimizers` is chosen on its own: one used before the variable
      is set stays on the `keras` package after it, on every stack.
    - `from tensorflow.keras import layers`, an import statement, follows the variable as it
      was at `import tensorflow`: with the variable set later it imports the `keras` package's
      layers on every stack, and `tf.keras` is the `keras` package after it.
    - `same_keras` returns "keras" or "tf_keras" when every object (instance, class or module,
      user subclasses included) comes from that package, and raises ValueError naming both
      packages otherwise; with tf-keras it raises for each mixed pair below, which Keras
      refuses too.

Versions:
    - Without tf-keras (TensorFlow 2.12 to 2.15 with their Keras 2, Keras 3.0 to 3.15 on
      TensorFlow 2.16 to 2.21): `tf.keras` and `import keras` are one package (the same
      classes), so their objects mix in one model, `isinstance` holds across them, and
      `import tf_keras` raises ModuleNotFoundError. TensorFlow 2.12 to 2.14 ignore
      TF_USE_LEGACY_KERAS=1 set after `import tensorflow`: `tf.keras` stays their Keras 2.
    - TensorFlow 2.15 (Keras 2.15) and Keras 3.0 to 3.15, tf-keras not installed:
      TF_USE_LEGACY_KERAS=1 set before the first use of `tf.keras` makes that use log "you do
      not have the tf_keras package installed" and raise ImportError "Keras cannot be
      imported. Check that it is installed.", and every later use raise RecursionError, after
      unsetting the variable too. A `from tensorflow.keras import layers` then makes `tf.keras`
      the working `keras` package again; a name bound by `from tensorflow import keras` keeps
      raising RecursionError.
    - tf-keras 2.16 to 2.21 (TF_USE_LEGACY_KERAS=1; Keras 3 installed beside it as `keras`):
      a Keras 3 optimizer in a `tf.keras` model's `compile` and a `tf.keras` optimizer in a
      Keras 3 model's raise ValueError "Could not interpret optimizer identifier"; a `tf.keras`
      layer in a Keras 3 Sequential raises ValueError "Only instances of `keras.Layer` can be
      added to a Sequential model"; a Keras 3 layer in a `tf.keras` Sequential raises TypeError
      "The added layer must be an instance of class Layer"; `isinstance` across the two is
      False both ways. A Keras 3 layer called on a `tf.keras.Input` raises nothing: the model
      gets 0 trainable weights, TensorFlow logs "are not present in its tracked objects", and
      `train_on_batch` leaves the layer's kernel unchanged.
    - tf-keras 2.16 to 2.21, the variable set after `import tensorflow` and before the first
      use of `tf.keras`: `tf.keras` is tf_keras, and stays tf_keras when the variable is unset
      again. A `tf.optimizers` used before the setting stays Keras 3, and a `tf.keras` model
      compiled with its `Adam()` raises ValueError "Could not interpret optimizer identifier".
      A later `from tensorflow.keras import layers` imports Keras 3 and switches `tf.keras` to
      Keras 3, while the name bound by `from tensorflow import keras` stays tf_keras.

Sources: tensorflow/tensorflow#64250 (the MoViNet tutorial on TF 2.16.1: `compile` with
    `tf.keras.optimizers.Adam` raises "Could not interpret optimizer identifier:
    <keras.src.optimizers.adam.Adam ...>"); tensorflow/tensorflow#65419 (a TF Hub `KerasLayer`
    in `tf.keras.Sequential` on TF 2.16: "Only instances of `keras.Layer`");
    huggingface/transformers#29598 (a library that sets TF_USE_LEGACY_KERAS when imported) and
    huggingface/transformers#40391 (TF 2.15 with the variable set and no tf-keras: the warning,
    then `tf.keras` fails); TensorFlow's `tensorflow/__init__.py` and
    `tensorflow/python/util/lazy_loader.py` (`KerasLazyLoader`, TF 2.15 to 2.21: the variable
    is read in `_initialize`, at first use, and accepts "1", "true" and "True"); Keras 3.3.1
    release notes (`from tensorflow.keras import layers` served by Keras 3's `_tf_keras`).

See also:
    - lr_schedules: `import keras` beside tf-keras has no `keras.backend.set_value`
    - model_building_styles: Sequential, Functional and subclassed models of one package
    - save_load_custom_objects: files saved by Keras 2, tf-keras and Keras 3 load differently
    - safe_model_loading: a model file names its Keras package in its config

Run: python -m recipes.mixing_keras_packages
"""

import importlib
import importlib.metadata
import importlib.util
import types

from tensorflow import keras

KERAS_PACKAGES = ("keras", "tf_keras")
# The pip distribution that installs each package.
DISTRIBUTIONS = {"keras": "keras", "tf_keras": "tf-keras"}


def _installed_version(package):
    try:
        return importlib.metadata.version(DISTRIBUTIONS[package])
    except importlib.metadata.PackageNotFoundError:
        return None


def which_keras():
    """{"tf.keras": {"package", "version"}, "keras": {"package", "version"} or None}.

    "tf.keras" is what `from tensorflow import keras` gives ("keras" or "tf_keras"); using it
    here fixes TensorFlow's choice, so set TF_USE_LEGACY_KERAS first. "keras" is what
    `import keras` would give, found without importing it (None when it is not installed).
    Needs neither tf_keras nor Keras 3 installed.
    """
    # `tf.keras.__name__` is "keras.api._v2.keras" (Keras 2.12 to 2.15), "keras._tf_keras.keras"
    # (Keras 3) or "tf_keras.api._v2.keras" (tf-keras): its first part is the package.
    package = keras.__name__.partition(".")[0]
    report = {"tf.keras": {"package": package, "version": _installed_version(package)}}
    if importlib.util.find_spec("keras") is None:
        report["keras"] = None
    else:
        report["keras"] = {"package": "keras", "version": _installed_version("keras")}
    return report


def keras_package_of(value):
    """ "keras" or "tf_keras": the package `value` (an instance, a class or a module) belongs
    to, through the first Keras class it inherits from; None for anything else."""
    if isinstance(value, types.ModuleType):
        module_names = [value.__name__]
    else:
        classes = value.__mro__ if isinstance(value, type) else type(value).__mro__
        # A user's `class Block(keras.layers.Layer)` lives in the user's module: its bases tell.
        module_names = [getattr(cls, "__module__", None) or "" for cls in classes]
    for module_name in module_names:
        package = module_name.partition(".")[0]
        if package in KERAS_PACKAGES:
            return package
    return None


def _kind(value):
    return value.__name__ if isinstance(value, (type, types.ModuleType)) else type(value).__name__


def same_keras(*objects):
    """The package every object comes from ("keras" or "tf_keras"); ValueError if they differ."""
    if not objects:
        raise ValueError("objects=(): give at least one Keras object, class or module")
    packages = []
    for index, value in enumerate(objects):
        package = keras_package_of(value)
        if package is None:
            raise ValueError(
                f"objects[{index}]={value!r} is not a Keras object, class or module: its class "
                f"comes from neither {' nor '.join(KERAS_PACKAGES)}"
            )
        packages.append(package)
    for index, package in enumerate(packages):
        if package != packages[0]:
            raise ValueError(
                f"objects come from two Keras packages: objects[0] ({_kind(objects[0])}) from "
                f"{packages[0]} {_installed_version(packages[0])}, objects[{index}] "
                f"({_kind(objects[index])}) from {package} {_installed_version(package)}. "
                "Build all of them from one package: `from tensorflow import keras` (which_keras() "
                "says which package that is) or `import keras`, not both."
            )
    return packages[0]


def demo():
    report = which_keras()
    for name, found in report.items():
        print(f"{name:>8}: {found and found['package'] + ' ' + str(found['version'])}")
    model = keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD()
    print(
        "same_keras(model, optimizer, *model.layers):", same_keras(model, optimizer, *model.layers)
    )
    if report["keras"] is None or report["tf.keras"]["package"] == "keras":
        print("`import keras` is the package tf.keras is: its objects mix with tf.keras's")
        return
    # tf.keras is tf_keras here, and `import keras` is Keras 3 beside it.
    standalone_keras = importlib.import_module("keras")
    try:
        same_keras(model, standalone_keras.optimizers.SGD())
    except ValueError as error:
        print("same_keras(model, keras.optimizers.SGD()):", error)


if __name__ == "__main__":
    demo()
