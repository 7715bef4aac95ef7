"""Particles against the mean-field PDE: the n^{-1/2} law of empirical measures, carried
to later times (the stability estimate of [R])."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnflow import meanfield as mf


def rho0(theta):
    r = np.exp(np.cos(theta - 0.3) + 0.8 * np.cos(2 * theta - 1.0))
    return r / (r.sum() * 2 * np.pi / theta.shape[0])


def test_sampling_matches_the_density():
    theta = 2 * np.pi * np.arange(64) / 64
    density = jnp.asarray(rho0(theta))
    angles = mf.sample_density(jax.random.key(0), jnp.asarray(theta), density, 20000)
    assert float(mf.wasserstein_circle(angles, (jnp.asarray(theta), density))) < 0.02


def test_particles_approach_the_pde_at_the_rate_n_to_the_minus_half():
    result = mf.particles_versus_pde(
        jax.random.key(1),
        rho0,
        jnp.linspace(0.0, 2.0, 3),
        beta=2.0,
        grid=128,
        particles=(64, 256, 1024),
        samples=4,
    )
    assert result.distance.shape == (3, 4, 3)
    mean = np.asarray(result.mean())
    assert np.all(np.diff(mean, axis=0) < 0)  # more particles, closer, at every time
    np.testing.assert_array_less(np.abs(np.asarray(result.slope) + 0.5), 0.15)


def test_bad_input():
    with pytest.raises(ValueError, match="at least two sizes"):
        mf.particles_versus_pde(
            jax.random.key(0), rho0, jnp.asarray([0.0, 1.0]), beta=1.0, particles=(100,)
        )
    with pytest.raises(ValueError, match="kind must be 'SA' or 'USA'"):
        mf.particles_versus_pde(
            jax.random.key(0), rho0, jnp.asarray([0.0, 1.0]), beta=1.0, kind="sa"
        )


def test_cli_meanfield(tmp_path, capsys):
    from attnflow.cli import main

    out, plot = tmp_path / "mf.npz", tmp_path / "mf.png"
    argv = [
        "meanfield",
        "--beta",
        "1",
        "--grid",
        "64",
        "--particles",
        "32,128",
        "--t1",
        "1",
        "--saves",
        "3",
        "--samples",
        "1",
        "--out",
        str(out),
        "--plot",
        str(plot),
    ]
    assert main(argv) == 0
    data = np.load(out)
    assert data["distance"].shape == (2, 1, 3) and data["density"].shape == (3, 64)
    assert plot.stat().st_size > 0
    assert "fitted exponent in n" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["meanfield", "--particles", "100", "--out", str(out), "--no-plot"])
    assert exit_info.value.code == 2
    assert "at least two positive integers" in capsys.readouterr().err
