"""Wasserstein distances (attnflow.analysis): the circle's exact quantile formula against scipy's
exact assignment and the CDF formula, the exact assignment (both of its solvers) against scipy,
and ott-jax's Sinkhorn divergence against the exact assignment within its proven bias."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from conftest import tol

import attnflow.analysis
import attnflow.meanfield
from attnflow.analysis import wasserstein, wasserstein_circle, wasserstein_exact
from attnflow.analysis._wasserstein import _device_assignment

TWO_PI = 2 * np.pi


def _eps(dtype) -> float:
    return float(np.finfo(jnp.dtype(dtype)).eps)


def _circle_assignment(a, b, p):
    """Exact W_p between the empirical measures of angles `a` and `b` on the circle: scipy's
    assignment on the geodesic cost, each point repeated to lcm(n, m) atoms of equal mass."""
    size = math.lcm(len(a), len(b))
    a, b = np.repeat(a, size // len(a)), np.repeat(b, size // len(b))
    d = np.mod(a[:, None] - b[None, :], TWO_PI)
    d = np.minimum(d, TWO_PI - d) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(d)
    return d[rows, cols].mean() ** (1 / p)


def _cdf_w1(measures):
    """W1 on the circle by the CDF formula, min_alpha int_0^{2 pi} |F_mu - F_nu - alpha|, with
    F the CDF from angle 0 of an empirical measure (angles) or of a density constant on the
    cells [theta_k - h/2, theta_k + h/2] ((theta, density)). F_mu - F_nu is linear between the
    merged breakpoints (atoms, cell edges); the minimum over alpha is found by scipy."""
    breaks = [np.array([0.0, TWO_PI])]
    for m in measures:
        if isinstance(m, tuple):
            theta, rho = m
            h = TWO_PI / len(theta)
            breaks.append(np.mod(theta - h / 2, TWO_PI))
        else:
            breaks.append(np.mod(m, TWO_PI))
    x = np.unique(np.concatenate(breaks))
    mid, length = (x[:-1] + x[1:]) / 2, np.diff(x)

    def cdf_and_density(m, s):
        if not isinstance(m, tuple):
            return np.mean(np.mod(m, TWO_PI)[None, :] <= s[:, None], axis=1), 0 * s
        theta, rho = m
        h = TWO_PI / len(theta)
        rho = rho / (rho.sum() * h)
        # mass of each cell on [0, s]: the overlap of its periodic copies with [0, s]
        lo = (theta[None, :] - h / 2 + TWO_PI * np.arange(-1, 2)[:, None])[:, None, :]
        overlap = np.minimum(lo + h, s[None, :, None]) - np.maximum(lo, 0)
        cdf = np.sum(overlap.clip(0, None) * rho, axis=(0, 2))
        cell = np.floor(np.mod(s - theta[0] + h / 2, TWO_PI) / h).astype(int) % len(theta)
        return cdf, rho[cell]

    (f_mu, r_mu), (f_nu, r_nu) = (cdf_and_density(m, mid) for m in measures)
    g_mid, slope = f_mu - f_nu, r_mu - r_nu
    ga, gb = g_mid - slope * length / 2, g_mid + slope * length / 2

    def h(alpha):
        a, b = ga - alpha, gb - alpha
        same = a * b >= 0
        total = np.where(same, 1, abs(a) + abs(b))
        mean = np.where(same, (abs(a) + abs(b)) / 2, (a * a + b * b) / (2 * total))
        return np.sum(length * mean)

    # h is convex; where G is constant on pieces, its kinks are at those values
    kinks = min((h(alpha) for alpha in ga[np.isclose(ga, gb)]), default=np.inf)
    best = scipy.optimize.minimize_scalar(
        h, bounds=(-1, 1), method="bounded", options={"xatol": 1e-13}
    )
    return min(best.fun, kinks)


def _von_mises(theta, center, kappa):
    rho = np.exp(kappa * np.cos(theta - center))
    return rho / (rho.sum() * TWO_PI / len(theta))


# ------------------------------------------------------------------------------- the circle


def _assert_circle_close(w, expected, p, dtype):
    """`W_p^p` (what the quantile formula computes) to rounding: `eps` times the largest cost
    `pi^p`, times a margin for the sums; `W_2` alone, a square root, has only half the digits
    near 0."""
    atol = 2e3 * _eps(dtype) * np.pi**p
    assert float(w) ** p == pytest.approx(expected**p, abs=atol), (float(w), expected)


@pytest.mark.parametrize("p", [1, 2])
def test_circle_empirical_against_assignment(dtype, p):
    rng = np.random.default_rng(p)
    for n, m in [(1, 3), (40, 40), (12, 18)]:
        a = rng.uniform(-7, 7, n)  # any range: read mod 2 pi
        b = rng.vonmises(1.0, 2.0, m)
        expected = _circle_assignment(np.mod(a, TWO_PI), np.mod(b, TWO_PI), p)
        w = wasserstein_circle(jnp.asarray(a, dtype), jnp.asarray(b, dtype), p)
        assert w.dtype == dtype
        _assert_circle_close(w, expected, p, dtype)


@pytest.mark.parametrize("p", [1, 2])
def test_circle_analytic_values(dtype, p):
    M = 64
    h = TWO_PI / M
    theta = jnp.asarray(TWO_PI * np.arange(M) / M, dtype)
    uniform = (theta, jnp.full(M, 1 / TWO_PI, dtype))
    # uniform vs a point: the mean of |u|^p over u uniform in [-pi, pi]
    expected = (np.pi / 2, np.pi / np.sqrt(3))[p - 1]
    for point in (0.3, 2.0, 5.9):
        atom = jnp.asarray([point], dtype)
        _assert_circle_close(wasserstein_circle(uniform, atom, p), expected, p, dtype)
        _assert_circle_close(wasserstein_circle(atom, uniform, p), expected, p, dtype)
    # one full cell vs its center: uniform on [-h/2, h/2] vs 0
    cell = jnp.zeros(M, dtype).at[5].set(1 / h)
    expected = (h / 4, h / (2 * np.sqrt(3)))[p - 1]
    _assert_circle_close(wasserstein_circle((theta, cell), theta[5:6], p), expected, p, dtype)
    # the uniform density on any grid is rotation invariant; points moved by 0.7 move W by 0.7
    shifted = (theta + h / 3, uniform[1])
    _assert_circle_close(wasserstein_circle(uniform, shifted, p), 0, p, dtype)
    two = jnp.asarray([1.0, 4.0], dtype)
    _assert_circle_close(wasserstein_circle(two, two + 0.7, p), 0.7, p, dtype)
    _assert_circle_close(wasserstein_circle(two, two - TWO_PI, p), 0, p, dtype)


def test_circle_w1_against_cdf_formula():
    rng = np.random.default_rng(0)
    theta64 = TWO_PI * np.arange(64) / 64
    theta40 = TWO_PI * (np.arange(40) + 0.5) / 40  # cell edges at multiples of h
    rho64 = _von_mises(theta64, 1.0, 3.0)
    rho64[20:30] = 0  # a gap in the support: a jump of the quantile function
    rho64 /= rho64.sum() * TWO_PI / 64
    rho40 = 0.6 * _von_mises(theta40, 4.0, 1.0) + 0.4 * _von_mises(theta40, 2.5, 8.0)
    angles = rng.vonmises(0.5, 1.5, 30)
    pairs = [
        ((theta64, rho64), angles),
        (angles, (theta40, rho40)),
        ((theta64, rho64), (theta40, rho40)),
        ((theta40, rho40), (theta40, np.roll(rho40, 7))),
        (angles, rng.uniform(0, TWO_PI, 17)),
    ]
    for mu, nu in pairs:
        expected = _cdf_w1([mu, nu])
        assert float(wasserstein_circle(mu, nu, 1)) == pytest.approx(expected, abs=1e-10)


def test_circle_properties():
    """Symmetry, W1 <= W2, rotation invariance, and convergence of samples to their density."""
    rng = np.random.default_rng(1)
    M = 128
    theta = TWO_PI * np.arange(M) / M
    rho = _von_mises(theta, 2.0, 2.0)
    angles = rng.vonmises(2.0, 2.0, 50)
    w1 = float(wasserstein_circle(angles, (theta, rho), 1))
    w2 = float(wasserstein_circle(angles, (theta, rho), 2))
    assert float(wasserstein_circle((theta, rho), angles, 2)) == pytest.approx(w2, abs=1e-13)
    assert 0 < w1 <= w2
    rotated = float(wasserstein_circle(angles + 1.3, (theta + 1.3, rho), 2))
    assert rotated == pytest.approx(w2, abs=1e-13)
    # the empirical measure of the grid's own quantiles is within the cell width of it
    quantiles = theta[np.searchsorted(np.cumsum(rho) / rho.sum(), (np.arange(500) + 0.5) / 500)]
    assert float(wasserstein_circle(quantiles, (theta, rho), 1)) < TWO_PI / M


def test_circle_jit_and_vmap_over_time():
    M, T = 48, 3
    theta = jnp.asarray(TWO_PI * np.arange(M) / M)
    density = jnp.stack([jnp.asarray(_von_mises(np.asarray(theta), 1.0, k)) for k in (0.5, 2, 6)])
    angles = jnp.asarray(np.random.default_rng(2).vonmises(1.0, 2.0, (T, 25)))
    batched = jax.jit(
        jax.vmap(lambda a, r: wasserstein_circle(a, (theta, r), 2)),
    )(angles, density)
    one_by_one = [float(wasserstein_circle(angles[i], (theta, density[i]), 2)) for i in range(T)]
    np.testing.assert_allclose(np.asarray(batched), one_by_one, rtol=0, atol=1e-13)


def test_circle_density_rounding_tolerated():
    """Tiny negative entries (solver rounding) are read as 0, with the mass renormalized."""
    M = 32
    theta = TWO_PI * np.arange(M) / M
    rho = np.where(np.arange(M) < 16, 1.0, 0.0) / np.pi  # uniform on half the circle
    noisy = rho.copy()
    noisy[20] = -5e-7
    noisy[21] += 5e-7
    w = float(wasserstein_circle((theta, noisy), (theta, rho), 1))
    assert w < 1e-5


def test_circle_errors():
    theta = TWO_PI * np.arange(16) / 16
    rho = np.full(16, 1 / TWO_PI)
    with pytest.raises(ValueError, match="p must be 1 or 2; got 3"):
        wasserstein_circle(theta, theta, p=3)
    with pytest.raises(ValueError, match="p must be 1 or 2; got True"):
        wasserstein_circle(theta, theta, p=True)
    with pytest.raises(
        ValueError, match=r"mu must be a 1-D array of n >= 1 angles .* got shape \(2, 8\)"
    ):
        wasserstein_circle(theta.reshape(2, 8), theta)
    with pytest.raises(
        ValueError, match=r"nu must be a 1-D array of n >= 1 angles .* got shape \(0,\)"
    ):
        wasserstein_circle(theta, np.zeros(0))
    with pytest.raises(ValueError, match="mu: a tuple is read as \\(theta, density\\) .* length 3"):
        wasserstein_circle((theta, rho, rho), theta)
    with pytest.raises(
        ValueError,
        match=r"theta and density must be 1-D arrays of the same length M >= 1 .* \(16,\) and \(15,\)",
    ):
        wasserstein_circle(theta, (theta, rho[:-1]))
    with pytest.raises(
        ValueError, match=r"mu\[0\] \(theta\) must be a uniform grid of M = 16 cell centers"
    ):
        wasserstein_circle((theta**1.01, rho), theta)
    with pytest.raises(
        ValueError, match=r"nu\[1\] \(density\) must be non-negative .* smallest entry -0.1"
    ):
        wasserstein_circle(theta, (theta, rho + np.where(np.arange(16) == 3, -0.26, 0.26 / 15)))
    with pytest.raises(
        ValueError, match=r"mu\[1\] \(density\) must integrate to 1 within 1e-06 .* integrates to 2"
    ):
        wasserstein_circle((theta, 2 * rho), theta)
    with pytest.raises(ValueError, match=r"mu must hold only finite numbers; got 1 non-finite"):
        wasserstein_circle(np.array([0.0, np.nan]), theta)
    with pytest.raises(ValueError, match=r"nu\[1\] \(density\) must hold only finite numbers"):
        wasserstein_circle(theta, (theta, np.where(np.arange(16) == 0, np.inf, rho)))
    with pytest.raises(ValueError, match="mu must be an array of real numbers"):
        wasserstein_circle(np.array(["a"]), theta)
    # under jit, the value checks raise when the compiled code runs
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"must integrate to 1"):
        eqx.filter_jit(lambda r: wasserstein_circle(theta, (theta, r)))(2 * rho)


# ------------------------------------------------------------------- point clouds, any dimension


def _sphere_points(rng, n, d, shift=0.0):
    x = rng.normal(size=(n, d))
    x[:, -1] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _assert_within_bias(w, exact, p, n, m, epsilon, dtype):
    """The documented bias of the debiased Sinkhorn divergence S = w^p:
    -eps (log n + log m) / 2 <= S - W_p^p <= eps log min(n, m), plus rounding/convergence."""
    gap = float(w) ** p - exact**p
    slack = tol(dtype)
    assert -epsilon * (np.log(n) + np.log(m)) / 2 - slack <= gap, (gap, exact)
    assert gap <= epsilon * np.log(min(n, m)) + slack, (gap, exact)


@pytest.mark.parametrize("cost", ["geodesic", "chordal", "euclidean"])
@pytest.mark.parametrize("p", [1, 2])
def test_sinkhorn_against_exact_assignment(cost, p):
    rng = np.random.default_rng(3)
    n = 12
    x, y = _sphere_points(rng, n, 3), _sphere_points(rng, n, 3, shift=1.0)
    if cost == "euclidean":
        x, y = 1.5 * x, y + 0.3  # off the sphere
    exact = float(wasserstein_exact(x, y, cost=cost, p=p))
    epsilon = 1e-3
    w = wasserstein(jnp.asarray(x), jnp.asarray(y), cost=cost, p=p, epsilon=epsilon)
    _assert_within_bias(w, exact, p, n, n, epsilon, jnp.float64)
    # a larger epsilon: still within its (larger) bound
    w = wasserstein(jnp.asarray(x), jnp.asarray(y), cost=cost, p=p, epsilon=0.05)
    _assert_within_bias(w, exact, p, n, n, 0.05, jnp.float64)


def test_sinkhorn_float32_and_unequal_sizes(dtype):
    rng = np.random.default_rng(4)
    n, m = 12, 8
    x, y = _sphere_points(rng, n, 4), _sphere_points(rng, m, 4, shift=2.0)
    exact = float(wasserstein_exact(x, y, cost="geodesic", p=2))  # lcm(12, 8) = 24 atoms
    epsilon = 3e-3
    w = wasserstein(jnp.asarray(x, dtype), jnp.asarray(y, dtype), p=2, epsilon=epsilon)
    assert w.dtype == dtype
    _assert_within_bias(w, exact, 2, n, m, epsilon, dtype)


def test_circle_point_clouds_agree():
    """On S^1 the exact assignment, the quantile formula and Sinkhorn agree."""
    rng = np.random.default_rng(5)
    a, b = rng.uniform(0, TWO_PI, 10), rng.vonmises(1.0, 1.0, 15)
    x = np.stack([np.cos(a), np.sin(a)], axis=1)
    y = np.stack([np.cos(b), np.sin(b)], axis=1)
    for p in (1, 2):
        circle = float(wasserstein_circle(a, b, p))
        assert float(wasserstein_exact(x, y, p=p)) == pytest.approx(circle, abs=1e-12)
        w = wasserstein(jnp.asarray(x), jnp.asarray(y), p=p, epsilon=3e-3, max_iterations=20_000)
        _assert_within_bias(w, circle, p, 10, 15, 3e-3, jnp.float64)


def test_sinkhorn_jit_and_identical_clouds():
    x = jnp.asarray(_sphere_points(np.random.default_rng(6), 10, 3))
    assert float(wasserstein(x, x, epsilon=1e-2)) == pytest.approx(0, abs=1e-6)
    y = x[::-1] @ jnp.diag(jnp.array([1.0, 1.0, -1.0]))
    eager = wasserstein(x, y, epsilon=1e-2)
    jitted = jax.jit(lambda x, y: wasserstein(x, y, epsilon=1e-2))(x, y)
    assert float(jitted) == pytest.approx(float(eager), rel=1e-12)


def test_sinkhorn_not_converged_raises():
    rng = np.random.default_rng(7)
    x, y = _sphere_points(rng, 10, 3), _sphere_points(rng, 10, 3, shift=1.0)
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge to threshold = 1e-09"):
        wasserstein(x, y, epsilon=1e-2, threshold=1e-9, max_iterations=20)


def test_point_cloud_errors():
    rng = np.random.default_rng(8)
    x, y = _sphere_points(rng, 5, 3), _sphere_points(rng, 4, 3)
    with pytest.raises(
        ValueError, match="cost must be one of 'geodesic', 'chordal', 'euclidean'; got 'l1'"
    ):
        wasserstein(x, y, cost="l1")
    with pytest.raises(
        ValueError, match=r"p must be >= 1 \(W_p is a distance for p >= 1\); got 0.5"
    ):
        wasserstein(x, y, p=0.5)
    with pytest.raises(ValueError, match="p must be a positive number"):
        wasserstein_exact(x, y, p=-1)
    with pytest.raises(
        ValueError, match=r"x must have shape \(n, d\) with n, d >= 1; got shape \(5,\)"
    ):
        wasserstein(x[:, 0], y)
    with pytest.raises(
        ValueError, match=r"y must have shape \(n, d\) with n, d >= 1; got shape \(0, 3\)"
    ):
        wasserstein(x, y[:0])
    with pytest.raises(
        ValueError, match=r"same dimension d; got x of shape \(5, 3\) and y of shape \(4, 2\)"
    ):
        wasserstein(x, y[:, :2])
    with pytest.raises(
        ValueError,
        match=r"y must lie on the unit sphere .*; cost='chordal' is for points of the sphere, "
        r"cost='euclidean' for points of R\^d; the farthest row is y\[3\], .*off by 1\.0e\+00",
    ):
        wasserstein(x, np.concatenate([y[:3], 2 * y[3:]]), cost="chordal")
    with pytest.raises(ValueError, match=r"x must hold only finite numbers; got 1 non-finite"):
        wasserstein_exact(np.where(x == x[0, 0], np.nan, x), y, cost="euclidean")
    with pytest.raises(ValueError, match="epsilon must be a positive number"):
        wasserstein(x, y, epsilon=0)
    with pytest.raises(ValueError, match="max_iterations must be an integer >= 1"):
        wasserstein(x, y, max_iterations=0)
    with pytest.raises(ValueError, match=r"lcm\(n, m\) = 20 atoms, more than max_points = 10"):
        wasserstein_exact(x, y, max_points=10)


def _scipy_distance(x, y, p):
    """Exact W_p (chordal cost) by scipy's assignment, in float64, each point repeated to
    lcm(n, m) atoms."""
    size = math.lcm(len(x), len(y))
    x = np.repeat(np.asarray(x, np.float64), size // len(x), axis=0)
    y = np.repeat(np.asarray(y, np.float64), size // len(y), axis=0)
    costs = np.linalg.norm(x[:, None] - y[None], axis=-1) ** p
    rows, cols = scipy.optimize.linear_sum_assignment(costs)
    return costs[rows, cols].mean() ** (1 / p)


@pytest.mark.parametrize("sizes", [(9, 9), (6, 4)])
@pytest.mark.parametrize("p", [1, 2])
def test_exact_assignment_against_scipy(dtype, sizes, p):
    """Eager, under jit and under vmap, in the inputs' dtype, against scipy in float64."""
    rng = np.random.default_rng(9)
    xs = np.stack([_sphere_points(rng, sizes[0], 3) for _ in range(3)])
    y = _sphere_points(rng, sizes[1], 3, shift=0.5)
    expected = [_scipy_distance(x, y, p) for x in xs]
    x32, y32 = jnp.asarray(xs, dtype), jnp.asarray(y, dtype)
    eager = wasserstein_exact(x32[0], y32, cost="chordal", p=p)
    assert eager.dtype == dtype
    assert float(eager) == pytest.approx(expected[0], rel=50 * _eps(dtype))
    mapped = jax.jit(jax.vmap(lambda x: wasserstein_exact(x, y32, cost="chordal", p=p)))(x32)
    np.testing.assert_allclose(mapped, expected, rtol=50 * _eps(dtype))


def test_device_assignment_against_scipy(dtype):
    """The accelerators' solver (optax's Hungarian algorithm) finds assignments as cheap as
    scipy's, batched, ties included."""
    rng = np.random.default_rng(10)
    costs = rng.random((4, 12, 12))
    costs[3] = np.round(costs[3] * 3)  # many ties
    columns = np.asarray(jax.jit(jax.vmap(_device_assignment))(jnp.asarray(costs, dtype)))
    for c, sigma in zip(costs, columns, strict=True):
        assert sorted(sigma) == list(range(12))
        rows, best = scipy.optimize.linear_sum_assignment(c)
        assert c[rows, sigma].sum() == pytest.approx(c[rows, best].sum(), rel=50 * _eps(dtype))


@pytest.mark.parametrize(
    "name", ["COSTS", "wasserstein", "wasserstein_circle", "wasserstein_exact"]
)
def test_meanfield_spellings_deprecated(name):
    with pytest.warns(DeprecationWarning, match=f"use attnflow.analysis.{name}"):
        moved = getattr(attnflow.meanfield, name)
    assert moved is getattr(attnflow.analysis, name)
    with pytest.raises(AttributeError):
        attnflow.meanfield.no_such_name  # noqa: B018
