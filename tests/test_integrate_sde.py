"""The noisy flow against the noisy Kuramoto self-consistency equation and the noiseless flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import i0e, i1e

import attnflow as af


def order_parameter_over_time(kappa, n=1000, seed=1):
    """Tokens on the circle at beta = 0 (noisy Kuramoto), from a near-synchronized start.

    n = 1000 (0.4x the time of n = 1600). Measured at n = 900: at kappa = 3 the time mean is
    within 0.01 of the mean-field value for seeds 1-4 (tolerance 0.02); at kappa = 1.5 it is
    0.065 (bound 0.1), and fluctuations shrink as n grows."""
    start = jnp.array([1.0, 0.0]) + 0.1 * jax.random.normal(jax.random.key(0), (n, 2))
    x0 = af.sphere.normalize(start)
    ts = jnp.linspace(0.0, 30.0, 61)
    save = lambda t, x: jnp.linalg.norm(jnp.mean(x, axis=0))  # noqa: E731
    key = jax.random.key(seed)
    traj = af.simulate_sde(af.SA(0.0), x0, ts, kappa=kappa, key=key, dt0=0.01, save=save)
    return np.asarray(traj.xs[20:])  # t >= 10, after relaxation


def test_noisy_kuramoto_stationary_order_parameter():
    """Mean field: r = I_1(kappa r) / I_0(kappa r), r > 0 only for kappa > 2."""
    kappa = 3.0
    expected = brentq(lambda r: r - i1e(kappa * r) / i0e(kappa * r), 1e-6, 1.0)  # 0.7242
    assert abs(order_parameter_over_time(kappa).mean() - expected) < 0.02
    assert order_parameter_over_time(1.5).mean() < 0.1  # incoherent: r = O(n^{-1/2})


def test_tokens_stay_on_the_sphere_and_noise_is_reproducible(getkey):
    x0 = af.sphere.uniform(getkey(), 6, 3)
    ts = jnp.linspace(0.0, 2.0, 5)
    key = getkey()
    a = af.simulate_sde(af.SA(1.0), x0, ts, kappa=0.5, key=key, dt0=0.01).xs
    b = af.simulate_sde(af.SA(1.0), x0, ts, kappa=0.5, key=key, dt0=0.01).xs
    c = af.simulate_sde(af.SA(1.0), x0, ts, kappa=0.5, key=getkey(), dt0=0.01).xs
    np.testing.assert_allclose(jnp.linalg.norm(a, axis=-1), 1.0, atol=1e-14)
    np.testing.assert_array_equal(a, b)
    assert jnp.abs(a[-1] - c[-1]).max() > 0.1


def test_without_noise_it_is_the_flow(getkey):
    x0 = af.sphere.uniform(getkey(), 6, 3)
    ts = jnp.linspace(0.0, 3.0, 4)
    noisy = af.simulate_sde(af.SA(2.0), x0, ts, kappa=1e16, key=getkey(), dt0=0.005).xs
    flow = af.simulate(af.SA(2.0), x0, ts, rtol=1e-10, atol=1e-12).xs
    np.testing.assert_allclose(noisy, flow, atol=1e-5)  # Heun: second order without noise


def test_bad_input(getkey):
    x0 = af.sphere.uniform(getkey(), 4, 3)
    ts = jnp.array([0.0, 1.0])
    for kappa in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="kappa must be a positive finite number"):
            af.simulate_sde(af.SA(1.0), x0, ts, kappa=kappa, key=getkey(), dt0=0.1)
    with pytest.raises(ValueError, match="dt0 must be a positive number"):
        af.simulate_sde(af.SA(1.0), x0, ts, kappa=1.0, key=getkey(), dt0=0.0)
    with pytest.raises(ValueError, match="field must be a field on the sphere"):
        af.simulate_sde(af.Circle(1.0), x0[:, 0], ts, kappa=1.0, key=getkey(), dt0=0.1)
    with pytest.raises(ValueError, match="x0 must lie on the unit sphere"):
        af.simulate_sde(af.SA(1.0), 2 * x0, ts, kappa=1.0, key=getkey(), dt0=0.1)


def test_steps_that_do_not_reach_the_end_say_so():
    import equinox as eqx

    x0 = af.sphere.uniform(jax.random.key(0), 4, 3)
    with pytest.raises(eqx.EquinoxRuntimeError, match="pass a larger max_steps or dt0"):
        af.simulate_sde(
            af.SA(1.0),
            x0,
            jnp.linspace(0, 1, 3),
            kappa=1.0,
            key=jax.random.key(1),
            dt0=0.01,
            max_steps=5,
        )
