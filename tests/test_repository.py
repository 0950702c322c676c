"""The repository's own rules: every recipe is tested, indexed, self-contained and runnable."""

import ast
import contextlib
import importlib
import io
import pathlib
import sys

import pytest

from recipes import HEADER_FIELDS, header_fields, recipe_names
from recipes.__main__ import main as recipes_main
from tools import behavior_matrix

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECIPES = recipe_names()
# A recipe stands alone: the standard library, numpy and tensorflow, nothing else.
ALLOWED_IMPORTS = {"numpy", "tensorflow"} | set(sys.stdlib_module_names)


def imports_of(path):
    """Yields (top-level module, guarded) for every import in a file."""
    tree = ast.parse(path.read_text())
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name)
            and handler.type.id in {"ImportError", "ModuleNotFoundError"}
            for handler in node.handlers
        ):
            guarded.update(id(child) for child in ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], id(node) in guarded
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            yield module.partition(".")[0] or ".", id(node) in guarded


def test_there_are_recipes():
    assert "space_to_depth_reorg" in RECIPES and "tensor_ops" in RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_a_test_module(name):
    assert (ROOT / "tests" / f"test_{name}.py").is_file()


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_a_readme_index_row(name):
    readme = (ROOT / "README.md").read_text()
    assert f"| [{name}](recipes/{name}.py) |" in readme


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_imports_only_stdlib_numpy_tensorflow_or_guarded_extras(name):
    for module, guarded in imports_of(ROOT / "recipes" / f"{name}.py"):
        assert module not in {"recipes", "."}, f"{name} imports another recipe"
        assert module in ALLOWED_IMPORTS or guarded, f"{name} imports {module} unguarded"


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_has_every_header_field(name):
    fields = header_fields(name)
    assert [field for field in HEADER_FIELDS if not fields.get(field)] == []
    assert fields["Run"] == f"python -m recipes.{name}"
    assert "1." in fields["Recipe"], "Recipe lists numbered steps"


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_demo_runs_and_prints(name):
    module = importlib.import_module(f"recipes.{name}")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        module.demo()
    assert printed.getvalue().strip()


def test_import_checker_catches_a_recipe_import_and_an_unguarded_extra(tmp_path):
    """The rule above can fail: it sees sibling imports, third-party imports and guards."""
    path = tmp_path / "bad.py"
    path.write_text(
        "import torch\nfrom recipes import wing_loss\nfrom . import tensor_ops\n"
        "try:\n    import pandas\nexcept ImportError:\n    pandas = None\n"
    )
    assert sorted(imports_of(path)) == [
        (".", False),
        ("pandas", True),
        ("recipes", False),
        ("torch", False),
    ]


def test_python_m_recipes_lists_each_recipe_on_one_line_with_its_title(capsys):
    assert recipes_main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in RECIPES:
        [line] = [line for line in lines if line.startswith(f"{name} ")]
        assert header_fields(name)["Title"] in line


def stack_record(stack, outcomes):
    return {
        "stack": stack,
        "tensorflow": "2.x",
        "keras": "k",
        "observations": [
            {"recipe": "demo_recipe", "behaviour": behaviour, "outcome": outcome}
            for behaviour, outcome in outcomes.items()
        ],
    }


def test_behavior_matrix_puts_split_rows_first_and_refuses_a_gap():
    keras_3 = {"tf216", "tf221"}
    records = {
        stack: stack_record(stack, {"split": "K3" if stack in keras_3 else "K2", "same": "works"})
        for stack in behavior_matrix.STACKS
    }
    page = behavior_matrix.render(records)
    differs, same = page.split("## Same on every stack")
    assert "| split | K2 | K2 | K3 | K3 | K2 |" in differs
    assert "| same | works | works | works | works | works |" in same
    records["tf216"]["observations"].pop()
    with pytest.raises(ValueError, match="not on tf216"):
        behavior_matrix.render(records)
