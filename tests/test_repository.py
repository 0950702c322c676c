"""The repository's own rules: every recipe is tested, indexed, self-contained and runnable."""

import ast
import pathlib
import sys

import pytest

from recipes import HEADER_FIELDS, header_fields, recipe_names
from recipes.__main__ import main as recipes_main

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = recipe_names()
# A recipe stands alone: the standard library, numpy and tensorflow, nothing else.
ALLOWED_IMPORTS = {"numpy", "tensorflow"} | set(sys.stdlib_module_names)


IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


def catches_import_error(handler):
    """True for `except ImportError`, `except ModuleNotFoundError` or a tuple holding one."""
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(node, ast.Name) and node.id in IMPORT_ERRORS for node in types)


def imports_of(path):
    """Yields (top-level module, guarded) for every import in a file.

    Only the body of a `try` that catches ImportError is guarded: its `except`, `else` and
    `finally` blocks run whether or not the import worked.
    """
    tree = ast.parse(path.read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(map(catches_import_error, node.handlers)):
            guarded.update(id(child) for statement in node.body for child in ast.walk(statement))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], id(node) in guarded
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            yield module.partition(".")[0] or ".", id(node) in guarded


@pytest.mark.stack_independent
def test_there_are_recipes():
    assert "space_to_depth_reorg" in RECIPES and "tensor_ops" in RECIPES


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_a_test_module(name):
    assert (ROOT / "tests" / f"test_{name}.py").is_file()


def readme_index_lines():
    """The README's index: one `- [name](docs/recipes/name.md): ...` line per recipe."""
    readme = (ROOT / "README.md").read_text()
    return [
        line for line in readme.splitlines() if line.startswith("- [") and "](docs/recipes/" in line
    ]


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_exactly_one_short_readme_index_line(name):
    lines = [
        line
        for line in readme_index_lines()
        if line.startswith(f"- [{name}](docs/recipes/{name}.md): ")
    ]
    assert len(lines) == 1
    assert len(lines[0]) <= 250, f"{len(lines[0])} characters"
    assert "Search: `" in lines[0], "the line gives the words a user searches for"


@pytest.mark.stack_independent
def test_every_readme_index_line_names_a_recipe():
    named = [line.partition("](")[0].removeprefix("- [") for line in readme_index_lines()]
    assert sorted(named) == RECIPES


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_a_page_and_the_page_links_its_file(name):
    page = ROOT / "docs" / "recipes" / f"{name}.md"
    assert page.is_file(), "run tox -p auto, then tox -e matrix"
    assert f"](../../recipes/{name}.py)" in page.read_text()


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_in_short_is_at_most_ten_lines_of_python(name):
    code = header_fields(name)["In short"]
    assert len(code.splitlines()) <= 10
    ast.parse(code)


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_see_also_links_name_other_recipes_with_a_reason(name):
    entries = header_fields(name)["See also"].splitlines()
    for entry in entries:
        other, colon, why = entry.removeprefix("- ").partition(":")
        assert entry.startswith("- ") and colon and why.strip(), f"not '- recipe: why': {entry!r}"
        assert other in RECIPES and other != name, f"{other!r} is not another recipe"


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_imports_only_stdlib_numpy_tensorflow_or_guarded_extras(name):
    for module, guarded in imports_of(ROOT / "recipes" / f"{name}.py"):
        assert module not in {"recipes", "."}, f"{name} imports another recipe"
        assert module in ALLOWED_IMPORTS or guarded, f"{name} imports {module} unguarded"


@pytest.mark.stack_independent
@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_every_header_field(name):
    fields = header_fields(name)
    assert [field for field in HEADER_FIELDS if not fields.get(field)] == []
    assert fields["Run"] == f"python -m recipes.{name}"
    assert "1." in fields["Recipe"], "Recipe lists numbered steps"


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_demo_runs_and_prints(name, demo_output):
    assert demo_output(name).strip()


@pytest.mark.stack_independent
def test_import_checker_catches_a_recipe_import_and_an_unguarded_extra(tmp_path):
    """The rule above can fail: it sees sibling imports, third-party imports and guards.

    Only a `try` body is guarded, by `except ImportError` alone or inside a tuple; imports
    in the handler, `else` or `finally` blocks, or under another exception, are not.
    """
    path = tmp_path / "bad.py"
    path.write_text(
        "import torch\nfrom recipes import wing_loss\nfrom . import tensor_ops\n"
        "try:\n    import pandas\nexcept ImportError:\n    import scipy\n"
        "else:\n    import sklearn\nfinally:\n    import jax\n"
        "try:\n    import polars\nexcept (ValueError, ModuleNotFoundError):\n    polars = None\n"
        "try:\n    import cv2\nexcept ValueError:\n    cv2 = None\n"
    )
    assert sorted(imports_of(path)) == [
        (".", False),
        ("cv2", False),
        ("jax", False),
        ("pandas", True),
        ("polars", True),
        ("recipes", False),
        ("scipy", False),
        ("sklearn", False),
        ("torch", False),
    ]


@pytest.mark.stack_independent
def test_python_m_recipes_lists_each_recipe_on_one_line_with_its_title(capsys):
    assert recipes_main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in RECIPES:
        [line] = [line for line in lines if line.startswith(f"{name} ")]
        assert header_fields(name)["Title"] in line
