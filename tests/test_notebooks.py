"""The notebooks, executed top to bottom by a real Jupyter kernel (nbclient + ipykernel), as a
user runs them: against attnflow installed from its wheel, not the source tree.

The wheel is built once and installed alone into a fresh virtual environment
(`tests/built.py`); each notebook runs in a fresh kernel of that environment's Python, with
`ATTNFLOW_NOTEBOOK_SCALE` set small, so its sizes shrink; a cell that raises fails its test,
and so does an attnflow imported from anywhere but the wheel.

Figure cells: a code cell that calls a `plot_...(` function of `attnflow.plotting`, or that is
tagged `figure` (cell metadata `"tags": ["figure"]`), must produce an `image/png` output. The
plot functions return a matplotlib `Figure` without displaying it, so a notebook displays it
(`%matplotlib inline` in its first cell, the figure as the cell's last expression or
`display(fig)`); a figure that only reaches the kernel as `<Figure size ...>` text fails here.
A cell that skips its figure (09's model cells when the model package is absent) says so by
printing a line starting with `Skipped`, and is then exempt.

Each notebook that passes is written, with its outputs, to `build/notebooks/` (ignored by git),
where the documentation build takes it (`docs/hooks.py`): a site built after this test shows the
notebooks' figures.

The notebooks are stored without outputs or execution counts (tested below): strip them
before committing, e.g. `jupyter nbconvert --clear-output --inplace notebooks/*.ipynb`.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest
from built import build, install

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).parent.parent
EXECUTED = ROOT / "build" / "notebooks"  # the executed copies the docs build shows
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCALE = "0.1"  # ATTNFLOW_NOTEBOOK_SCALE in CI: each notebook in seconds
CELL_TIMEOUT = 300  # seconds, per cell
PLOT_CALL = re.compile(r"\bplot_\w+\(")


def _is_figure_cell(cell) -> bool:
    return "figure" in cell.metadata.get("tags", []) or bool(PLOT_CALL.search(cell.source))


def _text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.fixture(scope="module")
def wheel_kernel(tmp_path_factory) -> tuple[str, Path]:
    """A Jupyter kernel spec whose Python has attnflow from the wheel alone: its name and the
    folder to put on `JUPYTER_PATH`, and the environment's folder."""
    root = tmp_path_factory.mktemp("wheel")
    python = install(build(root / "dist"), root / "venv")
    spec = root / "jupyter" / "kernels" / "attnflow-wheel"
    spec.mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "attnflow (wheel)", "language": "python"})
    )
    return root / "jupyter", root / "venv"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_a_kernel(path, tmp_path, monkeypatch, wheel_kernel):
    notebook = _run_notebook(path, tmp_path, monkeypatch, wheel_kernel)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, EXECUTED / path.name)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_float32_as_on_a_tpu(path, tmp_path, monkeypatch, wheel_kernel):
    """A TPU computes in float32: the first cell then leaves x64 off, as this variable makes
    it do on any backend."""
    monkeypatch.setenv("ATTNFLOW_NOTEBOOK_FLOAT32", "1")
    _run_notebook(path, tmp_path, monkeypatch, wheel_kernel)


def _run_notebook(path, tmp_path, monkeypatch, wheel_kernel):
    jupyter, venv = wheel_kernel
    # the kernel inherits this environment: small sizes, no GPU preallocation, no plot window,
    # and no source tree on its path
    monkeypatch.setenv("ATTNFLOW_NOTEBOOK_SCALE", SCALE)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import attnflow\nprint(attnflow.__file__)"))
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="attnflow-wheel",
        resources={"metadata": {"path": str(tmp_path)}},  # files it writes land in tmp_path
    )
    client.execute()  # a cell error raises CellExecutionError, naming the cell and the error
    module = Path(_text(notebook.cells.pop()).strip())
    assert module.is_relative_to(venv), f"attnflow imported from {module}, not the wheel"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not _is_figure_cell(cell):
            continue
        if any(line.startswith("Skipped") for line in _text(cell).splitlines()):
            continue
        kinds = [set(o.get("data", {})) for o in cell.outputs]
        assert any("image/png" in k for k in kinds), (
            f"{path.name}, cell {index}: a figure cell without an image/png output "
            f"(outputs: {kinds}):\n{cell.source}"
        )
    return notebook


def test_there_are_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert "01_quickstart" in names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}, cell {index} has stored outputs"
        assert cell.execution_count is None, f"{path.name}, cell {index} has an execution count"


def test_committed_notebooks_are_stored_without_outputs():
    """What git holds (not just the working tree) has no outputs or execution counts."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "notebooks/*.ipynb"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in listed:
        stored = subprocess.run(
            ["git", "show", f"HEAD:{name}"], cwd=ROOT, capture_output=True, text=True
        )
        if stored.returncode != 0:  # added but not yet committed
            continue
        notebook = nbformat.reads(stored.stdout, as_version=4)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (
                    f"{name} in git, cell {index}: stored outputs or execution count"
                )
