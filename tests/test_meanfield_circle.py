"""The circle's mean-field PDE against closed forms (Ott-Antonsen at beta = 0), its own
linearization (growth rates), invariants (mass, the uniform density), and particles."""

import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow import meanfield as mf


def wrapped_cauchy(theta, r, psi=0.0):
    return (1 - r**2) / (2 * np.pi * (1 - 2 * r * np.cos(theta - psi) + r**2))


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_ott_antonsen_at_beta_zero(kind):
    """At beta = 0 both kinds are the Kuramoto model with K = 1 (identical oscillators): a
    wrapped Cauchy density stays wrapped Cauchy (Ott-Antonsen), its order parameter solving
    r' = r (1 - r^2) / 2, so r(t) = r0 e^{t/2} / sqrt(1 - r0^2 + r0^2 e^t)."""
    r0 = 0.3
    ts = jnp.linspace(0.0, 3.0, 7)
    sol = mf.solve_circle(
        lambda th: wrapped_cauchy(th, r0),
        ts,
        beta=0.0,
        kind=kind,
        grid=256,
        scheme="spectral",
        rtol=1e-11,
        atol=1e-13,
    )
    exact = r0 * np.exp(ts / 2) / np.sqrt(1 - r0**2 + r0**2 * np.exp(ts))
    np.testing.assert_allclose(sol.order_parameter(), exact, atol=1e-6)
    densities = np.stack([wrapped_cauchy(np.asarray(sol.theta), r) for r in exact])
    np.testing.assert_allclose(sol.density, densities, atol=1e-6)
    np.testing.assert_allclose(sol.mass(), 1.0, atol=1e-13)


@pytest.mark.parametrize("kind", ["SA", "USA"])
@pytest.mark.parametrize("beta", [0.5, 2.0, 5.0])
def test_growth_rates_of_small_modes(kind, beta):
    """A mode-k perturbation of size 1e-7 of the uniform density grows at `growth_rate`."""
    M = 2 * mf.smallest_grid(beta)
    theta = 2 * np.pi * np.arange(M) / M
    for k in (1, 2, 3):
        rate = float(mf.growth_rate(k, beta, kind))
        t1 = 1.0 / max(rate, 1.0)  # the mode grows by e at most: it stays linear
        rho0 = 1 / (2 * np.pi) + 1e-7 * np.cos(k * theta)
        sol = mf.solve_circle(
            rho0,
            jnp.asarray([0.0, t1]),
            beta=beta,
            kind=kind,
            rtol=1e-12,
            atol=1e-18,
            scheme="spectral",
        )
        amplitude = np.abs(np.fft.fft(np.asarray(sol.density))[:, k])
        assert np.log(amplitude[1] / amplitude[0]) / t1 == pytest.approx(rate, rel=1e-5)


def test_growth_rate_limits_and_noise():
    # beta -> 0: Kuramoto's 1/2 for k = 1, nothing for k >= 2; noise damps k^2 / kappa
    assert mf.growth_rate(1, 0.0) == pytest.approx(0.5)
    assert mf.growth_rate(1, 1e-6, "USA") == pytest.approx(0.5, rel=1e-5)
    assert mf.growth_rate(2, 0.0) == 0.0
    assert mf.growth_rate(2, 3.0, kappa=4.0) == pytest.approx(mf.growth_rate(2, 3.0) - 1.0)
    # the fastest-growing mode moves up with beta (more clusters at lower temperature)
    counts = [mf.predicted_clusters(b) for b in (1.0, 4.0, 9.0, 25.0)]
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] > counts[1]


def test_mass_and_the_uniform_density():
    M = mf.smallest_grid(4.0) * 2
    theta = 2 * np.pi * np.arange(M) / M
    uniform = mf.solve_circle(np.full(M, 1 / (2 * np.pi)), jnp.linspace(0, 5, 3), beta=4.0)
    np.testing.assert_allclose(uniform.density, 1 / (2 * np.pi), rtol=0, atol=1e-15)
    bumpy = 1 + 0.3 * np.cos(2 * theta) + 0.2 * np.sin(3 * theta)
    bumpy = bumpy / (bumpy.sum() * 2 * np.pi / M)
    sol = mf.solve_circle(bumpy, jnp.linspace(0, 3, 4), beta=4.0, kappa=2.0)
    np.testing.assert_allclose(sol.mass(), 1.0, rtol=0, atol=1e-13)
    assert float(jnp.min(sol.min_density)) > 0


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_two_bump_density_against_quadrature(dtype):
    """The values are the formula divided by its integral (scipy's adaptive quadrature), to
    rounding in the dtype: the rectangle rule is spectrally accurate for a smooth periodic
    density."""
    from scipy.integrate import quad

    def bumps(t):
        return np.exp(np.cos(t - 0.3) + 0.8 * np.cos(2 * t - 1.0))

    Z = quad(bumps, 0, 2 * np.pi, epsabs=0, epsrel=1e-13, limit=200)[0]
    M = 64
    rho = mf.two_bump_density(M, dtype)
    assert rho.shape == (M,) and rho.dtype == dtype
    theta = 2 * np.pi * np.arange(M) / M
    np.testing.assert_allclose(rho, bumps(theta) / Z, rtol=4 * float(jnp.finfo(dtype).eps))
    np.testing.assert_allclose(mf.solve_circle(rho, [0.0, 0.5], beta=1.0).mass(), 1, rtol=1e-5)
    with pytest.raises(ValueError, match="grid must be an integer >= 8; got 4"):
        mf.two_bump_density(4)


def _smooth(theta):
    rho = np.exp(np.cos(theta - 0.3) + 0.5 * np.sin(2 * theta))
    return rho / (rho.sum() * 2 * np.pi / theta.shape[0])


def _final(M, scheme, beta=2.0, t1=1.0):
    sol = mf.solve_circle(
        _smooth, jnp.asarray([0.0, t1]), beta=beta, grid=M, rtol=1e-12, atol=1e-14, scheme=scheme
    )
    return np.asarray(sol.density[-1])


def test_convergence_in_the_grid():
    """A smooth solution against a fine spectral one: the spectral scheme converges faster than
    any power (orders of magnitude per doubling), the finite volumes at second order (away
    from the extrema, where the limiter is first order: measured 1.4 and 1.5 in the max norm
    from 64 to 256 points)."""
    reference = _final(512, "spectral")
    spectral = [np.abs(_final(M, "spectral") - reference[:: 512 // M]).max() for M in (32, 64)]
    assert spectral[1] < 1e-3 * spectral[0] and spectral[1] < 1e-8
    # cell averages of the reference on each grid (its trigonometric interpolant, exactly)
    volumes = []
    for M in (64, 128, 256):
        coarse = _final(M, "finite-volume")
        k = np.fft.fftfreq(512, 1 / 512)
        average = np.where(k == 0, 1.0, np.sinc(k / M))  # mean over a cell of width 2 pi / M
        averaged = np.fft.ifft(np.fft.fft(reference) * average).real[:: 512 // M]
        volumes.append(np.abs(coarse - averaged).max())
    orders = np.log2(np.asarray(volumes[:-1]) / np.asarray(volumes[1:]))
    assert np.all(orders > 1.3), orders


@pytest.mark.parametrize("scheme", ["weno5", "finite-volume"])
def test_the_limited_schemes_stay_positive_through_clustering(scheme):
    """beta = 4 from a two-bump density: the mass concentrates into clusters (peaks growing
    without bound); WENO5 and the finite volumes keep it non-negative and conserve it."""
    M = 512
    sol = mf.solve_circle(_smooth, jnp.linspace(0.0, 10.0, 6), beta=4.0, grid=M, scheme=scheme)
    assert float(sol.density[-1].max()) > 20 * float(sol.density[0].max())  # concentrated
    # non-negative up to the time integrator's tolerance (1e-10 here)
    assert float(jnp.min(sol.min_density)) >= -1e-8
    np.testing.assert_allclose(sol.mass(), 1.0, rtol=0, atol=1e-12)


def test_the_default_scheme_meets_ott_antonsen_to_1e7_on_256_points():
    """WENO5 at its default tolerances: the order parameter of a wrapped Cauchy density
    (r0 = 0.2) within 1e-7 of the Ott-Antonsen closed form over t in [0, 5], where the density
    sharpens to r = 0.93 (a peak of 4.4 about 0.07 wide: 3 grid points), non-negative."""
    r0, ts = 0.2, jnp.linspace(0.0, 5.0, 11)
    sol = mf.solve_circle(lambda th: wrapped_cauchy(th, r0), ts, beta=0.0, grid=256)
    exact = r0 * np.exp(ts / 2) / np.sqrt(1 - r0**2 + r0**2 * np.exp(ts))
    np.testing.assert_allclose(sol.order_parameter(), exact, rtol=0, atol=1e-7)
    assert float(jnp.min(sol.min_density)) > 0
    np.testing.assert_allclose(sol.mass(), 1.0, rtol=0, atol=1e-13)


def test_weno5_is_fifth_order_and_within_1e7_of_the_spectral_solution():
    """The smooth SA case at beta = 4 (t = 1): the Fourier mode amplitudes against a spectral
    solution on 1024 points. WENO5's error falls 32-fold per doubling of the grid (measured
    1.7e-5, 5.4e-7, 1.6e-8 on 64, 128, 256 points) and is below 1e-7 on 256."""
    reference = _final(1024, "spectral", beta=4.0)
    modes = np.abs(np.fft.fft(reference))[:16] / 1024
    errors = []
    for M in (64, 128, 256):
        found = np.abs(np.fft.fft(_final(M, "weno5", beta=4.0)))[:16] / M
        errors.append(np.abs(found - modes).max())
    orders = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    assert np.all(orders > 4.7), orders
    assert errors[-1] < 1e-7


def test_pde_velocity_is_the_particle_velocity():
    """The PDE's velocity at test angles equals the angular velocity of the Cartesian USA
    field (d = 2, Q = K = V = I) for many particles sampled from the density."""
    from attnflow.meanfield._circle import _bessel_ratios, _velocity

    beta, M, n = 1.5, 64, 4000
    theta = 2 * np.pi * np.arange(M) / M
    rho = np.exp(np.cos(theta - 1.0))
    rho = rho / (rho.sum() * 2 * np.pi / M)
    ratios = _bessel_ratios(beta, M)
    q = 2 * np.pi * ratios / beta * np.exp(beta) * __import__("scipy").special.ive(0, beta)
    v_pde = np.asarray(_velocity(jnp.asarray(rho), jnp.asarray(ratios), jnp.asarray(q), "USA"))
    # particles at the quantiles of the (fine-grid) distribution
    fine = np.linspace(0, 2 * np.pi, 200001)[:-1]
    density = np.exp(np.cos(fine - 1.0))
    cdf = np.cumsum(density) / density.sum()
    angles = np.interp((np.arange(n) + 0.5) / n, cdf, fine)
    cloud = np.stack([np.cos(angles), np.sin(angles)], -1)
    probes = np.stack([np.cos(theta), np.sin(theta)], -1)
    x = jnp.asarray(np.concatenate([cloud, probes]))
    # the probes' own part of the field (USA averages over all n + M tokens) taken out exactly
    own = np.asarray(af.USA(beta)(0.0, jnp.asarray(probes))) * M / (n + M)
    v = (np.asarray(af.USA(beta)(0.0, x))[n:] - own) * (n + M) / n
    tangent = np.stack([-np.sin(theta), np.cos(theta)], -1)
    angular = np.sum(v * tangent, -1)
    np.testing.assert_allclose(angular, v_pde, atol=2e-3 * np.abs(v_pde).max())


def test_bad_input():
    M = 64
    good = np.full(M, 1 / (2 * np.pi))
    ts = jnp.asarray([0.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        mf.solve_circle(good - 0.2, ts, beta=1.0)
    with pytest.raises(ValueError, match="must integrate to 1"):
        mf.solve_circle(2 * good, ts, beta=1.0)
    with pytest.raises(ValueError, match="kappa must be a positive number"):
        mf.solve_circle(good, ts, beta=1.0, kappa=0.0)
    with pytest.raises(ValueError, match="too coarse to resolve exp.beta cos theta. at beta = 40"):
        mf.solve_circle(good, ts, beta=40.0)
    with pytest.raises(ValueError, match="kind must be one of 'SA', 'USA'"):
        mf.solve_circle(good, ts, beta=1.0, kind="sa")
    with pytest.raises(ValueError, match="beta must be finite and >= 0"):
        mf.solve_circle(good, ts, beta=-1.0)


def test_float32():
    """float32 densities give float32 solutions, with float32 accuracy (Ott-Antonsen)."""
    r0, ts = 0.3, jnp.linspace(0.0, 2.0, 3, dtype=jnp.float32)
    theta = 2 * np.pi * np.arange(128) / 128
    rho0 = jnp.asarray(wrapped_cauchy(theta, r0), jnp.float32)
    sol = mf.solve_circle(rho0, ts, beta=0.0, rtol=1e-6, atol=1e-6, scheme="spectral")
    assert sol.density.dtype == jnp.float32
    exact = r0 * np.exp(ts / 2) / np.sqrt(1 - r0**2 + r0**2 * np.exp(ts))
    np.testing.assert_allclose(sol.order_parameter(), exact, atol=1e-5)
    np.testing.assert_allclose(sol.mass(), 1.0, atol=1e-6)


@pytest.mark.parametrize("scheme", mf.SCHEMES)
def test_noise_damps_modes_at_the_predicted_rate(scheme):
    """With noise, mode k grows at growth_rate(k, beta, kappa=kappa) = ... - k^2 / kappa."""
    beta, kappa, k, M = 2.0, 4.0, 2, 256
    theta = 2 * np.pi * np.arange(M) / M
    rho0 = 1 / (2 * np.pi) + 1e-7 * np.cos(k * theta)
    sol = mf.solve_circle(
        rho0, jnp.asarray([0.0, 0.5]), beta=beta, kappa=kappa, rtol=1e-12, atol=1e-18, scheme=scheme
    )
    amplitude = np.abs(np.fft.fft(np.asarray(sol.density))[:, k])
    rate = np.log(amplitude[1] / amplitude[0]) / 0.5
    expected = float(mf.growth_rate(k, beta, kappa=kappa))
    assert expected < float(mf.growth_rate(k, beta))
    tolerance = {"spectral": 1e-4, "weno5": 1e-4, "finite-volume": 2e-2}[scheme]
    assert rate == pytest.approx(expected, rel=tolerance)


def test_overflow_and_kmax_errors():
    theta = 2 * np.pi * np.arange(256) / 256
    uniform32 = jnp.full(256, 1 / (2 * np.pi), jnp.float32)
    with pytest.raises(ValueError, match="USA's velocity overflows at beta = 100"):
        mf.solve_circle(uniform32, jnp.asarray([0.0, 1.0], jnp.float32), beta=100.0, kind="USA")
    with pytest.raises(ValueError, match="USA's growth rate overflows"):
        mf.growth_rate(2, 800.0, "USA")
    with pytest.raises(ValueError, match="beyond kmax = 200"):
        mf.predicted_clusters(1e5)
    with pytest.raises(ValueError, match="kmax must be an integer >= 2"):
        mf.predicted_clusters(4.0, kmax=0)
    assert theta.shape == (256,)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1.0,), "beta must be finite and >= 0"),
        ((float("nan"),), "beta must be finite and >= 0"),
        ((1e12,), "beta and the mode k must be at most about 1e9"),
        ((1.0, 0.0), "tol must be a positive number"),
        ((1.0, float("nan")), "tol must be a positive number"),
        ((1.0, 1.0), r"tol must lie in \[2.23e-308, 1\)"),
        ((1.0, 1e-310), r"tol must lie in \[2.23e-308, 1\)"),
    ],
)
def test_smallest_grid_refuses_meaningless_input(args, match):
    with pytest.raises(ValueError, match=match):
        mf.smallest_grid(*args)


@pytest.mark.parametrize("k", [float("nan"), float("inf"), 1.5, [1, 2.5]])
def test_growth_rate_refuses_modes_that_are_not_integers(k):
    with pytest.raises(ValueError, match="k must hold integers"):
        mf.growth_rate(k, 1.0)


def test_growth_rate_refuses_beta_beyond_the_bessel_functions():
    with pytest.raises(ValueError, match="beta and the mode k must be at most about 1e9"):
        mf.predicted_clusters(1e12)  # the NaN rates gave mode 1


def test_a_solve_out_of_steps_says_why_and_what_to_try():
    import equinox as eqx

    rho0 = mf.two_bump_density(64)
    with pytest.raises(eqx.EquinoxRuntimeError) as error:
        mf.solve_circle(rho0, jnp.linspace(0.0, 1.0, 3), beta=4.0, max_steps=3)
    message = str(error.value)
    assert "reached its maximum number of solver steps" in message
    assert "a larger max_steps, a finer grid or looser tolerances" in message
