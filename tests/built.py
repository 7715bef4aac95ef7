"""The built package, for the tests that use attnflow as a user gets it: the wheel, built
without network (`--no-isolation`: hatchling comes with the dev extras), installed alone into a
fresh virtual environment that sees the installed dependencies (`--system-site-packages`) but
no source tree."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def run(*command, **kwargs) -> subprocess.CompletedProcess:
    """`command`, which must succeed (its output in the failure's message)."""
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


def build(out: Path) -> Path:
    """The wheel and the sdist of the source tree, in `out`."""
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT))
    return out


def install(dist: Path, venv: Path) -> Path:
    """A virtual environment at `venv` with the wheel of `dist` installed; its python."""
    run(sys.executable, "-m", "venv", "--system-site-packages", str(venv))
    python = venv / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel))
    return python
