"""``python -m recipes`` lists the recipes; ``--demo`` runs every demo(); ``--stack`` reports.

``python -m recipes --stack`` says which TensorFlow and Keras are installed, which Keras
``tf.keras`` is, the nearest pinned stack and what each version-split behaviour should do
here (recipes/_stack_report.py), without importing TensorFlow.
"""

import argparse
import importlib
import os
import sys

from recipes import header_fields, installed_keras_version, recipe_names


def main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes",
        description="List the recipes, or run every recipe's demo() on the installed stack.",
        epilog="Run one recipe: python -m recipes.<name>",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--demo", action="store_true", help="run every recipe's demo()")
    mode.add_argument(
        "--stack",
        action="store_true",
        help="report the installed TensorFlow and Keras, the Keras tf.keras is, the nearest "
        "pinned stack and the outcome predicted for each version-split behaviour",
    )
    parser.add_argument("--json", action="store_true", help="with --stack: print it as JSON")
    arguments = parser.parse_args(argv)
    if arguments.json and not arguments.stack:
        parser.error("--json goes with --stack")
    if arguments.stack:
        from recipes._stack_report import stack_report

        text, status = stack_report(os.environ, as_json=arguments.json)
        print(text)
        return status
    names = recipe_names()
    if not arguments.demo:
        for name in names:
            print(f"{name:28} {header_fields(name)['Title']}")
        print("\nRun one: python -m recipes.<name>    Run all: python -m recipes --demo")
        return 0
    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, keras {installed_keras_version()}")
    for name in names:
        print(f"\n=== recipes.{name}: {header_fields(name)['Title']}")
        importlib.import_module(f"recipes.{name}").demo()
    return 0


if __name__ == "__main__":
    try:
        status = main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:
        # `python -m recipes --stack | head` closed the pipe early: stop quietly, as the
        # Python docs advise (the "Note on SIGPIPE" in the signal module's page).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    sys.exit(status)
