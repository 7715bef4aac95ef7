"""The `attnflow` command line, run in-process and once through the installed script."""

import json
import subprocess
import sys

import numpy as np
import pytest

import attnflow as af
from attnflow.cli import main


def test_simulate_writes_data_and_plot(tmp_path, capsys):
    out, plot = tmp_path / "traj.npz", tmp_path / "traj.png"
    argv = [
        "simulate",
        "--n",
        "8",
        "--d",
        "3",
        "--beta",
        "1",
        "--t1",
        "5",
        "--seed",
        "3",
        "--saves",
        "11",
        "--out",
        str(out),
        "--plot",
        str(plot),
    ]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    data = np.load(out)
    assert data["xs"].shape == (11, 8, 3)
    config = json.loads(str(data["config"]))
    assert config["beta"] == 1.0 and config["seed"] == 3 and config["version"] == af.__version__
    # The saved run is the library's run: same x0 from the seed, same trajectory.
    import jax

    x0 = af.sphere.uniform(jax.random.key(3), 8, 3)
    np.testing.assert_allclose(data["x0"], x0)
    expected = af.simulate(af.SA(1.0), x0, np.linspace(0, 5, 11)).xs
    np.testing.assert_allclose(data["xs"], expected, atol=1e-12)
    assert np.all(np.diff(data["energy"]) > -1e-9)
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_float32_run_leaves_float64_on(tmp_path):
    import jax

    assert (
        main(["simulate", "--float32", "--n", "4", "--t1", "1", "--out", str(tmp_path / "f.npz")])
        == 0
    )
    assert np.load(tmp_path / "f.npz")["xs"].dtype == np.float32
    assert jax.config.jax_enable_x64


def test_simulate_circle_layers_and_beta_zero(tmp_path):
    assert (
        main(
            [
                "simulate",
                "--d",
                "2",
                "--beta",
                "0",
                "--solver",
                "layers",
                "--t1",
                "3",
                "--out",
                str(tmp_path / "a.npz"),
                "--plot",
                str(tmp_path / "a.png"),
            ]
        )
        == 0
    )
    data = np.load(tmp_path / "a.npz")
    assert data["ts"][-1] == pytest.approx(3.0) and "energy" not in data


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--beta", "-1"], "attnflow simulate: error: beta must be finite and >= 0; got -1.0"),
        (["--n", "0"], "argument --n: expected a positive integer, got '0'"),
        (["--d", "1"], "--d must be at least 2; got 1"),
        (["--solver", "rk4"], "solver must be one of"),
        (["--out", "x.txt"], "argument --out: expected a file name ending in .npz, got 'x.txt'"),
        (
            ["--plot", "/no/such/folder/a.png"],
            "the folder of '/no/such/folder/a.png' does not exist",
        ),
        (["--t1", "0"], "--t1 must be positive; got 0"),
        (
            ["--solver", "layers", "--t1", "1", "--dt0", "0.7"],
            "--t1 must be a whole number of layers",
        ),
        (["--beta", "abc"], "argument --beta: expected a number, got 'abc'"),
    ],
)
def test_bad_arguments_give_one_line(tmp_path, capsys, argv, message):
    argv = ["simulate", "--out", str(tmp_path / "t.npz"), *argv]
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_installed_script_reports_errors_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "attnflow.cli", "simulate", "--beta", "-2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == "attnflow simulate: error: beta must be finite and >= 0; got -2.0"
    )
