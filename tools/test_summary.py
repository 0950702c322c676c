"""Adds up the JUnit reports the stacks wrote and prints one closing line for CI.

Run: python tools/test_summary.py build/junit
"""

import pathlib
import sys
import xml.etree.ElementTree as ElementTree

# One list of stacks for both tools; run as a script, this folder is on sys.path.
from behavior_matrix import STACKS


def main(directory):
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for stack in STACKS:
        path = pathlib.Path(directory, f"{stack}.xml")
        if not path.is_file():
            print(f"{stack}: no report at {path}")
            totals["failed"] += 1
            continue
        suite = ElementTree.parse(path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        tests, time = int(suite.get("tests")), float(suite.get("time"))
        failed = int(suite.get("failures")) + int(suite.get("errors"))
        skipped = int(suite.get("skipped"))
        totals["passed"] += tests - failed - skipped
        totals["failed"] += failed
        totals["skipped"] += skipped
        print(f"{stack}: {tests} tests, {failed} failed, {skipped} skipped, pytest {time:.1f} s")
    print(f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped")
    return 1 if totals["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/junit"))
