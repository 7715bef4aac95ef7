"""The release: a wheel and an sdist that twine accepts, and the wheel working on its own in a
fresh virtual environment, with no source tree on the path: the README's example and
`attnflow --version` run from it.

The build runs without network (`--no-isolation`: hatchling comes with the dev extras). The
virtual environment sees the installed dependencies (`--system-site-packages`) but gets attnflow
only from the wheel; the test checks that the module it imports is the wheel's.
"""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def _run(*command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT))
    return out


def test_wheel_and_sdist_pass_twine_check(dist):
    wheel, sdist = (
        dist / f"attnflow-{VERSION}-py3-none-any.whl",
        dist / f"attnflow-{VERSION}.tar.gz",
    )
    assert sorted(dist.iterdir()) == sorted([wheel, sdist])
    _run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"attnflow-{VERSION}.dist-info/METADATA").decode()
    assert (
        "attnflow/py.typed" in names and f"attnflow-{VERSION}.dist-info/licenses/LICENSE" in names
    )
    assert not [name for name in names if name.startswith(("tests/", "notebooks/"))]
    assert "License-Expression: Apache-2.0" in metadata
    urls = dict(re.findall(r"^Project-URL: (\w+), (\S+)$", metadata, re.MULTILINE))
    assert set(urls) >= {"Documentation", "Source"}


def _readme_example() -> str:
    """The first Python block after the README's "## Example" heading."""
    readme = (ROOT / "README.md").read_text()
    return re.search(r"## Example\s+```python\n(.*?)```", readme, re.DOTALL).group(1)


def test_the_wheel_alone_runs_the_readme_example_and_the_command(dist, tmp_path):
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", str(venv))
    python, command = venv / "bin" / "python", venv / "bin" / "attnflow"
    wheel = next(dist.glob("*.whl"))
    _run(str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel))
    away = tmp_path / "elsewhere"  # no source tree in the working directory either
    away.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    script = _readme_example() + "\nimport attnflow\nprint('module', attnflow.__file__)\n"
    done = _run(str(python), "-c", script, cwd=away, env=env)
    module = Path(done.stdout.split("module ")[-1].strip())
    assert module.is_relative_to(venv) and not module.is_relative_to(ROOT), module
    done = _run(str(command), "--version", cwd=away, env=env)
    assert done.stdout.strip() == f"attnflow {VERSION}"
