"""Practical Keras/TensorFlow recipes, each one self-contained module.

A recipe imports only the standard library, numpy and tensorflow, never another recipe,
so a user can copy one file into a project. ``python -m recipes`` lists them and
``python -m recipes.<name>`` runs one's ``demo()``.
"""

import ast
import importlib.metadata
import pathlib
import textwrap

PACKAGE_DIR = pathlib.Path(__file__).parent


def recipe_names():
    """The recipe modules in this package, sorted; private and package files excluded."""
    return sorted(
        path.stem
        for path in PACKAGE_DIR.glob("*.py")
        if not path.stem.startswith("_") and path.stem not in {"__init__", "__main__"}
    )


def header_fields(name):
    """Parses a recipe's header docstring into {field: text} without importing it."""
    source = (PACKAGE_DIR / f"{name}.py").read_text()
    docstring = ast.get_docstring(ast.parse(source)) or ""
    lines_of, current = {}, None
    for line in docstring.splitlines():
        label, colon, rest = line.partition(":")
        if colon and not line.startswith(" ") and label in HEADER_FIELDS + OPTIONAL_FIELDS:
            current = label
            lines_of[current] = [rest.strip()]
        elif current is not None:
            lines_of[current].append(line)
    # The lines under a label lose their common indent only, so code in "In short" keeps its
    # own indentation.
    return {
        label: (lines[0] + "\n" + textwrap.dedent("\n".join(lines[1:]))).strip()
        for label, lines in lines_of.items()
    }


HEADER_FIELDS = (
    "Title",
    "In short",
    "Problem",
    "Recipe",
    "Pitfalls",
    "Versions",
    "Sources",
    "See also",
    "Run",
)
# Speed: ratios measured side by side by a script in benchmarks/, with stack and machine.
OPTIONAL_FIELDS = ("Speed",)


def installed_keras_version():
    """The version of the Keras behind `from tensorflow import keras`, tf-keras marked."""
    from tensorflow import keras

    if keras.__name__.startswith("tf_keras"):
        return importlib.metadata.version("tf-keras") + " (tf-keras)"
    if hasattr(keras, "version"):
        return keras.version()
    # Keras 2.15 has no keras.__version__; the bundled `keras` package records it.
    return importlib.metadata.version("keras")
