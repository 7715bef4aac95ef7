"""Equiangular reduction and cluster statistics against scipy, closed forms and constructions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import equiangular, equiangular_rate, solve_rho
from scipy.integrate import solve_ivp
from scipy.sparse.csgraph import connected_components

import attnflow as af
from attnflow import analysis, sphere


@pytest.mark.parametrize("kind", ["SA", "USA"])
@pytest.mark.parametrize("beta, rho0", [(0.5, 0.0), (3.0, -0.02), (9.0, 0.2)])
def test_equiangular_rho_matches_scipy(kind, beta, rho0):
    ts = np.linspace(0.0, 6.0, 13)
    expected = solve_rho(beta, 32, rho0, ts, kind)
    rho = af.equiangular_rho(ts, beta, 32, rho0=rho0, kind=kind)
    np.testing.assert_allclose(rho, expected, rtol=1e-9, atol=1e-9)


def test_equiangular_rho_closed_form_at_beta_zero_and_batched_beta():
    n, rho0 = 10, 0.05
    ts = np.linspace(0.0, 8.0, 17)
    c = (1 + (n - 1) * rho0) / (1 - rho0)
    exact = (c * np.exp(2 * ts) - 1) / (c * np.exp(2 * ts) + n - 1)
    for kind in ("SA", "USA"):
        rho = af.equiangular_rho(ts, 0.0, n, rho0=rho0, kind=kind)
        np.testing.assert_allclose(1 - rho, 1 - exact, rtol=1e-9)  # late times: relative gap
    batch = af.equiangular_rho(ts, jnp.array([[0.0, 1.0], [2.0, 3.0]]), n, rho0=rho0)
    assert batch.shape == (2, 2, 17)
    np.testing.assert_allclose(batch[1, 0], af.equiangular_rho(ts, 2.0, n, rho0=rho0), rtol=1e-9)


def test_equiangular_rho_follows_particles():
    n = 6
    x0 = jnp.asarray(equiangular(n, 0.1))
    ts = np.linspace(0.0, 3.0, 4)
    xs = af.simulate(af.SA(2.0), x0, ts, solver="dopri8", rtol=1e-11, atol=1e-13).xs
    np.testing.assert_allclose(
        jnp.einsum("td,td->t", xs[:, 0], xs[:, 1]),
        af.equiangular_rho(ts, 2.0, n, rho0=0.1),
        atol=1e-9,
    )


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_crossing_time_matches_scipy_event(kind):
    betas = np.array([0.1, 1.0, 4.0, 9.0])
    times = af.crossing_time(betas, 32, delta=1e-3, kind=kind)
    for beta, t in zip(betas, np.asarray(times), strict=True):
        event = lambda t, r: r[0] - (1 - 1e-3)  # noqa: E731
        event.terminal = True
        sol = solve_ivp(
            lambda t, r, b=beta: equiangular_rate(r, b, 32, kind),
            (0, 1e4),
            [0.0],
            method="DOP853",
            events=event,
            rtol=1e-13,
            atol=1e-15,
        )
        np.testing.assert_allclose(t, sol.t_events[0][0], rtol=1e-7)
    # And it is where equiangular_rho reaches 1 - delta.
    rho = af.equiangular_rho(jnp.array([0.0, times[1]]), 1.0, 32, kind=kind)
    np.testing.assert_allclose(rho[-1], 1 - 1e-3, rtol=1e-10)


def test_crossing_time_at_beta_zero_closed_form():
    n, delta = 32, 1e-3
    # rho = (e^{2t} - 1) / (e^{2t} + n - 1) = 1 - delta  =>  e^{2t} = (1 + (n-1)(1-delta)) / delta
    expected = 0.5 * np.log((1 + (n - 1) * (1 - delta)) / delta)
    np.testing.assert_allclose(af.crossing_time(0.0, n, delta), expected, rtol=1e-10)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: af.crossing_time(1.0, 32, kind="PostLN"),
            r"kind must be one of SA, USA; got 'PostLN'",
        ),
        (lambda: af.crossing_time(1.0, 1), r"n must be an integer >= 2; got 1"),
        (lambda: af.crossing_time(1.0, 32, delta=0.0), r"delta must lie in \(0, 1 - rho0\)"),
        (lambda: af.crossing_time(-1.0, 32), r"beta must be finite and >= 0"),
        (lambda: af.crossing_time(1.0, 4, rho0=-1 / 3), r"rho0 must lie in \(-1/\(n-1\), 1\)"),
        (
            lambda: af.equiangular_rho([0.0, 1.0], 1.0, 4, rho0=1.0),
            r"rho0 must lie in \[-1/\(n-1\), 1\)",
        ),
        (lambda: af.equiangular_rho([1.0, 0.0], 1.0, 4), r"ts must be finite and strictly"),
        (lambda: af.equiangular_rho([0.0, np.nan], 1.0, 4), r"ts must be finite and strictly"),
        (
            lambda: analysis.equiangular([0.0, 1.0], 1.0, 4, kind="PreLN", r0=np.inf),
            r"r0 must be positive and finite; got inf",
        ),
        (
            lambda: analysis.equiangular([0.0, 1.0], 1.0, 4, kind="nGPT", alpha=np.inf),
            r"alpha must be a positive finite number or a callable alpha\(t\); got inf",
        ),
    ],
)
def test_equiangular_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_mean_cosine_gap_of_equiangular_tokens_is_one_minus_rho(getkey, dtype):
    """Equiangular tokens of cosine rho give 1 - rho, whatever their radii (the directions are
    compared); the regular simplex n / (n - 1); one cluster 0; batched over leading axes."""
    n, eps = 5, float(jnp.finfo(dtype).eps)
    radii = jax.random.uniform(getkey(), (n, 1), minval=0.5, maxval=3.0)
    rhos = (0.3, -1 / (n - 1), 1.0)
    x = jnp.asarray(np.stack([equiangular(n, rho) for rho in rhos]) * radii, dtype)
    gap = analysis.mean_cosine_gap(x)
    assert gap.shape == (3,) and gap.dtype == dtype
    expected = [1 - rhos[0], n / (n - 1), 0.0]
    np.testing.assert_allclose(gap, expected, rtol=0, atol=20 * eps)
    assert analysis.mean_cosine_gap(x[0]).shape == ()
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., n, d\) with n >= 2"):
        analysis.mean_cosine_gap(jnp.ones((1, 3), dtype))


def test_pair_fraction_and_clusters_on_a_construction(getkey):
    a, b = sphere.uniform(getkey(), 2, 3)
    x = jnp.stack([a, a, a, b, b])
    # Ordered pairs i != j inside clusters: 3 * 2 + 2 * 1 = 8 of 5 * 4 = 20.
    np.testing.assert_allclose(analysis.pair_fraction(x), 0.4)
    assert int(analysis.count_clusters(x)) == 2
    assert int(analysis.count_clusters(jnp.stack([a, a]))) == 1


def test_count_clusters_matches_scipy(getkey):
    for delta in (0.2, 0.6, 1.0):
        x = sphere.uniform(getkey(), 40, 3)
        graph = np.asarray(x @ x.T) >= 1 - delta
        expected, _ = connected_components(graph, directed=False)
        assert int(analysis.count_clusters(x, delta)) == expected
        np.testing.assert_allclose(analysis.pair_fraction(x, delta), (graph.sum() - 40) / (40 * 39))
    batch = sphere.uniform(getkey(), 4 * 10, 3).reshape(4, 10, 3)
    counts = jax.vmap(lambda y: analysis.count_clusters(y, 0.5))(batch)
    assert [int(c) for c in counts] == [int(analysis.count_clusters(y, 0.5)) for y in batch]


def test_clustered_trajectory_is_one_cluster(getkey):
    x0 = sphere.uniform(getkey(), 16, 3)
    xs = af.simulate(af.SA(1.0), x0, jnp.array([0.0, 30.0])).xs
    assert (
        int(analysis.count_clusters(xs[0])) == 16 and float(analysis.pair_fraction(xs[-1])) == 1.0
    )
    assert int(analysis.count_clusters(xs[-1])) == 1


def test_cosine_histogram_and_order_parameter(getkey):
    x = sphere.uniform(getkey(), 30, 4)
    density, edges = analysis.cosine_histogram(x, bins=20)
    gram = np.asarray(x @ x.T)[np.triu_indices(30, k=1)]
    expected, expected_edges = np.histogram(gram, bins=20, range=(-1, 1), density=True)
    np.testing.assert_allclose(density, expected, rtol=1e-12)
    np.testing.assert_allclose(edges, expected_edges, atol=1e-15)
    np.testing.assert_allclose(analysis.order_parameter(jnp.full(7, 0.3)), 1.0)
    np.testing.assert_allclose(
        analysis.order_parameter(jnp.arange(7) * 2 * np.pi / 7), 0.0, atol=1e-15
    )
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\) with n >= 2 tokens"):
        analysis.pair_fraction(jnp.ones((1, 3)))


@pytest.mark.parametrize("n, d", [(6, 3), (5, 3), (8, 4), (4, 2)])
def test_wendel_probability_against_monte_carlo(n, d):
    """Wendel's formula against the exact (linear programming) hemisphere test on uniform
    samples: within 4 standard errors."""
    draws = 1500
    keys = jax.random.split(jax.random.key(n * 10 + d), draws)
    hits = sum(af.analysis.in_hemisphere(af.sphere.uniform(k, n, d)) for k in keys)
    p = af.analysis.wendel_probability(n, d)
    assert abs(hits / draws - p) < 4 * np.sqrt(p * (1 - p) / draws)


def test_wendel_closed_forms():
    w = af.analysis.wendel_probability
    assert w(6, 3) == 0.5 and w(5, 3) == 11 / 16 and w(4, 2) == 0.5
    assert w(3, 3) == 1.0 and w(1, 2) == 1.0  # n <= d points always fit in a hemisphere
    assert w(1000, 3) == math.ldexp(1 + 999 + 999 * 998 // 2, -999)  # exact, no overflow
    with pytest.raises(ValueError, match="n must be a positive integer"):
        w(0, 3)


def test_hemisphere_certificates(getkey):
    x = af.sphere.uniform(getkey(), 20, 3)
    cap = af.sphere.normalize(x + 3 * jnp.array([0.0, 0.0, 1.0]))  # all in the upper cap
    w = af.analysis.hemisphere(cap)
    assert w is not None and np.all(np.asarray(cap) @ w > 0)
    assert af.analysis.hemisphere(jnp.concatenate([cap, -cap[:1]])) is None  # holds x and -x
    square = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert not af.analysis.in_hemisphere(square)
    assert af.analysis.in_hemisphere(square[:3]) is False  # a closed half-circle is not open
    with pytest.raises(ValueError, match="must have shape"):
        af.analysis.hemisphere(jnp.ones(3))


STATISTICS = [
    analysis.close_pairs,
    analysis.pair_fraction,
    analysis.count_clusters,
    analysis.cosine_histogram,
]


@pytest.mark.parametrize("statistic", STATISTICS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda x: x.at[1, 0].set(jnp.nan), "x must hold only finite numbers"),
        (lambda x: x.at[1, 0].set(-jnp.inf), "x must hold only finite numbers"),
        (
            lambda x: x.at[2].multiply(10),
            r"x must lie on the unit sphere .*; the farthest row is x\[2\], .*off by 9\.0e\+00",
        ),
        (lambda x: x[:, :0], r"x must have shape \(n, d\) with n >= 2 tokens and d >= 1"),
    ],
)
def test_statistics_refuse_tokens_off_the_sphere(getkey, dtype, statistic, bad, match):
    x = bad(sphere.uniform(getkey(), 4, 3, dtype=dtype))
    with pytest.raises(ValueError, match=match):
        statistic(x)


def test_statistics_leave_traced_states_to_the_sweeps(getkey):
    """Under vmap (as sweeps save them) a failed sample's NaN state gives a number, not an
    error that would stop the other samples."""
    x = sphere.uniform(getkey(), 4, 3)
    counts = jax.vmap(analysis.count_clusters)(jnp.stack([x, jnp.full_like(x, jnp.nan)]))
    assert int(counts[0]) == 4


def test_cosine_histogram_bins_and_order_parameter_refuse_bad_input(getkey, dtype):
    x = sphere.uniform(getkey(), 4, 3, dtype=dtype)
    with pytest.raises(ValueError, match="bins must be an integer >= 1; got 0"):
        analysis.cosine_histogram(x, bins=0)
    theta = jnp.asarray([0.0, 1.0, np.nan], dtype)
    with pytest.raises(ValueError, match="theta must hold only finite numbers"):
        analysis.order_parameter(theta)
