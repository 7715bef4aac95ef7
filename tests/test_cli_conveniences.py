"""`attnflow --version`, `python -m attnflow`, `--quiet`, and output files under the umask."""

import os
import subprocess
import sys

import numpy as np
import pytest
from clitools import run_cli

import attnflow
from attnflow._files import atomic_write
from attnflow.sweep import Store

TINY = ["--n", "6", "--num-betas", "2", "--samples", "2", "--t1", "1", "--saves", "3"]


def test_version(capsys):
    status, io = run_cli(["--version"], capsys)
    assert status == 0
    assert io.out == f"attnflow {attnflow.__version__}\n"


def test_python_m_attnflow():
    done = subprocess.run(
        [sys.executable, "-m", "attnflow", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"attnflow {attnflow.__version__}\n"
    done = subprocess.run(
        [sys.executable, "-m", "attnflow", "no-such-command"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "invalid choice" in done.stderr


def _phase(tmp_path, capsys, *flags, before=()):
    out = tmp_path / "pd.npz"
    argv = [*before, "phase-diagram", *TINY, "--d", "3", *flags, "--out", str(out), "--no-plot"]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    assert "attnflow phase-diagram: SA, n = 6, d = 3" in io.out and f"wrote {out}" in io.out
    return io.err


def test_quiet_turns_off_the_progress_bars(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert "item" in _phase(tmp_path, capsys)  # the sweep's bar, on stderr
    assert _phase(tmp_path, capsys, "--quiet") == ""
    assert _phase(tmp_path, capsys, before=["--quiet"]) == ""  # before the command too


@pytest.mark.parametrize("value, bars", [("1", False), ("true", False), ("0", True), ("", True)])
def test_tqdm_disable_is_honoured(tmp_path, capsys, monkeypatch, value, bars):
    monkeypatch.setenv("TQDM_DISABLE", value)
    assert ("item" in _phase(tmp_path, capsys)) == bars


def test_quiet_is_not_recorded_in_the_data(tmp_path, capsys):
    _phase(tmp_path, capsys, "--quiet")
    with np.load(tmp_path / "pd.npz") as data:
        assert '"quiet"' not in str(data["config"])


def test_quiet_search_and_meanfield_keep_their_summary(tmp_path, capsys):
    out = tmp_path / "s.npz"
    argv = ["search", "value-groups", "--quiet", "--steps", "3", "--out", str(out), "--no-plot"]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    assert io.err == "" and io.out.startswith("attnflow search value-groups: ")
    argv = ["meanfield", "--quiet", "--particles", "8,16", "--samples", "1", "--grid", "64"]
    status, io = run_cli(
        [*argv, "--t1", "0.5", "--saves", "3", "--out", str(out), "--no-plot"], capsys
    )
    assert status == 0, io.err
    assert io.err == "" and io.out.startswith("attnflow meanfield")


def test_quiet_keeps_errors(capsys):
    status, io = run_cli(["phase-diagram", "--quiet", "--d", "1"], capsys)
    assert (
        status == 2 and "argument --d: expected an integer from 2 to 2147483647, got '1'" in io.err
    )


@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path):
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_files_follow_the_umask(tmp_path, capsys, umask, mask, mode):
    umask(mask)
    out, plot = tmp_path / "pd.npz", tmp_path / "pd.png"
    argv = ["phase-diagram", *TINY, "--d", "3", "--out", str(out), "--plot", str(plot)]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    assert _mode(out) == mode and _mode(plot) == mode
    # the sweep store's chunks and manifest
    with Store(tmp_path / "store", {"a": 1}, 4) as store:
        store.write(0, 4, {"x": np.arange(4.0)})
    files = [f for f in (tmp_path / "store").iterdir() if f.suffix in (".npz", ".json")]
    assert len(files) == 2 and {_mode(f) for f in files} == {mode}
    target = tmp_path / "raw.bin"
    atomic_write(target, lambda f: f.write(b"x"))
    assert _mode(target) == mode


def test_search_checkpoint_follows_the_umask(tmp_path, umask):
    import jax.numpy as jnp

    from attnflow.optimize import search

    umask(0o022)
    checkpoint = tmp_path / "search.ckpt"
    search(
        lambda p: jnp.sum(p**2), jnp.ones(2), "adam", steps=2, progress=False, checkpoint=checkpoint
    )
    assert _mode(checkpoint) == 0o644
