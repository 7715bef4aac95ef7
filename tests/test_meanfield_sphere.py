"""The mean-field PDE on S^2 against things that are not it: quadrature of the Funk-Hecke
integral and of the attention average, the closed-form first moment of a von Mises-Fisher
density, an ODE for the zonal dynamics at beta = 0, rotations, and its own linearization."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

pytest.importorskip("s2fft")

from attnflow import meanfield as mf  # noqa: E402


def cartesian(theta, phi):
    return np.stack(
        [np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1
    )


def von_mises_fisher(u, k):
    """The density `k exp(k <x, u>) / (4 pi sinh k)` as a function of `(theta, phi)`."""
    u = np.asarray(u, float) / np.linalg.norm(u)
    return lambda theta, phi: k / (4 * np.pi * np.sinh(k)) * np.exp(k * cartesian(theta, phi) @ u)


@pytest.mark.parametrize("beta", [0.5, 3.0, 10.0])
def test_funk_hecke_coefficients_against_quadrature(beta):
    """Against 2 pi int exp(beta t) P_l(t) dt by 60-point Gauss-Legendre quadrature (exact to
    rounding for these smooth integrands)."""
    t, w = np.polynomial.legendre.leggauss(60)
    for degree in range(7):
        exact = 2 * np.pi * np.sum(w * np.exp(beta * t) * scipy.special.eval_legendre(degree, t))
        assert mf.funk_hecke(degree, beta) == pytest.approx(exact, rel=1e-11, abs=1e-13)
    assert mf.funk_hecke(0, 0.0) == pytest.approx(4 * np.pi) and mf.funk_hecke(2, 0.0) == 0


def test_mass_the_first_moment_and_the_uniform_density():
    """A von Mises-Fisher density: its first moment at t = 0 is the closed form
    (coth k - 1/k) u; the mass stays 1 to rounding; the uniform density does not move."""
    u, k = np.array([0.3, 0.2, 0.93]), 3.0
    sol = mf.solve_sphere(von_mises_fisher(u, k), jnp.linspace(0.0, 1.0, 3), beta=2.0, degree=20)
    expected = (1 / np.tanh(k) - 1 / k) * u / np.linalg.norm(u)
    np.testing.assert_allclose(sol.mean()[0], expected, rtol=0, atol=1e-12)
    assert np.linalg.norm(sol.mean()[-1]) > np.linalg.norm(sol.mean()[0]) + 0.1  # concentrates
    np.testing.assert_allclose(sol.mass(), 1.0, rtol=0, atol=1e-13)
    uniform = np.full((20, 39), 1 / (4 * np.pi))
    still = mf.solve_sphere(uniform, jnp.asarray([0.0, 5.0]), beta=2.0)
    # to the rounding of the transforms (about 1e-12 relative)
    np.testing.assert_allclose(still.density[-1], uniform, rtol=0, atol=1e-11)


def test_the_velocity_is_the_attention_average_of_the_density():
    """`sphere_velocity` (spectral) against the attention average of the density computed by
    Gauss-Legendre quadrature, at every grid point, for both kinds."""
    L, beta = 24, 3.0
    theta, phi = mf.sphere_grid(L)
    density = von_mises_fisher([0.5, -0.4, 0.3], 2.0)
    rho = density(*np.meshgrid(theta, phi, indexing="ij"))
    nodes, weights = np.polynomial.legendre.leggauss(80)
    q_theta, q_phi = np.arccos(nodes), 2 * np.pi * np.arange(160) / 160
    y = cartesian(*np.meshgrid(q_theta, q_phi, indexing="ij")).reshape(-1, 3)
    w = (
        np.outer(weights, np.full(160, 2 * np.pi / 160))
        * density(*np.meshgrid(q_theta, q_phi, indexing="ij"))
    ).ravel()
    x = cartesian(*np.meshgrid(theta, phi, indexing="ij")).reshape(-1, 3)
    kernel = np.exp(beta * x @ y.T) * w
    average = kernel @ y
    e_theta = cartesian(*np.meshgrid(theta, phi, indexing="ij")) * 0
    T, P = np.meshgrid(theta, phi, indexing="ij")
    e_theta = np.stack([np.cos(T) * np.cos(P), np.cos(T) * np.sin(P), -np.sin(T)], -1)
    e_phi = np.stack([-np.sin(P), np.cos(P), np.zeros_like(P)], -1)
    for kind in ("SA", "USA"):
        out = average / kernel.sum(1, keepdims=True) if kind == "SA" else average
        out = out.reshape(*T.shape, 3)
        v_theta, v_phi = mf.sphere_velocity(rho, beta=beta, kind=kind)
        scale = np.abs(out).max()
        np.testing.assert_allclose(v_theta, np.sum(out * e_theta, -1), atol=1e-9 * scale)
        np.testing.assert_allclose(v_phi, np.sum(out * e_phi, -1), atol=1e-9 * scale)


def test_rotations_commute_with_the_flow():
    """The flow from a density rotated by R is the rotated flow: first moments m_R = R m (to
    the aliasing of the grid products, which is not rotation invariant: 1e-8 here)."""
    u, k = np.array([0.2, 0.5, 0.8]), 1.5
    angle = 0.7
    R = np.array(
        [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    ) @ np.array([[np.cos(1.1), 0, np.sin(1.1)], [0, 1, 0], [-np.sin(1.1), 0, np.cos(1.1)]])
    ts = jnp.linspace(0.0, 1.0, 3)
    first = mf.solve_sphere(von_mises_fisher(u, k), ts, beta=1.5, degree=32, rtol=1e-11)
    rotated = mf.solve_sphere(von_mises_fisher(R @ u, k), ts, beta=1.5, degree=32, rtol=1e-11)
    assert float(jnp.min(first.min_density)) > 0
    np.testing.assert_allclose(rotated.mean(), first.mean() @ R.T, rtol=0, atol=1e-8)


def test_the_zonal_flow_at_beta_zero_against_its_ode():
    """At beta = 0 a token moves by `P_x m` (m the first moment). For a density symmetric about
    the z axis, `m = (0, 0, z(t))` and each colatitude solves theta' = -z sin(theta), so
    `tan(theta/2) = tan(theta0/2) e^{-A}` with `A' = z(A) = int cos(theta(theta0, A)) rho0`:
    a scalar ODE, solved here with SciPy and quadrature, independent of the PDE."""
    k = 1.5
    rho0 = von_mises_fisher([0, 0, 1], k)
    nodes, weights = np.polynomial.legendre.leggauss(200)
    theta0 = np.arccos(nodes)
    mass = 2 * np.pi * weights * rho0(theta0, 0.0)

    def z_of(A):
        return np.sum(np.cos(2 * np.arctan(np.tan(theta0 / 2) * np.exp(-A))) * mass)

    ts = np.linspace(0.0, 2.0, 5)
    ode = scipy.integrate.solve_ivp(
        lambda t, A: [z_of(A[0])], (0, 2), [0.0], t_eval=ts, rtol=1e-12, atol=1e-14
    )
    expected = [z_of(A) for A in ode.y[0]]
    for kind in ("SA", "USA"):
        sol = mf.solve_sphere(rho0, jnp.asarray(ts), beta=0.0, kind=kind, degree=32, rtol=1e-10)
        np.testing.assert_allclose(sol.mean()[:, 2], expected, rtol=0, atol=1e-7)
        np.testing.assert_allclose(sol.mean()[:, :2], 0.0, atol=1e-12)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_small_harmonics_grow_at_the_linear_rate(kind):
    """A degree-l perturbation of size 1e-7 (the zonal harmonic P_l(cos theta)) of the uniform
    density grows at `sphere_growth_rate(l, beta)`; with noise, at that rate minus l(l+1)/kappa."""
    beta, L = 2.0, 20
    theta, phi = mf.sphere_grid(L)
    T = np.meshgrid(theta, phi, indexing="ij")[0]
    for degree, kappa in ((1, None), (2, None), (3, None), (2, 8.0)):
        rate = float(mf.sphere_growth_rate(degree, beta, kind, kappa))
        t1 = 1.0 / max(abs(rate), 1.0)
        rho0 = 1 / (4 * np.pi) + 1e-7 * scipy.special.eval_legendre(degree, np.cos(T))
        sol = mf.solve_sphere(
            rho0, jnp.asarray([0.0, t1]), beta=beta, kind=kind, kappa=kappa, rtol=1e-12, atol=1e-18
        )
        amplitude = np.abs(np.asarray(sol.coefficients())[:, degree, L - 1])
        assert np.log(amplitude[1] / amplitude[0]) / t1 == pytest.approx(rate, rel=1e-5)
    assert float(mf.sphere_growth_rate(1, 0.0)) == pytest.approx(2 / 3)


def test_bad_input_is_refused_with_what_was_expected():
    L = 16
    uniform = np.full((L, 2 * L - 1), 1 / (4 * np.pi))
    ts = jnp.asarray([0.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        mf.solve_sphere(uniform - 0.1, ts, beta=1.0)
    with pytest.raises(ValueError, match="integrate to 1"):
        mf.solve_sphere(2 * uniform, ts, beta=1.0)
    with pytest.raises(ValueError, match="kappa"):
        mf.solve_sphere(uniform, ts, beta=1.0, kappa=0.0)
    needed = mf.smallest_degree(30.0)
    assert needed > L
    with pytest.raises(ValueError, match=f"use at least degree {needed}"):
        mf.solve_sphere(uniform, ts, beta=30.0)
    with pytest.raises(ValueError, match=r"shape \(L, 2L - 1\)"):
        mf.solve_sphere(uniform[:, :-1], ts, beta=1.0)
    with pytest.raises(ValueError, match="must match"):
        mf.solve_sphere(uniform, ts, beta=1.0, degree=20)
    with pytest.raises(ValueError, match="integers >= 0"):
        mf.funk_hecke(1.5, 1.0)
    with pytest.raises(ValueError, match="USA's velocity overflows at beta = 800"):
        mf.sphere_velocity(uniform, beta=800.0, kind="USA")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="needs float64"):
            mf.solve_sphere(uniform, ts, beta=1.0)
    finally:
        jax.config.update("jax_enable_x64", True)


def test_the_density_is_drawn_on_mollweide_maps_with_particles(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import attnflow as af
    from attnflow.plotting import plot_sphere_density

    ts = jnp.linspace(0.0, 1.0, 3)
    sol = mf.solve_sphere(von_mises_fisher([0, 0, 1], 2.0), ts, beta=1.0, degree=16)
    x0 = af.sphere.uniform(jax.random.key(0), 64, 3)
    tokens = af.simulate(af.SA(1.0), x0, ts).xs
    fig = plot_sphere_density(sol, particles=tokens, path=tmp_path / "sphere.png")
    assert (tmp_path / "sphere.png").stat().st_size > 10_000
    maps = [ax for ax in fig.axes if ax.name == "mollweide"]
    assert [ax.get_title() for ax in maps] == ["t = 0", "t = 0.5", "t = 1"]
