"""The documentation site builds strictly: `mkdocs build --strict` (mkdocs.yml, docs/).

Strict mode turns every warning into a failure: a broken link or anchor between pages, a nav
entry without its page, a docstring griffe cannot parse, a missing snippet
(benchmarks/README.md) or notebook. The docs packages are in the `dev` extra; without mkdocs the
test is skipped.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")

ROOT = Path(__file__).parent.parent


def test_mkdocs_build_strict(tmp_path):
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ["index", "science/index", "cli/index", "api/fields/index", "benchmarks/index"]:
        assert (tmp_path / f"{page}.html").is_file(), page
    cli = (tmp_path / "cli" / "index.html").read_text()
    assert "attnflow phase-diagram" in cli and "--samples" in cli  # generated from the parser
    assert not (ROOT / ".cache").exists() or "mkdocs-jupyter" not in os.listdir(ROOT / ".cache")
