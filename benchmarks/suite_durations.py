"""Where the test suite's time goes: per file and per test, from a JUnit XML report.

    python -m pytest -m "slow or not slow" --junitxml=suite.xml   # every test, long checks too
    python benchmarks/suite_durations.py suite.xml [--top 40] [--long 5]

Prints the seconds per test file (the suite runs whole files per worker, so the longest file
bounds its wall time), the longest tests, and with `--long S` the node ids of the tests that
took more than `S` seconds: the candidates for `tests/long_checks.txt`, which marks them `slow`.
"""

import argparse
import collections
import xml.etree.ElementTree as ET


def node_id(case: ET.Element) -> str:
    """`tests/test_x.py::[Class::]name` from a JUnit test case."""
    parts = case.get("classname", "").split(".")
    module = next(i for i, part in enumerate(parts) if part.startswith("test_"))
    path = "/".join(parts[: module + 1]) + ".py"
    return "::".join([path, *parts[module + 1 :], case.get("name", "")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--long", type=float, default=None)
    args = parser.parse_args()
    cases = [
        (float(case.get("time", 0)), node_id(case))
        for case in ET.parse(args.report).getroot().iter("testcase")
        if case.find("skipped") is None
    ]
    files, counts = collections.Counter(), collections.Counter()
    for seconds, node in cases:
        files[node.split("::")[0]] += seconds
        counts[node.split("::")[0]] += 1
    print(f"{sum(files.values()):.0f} test-seconds in {len(cases)} tests")
    for path, seconds in files.most_common():
        print(f"{seconds:8.1f} s {counts[path]:5d} tests  {path}")
    print("longest tests:")
    for seconds, node in sorted(cases, reverse=True)[: args.top]:
        print(f"{seconds:8.1f} s  {node}")
    if args.long is not None:
        print(f"tests over {args.long:g} s:")
        for node in sorted(node for seconds, node in cases if seconds > args.long):
            print(node)


if __name__ == "__main__":
    main()
