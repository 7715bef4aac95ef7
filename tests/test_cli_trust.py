"""The command line as a researcher meets it when things go wrong: Ctrl-C, failed items, bad
outputs, arguments checked before any computation (issue 10)."""

import importlib.util

import numpy as np
import pytest
from test_cli import TINY, run_cli

import attnflow as af


def test_ctrl_c_prints_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    out, partial = tmp_path / "pd.npz", tmp_path / "pd.npz.partial"
    argv = ["phase-diagram", *TINY, "--d", "3", "--samples", "40", "--memory", "1e-5"]
    argv += ["--out", str(out), "--no-plot"]
    write = af.sweep.Store.write

    def interrupt_after_one(self, start, stop, arrays):
        if self.chunks():
            raise KeyboardInterrupt
        write(self, start, stop, arrays)

    monkeypatch.setattr(af.sweep.Store, "write", interrupt_after_one)
    status, io = run_cli(argv, capsys)
    assert status == 130
    assert io.err.strip().splitlines()[-1] == (
        f"attnflow phase-diagram: interrupted; the finished chunks are kept in {partial}/: "
        "run the same command with --resume to continue"
    )
    assert "Traceback" not in io.err and not out.exists()
    monkeypatch.setattr(af.sweep.Store, "write", write)
    status, io = run_cli([*argv, "--resume"], capsys)
    assert status == 0, io.err
    assert out.exists() and not partial.exists()


def test_ctrl_c_before_any_chunk_leaves_no_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "pd.npz"

    def interrupt(self, start, stop, arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(af.sweep.Store, "write", interrupt)
    status, io = run_cli(["phase-diagram", *TINY, "--d", "3", "--out", str(out)], capsys)
    assert (
        status == 130 and io.err.strip().splitlines()[-1] == "attnflow phase-diagram: interrupted"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_failed_argument_check_leaves_no_partial_folder(tmp_path, capsys):
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *TINY, "--d", "3", "--memory", "1e-7", "--out", str(out)]
    status, io = run_cli(argv, capsys)
    assert status == 2 and "cannot hold one item" in io.err
    assert list(tmp_path.iterdir()) == []


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *TINY, "--d", "3", "--out", str(out), "--no-plot", "--resume"]
    status, io = run_cli(argv, capsys)
    assert status == 0
    assert (
        f"attnflow phase-diagram: nothing to resume ({out}.partial does not exist); "
        "starting a new run"
    ) in io.err
    assert "wrote" in io.out


def test_no_plot_writes_the_data_only_with_the_status(tmp_path, capsys):
    out = tmp_path / "pd.npz"
    status, io = run_cli(
        ["phase-diagram", *TINY, "--d", "3", "--out", str(out), "--no-plot"], capsys
    )
    assert status == 0, io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pd.npz"]
    with np.load(out) as data:
        assert data["status"].shape == (3, 4) and (data["status"] == 0).all()


def test_a_plot_without_matplotlib_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    out = tmp_path / "pd.npz"
    status, io = run_cli(["phase-diagram", *TINY, "--d", "3", "--out", str(out)], capsys)
    assert status == 2
    assert "needs matplotlib: pip install 'attnflow[plot]', or pass --no-plot" in io.err
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_folder_or_unwritable_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "pd.npz").mkdir()
    argv = ["phase-diagram", *TINY, "--d", "3", "--out", str(tmp_path / "pd.npz")]
    status, io = run_cli(argv, capsys)
    assert status == 2 and "is a folder; give a file name" in io.err
    # As root, chmod does not deny writing: a failing write stands in for a read-only folder.
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.npz"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    argv = ["simulate", "--n", "4", "--t1", "1", "--out", str(tmp_path / "out.npz")]
    status, io = run_cli(argv, capsys)
    assert status == 2 and len(io.err.strip().splitlines()) == 1
    assert "Permission denied" in io.err and "Traceback" not in io.err


def test_failed_items_are_reported_in_one_line(tmp_path, capsys, monkeypatch):
    from attnflow.studies import _common

    monkeypatch.setitem(_common.MODELS, "USA", _exploding)
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *TINY, "--d", "3", "--model", "USA", "--out", str(out), "--no-plot"]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    lines = [line for line in io.err.splitlines() if "warning" in line]
    assert lines == [
        "attnflow phase-diagram: warning: 4 of 12 items failed (4 non-finite state (an "
        "overflow, or attention that did not converge)) at beta = 9; they are left out of the averages (see .status)"
    ]
    with np.load(out) as data:
        assert (data["status"][2] == 2).all() and np.isnan(data["prob"][2]).all()


class _Exploding(af.AbstractSphereField):
    beta: object

    def __call__(self, t, x, args=None):
        return af.SA(self.beta)(t, x)

    def layer(self, t, x, h):
        import jax.numpy as jnp

        return af.SA(self.beta).layer(t, x, h) * jnp.where(self.beta > 5, jnp.nan, 1.0)

    def check(self, x0):
        return x0


def _exploding(beta, Q=None, K=None, V=None):
    return _Exploding(beta)


@pytest.mark.parametrize("command", ["phase-diagram", "metastability", "ftle"])
def test_every_study_command_takes_every_model(command, capsys):
    from attnflow.studies import MODELS

    parser_help = run_cli([command, "--help"], capsys)[1].out
    for name in MODELS:
        assert name in parser_help
