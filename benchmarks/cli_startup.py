"""How fast the command line answers `--help`, `--version` and a refused option.

Each command line runs in a fresh interpreter (`python -m attnflow ...`), as a user's shell
starts it; the baselines are a bare interpreter (`python -c pass`) and a bare `import jax`, which
the command line no longer pays before it has something to compute. Median of `--repeats` runs.

    python benchmarks/cli_startup.py [--repeats 7]
"""

import argparse
import platform
import statistics
import subprocess
import sys
import time

RUNS = {
    "python -c pass (baseline)": ["-c", "pass"],
    "python -c 'import jax' (baseline)": ["-c", "import jax"],
    "attnflow --version": ["-m", "attnflow", "--version"],
    "attnflow --help": ["-m", "attnflow", "--help"],
    "attnflow phase-diagram --help": ["-m", "attnflow", "phase-diagram", "--help"],
    "attnflow search recover --help": ["-m", "attnflow", "search", "recover", "--help"],
    "attnflow simulate --n 0 (refused)": ["-m", "attnflow", "simulate", "--n", "0"],
}


def median_seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], capture_output=True, check=False, timeout=300)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    times = {label: median_seconds(argv, args.repeats) for label, argv in RUNS.items()}
    jax_import = times["python -c 'import jax' (baseline)"]
    for label, seconds in times.items():
        print(f"{label:38s} {seconds:6.3f} s   {seconds / jax_import:5.2f} x import jax")


if __name__ == "__main__":
    main()
