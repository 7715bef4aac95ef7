"""The energy E_beta against its definition and the identities of docs/science.md section 3."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow import sphere


def test_energy_matches_definition(getkey):
    x = sphere.uniform(getkey(), 6, 3)
    gram = np.asarray(x @ x.T)
    expected = np.exp(2.0 * gram).sum() / (2 * 2.0 * 36)
    np.testing.assert_allclose(af.energy(x, 2.0), expected, rtol=1e-14)
    np.testing.assert_allclose(af.log_energy(x, 2.0), np.log(expected), rtol=1e-14)


def test_energy_is_finite_for_large_beta(getkey):
    x = sphere.uniform(getkey(), 6, 3)
    # All tokens at one point: E = e^beta / (2 beta), exactly.
    point = jnp.tile(x[:1], (6, 1))
    np.testing.assert_allclose(af.log_energy(point, 1e3), 1e3 - np.log(2e3), rtol=1e-14)
    np.testing.assert_allclose(af.energy(point, 500.0), np.exp(500.0) / 1e3, rtol=1e-12)
    assert jnp.isfinite(af.log_energy(x.astype(jnp.float32), 1e3))
    assert jnp.isfinite(af.energy(x, 1e-8))


def test_usa_is_gradient_ascent_of_energy(getkey):
    x = sphere.uniform(getkey(), 7, 4)
    grad = jax.grad(af.energy)(x, 1.7)
    np.testing.assert_allclose(af.USA(1.7)(0.0, x), 7 * sphere.project(x, grad), atol=1e-13)


@pytest.mark.parametrize("make", [af.SA, af.USA])
def test_energy_rate_identities(getkey, make):
    x = sphere.uniform(getkey(), 8, 3)
    beta, n = 2.3, 8
    v = make(beta)(0.0, x)
    _, rate = jax.jvp(lambda y: af.energy(y, beta), (x,), (v,))
    speed2 = jnp.sum(v**2, axis=-1)
    if make is af.SA:
        z = jnp.exp(beta * x @ x.T).sum(axis=1)
        expected = jnp.mean(z / n * speed2)
    else:
        expected = jnp.mean(speed2)
    np.testing.assert_allclose(rate, expected, rtol=1e-12)


@pytest.mark.parametrize("make", [af.SA, af.USA])
def test_energy_monotone_along_trajectories(getkey, make):
    x0 = sphere.uniform(getkey(), 12, 3)
    ts = jnp.linspace(0.0, 10.0, 101)
    energy = lambda t, x: af.energy(x, 3.0)  # noqa: E731
    # Once clustered, E sits on a plateau where only the solver error (rtol) moves it.
    slack = 1e-8
    up = af.simulate(make(3.0), x0, ts, save=energy, rtol=1e-9, atol=1e-11).xs
    assert jnp.all(jnp.diff(up) >= -slack * up[1:]) and up[-1] > 2 * up[0]
    down = af.simulate(make(3.0, V=-jnp.eye(3)), x0, ts, save=energy, rtol=1e-9, atol=1e-11).xs
    assert jnp.all(jnp.diff(down) <= slack * down[1:]) and down[-1] < down[0]


def test_energy_bad_input():
    with pytest.raises(ValueError, match=r"beta must be > 0 for the energy"):
        af.energy(jnp.eye(3), 0.0)
    with pytest.raises(
        ValueError, match=r"x must have shape \(n, d\) with n, d >= 1; got shape \(3,\)"
    ):
        af.energy(jnp.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"got shape \(0, 3\)"):
        af.log_energy(jnp.ones((0, 3)), 1.0)
    with pytest.raises(ValueError, match=r"^x must hold only finite numbers; got 1 non-finite"):
        af.energy(jnp.eye(3).at[1, 2].set(jnp.nan), 1.0)
    # traced (a statistic inside a sweep): a failed run's NaN is data, not an error
    assert jnp.isnan(jax.jit(af.energy)(jnp.eye(3).at[1, 2].set(jnp.nan), 1.0))
