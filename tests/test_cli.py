"""The `attnflow` command line, run in-process and once through the installed script."""

import json
import subprocess
import sys

import numpy as np
import pytest
from clitools import run_cli

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
        main(
            [
                "simulate",
                "--dtype",
                "float32",
                "--n",
                "4",
                "--t1",
                "1",
                "--out",
                str(tmp_path / "f.npz"),
            ]
        )
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
        (["--n", "0"], "argument --n: expected a positive integer up to 2147483647, got '0'"),
        (["--d", "1"], "argument --d: expected an integer from 2 to 2147483647, got '1'"),
        (["--solver", "rk4"], "solver must be one of"),
        (["--out", "x.txt"], "argument --out: expected a file name ending in .npz, got 'x.txt'"),
        (
            ["--plot", "/no/such/folder/a.png"],
            "the folder of '/no/such/folder/a.png' does not exist",
        ),
        (["--t1", "0"], "argument --t1: expected a finite positive number, got '0'"),
        (
            ["--solver", "layers", "--t1", "1", "--dt0", "0.7"],
            "--t1 must be a whole number of layers",
        ),
        (["--beta", "abc"], "argument --beta: expected a finite number, got 'abc'"),
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


TINY = ["--n", "6", "--num-betas", "3", "--samples", "4", "--t1", "2", "--saves", "5"]


def test_phase_diagram_writes_data_and_plot(tmp_path, capsys):
    out, plot = tmp_path / "pd.npz", tmp_path / "pd.png"
    status, io = run_cli(
        ["phase-diagram", *TINY, "--d", "4", "--out", str(out), "--plot", str(plot)], capsys
    )
    assert status == 0, io.err
    assert "attnflow phase-diagram: SA, n = 6, d = 4" in io.out and "Gamma" in io.out
    with np.load(out) as data:
        assert data["prob"].shape == (3, 5)
        np.testing.assert_allclose(data["ts"], [0, 0.5, 1, 1.5, 2])
        config = json.loads(str(data["config"]))
        assert data["gamma"].shape == (3,)
    assert config["samples"] == 4 and config["version"] == af.__version__
    assert plot.stat().st_size > 10_000
    assert not (tmp_path / "pd.npz.partial").exists()  # removed once the result is written


class Interrupt(Exception):
    pass


def test_phase_diagram_resume(tmp_path, capsys, monkeypatch):
    """An interrupted run (its partial folder) is refused without --resume, refused with other
    options, and continued with --resume to the same result as an uninterrupted run."""
    out, partial = tmp_path / "pd.npz", tmp_path / "pd.npz.partial"
    argv = ["phase-diagram", *TINY, "--d", "3", "--memory", "1e-5", "--out", str(out)]
    argv[argv.index("--samples") + 1] = "40"  # 120 items: several chunks of one batch (16)
    argv += ["--plot", str(tmp_path / "pd.png")]
    assert run_cli(argv, capsys)[0] == 0  # tiny chunks
    with np.load(out) as data:
        uninterrupted = dict(data)
    out.unlink()

    write = af.sweep.Store.write

    def write_once_then_fail(self, start, stop, arrays):
        if self.chunks():
            raise Interrupt
        write(self, start, stop, arrays)

    monkeypatch.setattr(af.sweep.Store, "write", write_once_then_fail)
    with pytest.raises(Interrupt):
        main(argv)
    monkeypatch.setattr(af.sweep.Store, "write", write)
    capsys.readouterr()
    assert len(list(partial.glob("chunk-*.npz"))) == 1 and not out.exists()

    status, io = run_cli(argv, capsys)
    assert status == 2 and "holds an interrupted run: pass --resume" in io.err
    other = [*argv, "--resume"]
    other[other.index("--samples") + 1] = "41"
    status, io = run_cli(other, capsys)
    assert status == 2 and "samples: 40 there, 41 now" in io.err
    assert len(io.err.strip().splitlines()) == 1
    status, io = run_cli([*argv, "--resume"], capsys)
    assert status == 0, io.err
    with np.load(out) as data:
        for name, value in uninterrupted.items():
            np.testing.assert_array_equal(data[name], value, err_msg=name)
    assert not partial.exists()


def test_metastability_and_figure3_write_data_and_plots(tmp_path, capsys):
    status, io = run_cli(
        [
            "metastability",
            "--n",
            "8",
            "--samples",
            "4",
            "--t1",
            "3",
            "--out",
            str(tmp_path / "m.npz"),
            "--plot",
            str(tmp_path / "m.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    assert "beta = 9: clusters at t = 3:" in io.out
    with np.load(tmp_path / "m.npz") as data:
        assert data["clusters"].shape == (2, 4, 31) and data["xs"].shape == (2, 31, 8, 2)
    status, io = run_cli(
        [
            "figure3",
            "--dims",
            "2",
            "40",
            "--n",
            "6",
            "--num-betas",
            "3",
            "--samples",
            "2",
            "--t1",
            "1",
            "--out",
            str(tmp_path / "f.npz"),
            "--plot",
            str(tmp_path / "f.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    with np.load(tmp_path / "f.npz") as data:
        assert data["prob"].shape == (2, 3, 11)
        np.testing.assert_array_equal(data["dims"], [2, 40])
    assert (tmp_path / "f.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["phase-diagram", "--d", "1"],
            "argument --d: expected an integer from 2 to 2147483647, got '1'",
        ),
        (["phase-diagram", "--num-betas", "0"], "argument --num-betas: expected a positive"),
        (["phase-diagram", "--weights", "wishart"], "argument --weights: invalid choice"),
        (["phase-diagram", "--beta-min", "5", "--beta-max", "1"], "--beta-max must be >="),
        (["phase-diagram", "--t1", "1.05"], "--t1 must be a whole number of layers"),
        (["phase-diagram", "--delta", "-1"], "argument --delta: expected a finite number >= 0"),
        (["phase-diagram", "--devices", "64"], "devices must be between 1 and the 1 available"),
        (
            ["figure3", "--dims", "1", "8"],
            "argument --dims: expected an integer from 2 to 2147483647, got '1'",
        ),
        (["metastability", "--betas", "0"], "argument --betas: expected a finite positive number"),
        (
            ["metastability", "--n", "1"],
            "argument --n: expected an integer from 2 to 2147483647, got '1'",
        ),
        (["phase-diagram", "--memory", "inf"], "argument --memory: expected a finite positive"),
    ],
)
def test_study_bad_arguments_give_one_line(tmp_path, capsys, argv, message):
    status, io = run_cli([*argv, "--out", str(tmp_path / "x.npz")], capsys)
    assert status == 2
    assert message in io.err and len(io.err.strip().splitlines()) == 1


def test_normalization_and_long_context_write_data_and_plots(tmp_path, capsys):
    status, io = run_cli(
        [
            "normalization",
            "--n",
            "6",
            "--d",
            "8",
            "--t1",
            "20",
            "--out",
            str(tmp_path / "n.npz"),
            "--plot",
            str(tmp_path / "n.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    with np.load(tmp_path / "n.npz") as data:
        # Pre-LN: 1 - cosine follows the equiangular prediction within a factor 2 at t = 20
        ratio = data["gap_Pre-LN"][-1] / data["equiangular_Pre-LN"][-1]
        assert 0.5 < ratio < 2
    status, io = run_cli(
        [
            "long-context",
            "--points",
            "20",
            "--out",
            str(tmp_path / "l.npz"),
            "--plot",
            str(tmp_path / "l.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    assert "output cosine 1.000000, 0.800000, 0.500000" in io.out
    assert (tmp_path / "l.png").stat().st_size > 10_000
    status, io = run_cli(["long-context", "--n", "1", "--out", str(tmp_path / "x.npz")], capsys)
    assert status == 2 and "argument --n: expected a finite number >= 2, got '1'" in io.err


def test_stability_commands_write_data_and_plots(tmp_path, capsys):
    out = tmp_path / "lyapunov.npz"
    status, io = run_cli(
        [
            "lyapunov",
            "--n",
            "4",
            "--d",
            "3",
            "--t1",
            "20",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "lyapunov.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    assert "8 of 8 exponents (tangent bundle), largest first:" in io.out
    data = np.load(out)
    assert data["exponents"].shape == (8,) and data["history"].shape == (20, 8)
    np.testing.assert_allclose(data["history"][-1], data["exponents"])
    assert (tmp_path / "lyapunov.png").stat().st_size > 0

    out = tmp_path / "fixed.npz"
    status, io = run_cli(
        [
            "fixed-points",
            "--n",
            "3",
            "--d",
            "2",
            "--guesses",
            "16",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "fixed.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    data = np.load(out)
    kinds = data["kinds"].tolist()
    assert kinds.count("sink") == 1 and "sink" in io.out and "saddle" in io.out
    assert np.all(data["unstable_dims"][data["kinds"] != "sink"] >= 1)
    assert (tmp_path / "fixed.png").stat().st_size > 0

    out = tmp_path / "ftle.npz"
    status, io = run_cli(
        [
            "ftle",
            "--n",
            "6",
            "--d",
            "2",
            "--num-betas",
            "3",
            "--samples",
            "4",
            "--t1",
            "5",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "ftle.png"),
        ],
        capsys,
    )
    assert status == 0, io.err
    data = np.load(out)
    assert data["local"].shape == (3, 4, 10)
    assert json.loads(str(data["config"]))["study"] == "ftle"
    assert not (tmp_path / "ftle.npz.partial").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["lyapunov", "--d", "1"],
            "argument --d: expected an integer from 2 to 2147483647, got '1'",
        ),
        (["lyapunov", "--n", "2", "--d", "2", "--k", "3"], "k must be at most the dimension 2"),
        (["lyapunov", "--solver", "rk99"], "solver must be one of"),
        (["fixed-points", "--modulo", "reflections"], "argument --modulo: invalid choice"),
        (["ftle", "--every", "0.7"], "t1 must be a whole number of intervals"),
    ],
)
def test_stability_bad_arguments_give_one_line(tmp_path, capsys, argv, message):
    status, io = run_cli([*argv, "--out", str(tmp_path / "x.npz")], capsys)
    assert status == 2
    assert message in io.err and len(io.err.strip().splitlines()) == 1
