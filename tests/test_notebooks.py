"""Every notebook's code cells run top to bottom (shell and magic lines skipped)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    pytest.importorskip("matplotlib")
    cells = json.loads(path.read_text())["cells"]
    namespace = {"__name__": "__notebook__"}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        lines = [line for line in cell["source"] if not line.lstrip().startswith(("%", "!"))]
        exec(compile("".join(lines), f"{path.name}", "exec"), namespace)
