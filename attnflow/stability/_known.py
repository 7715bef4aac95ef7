"""`known_results`: the linear stability results of docs/science.md, recomputed and checked."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_beta, positive_int
from .._deprecated import default_key
from ..analysis import check_equiangular, equiangular_speed_over_gap
from ..fields import KINDS
from ..sphere import uniform
from ._fixed_points import _log_max, classify_fixed_point, find_fixed_points


class KnownResult(eqx.Module):
    """One result: what theory predicts, what attnflow computes, and whether they agree."""

    name: str = eqx.field(static=True)
    predicted: str = eqx.field(static=True)
    computed: str = eqx.field(static=True)
    holds: bool = eqx.field(static=True)


def cluster(n: int, d: int, dtype=None) -> jax.Array:
    """`n` tokens at the north pole `e_{d-1}` of `S^{d-1}`: the single cluster."""
    n, d = positive_int(n, "n"), positive_int(d, "d")
    return jnp.zeros((n, d), dtype or float).at[:, -1].set(1)


def simplex(n: int, d: int, dtype=None) -> jax.Array:
    """The regular simplex: `n` unit tokens of `R^d` (`2 <= n <= d + 1`) with every pairwise
    inner product `-1/(n - 1)`, spanning the first `n - 1` coordinates; their sum is 0."""
    if not 2 <= n <= d + 1:
        raise ValueError(f"a regular simplex of n tokens needs 2 <= n <= d + 1; got n={n}, d={d}")
    centered = np.eye(n) - 1 / n  # rank n - 1: coordinates in an orthonormal basis of its span
    _, s, vt = np.linalg.svd(centered)
    x = centered @ vt[: n - 1].T
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return jnp.asarray(np.pad(x, ((0, 0), (0, d - n + 1))), dtype or float)


def simplex_rate(beta: float, n: int, kind: str = "SA") -> float:
    """The eigenvalue of the regular simplex along its symmetric direction, from the equiangular
    ODE `drho/dt = F(rho)` (docs/science.md section 5) with `F(rho*) = 0` at `rho* = -1/(n-1)`.

    Moving every token by `s w` (`w` orthogonal to the simplex) keeps the tokens equiangular
    with `rho - rho* = s^2 (1 - rho*) + O(s^4)`, so `ds/dt = (F'(rho*) / 2) s`: the eigenvalue is
    `F'(rho*) / 2`, which is `n e^{beta rho*} / (e^beta + (n - 1) e^{beta rho*})` for SA and
    `e^{beta rho*}` for USA: positive, so the simplex is unstable.
    """
    check_equiangular(n, kind)
    beta = float(check_beta(beta))
    rate = jax.grad(lambda rho: (1 - rho) * equiangular_speed_over_gap(rho, beta, n, kind))
    return float(rate(-1.0 / (n - 1))) / 2


def known_results(
    beta: float = 1.0,
    n: int = 4,
    d: int = 4,
    kind: str = "SA",
    *,
    guesses: int = 64,
    key: jax.Array | None = None,
) -> list[KnownResult]:
    """Check the stability results of docs/science.md and GLPR against attnflow's own computations.

    1. The single cluster is a sink modulo its `d - 1` rotations, every other eigenvalue `-1`
       (SA) or `-e^beta` (USA): at consensus `dv_i/dt = c (mean_j v_j - v_i)` to first order.
    2. The regular simplex (`n <= d`) is an equilibrium, and its eigenvalue along the symmetric
       direction equals the linearization of the equiangular ODE there (`simplex_rate`).
    3. At `beta = 0` on the circle (`d = 2`), every equilibrium found from `guesses` random
       starts that is not the cluster (the maximum of the energy) has an unstable direction:
       a strict saddle (GLPR, Lemma A.2).

    Returns one `KnownResult` per check, for a table in a notebook:
    `[(r.name, r.predicted, r.computed, r.holds) for r in known_results(key=key)]`; `key`
    draws the random starts of check 3 (required; the call without it is deprecated and uses
    `PRNGKey(0)`).

    Computed in JAX's default float. For USA, `beta` must leave `e^beta` representable in it
    (`beta` below about 709 in float64, 88 in float32; the Jacobian, of size `beta e^beta`
    before cancellations, a little less): beyond, `ValueError` (from here or from
    `classify_fixed_point`), not a meaningless table.
    """
    n, d = positive_int(n, "n", 2), positive_int(d, "d", 2)
    guesses = positive_int(guesses, "guesses")
    check_equiangular(n, kind)
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be finite and >= 0; got {beta!r}")
    if n > d:
        raise ValueError(
            f"known_results needs n <= d for the simplex's symmetric direction; got n={n}, d={d}"
        )
    x = cluster(n, d)
    if kind == "USA" and not beta < _log_max(x.dtype):
        raise ValueError(
            f"beta must be below log(max float) = {_log_max(x.dtype):.1f} for kind='USA' in "
            f"{x.dtype}: the cluster's eigenvalue -e^beta is not representable; got beta={beta!r}"
        )
    field = KINDS[kind](beta)
    results = []

    sink = -1.0 if kind == "SA" else -math.exp(beta)
    c = classify_fixed_point(field, x)
    error = float(np.max(np.abs(c.eigenvalues - sink)))
    results.append(
        KnownResult(
            "single cluster",
            f"sink modulo {d - 1} rotations, every eigenvalue {sink:.6g}",
            f"{c.type} modulo {c.symmetry_dim} modes, eigenvalues within {error:.1e} of it",
            c.type == "sink" and c.symmetry_dim == d - 1 and error < 1e-6 * max(1, -sink),
        )
    )

    x = simplex(n, d)
    rate = simplex_rate(beta, n, kind)
    c = classify_fixed_point(field, x)
    symmetric = jnp.zeros_like(x).at[:, -1].set(1 / math.sqrt(n))  # s w on every token
    image = jax.jvp(lambda y: field(0.0, y), (x,), (symmetric,))[1]
    along = float(jnp.sum(image * symmetric))
    residual = float(jnp.linalg.norm(image - along * symmetric))
    results.append(
        KnownResult(
            "regular simplex",
            f"equilibrium; symmetric eigenvalue F'(rho*)/2 = {rate:.8g}",
            f"residual {c.residual:.1e}; J w = {along:.8g} w (off by {residual:.1e}); "
            f"{c.type}, unstable dim {c.unstable_dim}",
            c.residual < 1e-8
            and abs(along - rate) < 1e-6
            and residual < 1e-6
            and bool(np.min(np.abs(c.eigenvalues - rate)) < 1e-6),
        )
    )

    key = default_key(key, "known_results", jax.random.PRNGKey(0))
    zero = KINDS[kind](0.0)
    starts = uniform(key, guesses * n, 2).reshape(guesses, n, 2)
    found = find_fixed_points(zero, starts, modulo="rotations+permutations")
    types = [classify_fixed_point(zero, p) for p in found.points]
    clustered = [float(np.min(p @ p.T)) > 1 - 1e-6 for p in found.points]
    saddles = [t.unstable_dim >= 1 for t, c in zip(types, clustered, strict=True) if not c]
    sinks = [t.type == "sink" for t, c in zip(types, clustered, strict=True) if c]
    results.append(
        KnownResult(
            "beta = 0, d = 2 (Lemma A.2)",
            "every equilibrium but the cluster has an unstable direction",
            f"{sum(saddles)} of {len(saddles)} others unstable; cluster found "
            f"{len(sinks)} time(s), sink: {all(sinks)}",
            all(saddles) and len(sinks) == 1 and all(sinks) and len(saddles) > 0,
        )
    )
    return results
