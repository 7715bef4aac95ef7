"""Tests of `attnflow.concentration` (Alcalde, Bungert, Riedl, Roith 2026, ABRR; docs/science.md
sections 2 and 5): the zero-temperature (hardmax) flow in `R^d`, its limit map, the finite-beta
flow's convergence to it, and the `concentration` study.

References are not attnflow: the hardmax flow is integrated exactly by an event-driven NumPy /
SciPy solver (between switches of the argmax sets it is linear, `dX/dt = (P - I) X V^T`, solved
by `expm`; switching times by `brentq` on the logit margins); the characterization of
`limit_map`'s docstring gives closed forms; the Wasserstein distances are recomputed by
`scipy.optimize.linear_sum_assignment`.

Tolerances: the limit map stops once `max_i |dx_i/dt| <= tol * scale` (`scale = max(1, max_i
|x_i(0)|)`), so its tokens are within a few `tol * scale / lambda_min` of the limit
(`lambda_min`: the smallest eigenvalue of `V`); `limit_bound` below is that bound.
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from scipy.linalg import expm
from scipy.optimize import brentq, linear_sum_assignment

import attnflow as af
from attnflow.concentration import (
    LimitNotReached,
    attention_flow,
    concentration,
    hardmax_flow,
    hardmax_limit,
    initial_tokens,
    limit_map,
    pushforward,
    rate,
)
from attnflow.fields import Hardmax, MultiHead, NoNorm, Softmax, Unnormalized

I2 = np.eye(2)
D = np.diag([1.0, 0.5])  # the slow eigenvector is the y axis
D_SWAPPED = np.diag([0.5, 1.0])  # ... and here the x axis


def default_tol(dtype) -> float:
    """The limit map's default rest tolerance (its docstring: 1e-7 in float64, 1e-3 in float32)."""
    return 1e-7 if jnp.dtype(dtype) == jnp.float64 else 1e-3


def limit_bound(x0, V, tol_) -> float:
    """How far the limit map's tokens may be from the true limit: `5 tol scale / lambda_min`
    (a token and its target both within `tol scale / lambda_min` of the common limit, with
    room for a Jordan chain's polynomial factor)."""
    scale = max(1.0, float(np.max(np.linalg.norm(np.asarray(x0, np.float64), axis=-1))))
    low = 1.0 if V is None else float(np.min(np.linalg.eigvals(np.asarray(V)).real))
    return 5 * tol_ * scale / low


# --- NumPy / SciPy references ------------------------------------------------------------


def logits(X, B):
    """`L[..., i, j] = <Q x_i, K x_j> = x_i^T B x_j` with `B = Q^T K`."""
    return np.einsum("...id,de,...je->...ij", X, B, X)


def target_gaps(X, B, top):
    """Per token (last axis): the logit of its current target `top[i]` minus the best other."""
    L = logits(X, B)
    rows = np.arange(L.shape[-1])
    current = L[..., rows, top]
    L[..., rows, top] = -np.inf
    return current - L.max(axis=-1)


def hardmax_targets(X, B):
    """`(argmax_j L_ij, margin of the best over the second best)` per token."""
    L = np.sort(logits(X, B), axis=-1)
    return np.argmax(logits(X, B), axis=-1), L[:, -1] - L[:, -2]


class HardmaxReference:
    """The hardmax flow `dx_i/dt = V (x_{c(i)} - x_i)`, `c(i) = argmax_j <Q x_i, K x_j>`,
    integrated exactly between switches of the argmax and event by event.

    While the targets `c` are fixed the flow is linear, `dX/dt = (P - I) X V^T` with `P` the
    0/1 row-stochastic target matrix, so `vec X(t) = expm((t - t0) kron(P - I, V)) vec X(t0)`
    (row-major `vec`). The next switch is the first sign change of the margins
    `L_{i,c(i)} - max_{j != c(i)} L_ij` on a grid of step `h` (marched by the exact one-step
    propagator), refined by `brentq`. Each switch must be a clean crossing by one token: the
    margin's rate of change is of the right sign both under the old and the new targets (no
    sliding mode), which the constructor asserts. Scanned up to `horizon / lambda_min`
    without a further switch, the last segment's `t -> infinity` limit is the limit map.
    """

    def __init__(self, x0, B, V, horizon=25.0, h=0.005, max_switches=12):
        x0 = np.asarray(x0, np.float64)
        n, d = x0.shape
        self.n, self.d = n, d
        lam = float(np.min(np.linalg.eigvals(V).real))
        steps = int(horizon / lam / h)
        self.segments = []  # (start time, state there, generator kron(P - I, V))
        self.switches = []  # (time, token, old target, new target, old rate, new rate)
        top, margin = hardmax_targets(x0, B)
        assert margin.min() > 1e-3, "the reference needs a unique argmax at t = 0"
        t0, X = 0.0, x0
        for _ in range(max_switches + 1):
            M = np.kron(self.stochastic(top) - np.eye(n), V)
            self.segments.append((t0, X, M))
            step = expm(M * h)
            ys = np.empty((steps, n * d))
            y = X.ravel()
            for k in range(steps):
                y = step @ y
                ys[k] = y
            gaps = target_gaps(ys.reshape(steps, n, d), B, top).min(axis=-1)
            crossed = np.nonzero(gaps < 0)[0]
            if crossed.size == 0:
                self.limit = (expm(M * 1e3) @ X.ravel()).reshape(n, d)
                return
            k = int(crossed[0])

            def gap(t, X=X, M=M, t0=t0, top=top):
                return target_gaps(self.propagate(X, M, t - t0), B, top).min()

            t_switch = brentq(gap, t0 + k * h, t0 + (k + 1) * h, xtol=1e-15, rtol=1e-15)
            Y = self.propagate(X, M, t_switch - t0)
            gaps_here = target_gaps(Y, B, top)
            i = int(np.argmin(gaps_here))
            assert np.sort(gaps_here)[1] > 1e-6, "two tokens switch at once"
            L = logits(Y, B)
            L[i, top[i]] = -np.inf
            j = int(np.argmax(L[i]))
            new = top.copy()
            new[i] = j
            old_rate, new_rate = (self.margin_rate(Y, B, V, c, i, top[i], j) for c in (top, new))
            assert min(old_rate, new_rate) > 0.02, f"not a clean crossing: {old_rate, new_rate}"
            self.switches.append((t_switch, i, int(top[i]), j, old_rate, new_rate))
            t0, X, top = t_switch, Y, new
        raise AssertionError("more switches than the reference allows")

    @staticmethod
    def stochastic(top):
        P = np.zeros((top.size, top.size))
        P[np.arange(top.size), top] = 1
        return P

    def propagate(self, X, M, dt):
        return (expm(M * dt) @ X.ravel()).reshape(self.n, self.d)

    def margin_rate(self, Y, B, V, top, i, old, new):
        """`d/dt (L_{i,new} - L_{i,old})` at `Y` under the targets `top`."""
        dY = (self.stochastic(top) - np.eye(self.n)) @ Y @ V.T
        dL = dY @ B @ Y.T + Y @ B @ dY.T
        return dL[i, new] - dL[i, old]

    def __call__(self, t):
        for t0, X, M in reversed(self.segments):
            if t >= t0:
                return self.propagate(X, M, t - t0)


def leaders(x, B=I2):
    """Tokens that strictly maximize their own logit: `<B v, v> > <B v, y>` for all `y != v`."""
    top, margin = hardmax_targets(np.asarray(x, np.float64), B)
    return np.nonzero((top == np.arange(len(x))) & (margin > 0))[0]


def leader_configuration(n, B, seed=0, followers=3):
    """Tokens (rounded, uniform in [-1.5, 1.5]^2) whose argmax is, for every token, a single
    leader, with at least `followers` tokens that are not leaders: the hypothesis of the
    characterization in `limit_map`'s docstring."""
    rng = np.random.default_rng(seed)
    for _ in range(10_000):
        x = np.round(rng.uniform(-1.5, 1.5, (n, 2)), 1)
        top, margin = hardmax_targets(x, B)
        if (
            margin.min() > 0.02
            and np.all(top[top] == top)
            and (top != np.arange(n)).sum() >= followers
        ):
            return x, top
    raise AssertionError("no configuration found")


def w2(x, y):
    """`W_2` between the empirical measures of two equal-size point sets (exact assignment)."""
    cost = np.sum((np.asarray(x, np.float64)[:, None] - np.asarray(y, np.float64)[None]) ** 2, -1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


# Configurations of the event-driven comparison: B = I, every switch a clean crossing (the
# reference asserts it), found by a random search. "identity": four switches (tokens whose
# target is not a leader re-target as their targets move); "diagonal": five; "diagonal-lost
# lead": token 2 starts as its own argmax (a leader, at rest) and loses the lead at t = 0.91
# as token 1 moves toward it, then moves, and re-targets once more.
SWITCHING = {
    "identity": (
        I2,
        [
            [1.4, -1.8],
            [0.1, -1.0],
            [-0.2, -1.1],
            [1.6, -0.8],
            [1.8, -1.6],
            [-0.3, -0.2],
            [0.8, -0.6],
        ],
        4,
    ),
    "diagonal": (
        D,
        [
            [-0.5, 0.1],
            [0.4, -1.8],
            [-0.3, -1.3],
            [-0.9, 0.7],
            [-0.5, -0.4],
            [1.1, 0.0],
            [1.4, -1.9],
            [1.9, -1.9],
        ],
        5,
    ),
    "diagonal-lost-lead": (
        D,
        [[-1.9, 1.6], [-1.0, 0.1], [-0.9, -0.5], [0.4, -0.2], [-0.1, 0.8], [1.7, 1.3]],
        2,
    ),
}


@pytest.fixture(scope="module")
def switching_references():
    return {
        name: HardmaxReference(np.array(x0), I2, V, horizon=25.0)
        for name, (V, x0, _) in SWITCHING.items()
    }


# --- 1. the hardmax flow against the event-driven reference ----------------------------------


@pytest.mark.parametrize("name", list(SWITCHING))
def test_hardmax_flow_matches_event_driven_reference(name, switching_references):
    V, x0, switches = SWITCHING[name]
    x0 = np.array(x0)
    reference = switching_references[name]
    assert len(reference.switches) == switches  # non-trivial: the argmax sets do change
    if name == "diagonal-lost-lead":
        assert reference.switches[0][1:3] == (2, 2)  # a leader that stops leading
    ts = np.array([0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2, 3, 5, 10])
    trajectory = af.simulate(hardmax_flow(V=V), x0, ts, rtol=1e-10, atol=1e-12)
    expected = np.stack([reference(t) for t in ts])
    np.testing.assert_allclose(np.asarray(trajectory.xs), expected, rtol=0, atol=1e-6)

    # limit_map is the t -> infinity limit: at the default tolerance within the documented
    # bound, and to 1e-8 at a tight one.
    np.testing.assert_allclose(
        limit_map(x0, V=V), reference.limit, rtol=0, atol=limit_bound(x0, V, 1e-7)
    )
    tight = limit_map(x0, V=V, tol=1e-10, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tight, reference.limit, rtol=0, atol=1e-8)


def test_reference_detects_a_sliding_mode():
    """The reference refuses a configuration whose switch is not a clean crossing (here, with
    V = diag(1, 0.5), the flow slides along a switching surface at t = 1.386): so the
    comparisons above are made only where the exact piecewise-linear solution exists."""
    x0 = np.array(SWITCHING["identity"][1])
    with pytest.raises(AssertionError, match="not a clean crossing"):
        HardmaxReference(x0, I2, D)


# --- 2. the characterization of the limit map (V = I, every argmax a single leader) ----------

WEIGHTS = {
    "identity": (None, None),
    "spd": (I2, np.array([[2.0, 0.5], [0.5, 1.0]])),  # B = Q^T K symmetric positive definite
    "rectangular": (  # Q = K of shape (3, 2): B = K^T K
        np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 0.7]]),
        np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 0.7]]),
    ),
    "nonsymmetric": (I2, np.array([[1.0, 0.4], [-0.4, 1.0]])),  # the proof is bilinear only
}


@pytest.mark.parametrize("weights", list(WEIGHTS))
def test_limit_map_is_the_argmax_leader(weights):
    Q, K = WEIGHTS[weights]
    B = (I2 if Q is None else Q).T @ (I2 if K is None else K)
    x0, top = leader_configuration(8, B)
    ts = np.array([0, 0.3, 1, 2, 5])
    closed = np.stack([x0[top] + np.exp(-t) * (x0 - x0[top]) for t in ts])
    trajectory = af.simulate(hardmax_flow(Q, K), x0, ts, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(trajectory.xs), closed, rtol=0, atol=1e-8)
    T = limit_map(x0, Q, K)
    np.testing.assert_allclose(T, x0[top], rtol=0, atol=limit_bound(x0, None, 1e-7))
    np.testing.assert_array_equal(top, np.argmax(logits(x0, B), axis=-1))


def test_ball_limit_points_are_leaders():
    """Q = K = V = I, 200 tokens uniform in the unit disk: every limit point is a leader (an
    input token maximizing its own logit, an extreme sample near the unit circle), leaders map
    to themselves, and the push-forward puts the mass on leaders."""
    x = np.asarray(initial_tokens(jax.random.key(1), 0, n=200, d=2))
    lead = leaders(x)
    result = pushforward(x)
    T = result.points
    distance = np.linalg.norm(T[:, None] - x[lead][None], axis=-1)
    assert distance.min(axis=1).max() < limit_bound(x, None, 1e-7)
    np.testing.assert_allclose(T[lead], x[lead], rtol=0, atol=limit_bound(x, None, 1e-7))
    assert np.linalg.norm(x[lead], axis=1).min() > 0.9  # extreme samples: near the circle
    assert 3 <= len(lead) < 30
    # Atoms: distinct leaders, with the mass of the tokens they attract.
    owner = np.argmin(distance, axis=1)
    counts = np.bincount(owner, minlength=len(lead))
    assert len(result.atoms) == np.count_nonzero(counts)
    atom_owner = np.argmin(np.linalg.norm(result.atoms[:, None] - x[lead][None], axis=-1), 1)
    np.testing.assert_allclose(result.weights, counts[atom_owner] / len(x))
    assert np.all(np.diff(result.weights) <= 0) and np.isclose(result.weights.sum(), 1)


# --- 3. idempotence ---------------------------------------------------------------------------


@pytest.mark.parametrize("V", [None, D], ids=["identity", "diagonal"])
def test_limit_map_is_idempotent(V, dtype):
    for seed in range(2):
        x = initial_tokens(jax.random.key(seed), 0, n=10, d=2, dtype=dtype)
        Vd = None if V is None else jnp.asarray(V, dtype)
        T = limit_map(x, V=Vd)
        assert T.dtype == dtype
        bound = limit_bound(x, V, default_tol(dtype))
        np.testing.assert_allclose(limit_map(T, V=Vd), T, rtol=0, atol=bound)
        # A tighter run from T (it is not at rest at that tolerance) moves it by no more.
        finer = limit_map(T, V=Vd, tol=default_tol(dtype) / 10)
        np.testing.assert_allclose(finer, T, rtol=0, atol=bound)
        # T is at rest: each limit point is the mean of its argmax set.
        speed = np.linalg.norm(np.asarray(hardmax_flow(V=Vd)(0.0, T)), axis=-1)
        scale = max(1.0, float(np.linalg.norm(np.asarray(x), axis=-1).max()))
        assert speed.max() <= 2 * default_tol(dtype) * scale


# --- 4. invariances ---------------------------------------------------------------------------


@pytest.mark.parametrize("V", [None, D], ids=["identity", "diagonal"])
def test_limit_map_permutation_equivariant(V):
    x = np.asarray(initial_tokens(jax.random.key(3), 0, n=8, d=2))
    perm = np.random.default_rng(0).permutation(8)
    np.testing.assert_allclose(
        limit_map(x[perm], V=V), np.asarray(limit_map(x, V=V))[perm], rtol=0, atol=1e-6
    )


def test_limit_map_rotation_equivariant():
    """Any rotation commutes with Q = K = V = I: T(x R^T) = T(x) R^T."""
    x = np.asarray(initial_tokens(jax.random.key(4), 0, n=10, d=2))
    c, s = np.cos(0.7), np.sin(0.7)
    R = np.array([[c, -s], [s, c]])
    np.testing.assert_allclose(limit_map(x @ R.T), np.asarray(limit_map(x)) @ R.T, atol=1e-6)


def test_limit_map_reflection_equivariant():
    """diag(1, -1) commutes with diagonal Q, K, V."""
    Q, K = np.diag([1.2, 0.8]), np.diag([0.9, 1.1])
    x = np.asarray(initial_tokens(jax.random.key(5), 0, n=8, d=2))
    S = np.diag([1.0, -1.0])
    np.testing.assert_allclose(
        limit_map(x @ S, Q, K, D), np.asarray(limit_map(x, Q, K, D)) @ S, atol=1e-6
    )


# --- 5. the finite-beta flow converges to the hardmax flow as beta grows ---------------------

# Every argmax a single leader (targets [4, 1, 4, 3, 4, 1]) with the smallest logit margin
# along the hardmax path on [0, 1] about 0.09: the softmax weights off the argmax are
# about exp(-beta * margin).
CONVERGING = np.array(
    [[-0.5, -0.2], [1.4, 0.2], [-0.7, -0.8], [1.2, -0.8], [-1.1, -0.6], [0.3, 0.2]]
)


def test_attention_flow_converges_to_hardmax_exponentially_in_beta():
    x0 = CONVERGING
    top, _ = hardmax_targets(x0, I2)
    np.testing.assert_array_equal(top[top], top)  # every target leads: closed-form path
    grid = np.linspace(0, 1, 401)
    path = [x0[top] + np.exp(-t) * (x0 - x0[top]) for t in grid]
    margin = min(hardmax_targets(X, I2)[1].min() for X in path)
    assert 0.05 < margin < 0.15
    ts = np.linspace(0, 1, 11)
    hard = np.asarray(af.simulate(hardmax_flow(), x0, ts, rtol=1e-12, atol=1e-14).xs)
    closed = np.stack([x0[top] + np.exp(-t) * (x0 - x0[top]) for t in ts])
    np.testing.assert_allclose(hard, closed, rtol=0, atol=1e-10)
    betas = np.array([30.0, 50, 75, 100, 150, 200])
    errors = np.array(
        [
            np.abs(
                np.asarray(af.simulate(attention_flow(b), x0, ts, rtol=1e-12, atol=1e-14).xs) - hard
            ).max()
            for b in betas
        ]
    )
    assert np.all(np.diff(errors) < 0) and errors[-1] > 1e-11  # above the solver's floor
    # log error = c - r beta: r is the smallest margin (a prefactor polynomial in beta
    # shifts it a little).
    r = -np.polyfit(betas, np.log(errors), 1)[0]
    assert 0.7 * margin < r < 1.4 * margin, (r, margin)
    # ... far faster than 1/beta.
    assert np.polyfit(np.log(betas), np.log(errors), 1)[0] < -4


# --- 6. the closest approach of the concentration study ---------------------------------------


def test_concentration_closest_approach_rate():
    """ABRR: W(mu_t^beta, T_# mu_0) is smallest at t = O(log beta), about sqrt(log beta / beta)."""
    betas = [10, 30, 100, 300, 1000, 3000, 10000]
    ts = np.concatenate([[0], np.geomspace(0.05, 100, 40)])
    c = concentration(
        key=jax.random.key(0), n=32, d=2, betas=betas, ts=ts, samples=16, progress=False
    )
    assert np.all(c.status == 0) and np.all(c.limit_status == 0)
    assert c.resolved.all()
    assert np.all(np.diff(c.closest) < 0)
    assert np.all(np.diff(c.closest_time) >= 0) and c.closest_time[-1] > 5 * c.closest_time[0]
    assert np.polyfit(np.log(betas), c.closest_time, 1)[0] > 0
    assert -0.8 < c.slope < -0.3, c.slope
    assert 0.6 < c.exponent < 2.5, c.exponent
    # The summaries against the raw distances, which are the exact W_2 to T_# mu_0.
    # closest_time: the first save time within 10% of the minimum (the minimum is a plateau).
    mean = c.distance.mean(axis=1)
    np.testing.assert_allclose(c.closest, mean.min(axis=1))
    first = np.argmax(mean <= 1.1 * mean.min(axis=1, keepdims=True), axis=1)
    np.testing.assert_array_equal(c.closest_time, ts[first])
    y = np.log(c.closest)
    assert np.isclose(c.slope, np.polyfit(np.log(betas), y, 1)[0])
    assert np.isclose(c.exponent, np.polyfit(np.log(rate(betas)), y, 1)[0])
    x0 = np.asarray(initial_tokens(jax.random.key(0), 3, n=32, d=2))
    np.testing.assert_allclose(c.limits[3], limit_map(x0), atol=limit_bound(x0, None, 1e-7))
    b, k = 2, 20
    xt = af.simulate(attention_flow(float(betas[b])), x0, ts[: k + 1], rtol=1e-8, atol=1e-10).xs
    assert np.isclose(c.distance[b, 3, k], w2(xt[-1], c.limits[3]), rtol=1e-5)


def test_rate():
    np.testing.assert_allclose(rate([1.0, 100.0]), np.sqrt(np.log([2.0, 101.0]) / [1.0, 100.0]))
    for betas in ([np.nan], [np.inf], [-1.0], [0.0, 1.0]):  # NaN, NaN, inf, NaN before
        with pytest.raises(ValueError, match="betas must be finite and > 0"):
            rate(betas)


@pytest.mark.parametrize(("n", "d", "name"), [(0, 2, "n"), (3, 0, "d")])
def test_initial_tokens_refuse_empty_sizes(n, d, name):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1; got 0"):
        initial_tokens(jax.random.key(0), 0, n=n, d=d)


# --- 7. the terminal phase: along V's slowest eigenvector ------------------------------------

TERMINAL_TS = np.array([0.0, 1, 5, 10, 20])


@pytest.mark.parametrize(
    "V, axis", [(D, 1), (D_SWAPPED, 0)], ids=["diag(1,0.5)-y", "diag(0.5,1)-x"]
)
def test_terminal_phase_aligns_with_slowest_eigenvector(V, axis):
    key = jax.random.key(0)
    c = concentration(
        key=key, n=8, d=2, betas=[3.0], ts=TERMINAL_TS, V=V, samples=3, progress=False
    )
    assert np.all(c.status == 0) and np.all(c.limit_status == 0)
    np.testing.assert_allclose(c.eigenvalues, [0.5, 1.0])
    assert np.all(c.alignment[0, :, 0] > 0.995), c.alignment
    assert np.all(c.alignment[0, :, 1] < 0.1), c.alignment
    assert np.all((c.spread > 0) & (c.spread < 1e-3))
    # Independently, realization 0: its spread decays at the slowest rate, 0.5, between
    # t = 10 and 20; the terminal phase is read at the last save time where the spread is
    # still >= 1e-3 of the initial one (t = 10 here), and the principal axis of the tokens
    # there (`final`) is the coordinate axis `axis`.
    x0 = initial_tokens(key, 0, n=8, d=2)
    xs = np.asarray(
        af.simulate(attention_flow(3.0, V=V), x0, TERMINAL_TS, rtol=1e-8, atol=1e-10).xs
    )
    spread = np.sqrt(np.mean(np.sum((xs - xs.mean(axis=1, keepdims=True)) ** 2, -1), -1))
    assert np.isclose(spread[-1], c.spread[0, 0], rtol=1e-4)
    assert 0.45 < np.log(spread[3] / spread[4]) / 10 < 0.55
    k = np.nonzero(spread >= 1e-3 * spread[0])[0].max()
    assert c.terminal_time[0, 0] == TERMINAL_TS[k] == 10
    np.testing.assert_allclose(c.final[0], xs[k], atol=1e-6)
    direction = np.linalg.svd(xs[k] - xs[k].mean(axis=0))[2][0]
    assert abs(direction[axis]) > 0.995
    assert np.isclose(abs(direction[axis]), c.alignment[0, 0, 0], atol=1e-6)


# --- 8. bad input -----------------------------------------------------------------------------

X4 = np.array([[1.0, 0.2], [0.3, 0.5], [-0.4, 0.9], [0.1, -1.2]])
STUDY = dict(n=4, d=2, betas=[1.0], ts=[0.0, 1.0], samples=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(Q=np.array([[np.nan, 0], [0, 1.0]])), "Q must hold only finite numbers"),
        (dict(K=np.array([[1.0, 0], [np.inf, 1.0]])), "K must hold only finite numbers"),
        (dict(V=np.array([[1.0, 0], [0, -np.inf]])), "V must hold only finite numbers"),
        (dict(V=np.eye(3)), "Q, K, V must have d = 2 columns; got 3"),
        (dict(V=np.ones((2, 3))), re.escape("V must have shape (3, 3)")),
        (dict(Q=np.ones((3, 2)), K=np.ones((2, 2))), re.escape("K must have shape (3, 2)")),
        (dict(betas=[1.0, 0.0]), "betas must be a non-empty 1-D array of finite values > 0"),
        (dict(betas=[-1.0]), "betas must be a non-empty 1-D array of finite values > 0"),
        (dict(ts=[0.5, 1.0]), "ts must start at 0"),
        (dict(ts=[0.0, 1.0, 1.0]), "ts must be a strictly increasing"),
        (dict(ts=[0.0, 2.0, 1.0]), "ts must be a strictly increasing"),
        (dict(init="uniform"), "init must be one of 'ball', 'gaussian'"),
        (dict(n=1), "n must be an integer >= 2"),
        (dict(d=1), "d must be an integer >= 2"),
        (dict(samples=0), "samples must be an integer >= 1"),
        (dict(max_time=0.0), "max_time must be a positive number"),
        (dict(rtol=-1e-8), "rtol must be a positive number"),
    ],
)
def test_concentration_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        concentration(key=jax.random.key(0), **(STUDY | kwargs))


@pytest.mark.parametrize(
    "x, kwargs, match",
    [
        (X4[:, 0], {}, r"x must have shape \(\*, \*\)"),
        (X4[None], {}, r"x must have shape \(\*, \*\)"),
        (np.ones((0, 2)), {}, r"x must have shape \(n, d\) with n, d >= 1"),
        (np.where(X4 > 0.9, np.nan, X4), {}, "x must hold only finite numbers"),
        (X4, dict(Q=np.ones((3, 2)), K=np.ones((2, 2))), re.escape("K must have shape (3, 2)")),
        (X4, dict(V=np.ones((2, 3))), re.escape("V must have shape (3, 3)")),
        (X4, dict(tol=0.0), "tol must be a positive number"),
        (X4, dict(max_time=-1.0), "max_time must be a positive number"),
        (X4, dict(max_steps=0), "max_steps must be an integer >= 1"),
        (X4, dict(atol=np.inf), "atol must be a positive number"),
    ],
)
def test_limit_map_rejects_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        limit_map(x, **kwargs)
    with pytest.raises(ValueError, match=match.replace("x must", "x0 must")):
        pushforward(x, **kwargs)


@pytest.mark.parametrize("name", ["Q", "K", "V"])
def test_limit_map_rejects_non_finite_weights(name):
    bad = {name: np.array([[np.nan, 0.0], [0.0, 1.0]])}
    with pytest.raises(ValueError, match=f"{name} must hold only finite numbers"):
        limit_map(X4, **bad)


@pytest.mark.parametrize("name", ["Q", "V"])
def test_limit_map_rejects_weights_of_another_width(name):
    with pytest.raises(ValueError, match="must have shape"):
        limit_map(X4, **{name: np.eye(3)})


def test_limit_not_reached_names_v_spectrum():
    V = np.diag([1.0, -0.5])  # tokens run away along y: the flow need not come to rest
    with pytest.raises(
        LimitNotReached,
        match=r"solver failed .*smallest real part of V's "
        r"eigenvalues -0\.5 \(<= 0: the flow need not come to rest\)",
    ):
        limit_map(X4, V=V, max_steps=10)
    with pytest.raises(
        LimitNotReached,
        match=r"not at rest by max_time .*max_time = 0\.1.*"
        r"eigenvalues 0\.5",
    ):
        limit_map(X4, V=D, max_time=0.1)
    with pytest.raises(LimitNotReached, match="V = I"):
        pushforward(X4, max_time=0.1)
    # The sweep form never raises: the failure is data.
    limit = hardmax_limit(jnp.asarray(X4), V=V, max_steps=10)
    assert int(limit.status) == 2


def test_concentration_records_a_limit_that_is_not_reached():
    with pytest.warns(af.studies.SweepFailureWarning, match="have no limit map"):
        c = concentration(
            # the static configuration of the terminal-phase test: no compile
            key=jax.random.key(0),
            n=8,
            d=2,
            betas=[3.0],
            ts=TERMINAL_TS,
            V=D,
            samples=3,
            max_time=0.05,
            progress=False,
        )
    assert np.all(c.limit_status == 1) and np.all(c.status == 0)
    assert np.isnan(c.distance).all() and np.isnan(c.closest).all() and not c.resolved.any()
    assert np.isnan(c.slope) and np.isnan(c.exponent)


# --- 9. float32 -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SWITCHING))
def test_limit_map_float32(name, switching_references):
    V, x0, _ = SWITCHING[name]
    x32 = jnp.asarray(x0, jnp.float32)
    T = limit_map(x32, V=jnp.asarray(V, jnp.float32))
    assert T.dtype == jnp.float32 and jnp.all(jnp.isfinite(T))
    bound = limit_bound(x0, V, default_tol(jnp.float32)) + 10 * tol(jnp.float32)
    np.testing.assert_allclose(T, switching_references[name].limit, rtol=0, atol=bound)


def test_concentration_float32_matches_float64_recomputation():
    key, betas, ts = jax.random.key(2), [3.0, 30.0], np.array([0.0, 0.5, 2, 8])
    c = concentration(
        key=key, n=8, d=2, betas=betas, ts=ts, samples=2, dtype=jnp.float32, progress=False
    )
    assert c.limits.dtype == c.final.dtype == c.x0.dtype == np.float32
    assert c.ts.dtype == c.betas.dtype == np.float32
    assert np.all(c.status == 0) and np.all(c.limit_status == 0)
    for s in range(2):
        x32 = initial_tokens(key, s, n=8, d=2, dtype=jnp.float32)
        x64 = np.asarray(x32, np.float64)  # the same tokens, exactly
        T = limit_map(x64, tol=1e-10, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(
            c.limits[s], T, rtol=0, atol=limit_bound(x64, None, default_tol(jnp.float32))
        )
        for b, beta in enumerate(betas):
            xs = af.simulate(attention_flow(beta), x64, ts, rtol=1e-10, atol=1e-12).xs
            expected = [w2(x, T) for x in xs]
            np.testing.assert_allclose(c.distance[b, s], expected, rtol=0, atol=3e-3)


def test_pushforward_float32_keeps_distinct_limits():
    x = initial_tokens(jax.random.key(0), 0, n=100, d=2)
    p64 = pushforward(x)
    p32 = pushforward(x.astype(jnp.float32))
    assert p32.atoms.dtype == np.float32
    assert len(p32.atoms) == len(p64.atoms)
    np.testing.assert_allclose(p32.weights, p64.weights)


def test_initial_tokens_rejects_unknown_init():
    with pytest.raises(ValueError, match="init must be one of"):
        initial_tokens(jax.random.key(0), 0, n=4, d=2, init="gausian")


def test_limit_map_tight_tol_with_default_solver_tolerances():
    x = np.asarray(initial_tokens(jax.random.key(0), 0, n=10, d=2, dtype=jnp.float32), float)
    lead = leaders(x)
    T = limit_map(x, tol=1e-9)
    assert np.linalg.norm(T[:, None] - x[lead][None], axis=-1).min(axis=1).max() < 1e-8


# --- 10. NoNorm(centered=True) ----------------------------------------------------------------


def centered_softmax(beta, Q, K, V, x):
    """`sum_j A_ij V (x_j - x_i)` with softmax weights, in NumPy."""
    L = beta * (x @ Q.T) @ (x @ K.T).T
    A = np.exp(L - L.max(axis=1, keepdims=True))
    A /= A.sum(axis=1, keepdims=True)
    return np.einsum("ij,ijd->id", A, (x[None] - x[:, None]) @ V.T)


def test_centered_nonorm_softmax():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3))
    Q, K, V = rng.normal(size=(2, 3)), rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    kernel = Softmax(2.0, Q, K, V)
    centered = NoNorm(kernel, centered=True)(0.0, x)
    np.testing.assert_allclose(centered, NoNorm(kernel)(0.0, x) - x @ V.T, atol=1e-12)
    np.testing.assert_allclose(centered, centered_softmax(2.0, Q, K, V, x), atol=1e-12)
    np.testing.assert_allclose(attention_flow(2.0, Q, K, V)(0.0, x), centered, atol=0)
    plain = NoNorm(Softmax(2.0), centered=True)(0.0, x)  # V = None: the identity
    np.testing.assert_allclose(plain, NoNorm(Softmax(2.0))(0.0, x) - x, atol=1e-12)
    x32 = jnp.asarray(x, jnp.float32)
    assert NoNorm(Softmax(2.0), centered=True)(0.0, x32).dtype == jnp.float32


def test_centered_hardmax_splits_ties():
    """A token at the origin ties with every token (all its logits are 0): it moves toward
    their mean; the others toward their unique argmax."""
    x = np.array([[0.0, 0.0], [1.0, 0.5], [-0.5, 1.0], [0.2, -1.5]])
    v = np.asarray(hardmax_flow(V=D)(0.0, x))
    np.testing.assert_allclose(v[0], D @ x.mean(axis=0), atol=1e-15)
    top = np.argmax(x @ x.T, axis=1)
    np.testing.assert_allclose(v[1:], (x[top] - x)[1:] @ D.T, atol=1e-15)
    np.testing.assert_allclose(v, NoNorm(Hardmax(V=D))(0.0, x) - x @ D.T, atol=1e-15)


@pytest.mark.parametrize(
    "kernel",
    [Unnormalized(1.0), MultiHead((Softmax(1.0), Softmax(2.0)))],
    ids=["unnormalized", "multihead"],
)
def test_centered_nonorm_rejects_other_kernels(kernel):
    with pytest.raises(ValueError, match="centered=True needs a row-stochastic single-head"):
        NoNorm(kernel, centered=True)
    NoNorm(kernel)  # the plain form takes them


def test_centered_must_be_a_bool():
    with pytest.raises(ValueError, match="centered must be True or False"):
        NoNorm(Softmax(1.0), centered=1)


def test_distances_on_two_devices_equal_one_device(tmp_path):
    """The distances are computed inside the sweep (on CPU through a host callback): the same
    bits when the items are sharded over two devices as on one."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import jax
        jax.config.update("jax_enable_x64", True)
        import numpy as np
        from attnflow.concentration import concentration
        assert len(jax.devices()) == 2
        ts = np.concatenate([[0.0], np.geomspace(0.1, 10, 5)])
        kw = dict(key=jax.random.key(0), n=6, d=2, betas=[4.0, 16.0], ts=ts, samples=3)
        for devices in (1, 2):
            result = concentration(**kw, devices=devices, progress=False)
            np.save("{tmp_path}/distance-%d.npy" % devices, result.distance)
            np.save("{tmp_path}/alignment-%d.npy" % devices, result.alignment)
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    for name in ("distance", "alignment"):
        one, two = (np.load(tmp_path / f"{name}-{k}.npy") for k in (1, 2))
        assert np.isfinite(one).all()
        np.testing.assert_array_equal(one, two, err_msg=name)


def test_concentration_as_a_labelled_dataset(tmp_path):
    xarray = pytest.importorskip("xarray")
    V = np.diag([1.0, 0.5])
    result = concentration(
        key=jax.random.key(0),
        n=4,
        d=2,
        betas=[4.0],
        ts=[0.0, 0.5, 1.0],
        V=V,
        samples=2,
        progress=False,
    )
    dataset = result.to_xarray()
    assert dataset["distance"].dims == ("beta", "sample", "t")
    np.testing.assert_array_equal(dataset["distance"], result.distance)
    np.testing.assert_array_equal(dataset["eigenvalues_real"], result.eigenvalues.real)
    assert float(dataset["slope"]) is not None and dataset.attrs["study"] == "concentration"
    dataset.to_netcdf(tmp_path / "c.nc")
    with xarray.open_dataset(tmp_path / "c.nc") as back:
        xarray.testing.assert_identical(back.load(), dataset)
