"""Wasserstein distances between empirical measures and densities (docs/science.md sections 4-5).

The mean-field limit is measured in Wasserstein distance: the empirical measure `mu_n(t)` of `n`
tokens stays close to the solution `mu(t)` of the continuity equation,
`W_1(mu_n(t), mu(t)) <= e^{Ct} W_1(mu_n(0), mu(0))` ([R], Rigollet, arXiv 2512.01868).

- `wasserstein_circle`: exact `W_1` and `W_2` on the circle (geodesic distance), between
  empirical measures (angles) and densities on a uniform grid, through quantile functions.
- `wasserstein`: any dimension, point clouds on the sphere `S^{d-1}` (geodesic or chordal
  cost) or in `R^d`, by ott-jax's debiased Sinkhorn divergence.
- `wasserstein_exact`: the exact `W_p` between point clouds by an optimal assignment
  (`assignment`: jit- and vmap-able, SciPy's on CPU, optax's Hungarian algorithm elsewhere).
"""

import functools
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, Float

from .._checks import (
    as_float_array,
    check_finite,
    check_grid,
    check_on_sphere,
    check_value,
    grid_tolerance,
    is_traced,
    positive_int,
    positive_number,
)
from ..sphere import geodesic_distance

COSTS = ("geodesic", "chordal", "euclidean")

_TWO_PI = 2 * math.pi


# ----------------------------------------------------------------------------------------------
# The circle: exact, through quantile functions.
# ----------------------------------------------------------------------------------------------


def _empirical_quantile(angles, name: str, xp):
    """Knots `(t, q)` of the lifted quantile function of the empirical measure of `angles`."""
    angles = check_finite(angles, name, xp)
    n = angles.shape[0]
    s = xp.sort(xp.mod(angles, _TWO_PI))
    # Q(t) = s_i on ((i - 1)/n, i/n]: a staircase, flat pieces joined by vertical jumps.
    t = xp.repeat(xp.arange(n + 1, dtype=angles.dtype) / n, 2)[1:-1]
    return t, xp.repeat(s, 2)


def _grid_quantile(theta, density, name: str, xp):
    """Knots `(t, q)` of the lifted quantile function of a piecewise-constant density on the
    cells `[theta_k - h/2, theta_k + h/2]`, `h = 2 pi / M`: the CDF is piecewise linear, so its
    inverse is the polyline through `(CDF(e_k), e_k)` at the cell edges `e_k`."""
    M = theta.shape[0]
    h = _TWO_PI / M
    tol = grid_tolerance(theta.dtype)
    theta, density = check_grid(theta, density, (f"{name}[0] (theta)", f"{name}[1] (density)"), xp)
    mass = xp.sum(density) * h
    density = check_value(
        density,
        xp.abs(mass - 1) > tol,
        f"{name}[1] (density) must integrate to 1 within {tol:g} (rectangle rule, "
        f"h * sum(density) with h = 2 pi / M)",
        lambda: f"; it integrates to {float(mass):.8g}",
    )
    cells = xp.maximum(density, 0)
    cdf = xp.concatenate([xp.zeros(1, cells.dtype), xp.cumsum(cells)])
    cdf = cdf / cdf[-1]
    e0 = theta[0] - h / 2
    e0 = e0 - _TWO_PI * xp.floor(e0 / _TWO_PI)  # the lift starting in [0, 2 pi)
    return cdf, e0 + h * xp.arange(M + 1, dtype=theta.dtype)


def _circle_measure(measure, name: str):
    """`measure` (see `wasserstein_circle`) as its kind and arrays, shapes checked."""
    if isinstance(measure, tuple):
        if len(measure) != 2:
            raise ValueError(
                f"{name}: a tuple is read as (theta, density) on a uniform grid; got a tuple "
                f"of length {len(measure)}"
            )
        theta = as_float_array(measure[0], f"{name}[0] (theta)")
        density = as_float_array(measure[1], f"{name}[1] (density)")
        if theta.ndim != 1 or theta.shape[0] < 1 or density.shape != theta.shape:
            raise ValueError(
                f"{name} = (theta, density): theta and density must be 1-D arrays of the same "
                f"length M >= 1 (grid cell centers and values); got shapes {theta.shape} and "
                f"{density.shape}"
            )
        return "grid", (theta, density)
    angles = as_float_array(measure, name)
    if angles.ndim != 1 or angles.shape[0] < 1:
        raise ValueError(
            f"{name} must be a 1-D array of n >= 1 angles (an empirical measure; points "
            f"(cos, sin) convert by attnflow.sphere.to_angles) or a tuple (theta, density); "
            f"got shape {angles.shape}"
        )
    return "angles", (angles,)


def _quantile_knots(kind, arrays, name, dtype):
    """The knots `(t, q)` of the lifted quantile function, repeated at `t = 1` up to a power of
    two (at least 64) so that measures of nearby sizes share one compiled `_circle_distance`
    (the repeats add pieces of length 0). Concrete arrays are processed in NumPy (no
    compilation for each new size), traced ones in `jax.numpy`."""
    xp = jnp if is_traced(arrays) else np
    arrays = tuple(xp.asarray(a).astype(dtype) for a in arrays)
    quantile = _grid_quantile if kind == "grid" else _empirical_quantile
    t, q = quantile(*arrays, name, xp)
    extra = max(64, 1 << (t.shape[0] - 1).bit_length()) - t.shape[0]
    t = xp.concatenate([t, xp.ones(extra, t.dtype)])
    q = xp.concatenate([q, xp.full(extra, q[-1], q.dtype)])
    return jnp.asarray(t), jnp.asarray(q)


def _evaluate(r, t, q):
    """The polyline through the knots `(t, q)` (`t` non-decreasing, from 0 to 1) at `r` in
    `[0, 1)`, off its vertical pieces (where it is single-valued)."""
    j = jnp.clip(jnp.searchsorted(t, r, side="right") - 1, 0, t.shape[0] - 2)
    t0, t1 = t[j], t[j + 1]
    width = t1 - t0
    w = jnp.where(width > 0, (r - t0) / jnp.where(width > 0, width, 1), 0)
    return q[j] + w * (q[j + 1] - q[j])


def _evaluate_lifted(u, t, q):
    """The lifted quantile function `Q(u) = Q(u - k) + 2 pi k`, `k = floor(u)`, at any real `u`."""
    k = jnp.floor(u)
    return _evaluate(u - k, t, q) + _TWO_PI * k


def _segment_mean(a, b, p: int):
    """`int_0^1 |a + (b - a) s|^p ds`, exactly, for `p` in {1, 2}."""
    if p == 2:
        return (a * a + a * b + b * b) / 3
    crossing = a * b < 0
    total = jnp.abs(a) + jnp.abs(b)
    # A sign change: two triangles, of areas a^2 / (2 (|a| + |b|)) and b^2 / (2 (|a| + |b|)).
    return jnp.where(crossing, (a * a + b * b) / (2 * jnp.where(crossing, total, 1)), total / 2)


def _shifted_cost(alpha, knots_mu, knots_nu, p: int):
    """`D(alpha) = int_0^1 |Q_mu(t) - Q_nu(t + alpha)|^p dt`, exactly: both quantile functions
    are linear between the merged breakpoints, so their difference is linear on each piece;
    its end values come exactly from two interior points (no one-sided limits needed)."""
    t_mu, q_mu = knots_mu
    t_nu, q_nu = knots_nu
    u = jnp.sort(jnp.concatenate([t_mu, jnp.clip(jnp.mod(t_nu - alpha, 1), 0, 1)]))
    length = jnp.diff(u)
    r1 = u[:-1] + length / 4
    r3 = u[:-1] + 3 * length / 4
    d1 = _evaluate(r1, t_mu, q_mu) - _evaluate_lifted(r1 + alpha, t_nu, q_nu)
    d3 = _evaluate(r3, t_mu, q_mu) - _evaluate_lifted(r3 + alpha, t_nu, q_nu)
    a = (3 * d1 - d3) / 2  # the linear difference at the ends of the piece
    b = (3 * d3 - d1) / 2
    return jnp.sum(length * _segment_mean(a, b, p))


def _golden_minimum(f, lo: float, hi: float, dtype):
    """The minimum of a convex function `f` on `[lo, hi]` by golden-section search, run until
    the bracket is below `eps * (hi - lo)` (a fixed number of steps: jit- and vmap-able)."""
    eps = float(jnp.finfo(dtype).eps)
    ratio = (math.sqrt(5) - 1) / 2
    steps = math.ceil(math.log(eps) / math.log(ratio))
    a, b = jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
    c, d = b - ratio * (b - a), a + ratio * (b - a)

    def step(_, state):
        a, b, c, d, fc, fd = state
        left = fc <= fd  # the minimum is in [a, d]
        a, b = jnp.where(left, a, c), jnp.where(left, d, b)
        c_new = jnp.where(left, b - ratio * (b - a), d)
        d_new = jnp.where(left, c, a + ratio * (b - a))
        x = jnp.where(left, c_new, d_new)  # the one new point
        fx = f(x)
        fc, fd = jnp.where(left, fx, fd), jnp.where(left, fc, fx)
        return a, b, c_new, d_new, fc, fd

    state = jax.lax.fori_loop(0, steps, step, (a, b, c, d, f(c), f(d)))
    return jnp.minimum(state[4], state[5])


def wasserstein_circle(mu, nu, p: Literal[1, 2] = 1) -> Float[Array, ""]:
    r"""The exact Wasserstein distance `W_p(mu, nu)` on the circle, `p` = 1 or 2, for the
    geodesic distance `d(x, y) = min_k |x - y + 2 pi k|` (angles mod `2 pi`).

    Arguments:
        mu, nu: each a probability measure on the circle, either

            - an empirical measure: a 1-D array of `n >= 1` angles (radians, any range, equal
              weights `1/n`); points `(cos, sin)` convert by `attnflow.sphere.to_angles`;
            - a density on a uniform grid: a tuple `(theta, density)` of 1-D arrays of length
              `M`, `theta` the cell centers `theta_0 + 2 pi k / M` (as `CircleDensity.theta`,
              `2 pi k / M`) and `density` the values, non-negative, integrating to 1 by the
              rectangle rule (`h sum(density) = 1`, `h = 2 pi / M`) within `1e-6` (float32:
              `3.5e-4`); read as constant on each cell `[theta_k - h/2, theta_k + h/2]` (a
              second-order reconstruction of a smooth density, as `solve_circle`'s finite
              volumes); entries in `[-1e-6, 0)` (solver rounding) are read as 0 and the mass
              renormalized to 1.
        p: 1 or 2.

    Returns:
        `W_p`, a scalar of the inputs' (promoted) dtype.

    Method (Delon, Salomon, Sobolevski, SIAM J. Appl. Math. 70, 2010; Rabin, Delon, Gousseau,
    J. Math. Imaging Vis. 41, 2011): with `Q` the quantile function (the inverse of the CDF
    from a fixed angle) lifted to the real line by `Q(t + 1) = Q(t) + 2 pi`,

        W_p^p(mu, nu) = min_alpha  int_0^1 |Q_mu(t) - Q_nu(t + alpha)|^p dt,

    (`Q_nu(. + alpha)` is the quantile function of `F_nu - alpha`) and the function of `alpha`
    is convex. For `p = 1` this equals `min_alpha int_0^{2 pi} |F_mu - F_nu - alpha| dtheta`
    (the CDF formula; `alpha` a median of `F_mu - F_nu`); for two empirical measures of `n`
    points it is the best cyclic shift of the sorted assignment. Here both quantile functions
    are polylines (empirical measures: staircases; grid densities: a piecewise-linear CDF), so
    the integral is computed exactly for each `alpha`, and its minimum over `alpha` in
    `[-2, 2]` (which holds it) by golden-section search to the resolution of the dtype: exact
    up to rounding, for every pair of measure kinds. Accuracy: `W_p^p` to a few hundred `eps`
    times `pi^p`; so `W_1` to rounding, while `W_2`, a square root, keeps only half the digits
    where it is near 0 (float32: about `1e-3` absolute, float64 `1e-7`). Cost:
    `O((n + M) log(n + M))` per evaluation of the integral, 75 evaluations in float64 (33 in
    float32); one compilation per dtype, `p` and size bucket (powers of two).

    Jit- and vmap-able (value checks then raise when the compiled code runs), e.g. along a
    trajectory: `jax.vmap(lambda a, r: wasserstein_circle(a, (sol.theta, r)))(angles,
    sol.density)`. Mean-field stability ([R], arXiv 2512.01868, docs/science.md section 4):
    `W_1(mu_n(t), mu(t)) <= e^{Ct} W_1(mu_n(0), mu(0))`.
    """
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2; got {p!r}")
    kind_mu, arrays_mu = _circle_measure(mu, "mu")
    kind_nu, arrays_nu = _circle_measure(nu, "nu")
    dtype = jnp.result_type(*arrays_mu, *arrays_nu)
    knots_mu = _quantile_knots(kind_mu, arrays_mu, "mu", dtype)
    knots_nu = _quantile_knots(kind_nu, arrays_nu, "nu", dtype)
    return _circle_distance(knots_mu, knots_nu, p)


@functools.partial(jax.jit, static_argnames="p")
def _circle_distance(knots_mu, knots_nu, p: int):
    # Both lifts start in [0, 2 pi]: for alpha >= 2, Q_nu(t + alpha) >= 4 pi >= Q_mu(t), and
    # for alpha <= -2 the reverse, so D(alpha) is monotone outside [-2, 2].
    cost = _golden_minimum(
        lambda alpha: _shifted_cost(alpha, knots_mu, knots_nu, p), -2.0, 2.0, knots_mu[0].dtype
    )
    return jnp.maximum(cost, 0) ** (1 / p)


# ----------------------------------------------------------------------------------------------
# Any dimension: point clouds, by Sinkhorn divergence (ott-jax) or exactly by assignment.
# ----------------------------------------------------------------------------------------------


def _pair_cost(x, y, cost: str, p: float):
    """`d(x, y)^p` for one pair of points: the great-circle distance (`attnflow.sphere.
    geodesic_distance`), or the Euclidean distance `|x - y|` ("chordal" on the sphere), with
    finite gradients at `x = y`."""
    if cost == "geodesic":
        return geodesic_distance(x, y) ** p
    sq = jnp.sum((x - y) ** 2, axis=-1)
    if p == 2:
        return sq
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.where(nonzero, sq, 1) ** (p / 2), 0)


@functools.cache
def _ott_cost_class():
    """The ott-jax cost function `c(x, y) = d(x, y)^p` (`d` of `_pair_cost`); defined on first
    use, as ott-jax takes a second to import."""
    from ott.geometry import costs

    @jtu.register_pytree_node_class
    class PowerCost(costs.CostFn):
        def __init__(self, cost: str, p: float):
            self.cost, self.p = cost, p

        def __call__(self, x, y):
            return _pair_cost(x, y, self.cost, self.p)

        def all_pairs(self, x, y):
            return _pair_cost(x[:, None, :], y[None, :, :], self.cost, self.p)

        def tree_flatten(self):
            return (), (self.cost, self.p)

        @classmethod
        def tree_unflatten(cls, aux_data, children):
            return cls(*aux_data)

    return PowerCost


def _point_clouds(x, y, cost: str, p):
    """`x`, `y` checked (shapes, finite, on the sphere for the sphere's costs) and `p`."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(map(repr, COSTS))}; got {cost!r}")
    p = positive_number(p, "p", "the exponent of W_p")
    if p < 1:
        raise ValueError(f"p must be >= 1 (W_p is a distance for p >= 1); got {p!r}")
    x = as_float_array(x, "x")
    y = as_float_array(y, "y")
    for a, name in ((x, "x"), (y, "y")):
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"{name} must have shape (n, d) with n, d >= 1; got shape {a.shape}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be points of the same dimension d; got x of shape {x.shape} and y "
            f"of shape {y.shape}"
        )
    dtype = jnp.result_type(x, y)
    x, y = check_finite(x.astype(dtype), "x"), check_finite(y.astype(dtype), "y")
    if cost != "euclidean":
        hint = f"cost={cost!r} is for points of the sphere, cost='euclidean' for points of R^d"
        x, y = check_on_sphere(x, "x", hint), check_on_sphere(y, "y", hint)
    return x, y, p


def wasserstein(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"],
    *,
    cost: Literal["geodesic", "chordal", "euclidean"] = "geodesic",
    p: float = 2,
    epsilon: float = 1e-2,
    threshold: float = 1e-3,
    max_iterations: int = 5000,
) -> Float[Array, ""]:
    r"""An approximation of the Wasserstein distance `W_p` between the empirical measures of two
    point clouds, by the debiased Sinkhorn divergence (ott-jax).

    Arguments:
        x, y: points `(n, d)` and `(m, d)`, each row of weight `1/n` (`1/m`): on the unit
            sphere `S^{d-1}` for `cost="geodesic"` or `"chordal"`, anywhere in `R^d` for
            `"euclidean"`.
        cost: the ground distance `d`: `"geodesic"` (great-circle, `arccos <x, y>`, computed
            as `2 atan2(|x - y|, |x + y|)`: accurate near 0 and pi, finite gradients),
            `"chordal"` or `"euclidean"` (both `|x - y|`).
        p: the exponent, `>= 1`; the transport cost is `c = d^p`.
        epsilon: the entropic regularization, absolute (in the units of `d^p`; no rescaling).
        threshold, max_iterations: ott-jax's Sinkhorn stopping rule (`threshold` bounds the
            l1 error of the marginals). Not converging raises (an `EquinoxRuntimeError`, also
            under jit): raise `max_iterations` or `epsilon`.

    Returns:
        `S_eps(x, y)^{1/p}`, a scalar of the inputs' dtype, where

            S_eps = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2,
            OT_eps(a, b) = min_P <P, C> + eps KL(P | a (x) b)

        is the Sinkhorn divergence (Genevay, Peyre, Cuturi, AISTATS 2018; Feydy et al.,
        AISTATS 2019), `>= 0`, zero iff the measures are equal (it is clipped at 0 against
        rounding). Its bias: with uniform weights `KL(P | a (x) b) <= log min(n, m)` for any
        plan, and the identity plan gives `OT_eps(x, x) <= eps log n`, so

            -eps (log n + log m) / 2  <=  S_eps - W_p^p  <=  eps log min(n, m),

        and `S_eps -> W_p^p` as `eps -> 0` (for discrete measures with a unique optimal plan,
        exponentially fast; for samples of smooth densities `O(eps^2)`, Chizat et al.,
        NeurIPS 2020). The default `eps = 0.01` on the sphere (costs up to `pi^p`) typically
        underestimates `W_p^p` by `1e-3` to `3e-2` (a few per cent, more for `p = 1` and large
        `n`); lower `epsilon` for accuracy (Sinkhorn then needs more iterations, about
        `1 / epsilon`).

    Jit-compatible (`cost`, `p`, `epsilon`, `threshold`, `max_iterations` are static). For small
    clouds the exact value is `wasserstein_exact`.
    """
    x, y, p = _point_clouds(x, y, cost, p)
    epsilon = positive_number(epsilon, "epsilon", "the entropic regularization")
    threshold = positive_number(threshold, "threshold", "Sinkhorn's l1 marginal error")
    max_iterations = positive_int(max_iterations, "max_iterations")
    return _sinkhorn_distance(x, y, cost, p, epsilon, threshold, max_iterations)


@eqx.filter_jit
def _sinkhorn_distance(x, y, cost, p, epsilon, threshold, max_iterations):
    from ott.geometry import pointcloud
    from ott.tools import sinkhorn_divergence

    dtype = x.dtype
    n, m = x.shape[0], y.shape[0]
    # The weights and epsilon in the points' dtype: ott-jax otherwise mixes float64 into a
    # float32 solve when x64 is on.
    divergence, out = sinkhorn_divergence.sinkhorn_divergence(
        pointcloud.PointCloud,
        x,
        y,
        cost_fn=_ott_cost_class()(cost, p),
        epsilon=jnp.asarray(epsilon, dtype),
        scale_cost=1.0,
        a=jnp.full(n, 1 / n, dtype),
        b=jnp.full(m, 1 / m, dtype),
        solve_kwargs={"threshold": threshold, "max_iterations": max_iterations},
    )
    converged = jnp.all(jnp.stack(out.converged))
    divergence = eqx.error_if(
        divergence,
        ~converged,
        f"Sinkhorn did not converge to threshold = {threshold:g} within max_iterations = "
        f"{max_iterations} at epsilon = {epsilon:g}; raise max_iterations or epsilon",
    )
    return jnp.maximum(divergence, 0) ** (1 / p)


def wasserstein_exact(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"],
    *,
    cost: Literal["geodesic", "chordal", "euclidean"] = "geodesic",
    p: float = 2,
    max_points: int = 2048,
) -> Float[Array, ""]:
    """The exact Wasserstein distance `W_p` between the empirical measures of two point clouds
    `x` `(n, d)` and `y` `(m, d)` (uniform weights).

    Arguments as `wasserstein`. For `n = m` an optimal plan is a permutation (Birkhoff), so
    `W_p^p = min_sigma (1/n) sum_i d(x_i, y_sigma(i))^p`, found by the Hungarian algorithm on
    the cost matrix `d(x_i, y_j)^p` (`assignment`); for `n != m` each point is repeated `L/n`
    (`L/m`) times, `L = lcm(n, m)`, which turns the transport between uniform measures into an
    assignment between `L` atoms of mass `1/L`. Cost `O(L^3)`, with `L <= max_points`. Jit- and
    vmap-able (`cost`, `p`, `max_points` static; value checks then raise when the compiled code
    runs), in the inputs' dtype.

    Returns:
        `W_p`, a scalar of the inputs' dtype.
    """
    x, y, p = _point_clouds(x, y, cost, p)
    size = math.lcm(x.shape[0], y.shape[0])
    if size > positive_int(max_points, "max_points"):
        raise ValueError(
            f"x and y: the exact assignment needs lcm(n, m) = {size} atoms, more than "
            f"max_points = {max_points}; use wasserstein (Sinkhorn) or subsample"
        )
    return _assignment_distance(x, y, cost, p)


@functools.partial(jax.jit, static_argnames=("cost", "p"))
def _assignment_distance(x, y, cost: str, p: float):
    size = math.lcm(x.shape[0], y.shape[0])
    x = jnp.repeat(x, size // x.shape[0], axis=0)
    y = jnp.repeat(y, size // y.shape[0], axis=0)
    costs = _pair_cost(x[:, None], y[None], cost, p)
    return jnp.mean(costs[jnp.arange(size), assignment(costs)]) ** (1 / p)


def assignment(costs: Float[Array, "n n"]) -> Array:
    """The columns `sigma` of an optimal assignment for the square cost matrix `costs`: the
    permutation minimizing `sum_i costs[i, sigma(i)]`. Jit- and vmap-able. On CPU SciPy's
    `linear_sum_assignment` through a host callback (several times faster there than a
    compiled Hungarian loop); on accelerators the Hungarian algorithm of `optax.assignment` in
    the compiled program (the one ott-jax's `tools.unreg.hungarian` uses). With several CPU
    devices in this process (`attnflow.sweep.use_cpu_cores`) the compiled one on the CPU as
    well: devices that wait in host callbacks at once can leave XLA's CPU thread pool no thread
    to finish them (a sweep of `concentration` on 2 CPU devices hung). Processes of a
    multi-process run with one CPU device each (`attnflow.distributed`) keep SciPy."""
    if len(jax.local_devices(backend="cpu")) > 1:
        return _device_assignment(costs)
    return jax.lax.platform_dependent(costs, cpu=_host_assignment, default=_device_assignment)


def _device_assignment(costs):
    rows, columns = optax.assignment.hungarian_algorithm(costs)  # pairs (rows[k], columns[k])
    return jnp.zeros(rows.shape, jnp.int32).at[rows].set(columns.astype(jnp.int32))


def _host_assignment(costs):
    def columns(costs):
        import scipy.optimize

        costs = np.asarray(costs)
        out = np.empty(costs.shape[:-1], np.int32)
        for index in np.ndindex(*costs.shape[:-2]):
            out[index] = scipy.optimize.linear_sum_assignment(costs[index])[1]
        return out

    shape = jax.ShapeDtypeStruct(costs.shape[:-1], jnp.int32)
    return jax.pure_callback(columns, shape, costs, vmap_method="expand_dims")
