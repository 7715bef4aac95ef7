"""The `attnflow` command line: argument parsing only; the work is done by the public API."""

from ._main import main as main


def entry() -> None:
    """Console-script entry point: exit with `main()`'s status, a sweep on every CPU core."""
    import sys

    sys.exit(main(all_cores=True))


_entry = entry  # the console script's name in installs made before `entry`
