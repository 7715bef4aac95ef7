"""The release: a wheel and an sdist that twine accepts, and the wheel working on its own in a
fresh virtual environment, with no source tree on the path: the README's example and
`attnflow --version` run from it.

How the wheel is built and installed: `tests/built.py`. The test checks that the module the
environment imports is the wheel's.
"""

import re
import sys
import zipfile
from pathlib import Path

import pytest
from built import ROOT, VERSION, build, install, run


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dist"))


def test_wheel_and_sdist_pass_twine_check(dist):
    wheel, sdist = (
        dist / f"attnflow-{VERSION}-py3-none-any.whl",
        dist / f"attnflow-{VERSION}.tar.gz",
    )
    assert sorted(dist.iterdir()) == sorted([wheel, sdist])
    run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
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
    python, command = install(dist, venv), venv / "bin" / "attnflow"
    away = tmp_path / "elsewhere"  # no source tree in the working directory either
    away.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    script = _readme_example() + "\nimport attnflow\nprint('module', attnflow.__file__)\n"
    done = run(str(python), "-c", script, cwd=away, env=env)
    module = Path(done.stdout.split("module ")[-1].strip())
    assert module.is_relative_to(venv) and not module.is_relative_to(ROOT), module
    done = run(str(command), "--version", cwd=away, env=env)
    assert done.stdout.strip() == f"attnflow {VERSION}"
