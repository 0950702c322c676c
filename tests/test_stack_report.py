"""``python -m recipes --stack`` (recipes/_stack_report.py) and docs/versions.md.

On every stack the report must name the versions conftest sees, the Keras behind `tf.keras`,
the pinned stack it runs on, and for every version-split behaviour the outcome the tests
themselves expect here (conftest.expected_outcome). The pure functions are tested with fake
versions, so the rules for stacks we do not run are proven too.
"""

import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import conftest
from recipes import _stack_report as stack_report
from recipes.__main__ import main as recipes_main
from tools import behavior_matrix, boundaries

ROOT = pathlib.Path(__file__).resolve().parent.parent
BOUNDARIES = json.loads((ROOT / "docs" / "version-boundaries.json").read_text())


def family_of(keras_release, tf_keras):
    if tf_keras:
        return stack_report.TF_KERAS
    return stack_report.KERAS_3 if keras_release.startswith("3.") else stack_report.KERAS_2


# The stack this test runs on, as the report should describe `tf.keras`.
FAMILY = family_of(str(conftest.KERAS), conftest.USES_TF_KERAS)
TOX_ENV_NAME = os.environ.get("TOX_ENV_NAME")


def expected_or_none(behaviour, known):
    """conftest's expected outcome on this stack, None where it finds no single range."""
    try:
        return conftest.expected_outcome(behaviour, known)
    except AssertionError:
        return None


def fake_distributions(**installed):
    """A stand-in for importlib.metadata.version: tensorflow_cpu="2.21.0" etc."""
    installed = {name.replace("_", "-"): version for name, version in installed.items()}

    def version(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    return version


# --- The real stack --------------------------------------------------------------------------


def test_python_m_recipes_stack_prints_this_stacks_versions_without_importing_tensorflow():
    """One subprocess, the command users run; -X importtime lists every module it imported."""
    finished = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "recipes", "--stack"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr[-3000:]
    lines = finished.stdout.splitlines()
    assert lines[0].startswith(f"TensorFlow            {conftest.TF} (distribution tensorflow")
    [tf_keras_line] = [line for line in lines if line.startswith("tf.keras is ")]
    name = "tf-keras" if conftest.USES_TF_KERAS else "Keras"
    assert f" {name} {conftest.KERAS} (" in tf_keras_line
    [nearest_line] = [line for line in lines if line.startswith("nearest pinned stack ")]
    if TOX_ENV_NAME in stack_report.PINNED_STACKS:
        assert nearest_line.split()[3] == f"{TOX_ENV_NAME}:"
        assert "(the same versions;" in nearest_line
    behaviour_lines = [line for line in lines if " -> " in line]
    assert len(behaviour_lines) == len(BOUNDARIES["behaviours"]) > 100
    imported = re.findall(r"\|\s+(\S+)$", finished.stderr, flags=re.MULTILINE)
    assert "recipes._stack_report" in imported, "-X importtime lists the imports"
    assert [module for module in imported if module.split(".")[0] in {"tensorflow", "keras"}] == []


def stack_json(capsys):
    assert recipes_main(["--stack", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_stack_report_names_this_stack_and_the_pinned_stack_it_is(capsys):
    report = stack_json(capsys)
    assert report["tensorflow"] == str(conftest.TF)
    assert report["tf.keras"]["family"] == FAMILY
    assert report["tf.keras"]["version"] == str(conftest.KERAS)
    nearest = report["nearest_pinned"]
    assert stack_report.PINNED_STACKS[nearest["stack"]][0] == FAMILY
    if TOX_ENV_NAME in stack_report.PINNED_STACKS:
        # Run in each of the five envs, this checks every row of the table against tox.ini's pins.
        assert nearest["stack"] == TOX_ENV_NAME
        assert nearest["same_versions"] is True
        assert stack_report.PINNED_STACKS[TOX_ENV_NAME] == (
            FAMILY,
            str(conftest.TF),
            str(conftest.KERAS),
        )
    assert sorted(stack_report.PINNED_STACKS) == sorted(behavior_matrix.STACKS)


def test_every_behaviour_is_predicted_as_the_tests_expect_on_this_stack(capsys):
    """The report's prediction, from package metadata, equals conftest.expected_outcome."""
    predicted = stack_json(capsys)["behaviours"]
    assert len(predicted) == len(BOUNDARIES["behaviours"]) > 100
    mismatches = [
        (item["recipe"], item["behaviour"], seen["outcome"], expected)
        for item, seen in zip(BOUNDARIES["behaviours"], predicted, strict=True)
        if seen["outcome"] != (expected := expected_or_none(item["behaviour"], item["known"]))
    ]
    assert mismatches == []


def test_predictions_equal_what_the_boundary_sweep_observed_on_every_release_line():
    """26 real stacks: on each, the tests asserted the outcome that the ranges give."""
    checked = 0
    for stack in BOUNDARIES["stacks"]:
        assert stack["exitstatus"] == 0, stack["stack"]
        keras_release, _, marker = stack["keras"].partition(" ")
        family = family_of(keras_release, marker == "(tf-keras)")
        found = stack_report.swept_stack(
            BOUNDARIES["stacks"], family, keras_release, stack["tensorflow"]
        )
        assert found == stack["stack"]
        for item in BOUNDARIES["behaviours"]:
            outcome, _ = stack_report.predict(item["known"], keras_release, stack["tensorflow"])
            assert outcome == item["observed"][stack["stack"]], (stack["stack"], item["behaviour"])
            checked += 1
    assert checked > 26 * 100


# --- The rules, with fake versions -----------------------------------------------------------


def test_a_stack_no_range_covers_is_reported_as_not_covered():
    gap = {"keras<3": "works", "keras>=3,<3.5": "TypeError"}
    overlap = {"keras>=3": "works", "keras>=3.5": "TypeError"}
    assert stack_report.predict(gap, "3.4.1", "2.17.1") == ("TypeError", ["keras>=3,<3.5"])
    assert stack_report.predict(gap, "3.7.0", "2.18.1") == (None, [])
    assert stack_report.predict(overlap, "3.7.0", "2.18.1") == (None, ["keras>=3", "keras>=3.5"])
    data = {
        "stacks": [],
        "behaviours": [
            {"recipe": "demo", "behaviour": "gap", "known": gap},
            {"recipe": "demo", "behaviour": "overlap", "known": overlap},
            {"recipe": "demo", "behaviour": "covered", "known": {"keras>=3": "works"}},
        ],
    }
    versions = {"tensorflow": ("tensorflow", "2.18.1"), "keras": "3.7.0", "tf-keras": None}
    report = stack_report.build_report(versions, None, data)
    text = stack_report.format_report(report)
    assert "3 version-split behaviours" in text and "2 predicted" not in text
    assert "1 predicted by their known ranges, 2 not covered." in text
    assert "demo: gap -> not covered: no known range holds (known: keras<3: 'works';" in text
    assert "demo: overlap -> ambiguous: 2 known ranges hold (keras>=3, keras>=3.5)" in text
    assert "demo: covered -> works" in text
    assert "No tests ran on these versions" in text
    assert text.rstrip().endswith(f"To prove them: {stack_report.SUGGESTION}.")
    assert "tox -e stack " in stack_report.SUGGESTION


def test_ranges_read_tensorflow_clauses_and_refuse_other_names():
    """As conftest.in_range: tf-keras 2.21 counts as keras 2.21.0; clauses joined by "and"."""
    spec = "keras<3 and tf>=2.16"
    assert stack_report.in_range(spec, "2.21.0", "2.21.0") is True
    assert stack_report.in_range(spec, "2.15.0", "2.15.1") is False
    assert stack_report.in_range("keras>=3.11.3", "3.11.2", "2.19.1") is False
    assert stack_report.in_range("keras>=3.11.3", "3.11.3", "2.19.1") is True
    with pytest.raises(ValueError, match="clause 'torch>=2' must start with keras or tf"):
        stack_report.in_range("keras>=3 and torch>=2", "3.15.1", "2.21.0")


@pytest.mark.parametrize(
    "tensorflow, keras, tf_keras, legacy, expected",
    [
        ("2.12.1", "2.12.0", None, None, ("Keras 2 (bundled)", "2.12.0")),
        # TensorFlow 2.14 does not read the variable; 2.15 does (its lazy loader).
        ("2.14.1", "2.14.0", "2.14.0", "1", ("Keras 2 (bundled)", "2.14.0")),
        ("2.15.1", "2.15.0", "2.15.1", "1", ("tf-keras", "2.15.1")),
        ("2.16.2", "3.0.5", None, None, ("Keras 3", "3.0.5")),
        ("2.16.2", "3.0.5", "2.16.0", None, ("Keras 3", "3.0.5")),
        ("2.21.0", "3.15.1", "2.21.0", "1", ("tf-keras", "2.21.0")),
        ("2.21.0", "3.15.1", "2.21.0", "true", ("tf-keras", "2.21.0")),
        ("2.21.0", "3.15.1", "2.21.0", "True", ("tf-keras", "2.21.0")),
        # TensorFlow compares with "true", "True", "1" exactly.
        ("2.21.0", "3.15.1", "2.21.0", "TRUE", ("Keras 3", "3.15.1")),
        ("2.21.0", "3.15.1", "2.21.0", "0", ("Keras 3", "3.15.1")),
        ("2.21.0", "3.15.1", None, "1", (None, None)),
        ("2.21.0", None, None, None, (None, None)),
    ],
)
def test_tf_keras_resolves_as_tensorflows_lazy_loader_does(
    tensorflow, keras, tf_keras, legacy, expected
):
    family, version, why = stack_report.resolve_tf_keras(tensorflow, keras, tf_keras, legacy)
    assert (family, version) == expected
    if family is None:
        assert "ImportError" in why


@pytest.mark.parametrize(
    "family, keras, tensorflow, expected",
    [
        ("Keras 2 (bundled)", "2.12.0", "2.12.1", "tf212"),
        ("Keras 2 (bundled)", "2.13.1", "2.13.1", "tf212"),
        ("Keras 2 (bundled)", "2.14.0", "2.14.1", "tf215"),
        ("Keras 3", "3.3.3", "2.16.2", "tf216"),
        ("Keras 3", "3.7.0", "2.18.1", "tf216"),
        ("Keras 3", "3.10.0", "2.19.0", "tf221"),
        # The family comes first: tf-keras 2.16 is nearer Keras 2.15 by number, not by kind.
        ("tf-keras", "2.16.0", "2.16.2", "tf221-legacy"),
        ("tf-keras", "2.21.0", "2.21.0", "tf221-legacy"),
    ],
)
def test_nearest_pinned_stack_is_the_same_keras_family_then_the_closest_release(
    family, keras, tensorflow, expected
):
    assert stack_report.nearest_pinned(family, keras, tensorflow) == expected


def test_missing_tensorflow_or_tf_keras_is_reported_with_a_non_zero_status():
    text, status = stack_report.stack_report({}, distribution_version=fake_distributions())
    assert status == 1
    assert "TensorFlow            not installed" in text
    assert "Problem: TensorFlow is not installed in this Python" in text
    text, status = stack_report.stack_report(
        {"TF_USE_LEGACY_KERAS": "1"},
        distribution_version=fake_distributions(tensorflow_cpu="2.21.0", keras="3.15.1"),
    )
    assert status == 1
    assert "Problem: TF_USE_LEGACY_KERAS=1 but tf-keras is not installed" in text
    text, status = stack_report.stack_report(
        {}, distribution_version=fake_distributions(tensorflow="2.19.0", keras="3.10.0")
    )
    assert status == 0
    assert "tf221: TensorFlow 2.21.0 with Keras 3.15.1 (the closest; tox -e tf221)" in text
    assert "(boundary sweep stack k3.10)" in text


@pytest.mark.parametrize("arguments", [["--bogus"], ["--json"], ["--stack", "--demo"]])
def test_bad_arguments_are_a_usage_error(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipes_main(arguments)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: python -m recipes")


# --- docs/versions.md ------------------------------------------------------------------------


def test_versions_page_lists_every_sweep_line_and_pinned_stack_and_links_only_pages_in_docs():
    page = (ROOT / "docs" / "versions.md").read_text()
    for name, (requirements, _) in boundaries.SWEEP.items():
        tensorflow = next(pin for pin in requirements if pin.startswith("tensorflow"))
        [row] = [line for line in page.splitlines() if line.startswith(f"| {name} |")]
        assert tensorflow.split("==")[1] in row, name
    for stack, (_, tensorflow, keras) in stack_report.PINNED_STACKS.items():
        [row] = [line for line in page.splitlines() if line.startswith(f"| `{stack}` |")]
        assert tensorflow in row and keras in row, stack
    links = re.findall(r"\]\(([^)#\s]+)", page)
    assert "behavior-matrix.md" in links and "version-boundaries.md" in links
    assert [
        link for link in links if "://" not in link and not (ROOT / "docs" / link).is_file()
    ] == []
