"""Adds up the JUnit reports the stacks wrote and prints one closing line for CI.

Fails when a stack has no report, a failure or error, ran no test, or skipped one: the
project asserts version splits on both sides, so a skip is a claim left unproven.

Run: python tools/test_summary.py build/junit [--stacks tf212,tf215,...]
"""

import argparse
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

# One list of stacks for both tools; run as a script, this folder is on sys.path.
try:
    from behavior_matrix import STACKS
except ImportError:  # imported as tools.test_summary, from the tests
    from tools.behavior_matrix import STACKS


# The envs that write a JUnit report: the five stacks, the torch tests (tests_torch/) and the
# docs site in a browser (tests_site/).
TEST_ENVS = [*STACKS, "torch", "browser"]


def summarize(directory, stacks=TEST_ENVS):
    """Returns (lines to print, exit status) for the JUnit reports in `directory`."""
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    lines, status = [], 0
    for stack in stacks:
        path = pathlib.Path(directory, f"{stack}.xml")
        if not path.is_file():
            lines.append(f"{stack}: no report at {path}")
            totals["failed"] += 1
            status = 1
            continue
        suite = ElementTree.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        tests, time = int(suite.get("tests")), float(suite.get("time"))
        failed = int(suite.get("failures")) + int(suite.get("errors"))
        skipped = int(suite.get("skipped"))
        totals["passed"] += tests - failed - skipped
        totals["failed"] += failed
        totals["skipped"] += skipped
        problems = [
            problem
            for problem, present in [
                ("ran no test", tests == 0),
                (f"{failed} failed", failed),
                (f"{skipped} skipped: splits are asserted, never skipped", skipped),
            ]
            if present
        ]
        status = 1 if problems else status
        verdict = f"  <- {'; '.join(problems)}" if problems else ""
        lines.append(
            f"{stack}: {tests} tests, {failed} failed, {skipped} skipped, pytest {time:.1f} s"
            + verdict
        )
    passed, failed, skipped = totals["passed"], totals["failed"], totals["skipped"]
    lines.append(f"{passed} passed, {failed} failed, {skipped} skipped")
    return lines, status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default="build/junit")
    parser.add_argument("--stacks", default=",".join(TEST_ENVS), help="comma-separated env names")
    arguments = parser.parse_args(argv)
    lines, status = summarize(arguments.directory, arguments.stacks.split(","))
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
