"""Smooth objectives for gradient-based searches through the flow: differentiable counterparts
of the sharp statistics of `attnflow.analysis` (which count or threshold, and so have zero
gradient almost everywhere), tending to them as `temperature -> 0`."""

import jax
import jax.numpy as jnp

from .._checks import (
    SOLVED_ATOL,
    as_float_array,
    check_on_sphere,
    check_shape,
    check_times,
    positive_number,
)
from .._types import Array, Float


def _tokens(x, name: str = "x") -> Array:
    x = as_float_array(x, name)
    if x.ndim < 2 or x.size == 0:
        raise ValueError(
            f"{name} must have shape (..., n, d) with every size >= 1; got shape {x.shape}"
        )
    return x


def _temperature(delta: float, temperature: float | None) -> tuple[float, float]:
    delta = positive_number(delta, "delta", "the cluster radius 1 - <x_i, x_j>")
    if delta > 2:
        raise ValueError(f"delta must be at most 2 (1 - <x_i, x_j> lies in [0, 2]); got {delta}")
    if temperature is None:
        return delta, delta / 4
    return delta, positive_number(temperature, "temperature", "the smoothing width")


def _log_closeness(x: Array, delta: float, temperature: float) -> Array:
    """`log c_ij`, `c_ij = sigma((<x_i, x_j> - (1 - delta)) / temperature)`, shape `(..., n, n)`."""
    gram = jnp.einsum("...id,...jd->...ij", x, x)
    return jax.nn.log_sigmoid((gram - (1 - delta)) / temperature)


def soft_cluster_count(
    x: Float[Array, "*batch n d"], delta: float = 1e-3, temperature: float | None = None
) -> Float[Array, "*batch"]:
    """A smooth count of the clusters of the tokens `x` (shape `(..., n, d)`, on the sphere).

    `N(X) = sum_i 1 / sum_j c_ij`, with `c_ii = 1` and, for `i != j`, the soft closeness
    `c_ij = sigma((<x_i, x_j> - (1 - delta)) / temperature)` (`sigma` the logistic function).

    Why it counts: if the tokens form `k` groups, each of diameter well below `delta` and far
    from the others, then `c_ij -> 1[i, j in the same group]` as `temperature -> 0`, so
    `sum_j c_ij = |C(i)|`, the size of the group of `i`, and `sum_i 1 / |C(i)| = k`. In general
    it lies between 1 (all tokens together) and `n` (all apart), and is differentiable in `x`
    everywhere; the sharp count is `attnflow.analysis.count_clusters`. `temperature` defaults
    to `delta / 4`; a larger one gives gradients from farther away.

    `x` must be finite and on the unit sphere (rows of norm 1 within 1e-3, more than a solve
    drifts): the count reads closeness from `<x_i, x_j>`, which means nothing off the sphere
    (`10 x` counted 1.5 clusters for 2.3). `ValueError` naming it otherwise; under `jit` the
    check is an `eqx.error_if`, which `search` reports as the stop of the search.
    """
    x = check_on_sphere(_tokens(x), "x", atol=SOLVED_ATOL)
    delta, temperature = _temperature(delta, temperature)
    closeness = jnp.exp(_log_closeness(x, delta, temperature))
    closeness = jnp.where(jnp.eye(x.shape[-2], dtype=bool), 1, closeness)
    return jnp.sum(1 / jnp.sum(closeness, axis=-1), axis=-1)


def soft_collapse_time(
    ts: Float[Array, " T"],
    xs: Float[Array, "T n d"],
    delta: float = 1e-3,
    temperature: float | None = None,
) -> Float[Array, ""]:
    """A smooth time at which all the tokens have gathered within `delta` of each other.

    `T_c = ts[0] + integral over [ts[0], ts[-1]] of (1 - c(t)) dt`, where
    `c(t) = prod_{i < j} c_ij(t)` is the soft indicator that every pair is close
    (`c_ij` as in `soft_cluster_count`), and the integral is the trapezoidal rule on the save
    times `ts` of the trajectory `xs` (shape `(T, n, d)`).

    Sharp limit: if `c` jumps once from 0 to 1 at the collapse time `t*` (the first time all
    pairs satisfy `<x_i, x_j> >= 1 - delta`, as `attnflow.crossing_time` finds for the
    equiangular reduction), then `T_c -> t*` up to the resolution of `ts` (the trapezoidal
    rule places it mid-interval). A run that never collapses gives `ts[-1]`.

    `ts`: at least two finite, increasing times; `xs`: finite, on the unit sphere (as in
    `soft_cluster_count`). `ValueError` naming the argument otherwise.
    """
    ts = as_float_array(ts, "ts")
    xs = _tokens(xs, "xs")
    check_shape(ts, "ts", (None,))
    if ts.shape[0] < 2:
        raise ValueError(f"ts must hold at least two save times; got shape {ts.shape}")
    if xs.ndim != 3 or xs.shape[0] != ts.shape[0]:
        raise ValueError(
            f"xs must have shape (T, n, d) with T = len(ts) = {ts.shape[0]}; got shape {xs.shape}"
        )
    xs = check_on_sphere(xs, "xs", atol=SOLVED_ATOL)
    ts = check_times(ts)
    delta, temperature = _temperature(delta, temperature)
    n = xs.shape[-2]
    pairs = jnp.triu(jnp.ones((n, n), bool), 1)
    log_all = jnp.sum(jnp.where(pairs, _log_closeness(xs, delta, temperature), 0), axis=(-2, -1))
    apart = 1 - jnp.exp(log_all)
    return ts[0] + jnp.sum((apart[1:] + apart[:-1]) * jnp.diff(ts)) / 2


def trajectory_loss(pred, target) -> Float[Array, ""]:
    """Mean squared distance between two trajectories: `mean_{t, i} |pred_i(t) - target_i(t)|^2`.

    `pred` and `target` are arrays of the same shape `(..., n, d)` (e.g. `(T, n, d)`) or
    `attnflow.Trajectory` objects (their `.xs` are compared). The loss `fit_trajectory`
    minimizes; 0 exactly when the trajectories agree at every save time.

    No size may be 0 (the mean of nothing is NaN). Non-finite entries are not refused: a
    prediction whose flow failed gives a non-finite loss, which is how `fit_trajectory` and
    `search` recognize and reject that step.
    """
    pred, target = (getattr(a, "xs", a) for a in (pred, target))
    pred, target = _tokens(pred, "pred"), _tokens(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {pred.shape} and {target.shape}"
        )
    return jnp.mean(jnp.sum((pred - target) ** 2, axis=-1))
