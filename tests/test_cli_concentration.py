"""`attnflow concentration` (ABRR's low-temperature concentration) and its figure."""

import json

import jax
import numpy as np
import pytest
from clitools import run_cli

from attnflow.concentration import Concentration, initial_tokens, rate
from attnflow.plotting import plot_concentration

TINY = ["--n", "12", "--samples", "2", "--betas", "100,10", "--saves", "12", "--t1", "30"]


def test_concentration_writes_data_plot_and_summary(tmp_path, capsys):
    out, plot = tmp_path / "c.npz", tmp_path / "c.png"
    argv = ["concentration", *TINY, "--value", "1,0.5", "--seed", "3"]
    status, io = run_cli([*argv, "--out", str(out), "--plot", str(plot)], capsys)
    assert status == 0, io.err
    data = np.load(out)
    B, S, T, n, d = 2, 2, 13, 12, 2
    np.testing.assert_array_equal(data["betas"], [10.0, 100.0])  # sorted
    ts = data["ts"]
    assert ts.shape == (T,) and ts[0] == 0 and np.isclose(ts[1], 30 / 2000) and ts[-1] == 30
    np.testing.assert_allclose(np.diff(np.log(ts[1:])), np.log(2000) / 11)  # log-spaced
    shapes = {
        "distance": (B, S, T),
        "mean": (B, T),
        "closest": (B,),
        "closest_time": (B,),
        "resolved": (B,),
        "slope": (),
        "exponent": (),
        "eigenvalues": (d,),
        "alignment": (B, S, d),
        "spread": (B, S),
        "limits": (S, n, d),
        "x0": (n, d),
        "final": (B, n, d),
        "status": (B, S),
        "limit_status": (S,),
    }
    assert {k: data[k].shape for k in shapes} == shapes
    assert data["final"].dtype == np.float64
    assert not data["status"].any() and not data["limit_status"].any()
    # The saved run is the library's: realization 0 from the seed; at t = 0 the distance is
    # the same for every beta; the mean is over the realizations; V's slowest eigenvalue first.
    x0 = initial_tokens(jax.random.key(3), 0, n=n, d=d)
    np.testing.assert_allclose(data["x0"], x0)
    np.testing.assert_allclose(data["distance"][0, :, 0], data["distance"][1, :, 0])
    np.testing.assert_allclose(data["mean"], data["distance"].mean(axis=1))
    np.testing.assert_allclose(data["closest"], data["mean"].min(axis=1))
    np.testing.assert_allclose(data["eigenvalues"].real, [0.5, 1.0])
    config = json.loads(str(data["config"]))
    assert config["seed"] == 3 and config["value"] == [1.0, 0.5]
    assert config["V"] == [[1.0, 0.0], [0.0, 0.5]] and config["study"] == "concentration"
    assert plot.read_bytes()[:4] == b"\x89PNG" and plot.stat().st_size > 10_000
    summary = io.out
    assert summary.startswith("attnflow concentration: n = 12, d = 2, V = diag(1, 0.5)")
    for b, beta in enumerate((10, 100)):
        assert (
            f"beta = {beta}: closest {data['closest'][b]:.4g} at t = "
            f"{data['closest_time'][b]:.3g}" in summary
        )
    assert "alignment with V's slowest eigenvector" in summary
    if data["resolved"].all():
        assert f"slope of log closest vs log beta {float(data['slope']):.3f}" in summary
        assert "about -1/2" in summary and f"{float(data['exponent']):.3f} (1)" in summary
    assert "failures: none" in summary and f"wrote {out}, {plot}" in summary


def test_concentration_float32_flags_unresolved_minima(tmp_path, capsys):
    out = tmp_path / "c.npz"
    argv = [
        *TINY,
        "--t1",
        "0.5",
        "--d",
        "3",
        "--value",
        "2",
        "--init",
        "gaussian",
        "--dtype",
        "float32",
    ]
    status, io = run_cli(["concentration", *argv, "--out", str(out), "--no-plot"], capsys)
    assert status == 0, io.err
    data = np.load(out)
    assert data["final"].dtype == np.float32 and data["final"].shape == (2, 12, 3)
    assert jax.config.jax_enable_x64  # float32 runs leave the session's x64 alone
    # t1 = 0.5 is far below the closest approach at t = O(log beta): unresolved, no fit
    assert not data["resolved"].any() and np.isnan(data["slope"])
    assert io.out.count("UNRESOLVED: the minimum sits at the last save time; extend ts") == 2
    assert "no fit: 0 resolved betas" in io.out and "V = 2 I" in io.out
    assert "the slowest eigenvalue is repeated" in io.out
    assert f"wrote {out}\n" in io.out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--value", "1,0.5,2"], "--value must have 1 or d = 2 entries (the diagonal of V); got 3"),
        (["--value", "1,-1"], "argument --value: expected positive numbers"),
        (["--betas", "10,0"], "argument --betas: expected at least two distinct positive"),
        (["--betas", "10"], "argument --betas: expected at least two distinct positive"),
        (["--betas", "10,10"], "argument --betas: expected at least two distinct positive"),
        (["--betas", "10,x"], "argument --betas: expected at least two distinct positive"),
        (["--d", "1"], "argument --d: expected an integer from 2 to 2147483647, got '1'"),
        (["--n", "1"], "argument --n: expected an integer from 2 to 2147483647, got '1'"),
        (["--t1", "0"], "argument --t1: expected a finite positive number"),
        (["--init", "cube"], "argument --init: invalid choice"),
    ],
)
def test_concentration_bad_arguments_give_one_line(tmp_path, capsys, argv, message):
    status, io = run_cli(["concentration", *argv, "--out", str(tmp_path / "x.npz")], capsys)
    assert status == 2
    assert message in io.err and len(io.err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_plot_concentration_smoke(tmp_path):
    """A made-up result in d = 3 with what the figure must cope with: a rotation in V (a
    complex pair of eigenvalues), an unresolved beta, a failed run and a realization without
    a limit map."""
    B, S, T, n, d = 3, 2, 6, 5, 3
    rng = np.random.default_rng(0)
    betas, ts = np.array([10.0, 100.0, 1000.0]), np.concatenate([[0], np.geomspace(0.1, 10, 5)])
    distance = 0.4 * np.exp(-ts) + rate(betas)[:, None, None] * np.exp(0.3 * ts)
    distance = np.broadcast_to(distance, (B, S, T)).copy()
    distance[1, 1] = np.nan  # a failed run
    V = [[1.0, -0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.3]]
    result = Concentration(
        betas=betas,
        ts=ts,
        distance=distance,
        closest=distance[:, 0].min(axis=1),
        closest_time=ts[distance[:, 0].argmin(axis=1)],
        resolved=np.array([True, True, False]),
        slope=-0.5,
        exponent=1.0,
        eigenvalues=np.sort_complex(np.linalg.eigvals(np.asarray(V))),
        alignment=rng.uniform(size=(B, S, d)),
        spread=rng.uniform(size=(B, S)),
        terminal_time=np.full((B, S), ts[-1]),
        limits=rng.normal(size=(S, n, d)),
        limit_time=np.ones(S),
        limit_status=np.array([0, 1], np.int8),
        status=np.array([[0, 0], [0, 1], [0, 0]], np.int8),
        x0=rng.normal(size=(n, d)),
        final=rng.normal(size=(B, n, d)),
        config={"V": V},
    )
    path = tmp_path / "c.png"
    fig = plot_concentration(result, path=path)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_xscale() == fig.axes[1].get_yscale() == "log"
    assert "first two coordinates" in fig.axes[2].get_title()
    assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000
