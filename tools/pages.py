"""Write a page per recipe (docs/recipes/<name>.md) and the error index (docs/errors.md).

Each page is built from three things, so it says only what the code and its tests say:
- the recipe's docstring header (In short, Problem, Recipe, Pitfalls, Versions, Sources,
  See also), read without importing TensorFlow;
- the observations of the last full run of every pinned stack (build/observations/), which
  give each behaviour's outcome per stack, the test that asserted it, and the whole message
  of every error and warning the tests saw;
- docs/version-boundaries.json, which gives the release ranges of each split behaviour and
  the TensorFlow each release line was tested with.

`tox -e matrix` writes the pages with docs/behavior-matrix.md; `tox -e matrix -- --check`
fails if a committed page differs. Plain Python: no TensorFlow needed.
"""

import json
import pathlib
import re

from recipes import header_fields, recipe_names
from tools.behavior_matrix import BOUNDARIES, STACKS, escape_cell, outcomes_by_behaviour

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SECTIONS = ("Problem", "Recipe", "Pitfalls", "Versions", "Speed")


# --- Reading ----------------------------------------------------------------------------------


def load_boundaries(path=BOUNDARIES):
    """{(recipe, behaviour): entry} and {stack name: TensorFlow version} of the sweep."""
    path = pathlib.Path(path)
    if not path.is_file():
        return {}, {}
    data = json.loads(path.read_text())
    behaviours = {(item["recipe"], item["behaviour"]): item for item in data["behaviours"]}
    return behaviours, {stack["stack"]: stack["tensorflow"] for stack in data["stacks"]}


def observed_tests(records):
    """{(recipe, behaviour): (node id, line)} from the first stack that recorded a test."""
    tests = {}
    for record in records.values():
        for item in record["observations"]:
            if item.get("test"):
                tests.setdefault((item["recipe"], item["behaviour"]), (item["test"], item["line"]))
    return tests


def recipe_of_test(nodeid):
    """tests/test_save_paths.py::test_x -> "save_paths"."""
    return pathlib.PurePosixPath(nodeid.split("::")[0]).stem.removeprefix("test_")


def collect_messages(records, recipes=None):
    """Distinct messages: {(kind, type, message): {"stacks": [...], "tests": [...]}}.

    Only the tests of a recipe count: the repository's own tests (test_tools.py and the like)
    provoke messages to test the bookkeeping, not to show a user anything.
    """
    recipes = set(recipe_names() if recipes is None else recipes)
    messages = {}
    for stack, record in records.items():
        for item in record.get("messages", []):
            if recipe_of_test(item["test"]) not in recipes:
                continue
            entry = messages.setdefault(
                (item["kind"], item["type"], item["message"]), {"stacks": [], "tests": []}
            )
            if stack not in entry["stacks"]:
                entry["stacks"].append(stack)
            if item["test"] not in entry["tests"]:
                entry["tests"].append(item["test"])
    return messages


def behaviours_behind(message_type, tests, records):
    """The behaviours the tests asserted whose outcome names this message's type.

    A test that saw the message but recorded no such outcome still counts: the message is
    then linked to all the behaviours that test asserted.
    """
    found = {}
    for test in tests:
        asserted = {
            (item["recipe"], item["behaviour"]): item["outcome"]
            for record in records.values()
            for item in record["observations"]
            if item.get("test") == test
        }
        naming = [key for key, outcome in asserted.items() if message_type in outcome]
        for key in naming or asserted:
            found.setdefault(key, test)
    return found


# --- Rendering --------------------------------------------------------------------------------


def test_link(nodeid, line, prefix):
    path, _, name = nodeid.partition("::")
    return f"[{escape_cell(name)}]({prefix}{path}#L{line})"


def tf_span(stacks, tensorflow_of):
    versions = sorted({tensorflow_of[s] for s in stacks if s in tensorflow_of}, key=_version_key)
    if not versions:
        return ""
    return f" (TF {versions[0]})" if len(versions) == 1 else f" (TF {versions[0]}–{versions[-1]})"


def _version_key(text):
    return tuple(int(part) for part in re.findall(r"\d+", text))


def release_ranges(entry, tensorflow_of, naming=""):
    """ "works → Keras 3.3.3–3.15.1 (TF 2.16.2–2.21.0)" per run of the sweep whose outcome
    contains `naming` (every run by default). Outcomes can hold backticks, so none are added."""
    runs = [run for run in entry["runs"] if naming in run["outcome"]]
    return [
        f"{run['outcome']} → {run['releases']}{tf_span(run['stacks'], tensorflow_of)}"
        for run in runs
    ]


def anchor(text):
    """The id MkDocs and GitHub both give a plain heading such as "What the tests saw"."""
    return re.sub(r"[^a-z0-9 -]", "", text.lower()).strip().replace(" ", "-")


def fenced(text, language=""):
    fence = "````" if "```" in text else "```"
    return f"{fence}{language}\n{text}\n{fence}"


def see_also_links(fields):
    """[(recipe, why)] from the "See also" field's `- name: why` lines."""
    links = []
    for line in fields.get("See also", "").splitlines():
        name, _, why = line.strip().removeprefix("- ").partition(":")
        if name.strip():
            links.append((name.strip(), why.strip()))
    return links


def render_recipe(name, records, boundaries, tensorflow_of, messages):
    fields = header_fields(name)
    test_file = f"tests/test_{name}.py"
    lines = [
        f"# {fields['Title']}",
        "",
        f"Recipe: [`recipes/{name}.py`](../../recipes/{name}.py) (copy this one file) · "
        f"Tests: [`{test_file}`](../../{test_file}) · Run: `{fields['Run']}`",
        "",
        "## In short",
        "",
        fenced(fields["In short"], "python"),
        "",
    ]
    for section in SECTIONS:
        if fields.get(section):
            lines += [f"## {section}", "", fields[section], ""]

    stacks = list(records)
    outcomes = outcomes_by_behaviour(records)
    tests = observed_tests(records)
    columns = [
        "<br>".join(
            escape_cell(part)
            for part in (stack, f"TF {records[stack]['tensorflow']}", records[stack]["keras"])
        )
        for stack in stacks
    ]
    lines += [
        "## What the tests saw",
        "",
        "Each behaviour's outcome on the five pinned stacks, the releases where each outcome "
        "holds (from the [boundary sweep](../version-boundaries.md), with the TensorFlow each "
        "release line was tested with), and the test that asserts it.",
        "",
        f"| behaviour | {' | '.join(columns)} | releases | test |",
        "|" + "---|" * (len(stacks) + 3),
    ]
    own = sorted(key for key in outcomes if key[0] == name)
    for key in own:
        seen = outcomes[key]
        entry = boundaries.get(key)
        if entry and len({run["outcome"] for run in entry["runs"]}) > 1:
            releases = "<br>".join(
                escape_cell(text) for text in release_ranges(entry, tensorflow_of)
            )
        elif entry:
            releases = f"same on all {len(entry['observed'])} release lines swept"
        else:
            releases = "same on every pinned stack"
        test = test_link(*tests[key], "../../") if key in tests else ""
        cells = [escape_cell(seen[stack]) for stack in stacks]
        lines.append(f"| {escape_cell(key[1])} | {' | '.join(cells)} | {releases} | {test} |")
    lines.append("")

    own_messages = [
        (key, entry)
        for key, entry in sorted(messages.items())
        if any(recipe_of_test(test) == name for test in entry["tests"])
    ]
    if own_messages:
        lines += [
            "## Messages the tests saw",
            "",
            "Every error and warning the tests of this recipe met, whole, as the stacks printed "
            "it (paths, addresses and generated layer names masked). The "
            "[error index](../errors.md) lists them for every recipe.",
            "",
        ]
        for (kind, message_type, message), entry in own_messages:
            tests_here = [test for test in entry["tests"] if recipe_of_test(test) == name]
            lines += [
                f"{kind.capitalize()} on {', '.join(entry['stacks'])}, in "
                + ", ".join(f"`{test.split('::')[-1]}`" for test in tests_here)
                + ":",
                "",
                fenced(f"{message_type}: {message}"),
                "",
            ]
    lines += ["## Sources", "", fields["Sources"], ""]
    links = see_also_links(fields)
    if links:
        lines += ["## See also", ""]
        lines += [f"- [{other}]({other}.md): {why}" for other, why in links]
        lines.append("")
    return "\n".join(lines)


ERRORS_HEADER = """---
search:
  exclude: true
---

# Error index

Every error and warning message the tests saw on the five pinned stacks, whole, as the stack
printed it: the first paragraph, with temporary paths, memory addresses and generated layer
names masked (`<path>`, `<address>`, `dense_<n>`). Paste yours into your browser's find (or
`grep -rF` over `docs/`). Each entry links to the recipe page that explains it, the behaviour
the test asserted, the stacks that printed it and the releases where that outcome holds.
Generated by `tox -e matrix`; do not edit by hand.
"""


def heading_for(message_type, message):
    words = message.split()
    short = " ".join(words[:8]) + (" …" if len(words) > 8 else "")
    # Backticks and brackets would become code or a link in the heading.
    for character in "`[]":
        short = short.replace(character, "" if character == "`" else f"\\{character}")
    return f"### {message_type}: {short}"


def render_errors(records, boundaries, tensorflow_of, messages):
    lines = [ERRORS_HEADER]
    by_kind = {"error": "Errors", "warning": "Warnings"}
    for kind, title in by_kind.items():
        entries = sorted((key, entry) for key, entry in messages.items() if key[0] == kind)
        lines += [f"## {title}", "", f"{len(entries)} distinct messages.", ""]
        for (_, message_type, message), entry in entries:
            lines += [heading_for(message_type, message), "", fenced(f"{message_type}: {message}")]
            lines.append("")
            behaviours = behaviours_behind(message_type, entry["tests"], records)
            for test in entry["tests"]:
                if test not in behaviours.values():
                    recipe = recipe_of_test(test)
                    lines.append(
                        f"- [{recipe}](recipes/{recipe}.md#{anchor('Messages the tests saw')}): "
                        f"test `{test.split('::')[-1]}` — {', '.join(entry['stacks'])}"
                    )
            for recipe, behaviour in sorted(behaviours):
                boundary = boundaries.get((recipe, behaviour))
                ranges = ""
                if boundary:
                    matching = release_ranges(boundary, tensorflow_of, message_type)
                    ranges = "; " + "; ".join(map(escape_cell, matching)) if matching else ""
                lines.append(
                    f"- [{recipe}](recipes/{recipe}.md#{anchor('What the tests saw')}): "
                    f"{escape_cell(behaviour)} — {', '.join(entry['stacks'])}{ranges}"
                )
            lines.append("")
    return "\n".join(lines)


def render_all(records, boundaries_path=BOUNDARIES):
    """{path relative to the repository: text} for every page this tool writes."""
    pinned = {stack: records[stack] for stack in STACKS if stack in records}
    boundaries, tensorflow_of = load_boundaries(boundaries_path)
    messages = collect_messages(pinned)
    pages = {
        f"docs/recipes/{name}.md": render_recipe(name, pinned, boundaries, tensorflow_of, messages)
        for name in recipe_names()
    }
    pages["docs/errors.md"] = render_errors(pinned, boundaries, tensorflow_of, messages)
    return pages


def stale_pages(pages, root=ROOT):
    """The pages whose committed text differs, and committed recipe pages with no recipe."""
    stale = [path for path, text in pages.items() if _read(root / path) != text]
    stale += [
        path.relative_to(root).as_posix()
        for path in sorted((root / "docs" / "recipes").glob("*.md"))
        if path.relative_to(root).as_posix() not in pages
    ]
    return stale


def write_pages(pages, root=ROOT):
    for path in (root / "docs" / "recipes").glob("*.md"):
        if path.relative_to(root).as_posix() not in pages:
            path.unlink()
    for path, text in pages.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def _read(path):
    return path.read_text() if path.is_file() else None
