"""Statistics of a configuration of tokens: clustering, cosines, order parameter.

Concrete inputs are checked (finite, tokens on the unit sphere within 1e-3: the statistics
read `<x_i, x_j>` as a cosine); traced ones are not, since sweeps save these statistics inside
compiled code, where a failed sample's NaN state is recorded in its status, not raised.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .._checks import (
    SOLVED_ATOL,
    as_float_array,
    check_delta,
    check_finite,
    check_on_sphere,
    is_traced,
    positive_int,
)
from .._types import Angles, Points


def _points(x) -> Array:
    x = as_float_array(x, "x")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(
            f"x must have shape (n, d) with n >= 2 tokens and d >= 1; got shape {x.shape}"
        )
    return x if is_traced(x) else check_on_sphere(x, "x", atol=SOLVED_ATOL)


def close_pairs(x: Points, delta: float = 1e-3) -> Bool[Array, "n n"]:
    """The graph `<x_i, x_j> >= 1 - delta` (with the diagonal)."""
    x = _points(x)
    delta = check_delta(delta)
    return x @ x.T >= 1 - delta


def pair_fraction(x: Points, delta: float = 1e-3) -> Float[Array, ""]:
    """The fraction of pairs `i != j` with `<x_i, x_j> >= 1 - delta` (GLPR Fig. 3's statistic),
    in the dtype of `x` (float32 tokens give a float32 fraction, also with x64 on)."""
    x = _points(x)
    close = close_pairs(x, delta)
    n = close.shape[0]
    return ((jnp.sum(close) - jnp.trace(close)) / (n * (n - 1))).astype(x.dtype)


def count_clusters(x: Points, delta: float = 1e-3) -> Int[Array, ""]:
    """The number of connected components of the graph `<x_i, x_j> >= 1 - delta`.

    Min-label propagation until nothing changes (at most `n` rounds): jit- and vmap-able.
    """
    close = close_pairs(x, delta)
    n = close.shape[0]

    def spread(state):
        labels, _ = state
        new = jnp.min(jnp.where(close, labels[None, :], n), axis=1)
        return new, jnp.any(new != labels)

    labels, _ = jax.lax.while_loop(lambda s: s[1], spread, (jnp.arange(n), jnp.array(True)))
    return jnp.sum(labels == jnp.arange(n))


def cosine_histogram(
    x: Points, bins: int = 50
) -> tuple[Float[Array, " bins"], Float[Array, " bins+1"]]:
    """Histogram (as a density on `[-1, 1]`) of the pairwise cosines `<x_i, x_j>`, `i < j`.

    Returns `(density, edges)`, as `numpy.histogram(..., density=True)` does.
    """
    x = _points(x)
    bins = positive_int(bins, "bins")
    n = x.shape[0]
    i, j = jnp.triu_indices(n, k=1)
    cosines = jnp.clip(jnp.sum(x[i] * x[j], axis=-1), -1, 1)
    return jnp.histogram(cosines, bins=bins, range=(-1.0, 1.0), density=True)


def order_parameter(theta: Angles) -> Float[Array, ""]:
    """Kuramoto order parameter `r = |(1/n) sum_j exp(i theta_j)|`, in `[0, 1]`."""
    theta = as_float_array(theta, "theta")
    if theta.ndim != 1 or theta.shape[0] < 1:
        raise ValueError(f"theta must be a vector of n >= 1 angles; got shape {theta.shape}")
    if not is_traced(theta):
        theta = check_finite(theta, "theta")
    return jnp.hypot(jnp.mean(jnp.cos(theta)), jnp.mean(jnp.sin(theta)))
