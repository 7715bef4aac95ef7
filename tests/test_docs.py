"""The documentation site builds strictly: `mkdocs build --strict` (mkdocs.yml, docs/).

Strict mode turns every warning into a failure: a broken link or anchor between pages, a nav
entry without its page, a docstring griffe cannot parse, a missing snippet
(benchmarks/README.md) or notebook. The docs packages are in the `dev` extra; without mkdocs the
test is skipped.
"""

import os
import re
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
    assert "--quiet" in cli and "--version" in cli  # the global options too
    # a list with no blank line before it renders as one paragraph with literal "- " in it
    run_on = [
        f"{page.relative_to(tmp_path)}: {paragraph[:60]!r}"
        for page in sorted(tmp_path.rglob("*.html"))
        for paragraph in re.findall(r"<p>(.*?)</p>", page.read_text(), re.S)
        if re.search(r"(^|\n)- ", paragraph)
    ]
    assert run_on == [], "lists rendered as text (add a blank line before them):\n" + "\n".join(
        run_on
    )
    assert not (ROOT / ".cache").exists() or "mkdocs-jupyter" not in os.listdir(ROOT / ".cache")
