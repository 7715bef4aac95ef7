"""Particles against the mean-field PDE: the n^{-1/2} law of empirical measures, carried
to later times (the stability estimate of [R])."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnflow import meanfield as mf
from attnflow.analysis import wasserstein_circle


def rho0(theta):
    r = np.exp(np.cos(theta - 0.3) + 0.8 * np.cos(2 * theta - 1.0))
    return r / (r.sum() * 2 * np.pi / theta.shape[0])


def test_sampling_matches_the_density():
    theta = 2 * np.pi * np.arange(64) / 64
    density = jnp.asarray(rho0(theta))
    angles = mf.sample_density(jax.random.key(0), jnp.asarray(theta), density, 20000)
    assert float(wasserstein_circle(angles, (jnp.asarray(theta), density))) < 0.02


def test_particles_approach_the_pde_at_the_rate_n_to_the_minus_half():
    result = mf.particles_versus_pde(
        rho0,
        jnp.linspace(0.0, 2.0, 3),
        key=jax.random.key(1),
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
            rho0, jnp.asarray([0.0, 1.0]), key=jax.random.key(0), beta=1.0, particles=(100,)
        )
    with pytest.raises(ValueError, match="kind must be one of 'SA', 'USA'"):
        mf.particles_versus_pde(
            rho0, jnp.asarray([0.0, 1.0]), key=jax.random.key(0), beta=1.0, kind="sa"
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
        "128,32",  # any order: the rows are labelled with the sorted sizes
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
    printed = capsys.readouterr().out
    assert "fitted exponent in n" in printed
    assert printed.index("n = 32:") < printed.index("n = 128:")
    with pytest.raises(SystemExit) as exit_info:
        main(["meanfield", "--particles", "100", "--out", str(out), "--no-plot"])
    assert exit_info.value.code == 2
    assert "at least two positive integers" in capsys.readouterr().err
    for particles in ("8,8", "8,16,8"):  # one line from the API, before any solve
        assert main(["meanfield", "--particles", particles, "--out", str(out), "--no-plot"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "error: particles must hold at least two sizes, all different" in err


@pytest.mark.parametrize("particles", [(8, 8), (8, 16, 8), (16,)])
def test_particles_must_be_at_least_two_different_sizes(particles):
    with pytest.raises(ValueError, match="particles must hold at least two sizes, all different"):
        mf.particles_versus_pde(
            rho0, jnp.asarray([0.0, 1.0]), key=jax.random.key(0), beta=1.0, particles=particles
        )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: 0 * d, "density must have a positive total mass"),
        (lambda d: d.at[3].set(jnp.nan), "density must hold only finite numbers"),
        (lambda d: d.at[3].set(jnp.inf), "density must hold only finite numbers"),
        (lambda d: d.at[3].set(-1.0), "density must be non-negative"),
    ],
)
def test_sample_density_refuses_densities_it_cannot_sample(dtype, change, match):
    theta = jnp.asarray(2 * np.pi * np.arange(16) / 16, dtype)
    density = change(jnp.full(16, 1 / (2 * np.pi), dtype))
    with pytest.raises(ValueError, match=match):
        mf.sample_density(jax.random.key(0), theta, density, 8)


def test_sample_density_refuses_bad_grids_and_sizes():
    theta = jnp.asarray(2 * np.pi * np.arange(16) / 16)
    density = jnp.full(16, 1 / (2 * np.pi))
    with pytest.raises(ValueError, match="theta must be a uniform grid"):
        mf.sample_density(jax.random.key(0), theta.at[0].set(jnp.nan), density, 8)
    with pytest.raises(ValueError, match="theta and density must be 1-D arrays of the same"):
        mf.sample_density(jax.random.key(0), theta[:8], density, 8)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        mf.sample_density(jax.random.key(0), theta, density, 0)
    # rounding below zero, as a solved density has, is read as 0
    assert mf.sample_density(jax.random.key(0), theta, density.at[0].set(-1e-9), 8).shape == (8,)


def test_particles_versus_pde_positional_key_deprecated():
    theta = jnp.arange(64) * (2 * jnp.pi / 64)
    rho0 = (1 + 0.5 * jnp.cos(2 * theta)) / (2 * jnp.pi)
    common = dict(beta=1.0, particles=(8, 16), samples=1)
    ts = jnp.asarray([0.0, 0.5])
    new = mf.particles_versus_pde(rho0, ts, key=jax.random.key(3), **common)
    with pytest.warns(DeprecationWarning, match=r"particles_versus_pde\(\.\.\., key=key\)"):
        old = mf.particles_versus_pde(jax.random.key(3), rho0, ts, **common)
    np.testing.assert_array_equal(old.distance, new.distance)
    with pytest.raises(TypeError, match="takes 2 positional arguments"):
        mf.particles_versus_pde(jax.random.key(3), rho0, ts, 1.0)
