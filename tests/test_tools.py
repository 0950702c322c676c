"""The project's own tools: the matrix merger, the CI summary, the observation bookkeeping."""

import json
import os
import pathlib
import subprocess
import sys
import types

import hypothesis
import hypothesis.strategies as st
import pytest

import conftest
from recipes import __main__ as recipes_main
from tools import behavior_matrix, boundaries, pages, test_summary

# Nothing here depends on TensorFlow or Keras: the tools and conftest's bookkeeping run once.
pytestmark = pytest.mark.stack_independent

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIGEST = "0123456789abcdef"

# Text that Markdown tables mangle: pipes, backslashes, backticks, HTML line breaks, entities.
TRICKY_TEXT = (
    st.lists(st.sampled_from(["|", "\\", "`", "<br>", "<", ">", "&", "&lt;", "\n", " ", "a", "é"]))
    .map("".join)
    .map(str.strip)
)


def stack_record(stack, outcomes, recipe="demo_recipe"):
    return {
        "stack": stack,
        "tensorflow": "2.x",
        "keras": "k",
        "source_digest": DIGEST,
        "observations": [
            {"recipe": recipe, "behaviour": behaviour, "outcome": outcome}
            for behaviour, outcome in outcomes.items()
        ],
    }


def table_lines(page):
    return [line for line in page.splitlines() if line.startswith("|")]


@hypothesis.given(TRICKY_TEXT, st.lists(TRICKY_TEXT, min_size=5, max_size=5))
def test_matrix_cells_round_trip_through_markdown_exactly(behaviour, outcomes):
    hypothesis.assume(behaviour)
    records = {
        stack: stack_record(stack, {behaviour: outcome})
        for stack, outcome in zip(behavior_matrix.STACKS, outcomes, strict=True)
    }
    page = behavior_matrix.render(records)
    rows = [behavior_matrix.parse_row(line) for line in table_lines(page)]
    headers = [cells for cells in rows if cells[0] == "recipe"]
    [row] = [cells for cells in rows if cells[0].startswith("[demo_recipe]")]
    assert [len(cells) for cells in headers] == [7, 7]
    assert row[1:] == [behaviour, *outcomes]
    assert len(table_lines(page)) == 5, "a newline in a cell would have split its row"


def test_matrix_escapes_the_pipe_that_once_split_a_behaviour_into_two_cells():
    records = {
        stack: stack_record(stack, {"gradient for |error| > w": "`±1` <br> a|b"})
        for stack in behavior_matrix.STACKS
    }
    row = table_lines(behavior_matrix.render(records))[-1]
    assert row.count(" | ") == 6
    assert behavior_matrix.parse_row(row)[1:3] == ["gradient for |error| > w", "`±1` <br> a|b"]


def test_every_row_of_the_committed_matrix_has_as_many_cells_as_its_header():
    page = (ROOT / "docs" / "behavior-matrix.md").read_text()
    width = None
    for line in table_lines(page):
        cells = behavior_matrix.parse_row(line)
        if cells[0] == "recipe":
            width = len(cells)
        assert len(cells) == width, line
    assert width == len(behavior_matrix.STACKS) + 2


def test_merger_puts_split_rows_first_and_refuses_a_gap(tmp_path):
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


def write_records(directory, records):
    for name, record in records.items():
        pathlib.Path(directory, f"{name}.json").write_text(json.dumps(record))


def test_merger_refuses_a_file_that_names_another_stack_or_other_code(tmp_path):
    records = {stack: stack_record(stack, {"same": "works"}) for stack in behavior_matrix.STACKS}
    write_records(tmp_path, records)
    assert set(behavior_matrix.load_observations(tmp_path, digest=DIGEST)) == set(records)
    with pytest.raises(ValueError, match="other code"):
        behavior_matrix.load_observations(tmp_path, digest="fedcba9876543210")
    # A copy of tf212's file saved under tf216's name.
    write_records(tmp_path, {"tf216": records["tf212"]})
    with pytest.raises(ValueError, match=r"tf216.json holds observations of stack 'tf212'"):
        behavior_matrix.load_observations(tmp_path, digest=DIGEST)


def test_source_digest_changes_with_a_test_file(tmp_path):
    for name in ("conftest.py", "recipes/a.py", "tests/test_a.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    before = behavior_matrix.source_digest(tmp_path)
    (tmp_path / "tests" / "test_a.py").write_text("x = 2\n")
    assert behavior_matrix.source_digest(tmp_path) != before


def test_check_fails_on_a_split_behaviour_without_a_recorded_boundary(tmp_path):
    records = {
        stack: stack_record(stack, {"split": "K3" if stack == "tf221" else "K2"})
        for stack in behavior_matrix.STACKS
    }
    boundaries = tmp_path / "boundaries.json"
    boundaries.write_text(json.dumps({"behaviours": []}))
    assert behavior_matrix.unbounded_splits(records, boundaries) == [("demo_recipe", "split")]
    boundaries.write_text(
        json.dumps({"behaviours": [{"recipe": "demo_recipe", "behaviour": "split"}]})
    )
    assert behavior_matrix.unbounded_splits(records, boundaries) == []


# --- tools/test_summary.py: the closing line CI reads ----------------------------------------


def write_junit(directory, stack, tests, failures=0, skipped=0):
    pathlib.Path(directory, f"{stack}.xml").write_text(
        f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" '
        f'errors="0" skipped="{skipped}" time="1.0"/></testsuites>'
    )


@pytest.mark.parametrize(
    "tests, failures, skipped, status",
    [(10, 0, 0, 0), (0, 0, 0, 1), (10, 1, 0, 1), (10, 0, 1, 1)],
    ids=["green", "ran-no-test", "a-failure", "a-skip"],
)
def test_summary_fails_on_a_failure_a_skip_or_a_stack_that_ran_nothing(
    tmp_path, tests, failures, skipped, status
):
    for stack in test_summary.TEST_ENVS:
        write_junit(tmp_path, stack, 10)
    write_junit(tmp_path, "tf216", tests, failures, skipped)
    lines, result = test_summary.summarize(tmp_path)
    assert result == status
    passed = 10 * (len(test_summary.TEST_ENVS) - 1) + tests - failures - skipped
    assert lines[-1] == f"{passed} passed, {failures} failed, {skipped} skipped"


def test_summary_fails_when_a_stack_has_no_report(tmp_path):
    for stack in test_summary.TEST_ENVS[1:]:
        write_junit(tmp_path, stack, 10)
    lines, result = test_summary.summarize(tmp_path)
    assert result == 1
    assert lines[0].startswith("tf212: no report")


# --- python -m recipes ---------------------------------------------------------------------


def test_python_m_recipes_rejects_an_unknown_argument(capsys):
    with pytest.raises(SystemExit) as exit_info:
        recipes_main.main(["--dmeo"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --dmeo" in capsys.readouterr().err


def test_python_m_recipes_demo_runs_each_recipes_demo(monkeypatch, capsys):
    monkeypatch.setattr(recipes_main, "recipe_names", lambda: ["tensor_ops"])
    assert recipes_main.main(["--demo"]) == 0
    printed = capsys.readouterr().out
    assert "=== recipes.tensor_ops:" in printed
    assert printed.splitlines()[0].startswith("tensorflow ")


# --- conftest.py: observations only from a full, green run ----------------------------------


def fake_session(tmp_path, exitstatus_args=(), collected=10, **options):
    """A stand-in for pytest's session, with only the options this pytest run has."""
    option = types.SimpleNamespace(**options)
    config = types.SimpleNamespace(option=option, rootpath=ROOT, args=list(exitstatus_args))
    return types.SimpleNamespace(config=config, testscollected=collected)


@pytest.mark.parametrize(
    "options, args, whole",
    [
        ({}, [], True),  # `-p no:cacheprovider` leaves no `lf` option at all
        ({"lf": False, "keyword": "", "markexpr": "", "deselect": []}, ["tests"], True),
        ({"lf": True}, [], False),
        ({"keyword": "wing"}, [], False),
        ({"markexpr": "version_split"}, [], False),
        ({"deselect": ["tests/test_tools.py::x"]}, [], False),
        ({"ignore": ["tests/test_tools.py"]}, [], False),
        ({"ignore_glob": ["*wing*"]}, [], False),
        ({}, ["tests/test_tools.py"], False),
    ],
)
def test_only_an_unnarrowed_run_of_the_tests_folder_counts_as_the_whole_suite(
    tmp_path, options, args, whole
):
    args = [str(ROOT / argument) for argument in args]
    assert conftest._ran_whole_suite(fake_session(tmp_path, args, **options)) is whole


def test_a_failed_or_partial_run_deletes_its_stacks_stale_observations(tmp_path, monkeypatch):
    monkeypatch.setenv("OBSERVATIONS_DIR", str(tmp_path))
    monkeypatch.delenv("SPLITS_OUTPUT", raising=False)
    stale = tmp_path / f"{conftest.STACK}.json"
    for session, exitstatus in [
        (fake_session(tmp_path), 1),
        (fake_session(tmp_path, keyword="wing"), 0),
        (fake_session(tmp_path, collected=0), 0),
    ]:
        stale.write_text("{}")
        conftest.pytest_sessionfinish(session, exitstatus)
        assert not stale.exists()
    conftest.pytest_sessionfinish(fake_session(tmp_path), 0)
    written = json.loads(stale.read_text())
    assert (written["stack"], written["source_digest"]) == (conftest.STACK, conftest.SOURCE_DIGEST)


def test_a_real_partial_run_without_the_cache_plugin_deletes_stale_observations(tmp_path):
    """End to end: `-p no:cacheprovider` once raised AttributeError at session end."""
    stale = tmp_path / "somestack.json"
    stale.write_text("{}")
    environment = {**os.environ, "OBSERVATIONS_DIR": str(tmp_path), "TOX_ENV_NAME": "somestack"}
    environment.pop("SPLITS_OUTPUT", None)
    finished = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
        + ["tests/test_repository.py::test_there_are_recipes"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "AttributeError" not in finished.stdout + finished.stderr
    assert not stale.exists()


# --- conftest.py: version splits as ranges --------------------------------------------------


def test_in_range_reads_keras_and_tf_clauses(monkeypatch):
    from packaging.version import Version

    monkeypatch.setattr(conftest, "KERAS", Version("3.10.0"))
    monkeypatch.setattr(conftest, "TF", Version("2.19.0"))
    assert conftest.in_range("keras>=3,<3.15")
    assert not conftest.in_range("keras<3")
    assert conftest.in_range("keras>=3 and tf>=2.19")
    assert not conftest.in_range("keras>=3 and tf<2.19")
    with pytest.raises(ValueError, match="'jax<1' must start with keras or tf"):
        conftest.in_range("jax<1")


def test_expected_outcome_reports_a_stack_no_range_covers_as_news(monkeypatch):
    from packaging.version import Version

    monkeypatch.setattr(conftest, "KERAS", Version("3.10.0"))
    known = {"keras<3": "absent", "keras>=3.15": "present"}
    with pytest.raises(AssertionError, match="0 known ranges hold.*known outcomes: keras<3"):
        conftest.expected_outcome("thing", known)
    overlapping = {"keras>=3": "a", "keras>=3.5": "b"}
    with pytest.raises(AssertionError, match="2 known ranges hold"):
        conftest.expected_outcome("thing", overlapping)
    assert conftest.expected_outcome("thing", {"keras<3.15": "x", "keras>=3.15": "y"}) == "x"


def test_outcome_of_names_the_error_and_a_fragment_of_its_message():
    def fails():
        raise ValueError("Cannot squeeze axis=1, because ...")

    assert conftest.outcome_of(lambda: None) == "works"
    assert conftest.outcome_of(fails) == "ValueError"
    assert conftest.outcome_of(fails, ["nope", "Cannot squeeze"]) == "ValueError: Cannot squeeze"


# --- tools/boundaries.py: where each outcome starts -----------------------------------------


def split_record(stack, keras, observed):
    return {
        "stack": stack,
        "tensorflow": "2.x",
        "keras": keras,
        "exitstatus": 0,
        "observations": [
            {"recipe": "demo", "behaviour": "b", "observed": observed, "known": {"keras<3": "x"}}
        ],
    }


def test_boundaries_name_the_releases_of_each_run_of_one_outcome():
    records = [
        split_record("k3.10", "3.10.0", "new"),
        split_record("k2.15", "2.15.0", "old"),
        split_record("tfk2.16", "2.16.0 (tf-keras)", "old"),
        split_record("k3.0", "3.0.5", "mean"),
        split_record("k3.9", "3.9.2", "mean"),
        split_record("k3.15", "3.15.1", "new"),
    ]
    [behaviour] = boundaries.merge(records)["behaviours"]
    assert [(run["outcome"], run["releases"]) for run in behaviour["runs"]] == [
        ("old", "Keras 2.15.0, tf-keras 2.16.0"),
        ("mean", "Keras 3.0.5–3.9.2"),
        ("new", "Keras 3.10.0–3.15.1"),
    ]
    assert "`mean`: Keras 3.0.5–3.9.2" in boundaries.render(boundaries.merge(records))


def test_stack_install_names_a_missing_or_malformed_version():
    assert boundaries.stack_requirements("2.19.0", "3.10.0") == [
        "tensorflow-cpu==2.19.0",
        "keras==3.10.0",
    ]
    assert boundaries.stack_requirements("2.19.0", tf_keras="2.19.0") == [
        "tensorflow==2.19.0",
        "tf-keras==2.19.0",
    ]
    with pytest.raises(ValueError, match="STACK_TENSORFLOW is not set"):
        boundaries.stack_requirements(None)
    with pytest.raises(ValueError, match=r"STACK_KERAS='3.x' is not a release number"):
        boundaries.stack_requirements("2.19.0", "3.x")
    with pytest.raises(ValueError, match="pick one"):
        boundaries.stack_requirements("2.19.0", "3.10.0", "2.19.0")


def test_every_split_in_the_committed_boundaries_lists_the_pinned_stacks_outcomes():
    """The boundary page was generated from tests that agree with the pinned stacks' ranges."""
    data = json.loads((ROOT / "docs" / "version-boundaries.json").read_text())
    swept = {stack["stack"] for stack in data["stacks"]}
    assert {"k2.12", "k2.15", "k3.0", "k3.15", "tfk2.21"} <= swept
    assert [stack["stack"] for stack in data["stacks"] if stack["exitstatus"] != 0] == []
    for item in data["behaviours"]:
        assert set(item["observed"]) == swept, item["behaviour"]


def test_boundaries_join_a_stacks_tagged_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(boundaries, "RESULTS", tmp_path)
    for name, behaviour, exitstatus in [("k3.0", "a", 0), ("k3.0--extra", "b", 1)]:
        record = split_record("k3.0", "3.0.5", "x")
        record["observations"][0]["behaviour"] = behaviour
        record["exitstatus"] = exitstatus
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
        write_junit(tmp_path, name, 2, failures=exitstatus)
    [joined] = boundaries.load_results()
    assert sorted(item["behaviour"] for item in joined["observations"]) == ["a", "b"]
    assert (joined["exitstatus"], joined["tests"]["tests"], joined["tests"]["failed"]) == (1, 4, 1)


# --- conftest.py: whole messages for the error index ----------------------------------------


def test_whole_message_masks_paths_addresses_and_generated_layer_names():
    message = conftest.whole_message(
        "Invalid filepath extension for saving. Received: filepath=/tmp/pytest-of-root/p-3/m\n"
        "with <Dense object at 0x7f3a2b> and layer dense_12 (kernel dense/kernel:0).\n\nMore."
    )
    assert message == (
        "Invalid filepath extension for saving. Received: filepath=<path> with "
        "<Dense object at <address>> and layer dense_<n> (kernel dense/kernel:0)."
    )


def test_whole_message_keeps_only_the_stable_part_of_a_recursion_error():
    for where in ("while calling a Python object", "in comparison"):
        message = conftest.whole_message(f"maximum recursion depth exceeded {where}")
        assert message == "maximum recursion depth exceeded"


def test_whole_message_prints_a_set_of_strings_in_sorted_order():
    for printed in ("{'sum', 'none', None}", "{None, 'none', 'sum'}"):
        message = conftest.whole_message(f"Expected one of {printed}. Received: x")
        assert message == "Expected one of {'none', 'sum', None}. Received: x"


def test_whole_message_keeps_the_error_inside_keras_exception_encountered():
    text = "Exception encountered when calling Reorg.call().\n\nCould not squeeze.\n\nArgs: x"
    assert conftest.whole_message(text) == (
        "Exception encountered when calling Reorg.call(). Could not squeeze."
    )


def test_whole_message_cuts_a_long_text_at_a_sentence_end():
    message = conftest.whole_message("First sentence. " + "word " * 200)
    assert message == "First sentence. ..."


def this_tests_messages(request):
    return [item for item in conftest._MESSAGES.values() if item["test"] == request.node.nodeid]


def test_pytest_raises_and_outcome_of_keep_the_whole_message_of_library_errors(request):
    with pytest.raises(json.JSONDecodeError, match="Expecting property name"):
        json.loads("{'single': 'quotes'")
    conftest.outcome_of(lambda: pathlib.PurePosixPath("/tmp/a/b").relative_to("/srv/c/d"))
    # Our own raises (a recipe's argument check, a test's assert) are not kept.
    with pytest.raises(ValueError, match="ours"):
        raise ValueError("ours")
    conftest.outcome_of(lambda: conftest.in_range("numpy>=2"))  # conftest's own ValueError
    assert [(item["type"], item["message"]) for item in this_tests_messages(request)] == [
        (
            "JSONDecodeError",
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            "ValueError",
            "'<path>' is not in the subpath of '<path>' OR one path is relative and the other "
            "is absolute.",
        ),
    ]


def test_every_warning_raised_in_a_test_is_kept(request):
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        # As if Keras warned (a warning from this repository's own code is not kept).
        warnings.warn_explicit("layer conv2d_3 is deprecated", UserWarning, "keras/x.py", 1)
        warnings.warn("a test's own warning", UserWarning, stacklevel=1)
    assert [(item["kind"], item["message"]) for item in this_tests_messages(request)] == [
        ("warning", "layer conv2d_<n> is deprecated")
    ]


def test_a_warning_from_the_start_early_thread_is_not_kept_for_the_running_test(request):
    import warnings

    from tests import child_process

    def keras_warns(text):
        warnings.warn_explicit(text, UserWarning, "keras/x.py", 1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        child_process._EARLY_THREAD.submit(keras_warns, "from the start_early thread").result()
        keras_warns("from the test's thread")
    assert len(caught) == 2  # both reached the test's warnings; one is the test's message
    assert [item["message"] for item in this_tests_messages(request)] == ["from the test's thread"]


# --- tools/pages.py: the recipe pages and the error index ------------------------------------


def observed_stacks():
    """Five stacks that saw tensor_ops' squeeze fail on Keras 3 only, with its whole message."""
    records = {}
    for stack in behavior_matrix.STACKS:
        keras_3 = stack in ("tf216", "tf221")
        outcome = "ValueError: Cannot squeeze" if keras_3 else "works"
        test = "tests/test_tensor_ops.py::test_squeeze"
        records[stack] = {
            **stack_record(stack, {}),
            "tensorflow": "2.21.0" if keras_3 else "2.15.1",
            "observations": [
                {
                    "recipe": "tensor_ops",
                    "behaviour": "squeeze",
                    "outcome": outcome,
                    "test": test,
                    "line": 12,
                    "message": "Cannot squeeze axis 1." if keras_3 else None,
                }
            ],
            "messages": [
                {
                    "test": test,
                    "kind": "error",
                    "type": "ValueError",
                    "message": "Cannot squeeze axis 1.",
                }
            ]
            if keras_3
            else [],
        }
    return records


def test_recipe_page_has_a_column_per_stack_the_test_link_and_the_whole_message(tmp_path):
    boundary = {
        "stacks": [
            {"stack": "k3.0", "tensorflow": "2.16.2"},
            {"stack": "k3.15", "tensorflow": "2.21.0"},
        ],
        "behaviours": [
            {
                "recipe": "tensor_ops",
                "behaviour": "squeeze",
                "observed": {"k3.0": "a", "k3.15": "b"},
                "runs": [
                    {"outcome": "works", "releases": "Keras 2.12.0", "stacks": []},
                    {
                        "outcome": "ValueError: Cannot squeeze",
                        "releases": "Keras 3.0.5–3.15.1",
                        "stacks": ["k3.0", "k3.15"],
                    },
                ],
            }
        ],
    }
    (tmp_path / "b.json").write_text(json.dumps(boundary))
    written = pages.render_all(observed_stacks(), tmp_path / "b.json")
    page = written["docs/recipes/tensor_ops.md"]
    header = next(line for line in page.splitlines() if line.startswith("| behaviour |"))
    assert [stack for stack in behavior_matrix.STACKS if f"| {stack}<br>" in header] == list(
        behavior_matrix.STACKS
    )
    row = next(line for line in page.splitlines() if line.startswith("| squeeze |"))
    assert "ValueError: Cannot squeeze → Keras 3.0.5–3.15.1 (TF 2.16.2–2.21.0)" in row
    assert "[test_squeeze](../../tests/test_tensor_ops.py#L12)" in row
    assert "```\nValueError: Cannot squeeze axis 1.\n```" in page
    errors = written["docs/errors.md"]
    assert "```\nValueError: Cannot squeeze axis 1.\n```" in errors
    assert (
        "- [tensor_ops](recipes/tensor_ops.md#what-the-tests-saw): squeeze — tf216, tf221; "
        "ValueError: Cannot squeeze → Keras 3.0.5–3.15.1 (TF 2.16.2–2.21.0)"
    ) in errors


def test_check_names_a_stale_page_and_a_page_without_a_recipe(tmp_path):
    (tmp_path / "docs" / "recipes").mkdir(parents=True)
    (tmp_path / "docs" / "recipes" / "a.md").write_text("old")
    (tmp_path / "docs" / "recipes" / "gone.md").write_text("x")
    fresh = {"docs/recipes/a.md": "new", "docs/errors.md": "e"}
    assert pages.stale_pages(fresh, tmp_path) == [
        "docs/recipes/a.md",
        "docs/errors.md",
        "docs/recipes/gone.md",
    ]
    pages.write_pages(fresh, tmp_path)
    assert pages.stale_pages(fresh, tmp_path) == []


def test_committed_boundaries_merge_back_to_themselves():
    """--update starts from the committed page's data and loses nothing of it."""
    committed = json.loads(boundaries.DATA.read_text())
    assert boundaries.merge(boundaries.committed_results()) == committed


def test_update_replaces_only_the_rerun_recipes_behaviours_on_the_rerun_stack():
    def record(stack, items, tests=None):
        observations = [
            {"recipe": recipe, "behaviour": behaviour, "observed": seen, "known": {}}
            for recipe, behaviour, seen in items
        ]
        return {
            "stack": stack,
            "tensorflow": "2.x",
            "keras": "3.0.5",
            "exitstatus": 0,
            "tests": tests,
            "observations": observations,
        }

    committed = [record("k3.0", [("a", "old", "x"), ("b", "kept", "y")], {"tests": 9})]
    rerun = [record("k3.0", [("a", "new", "z")], {"tests": 2, "failed": 0, "skipped": 0})]
    [merged] = boundaries.overlay(committed, rerun)
    assert [(item["recipe"], item["behaviour"]) for item in merged["observations"]] == [
        ("b", "kept"),
        ("a", "new"),
    ]
    assert merged["tests"] == {"tests": 9} and merged["rerun"]["tests"] == 2


def test_saw_error_keeps_library_errors_and_skips_the_repositorys_raise_statements(request):
    """The error index keeps what libraries raise, even when Keras cut its frames away."""

    def ours():
        raise ValueError("ours: never in the index")

    def recorded():
        return {key[3] for key in conftest._MESSAGES if key[0] == request.node.nodeid}

    with pytest.raises(ValueError):
        ours()
    # A library error whose last frame is a line of ours that is not a `raise`, as when Keras
    # strips its own frames from an error raised inside a test's layer.
    with pytest.raises(ValueError):
        (lambda: int("not a number"))()
    assert recorded() == {"invalid literal for int() with base 10: 'not a number'"}


def test_errors_inside_a_property_test_stay_out_of_the_index(request):
    """A message from inside @given names a drawn example, so the index keeps it only outside."""

    def recorded():
        return {key[3] for key in conftest._MESSAGES if key[0] == request.node.nodeid}

    @hypothesis.settings(max_examples=3, database=None)
    @hypothesis.given(st.integers(0, 9))
    def property_test(number):
        with pytest.raises(ValueError):
            int(f"not a number {number}")

    property_test()
    assert recorded() == set()
    with pytest.raises(ValueError):
        int("not a number")
    assert recorded() == {"invalid literal for int() with base 10: 'not a number'"}


def test_mask_volatile_hides_tensorflows_function_and_resource_counters():
    text = (
        "Failed to add concrete function 'b'__inference_predict_function_273999'' ... "
        'ResourceHandle(name="Resource-8696-at-0x5581", device="/job:localhost")'
    )
    assert conftest.mask_volatile(text) == (
        "Failed to add concrete function 'b'__inference_predict_function_<n>'' ... "
        'ResourceHandle(name="Resource-<n>-at-<address>", device="/job:localhost")'
    )
