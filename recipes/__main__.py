"""``python -m recipes`` lists the recipes; ``python -m recipes --demo`` runs every demo()."""

import argparse
import importlib
import sys

from recipes import header_fields, installed_keras_version, recipe_names


def main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m recipes",
        description="List the recipes, or run every recipe's demo() on the installed stack.",
        epilog="Run one recipe: python -m recipes.<name>",
    )
    parser.add_argument("--demo", action="store_true", help="run every recipe's demo()")
    arguments = parser.parse_args(argv)
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
    sys.exit(main(sys.argv[1:]))
