"""The circle form on angles against the d = 2 Cartesian field and the Kuramoto model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow import sphere


@pytest.mark.parametrize("normalized, make", [(True, af.SA), (False, af.USA)])
@pytest.mark.parametrize("beta", [0.0, 1.0, 9.0])
def test_circle_equals_cartesian_field(getkey, normalized, make, beta):
    theta = jax.random.uniform(getkey(), (9,), minval=-np.pi, maxval=np.pi)
    x = sphere.from_angles(theta)
    dtheta = af.Circle(beta, normalized=normalized)(0.0, theta)
    tangent = jnp.stack([-jnp.sin(theta), jnp.cos(theta)], axis=-1)
    np.testing.assert_allclose(dtheta[:, None] * tangent, make(beta)(0.0, x), atol=1e-13)


def test_usa_at_beta_zero_is_kuramoto(getkey):
    theta = jax.random.uniform(getkey(), (7,), minval=-np.pi, maxval=np.pi)
    t = np.asarray(theta)
    kuramoto = np.mean(np.sin(t[None, :] - t[:, None]), axis=1)  # omega = 0, K = 1
    np.testing.assert_allclose(af.Circle(0.0, normalized=False)(0.0, theta), kuramoto, atol=1e-15)


def test_circle_trajectory_equals_cartesian_trajectory(getkey):
    theta0 = jax.random.uniform(getkey(), (6,), minval=-np.pi, maxval=np.pi)
    ts = jnp.linspace(0.0, 5.0, 6)
    tight = dict(solver="dopri8", rtol=1e-11, atol=1e-13)
    angles = af.simulate(af.Circle(4.0), theta0, ts, **tight).xs
    points = af.simulate(af.SA(4.0), sphere.from_angles(theta0), ts, **tight).xs
    np.testing.assert_allclose(sphere.from_angles(angles), points, atol=1e-9)


def test_circle_is_finite_at_large_beta_and_rejects_bad_input():
    theta = jnp.linspace(0.0, 1.0, 5)
    assert jnp.all(jnp.isfinite(af.Circle(1e3)(0.0, theta)))
    with pytest.raises(
        ValueError, match=r"x0 must be a vector of n >= 1 angles, shape \(n,\); got \(5, 2\)"
    ):
        af.simulate(af.Circle(1.0), jnp.ones((5, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match="beta must be finite and >= 0; got -2.0"):
        af.Circle(-2.0)
