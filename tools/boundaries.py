"""Find the release where each version-split behaviour changes, across every release line.

The five pinned stacks show each split at two points per Keras major. This tool runs the
version-split tests (those that use the `version_split` fixture, marked `version_split`)
on the newest patch of every Keras 3 minor release from 3.0 to 3.15, on Keras 2.12 to 2.15,
and on tf-keras 2.16 to 2.21, each with a TensorFlow it supports, and writes for every
behaviour that differs anywhere the releases where each outcome holds:
docs/version-boundaries.md (to read) and docs/version-boundaries.json (what
`tox -e matrix -- --check` reads to prove that every split in the matrix has a boundary).

Each stack gets its own virtual environment under build/boundary-envs/, made by uv from its
cache in seconds once the wheels are there. Running it is slow the first time (about 7 GB
of TensorFlow wheels) and is done on demand, not by CI:

    tox -e boundaries                           every stack, split tests only
    tox -e boundaries -- --stacks k3.10,k3.11   some stacks
    tox -e boundaries -- --all-tests            the whole suite on each stack
    tox -e boundaries -- --merge-only           rewrite the pages from build/boundaries/
    tox -e boundaries -- --update --paths tests/test_x.py
                                                rerun one file's splits everywhere and keep
                                                every other behaviour as committed

`python tools/boundaries.py install` installs the stack named by STACK_TENSORFLOW,
STACK_KERAS and STACK_TF_KERAS into the running interpreter (tox -e stack uses it).
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "build" / "boundaries"
ENVS = ROOT / "build" / "boundary-envs"
PAGE = ROOT / "docs" / "version-boundaries.md"
DATA = ROOT / "docs" / "version-boundaries.json"
TEST_REQUIREMENTS = ["pytest>=8", "hypothesis>=6.100", "packaging"]

# name: (requirements, uses tf-keras). One TensorFlow per Keras release, spread over the
# TensorFlow releases that accept it (2.16 takes Keras >= 3.0, 2.17 >= 3.2, 2.18 and 2.19
# >= 3.5, 2.20 >= 3.10, 2.21 >= 3.12), so the sweep also crosses every TensorFlow minor.
SWEEP = {
    "k2.12": (["tensorflow-cpu==2.12.1"], False),
    "k2.13": (["tensorflow-cpu==2.13.1"], False),
    "k2.14": (["tensorflow-cpu==2.14.1"], False),
    "k2.15": (["tensorflow-cpu==2.15.1"], False),
    "tfk2.16": (["tensorflow==2.16.2", "tf-keras==2.16.0"], True),
    "tfk2.17": (["tensorflow==2.17.1", "tf-keras==2.17.0"], True),
    "tfk2.18": (["tensorflow==2.18.1", "tf-keras==2.18.0"], True),
    "tfk2.19": (["tensorflow==2.19.1", "tf-keras==2.19.0"], True),
    "tfk2.20": (["tensorflow==2.20.0", "tf-keras==2.20.1"], True),
    "tfk2.21": (["tensorflow==2.21.0", "tf-keras==2.21.0"], True),
    "k3.0": (["tensorflow-cpu==2.16.2", "keras==3.0.5"], False),
    "k3.1": (["tensorflow-cpu==2.16.2", "keras==3.1.1"], False),
    "k3.2": (["tensorflow-cpu==2.16.2", "keras==3.2.1"], False),
    "k3.3": (["tensorflow-cpu==2.16.2", "keras==3.3.3"], False),
    "k3.4": (["tensorflow-cpu==2.17.1", "keras==3.4.1"], False),
    "k3.5": (["tensorflow-cpu==2.17.1", "keras==3.5.0"], False),
    "k3.6": (["tensorflow-cpu==2.17.1", "keras==3.6.0"], False),
    "k3.7": (["tensorflow-cpu==2.18.1", "keras==3.7.0"], False),
    "k3.8": (["tensorflow-cpu==2.18.1", "keras==3.8.0"], False),
    "k3.9": (["tensorflow-cpu==2.19.1", "keras==3.9.2"], False),
    "k3.10": (["tensorflow-cpu==2.19.0", "keras==3.10.0"], False),
    "k3.11": (["tensorflow-cpu==2.19.1", "keras==3.11.3"], False),
    "k3.12": (["tensorflow-cpu==2.20.0", "keras==3.12.4"], False),
    "k3.13": (["tensorflow-cpu==2.20.0", "keras==3.13.2"], False),
    "k3.14": (["tensorflow-cpu==2.21.0", "keras==3.14.1"], False),
    "k3.15": (["tensorflow-cpu==2.21.0", "keras==3.15.1"], False),
}


def uv_command():
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


def stack_requirements(tensorflow, keras=None, tf_keras=None):
    """The requirements for one stack; ValueError naming a missing or malformed version."""
    for name, value in [("STACK_TENSORFLOW", tensorflow), ("STACK_KERAS", keras)]:
        if value is not None and not all(part.isdigit() for part in value.split(".")):
            raise ValueError(f"{name}={value!r} is not a release number such as 2.19.0")
    if not tensorflow:
        raise ValueError("STACK_TENSORFLOW is not set; e.g. STACK_TENSORFLOW=2.19.0")
    if tf_keras:
        if keras:
            raise ValueError(f"STACK_KERAS={keras!r} and STACK_TF_KERAS={tf_keras!r}: pick one")
        return [f"tensorflow=={tensorflow}", f"tf-keras=={tf_keras}"]
    return [f"tensorflow-cpu=={tensorflow}"] + ([f"keras=={keras}"] if keras else [])


def install(requirements, python):
    subprocess.run(
        uv_command() + ["pip", "install", "--quiet", "--python", str(python), *requirements],
        check=True,
    )


def run_stack(name, all_tests=False, paths=("tests",), tag=""):
    """Creates the stack's environment if needed, runs its tests, returns its result file."""
    requirements, legacy = SWEEP[name]
    environment_dir = ENVS / name
    python = environment_dir / "bin" / "python"
    if not python.exists():
        subprocess.run(
            uv_command() + ["venv", "--quiet", "--python", sys.executable, str(environment_dir)],
            check=True,
        )
    install(requirements + TEST_REQUIREMENTS, python)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A tag keeps a run over some test files beside the stack's other runs; merged later.
    result = RESULTS / (f"{name}--{tag}.json" if tag else f"{name}.json")
    result.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "TOX_ENV_NAME": name,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONHASHSEED": "0",
        "CUDA_VISIBLE_DEVICES": "-1",
        "SPLITS_OUTPUT": str(result),
        "OBSERVATIONS_DIR": str(RESULTS / "observations"),
    }
    environment.pop("TF_USE_LEGACY_KERAS", None)
    # Where the shell sets PYTHONDONTWRITEBYTECODE (this machine does), every test process and
    # every child would compile TensorFlow's ~1,800 modules from source: about 7 s of CPU
    # each, measured with TF 2.21 (6.5 s to import with .pyc files, 13-15 s without).
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    if legacy:
        environment["TF_USE_LEGACY_KERAS"] = "1"
    command = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-q", *paths]
    command += [f"--junitxml={result.with_suffix('.xml')}"]
    if not all_tests:
        command += ["-m", "version_split"]
    finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    result.with_suffix(".log").write_text(finished.stdout + finished.stderr)
    summary = finished.stdout.strip().splitlines()[-1:] or ["no output"]
    print(f"{name}: {' '.join(requirements)}: {summary[0]}", flush=True)
    return result


def junit_counts(path):
    if not path.is_file():
        return None
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = int(suite.get("failures")) + int(suite.get("errors"))
    skipped = int(suite.get("skipped"))
    return {"tests": int(suite.get("tests")), "failed": failed, "skipped": skipped}


# --- Merging the stacks' results into the pages ---------------------------------------------


def version_key(text):
    return tuple(int(part) for part in text.split()[0].split(".") if part.isdigit())


def family(keras):
    """Bundled Keras 2, tf-keras (Keras 2 on TensorFlow 2.16 and later) or Keras 3."""
    if "tf-keras" in keras:
        return "tf-keras"
    return "Keras" if version_key(keras) < (3,) else "Keras 3"


def describe_run(stacks):
    """ "Keras 2.12.0–2.15.0, tf-keras 2.16.0–2.21.0" for a run of stacks in Keras order."""
    parts = []
    for stack in stacks:
        name = family(stack["keras"])
        # The full release: a boundary can fall on a patch (3.11.3 fixed CVE-2025-9905), and
        # the sweep saw only the newest patch of each minor.
        release = stack["keras"].split()[0]
        if parts and parts[-1][0] == name:
            parts[-1][2] = release
        else:
            parts.append([name, release, release])
    return ", ".join(
        f"{name.split()[0]} {first}" + (f"–{last}" if last != first else "")
        for name, first, last in parts
    )


def merge(records):
    """The boundary data: per behaviour, its outcome on each stack and its runs of releases."""
    records = sorted(records, key=lambda record: version_key(record["keras"]))
    stacks = [
        {key: record[key] for key in ("stack", "tensorflow", "keras", "exitstatus")}
        | {"tests": record.get("tests")}
        | ({"rerun": record["rerun"]} if record.get("rerun") else {})
        for record in records
    ]
    behaviours = {}
    for record in records:
        for item in record["observations"]:
            entry = behaviours.setdefault(
                (item["recipe"], item["behaviour"]), {"observed": {}, "known": item["known"]}
            )
            entry["observed"][record["stack"]] = item["observed"]
    merged = []
    for (recipe, behaviour), entry in sorted(behaviours.items()):
        runs = []
        for record in records:
            if record["stack"] not in entry["observed"]:
                continue
            outcome = entry["observed"][record["stack"]]
            if runs and runs[-1]["outcome"] == outcome:
                runs[-1]["stacks"].append(record)
            else:
                runs.append({"outcome": outcome, "stacks": [record]})
        merged.append(
            {
                "recipe": recipe,
                "behaviour": behaviour,
                "known": entry["known"],
                "observed": entry["observed"],
                "runs": [
                    {
                        "outcome": run["outcome"],
                        "releases": describe_run(run["stacks"]),
                        "stacks": [stack["stack"] for stack in run["stacks"]],
                    }
                    for run in runs
                ],
            }
        )
    return {"stacks": stacks, "behaviours": merged}


PAGE_HEADER = """# Version boundaries

For every behaviour that differs between releases, the releases where each outcome holds,
as the version-split tests saw it on one stack per release line (the newest patch of each
minor, so a boundary inside a minor shows at its newest patch; the tests' ranges name the
exact release where one is known). Generated by `tox -e boundaries` (slow, on demand); do
not edit by hand. The [behaviour matrix](behavior-matrix.md) shows the five pinned stacks;
`tox -e matrix -- --check` fails if a behaviour that differs there has no entry here.
"""


def escape(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(data):
    lines = [PAGE_HEADER, "## Stacks swept", "", "| stack | TensorFlow | Keras | split tests |"]
    lines.append("|---|---|---|---|")
    for stack in data["stacks"]:
        counts = stack.get("tests")
        result = "passed" if stack["exitstatus"] == 0 else f"failed (exit {stack['exitstatus']})"
        if counts:
            result += f": {counts['tests']} tests, {counts['failed']} failed"
        if stack.get("rerun"):
            rerun = stack["rerun"]
            result += f"; rerun: {rerun['tests']} tests, {rerun['failed']} failed"
        lines.append(f"| {stack['stack']} | {stack['tensorflow']} | {stack['keras']} | {result} |")
    lines += ["", "## Behaviours", "", "| recipe | behaviour | outcome: releases |"]
    lines.append("|---|---|---|")
    for item in data["behaviours"]:
        if len({run["outcome"] for run in item["runs"]}) < 2:
            continue
        runs = "<br>".join(f"`{escape(run['outcome'])}`: {run['releases']}" for run in item["runs"])
        link = f"[{item['recipe']}](../recipes/{item['recipe']}.py)"
        lines.append(f"| {link} | {escape(item['behaviour'])} | {runs} |")
    return "\n".join(lines) + "\n"


def committed_results(data_path=DATA):
    """The committed docs/version-boundaries.json as one record per stack, as a sweep left it.

    `--update` starts from these, so a rerun of some test files on a fresh machine (where
    build/boundaries/ is empty) replaces those files' behaviours and keeps every other one.
    """
    data = json.loads(pathlib.Path(data_path).read_text())
    records = []
    for stack in data["stacks"]:
        observations = [
            {
                "recipe": item["recipe"],
                "behaviour": item["behaviour"],
                "observed": item["observed"][stack["stack"]],
                "known": item["known"],
            }
            for item in data["behaviours"]
            if stack["stack"] in item["observed"]
        ]
        records.append({**stack, "observations": observations})
    return records


def overlay(committed, rerun):
    """`committed` records with each rerun stack's recipes replaced by what the rerun saw.

    A rerun covers whole test files, so every behaviour of a recipe it ran is replaced (a
    renamed or removed behaviour disappears). Its test counts are added as `rerun`.
    """
    by_stack = {record["stack"]: record for record in committed}
    for record in rerun:
        base = by_stack.setdefault(record["stack"], {**record, "observations": []})
        recipes = {item["recipe"] for item in record["observations"]}
        kept = [item for item in base["observations"] if item["recipe"] not in recipes]
        by_stack[record["stack"]] = {
            **base,
            "observations": kept + record["observations"],
            "exitstatus": max(base.get("exitstatus", 0), record["exitstatus"]),
            "rerun": record.get("tests"),
        }
    return list(by_stack.values())


def load_results():
    """One record per stack: the runs of one stack (tagged or not) joined together."""
    by_stack = {}
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        counts = junit_counts(path.with_suffix(".xml")) or {"tests": 0, "failed": 0, "skipped": 0}
        joined = by_stack.setdefault(
            record["stack"],
            {**record, "observations": [], "exitstatus": 0, "tests": dict.fromkeys(counts, 0)},
        )
        joined["observations"] += record["observations"]
        joined["exitstatus"] = max(joined["exitstatus"], record["exitstatus"])
        for key, value in counts.items():
            joined["tests"][key] += value
    return list(by_stack.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", nargs="?", choices=["sweep", "install"], default="sweep")
    parser.add_argument("--stacks", help=f"comma-separated, from: {', '.join(SWEEP)}")
    parser.add_argument("--all-tests", action="store_true", help="run the whole suite")
    parser.add_argument("--merge-only", action="store_true", help="only rewrite the pages")
    parser.add_argument(
        "--paths", nargs="+", default=["tests"], help="test files or folders (default: tests)"
    )
    parser.add_argument("--jobs", type=int, default=2, help="stacks set up and run at once")
    parser.add_argument("--tag", default="", help="keep this run's results beside the others")
    parser.add_argument(
        "--update",
        action="store_true",
        help="start from the committed docs/version-boundaries.json and replace only the "
        "recipes this run's test files cover (for a rerun of some files)",
    )
    arguments = parser.parse_args(argv)
    if arguments.action == "install":
        requirements = stack_requirements(
            os.environ.get("STACK_TENSORFLOW"),
            os.environ.get("STACK_KERAS") or None,
            os.environ.get("STACK_TF_KERAS") or None,
        )
        print(f"installing {' '.join(requirements)}", flush=True)
        install(requirements, sys.executable)
        return 0
    if not arguments.merge_only:
        names = arguments.stacks.split(",") if arguments.stacks else list(SWEEP)
        unknown = [name for name in names if name not in SWEEP]
        if unknown:
            parser.error(f"--stacks: unknown {unknown}; known: {', '.join(SWEEP)}")
        with concurrent.futures.ThreadPoolExecutor(arguments.jobs) as pool:
            list(
                pool.map(
                    lambda name: run_stack(
                        name, arguments.all_tests, arguments.paths, arguments.tag
                    ),
                    names,
                )
            )
    results = load_results()
    if arguments.update:
        results = overlay(committed_results(), results)
    data = merge(results)
    DATA.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    PAGE.write_text(render(data))
    print(f"wrote {PAGE} and {DATA}: {len(data['stacks'])} stacks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
