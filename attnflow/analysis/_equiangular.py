"""The equiangular reduction: the common cosine `rho(t)` of tokens whose pairwise inner products
are all equal (docs/science.md section 5; Geshkovski et al. Theorem 6.8)."""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import as_float_array, check_beta, check_value
from ..fields import MODELS

# The kinds with a closed-form rate in rho alone (crossing_time), and every equiangular scheme.
KINDS = tuple(name for name, model in MODELS.items() if model.closed_form)
SCHEMES = tuple(name for name, model in MODELS.items() if model.equiangular)


def check_equiangular(n, kind: str, kinds=KINDS) -> None:
    """Raise `ValueError` unless `kind` is one of `kinds` and `n` an integer `>= 2`."""
    if kind not in kinds:
        raise ValueError(f"kind must be one of {', '.join(kinds)}; got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2; got {n!r}")


def _softmax_weights(rho, beta, n: int):
    """`(a, b)`: the softmax weight `a = e^{beta (1 - rho)} b` of a token on itself and `b =
    1 / (e^{beta (1 - rho)} + n - 1)` on each other one, for `n` tokens of common cosine `rho`.

    Both from one log-sum-exp: no overflow for large `beta` (nor `inf * 0` in a gradient, as
    `simplex_rate` takes at `beta = 1e3`), and no cancellation in `a` (`1 - (n-1) b` loses
    digits when `a` is small).
    """
    gap = beta * (1 - rho)
    log_z = jnp.logaddexp(gap, math.log(n - 1))
    return jnp.exp(gap - log_z), jnp.exp(-log_z)


def equiangular_speed_over_gap(rho, beta, n: int, kind: str):
    """`(d rho/dt) / (1 - rho)`, written without overflow for large `beta`.

    SA: `2 (1 + (n-1) rho) / (e^{beta (1 - rho)} + n - 1)`;
    USA: `(2/n) e^{beta rho} (1 + (n-1) rho)`.
    """
    growth = 2 * (1 + (n - 1) * rho)
    if kind == "SA":
        return growth * _softmax_weights(rho, beta, n)[1]
    return growth * jnp.exp(beta * rho) / n


def _rates(u, r, t, beta, n: int, kind: str, alpha):
    """`(du/dt, dr/dt)` for `u = -log(1 - rho)` and the common radius `r`, with `Q = K = V = I`.

    On equiangular directions (cosine `rho`), softmax attention on the directions gives
    `A_i = a theta_i + b sum_{j != i} theta_j` with `b = 1 / (e^{beta (1 - rho)} + n - 1)`,
    `a = e^{beta (1 - rho)} b`. Then `<theta_i, A_i> = a + (n-1) b rho`,
    `abs(A_i)^2 = a^2 + 2 a b (n-1) rho + b^2 (n-1)(1 + (n-2) rho)`, and
    `d rho/dt = 2 b (1 - rho)(1 + (n-1) rho) / s` with the speed factor `s` of the scheme
    (docs/science.md section 2): 1 (SA), `r` (Pre-LN), `r abs(A)` (Peri-LN), `abs(A) / alpha(t)`
    (nGPT); `dr/dt = <theta, A>` (Pre-LN), `<theta, A> / abs(A)` (Peri-LN), 0 otherwise.
    """
    rho = -jnp.expm1(-u)
    if kind == "USA":
        return equiangular_speed_over_gap(rho, beta, n, kind), jnp.zeros_like(r)
    a, b = _softmax_weights(rho, beta, n)
    along = a + (n - 1) * b * rho
    size = jnp.sqrt(a**2 + 2 * a * b * (n - 1) * rho + b**2 * (n - 1) * (1 + (n - 2) * rho))
    speed, dr = {
        "SA": (1.0, 0.0),
        "PreLN": (r, along),
        "PeriLN": (r * size, along / size),
        "nGPT": (size / (alpha(t) if callable(alpha) else alpha), 0.0),
    }[kind]
    return 2 * b * (1 + (n - 1) * rho) / speed, jnp.zeros_like(r) + dr


def _tolerances(dtype, atol: float) -> tuple[float, float]:
    """`(rtol, atol)` of the diffrax solves: `rtol = 1e-12` and the given float64 `atol`, no
    tighter than `eps` and `1e-4 eps` of `dtype` (float32: `1.2e-7`, `1.2e-11`).

    A tolerance far below the rounding error can never be met (the steps would shrink until
    `max_steps`); one at `eps` can, since Dopri8's error estimate is a combination of the
    stages, whose rounding is relative to the step's increment, not to the state. `10 eps`
    would be safer still but leaves float32 results off by up to 2e-4; `eps` keeps them within
    about 1e-5 of the float64 solution.
    """
    eps = float(jnp.finfo(dtype).eps)
    return max(1e-12, eps), max(atol, 1e-4 * eps)


def _dopri8(rate, t0, t1, y0, atol: float, saveat=None):
    """The solution `ys` of `dy/dt = rate(t, y, args)` from `y(t0) = y0`, by Dopri8 at the
    tolerances `_tolerances(y0.dtype, atol)`, saved at `saveat` (default: at `t1`); NaN where
    the solver cannot finish (its 100,000 steps spent, as in float32 at large `beta`), so that
    one such `beta` leaves the others of a vectorized call their values."""
    rtol, atol = _tolerances(y0.dtype, atol)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(rate),
        diffrax.Dopri8(),
        t0,
        t1,
        None,
        y0,
        saveat=diffrax.SaveAt(t1=True) if saveat is None else saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=100_000,
        throw=False,
    )
    return jnp.where(solution.result == diffrax.RESULTS.successful, solution.ys, jnp.nan)


@eqx.filter_jit
def _solve_equiangular(ts, beta, rho0, r0, alpha, n: int, kind: str):
    """`(rho, r)` at `ts` for every entry of `beta`, compiled once per `(n, kind, dtype,
    shapes)` (and per callable `alpha`); `ts`, `beta`, `rho0`, `r0` and a number `alpha` are
    traced arrays, so new values reuse the compiled solve."""
    y0 = jnp.stack([-jnp.log1p(-rho0), r0])

    def one(b):
        def rate(t, y, args):
            return jnp.stack(_rates(y[0], y[1], t, b, n, kind, alpha))

        ys = _dopri8(rate, ts[0], ts[-1], y0, 1e-12, diffrax.SaveAt(ts=ts))
        return -jnp.expm1(-ys[:, 0]), ys[:, 1]

    rho, r = jax.vmap(one)(beta.reshape(-1))
    return rho.reshape(*beta.shape, ts.shape[0]), r.reshape(*beta.shape, ts.shape[0])


def equiangular(
    ts: ArrayLike,
    beta: ArrayLike,
    n: int,
    rho0: float = 0.0,
    kind: str = "SA",
    r0: float = 1.0,
    alpha=1.0,
) -> tuple[Float[Array, "... T"], Float[Array, "... T"]]:
    """The common cosine `rho(t)` and radius `r(t)` of equiangular tokens (`Q = K = V = I`).

    `kind`: `"SA"` (Post-LN), `"USA"`, `"PreLN"`, `"PeriLN"` or `"nGPT"` (with step schedule
    `alpha`, a positive number or `alpha(t)`); all tokens start with cosine `rho0` and radius
    `r0` (the radius moves only for Pre-LN and Peri-LN). See `_rates` for the scalar ODEs,
    derived from the table of docs/science.md section 2. Solved with diffrax (Dopri8, rtol 1e-12
    in float64, `eps` in float32: see `_tolerances`) in `u = -log(1 - rho)`, which keeps
    the late phase (`1 - rho ~ e^{-2t}` for Post-LN, `~ t^{-2}` for Pre-LN and Peri-LN)
    resolved to full relative precision. `beta` may be an array: the results then have shape
    `beta.shape + (len(ts),)`, in the dtype of `ts` and `beta` promoted together (float32
    inputs give float32 results; Python floats follow JAX's default float).

    The solve is compiled once per `(n, kind, dtype, shapes)`: `ts`, `beta`, `rho0`, `r0` and a
    number `alpha` are traced, so new values do not recompile. A callable `alpha` is static
    (hashed): a new callable compiles anew.
    """
    check_equiangular(n, kind, SCHEMES)
    ts = as_float_array(ts, "ts")
    beta = check_beta(beta, scalar=False)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"ts must be a non-empty 1-D array; got shape {ts.shape}")
    ts = check_value(
        ts,
        jnp.any(jnp.diff(ts) <= 0) | ~jnp.all(jnp.isfinite(ts)),
        "ts must be finite and strictly increasing",
        lambda: f"; got {ts}",
    )
    if not -1 / (n - 1) <= rho0 < 1:
        raise ValueError(f"rho0 must lie in [-1/(n-1), 1) = [{-1 / (n - 1):.6g}, 1); got {rho0}")
    if not 0 < r0 < math.inf:
        raise ValueError(f"r0 must be positive and finite; got {r0}")
    if not callable(alpha) and not 0 < alpha < math.inf:
        raise ValueError(
            f"alpha must be a positive finite number or a callable alpha(t); got {alpha}"
        )
    dtype = jnp.result_type(ts, beta)
    ts, beta, rho0, r0 = (jnp.asarray(a, dtype) for a in (ts, beta, rho0, r0))
    alpha = alpha if callable(alpha) else jnp.asarray(alpha, dtype)
    return _solve_equiangular(ts, beta, rho0, r0, alpha, n, kind)


def equiangular_rho(
    ts: ArrayLike,
    beta: ArrayLike,
    n: int,
    rho0: float = 0.0,
    kind: str = "SA",
    r0: float = 1.0,
    alpha=1.0,
) -> Float[Array, "... T"]:
    """The common cosine `rho(t)` at the times `ts` (from `rho(ts[0]) = rho0`); see
    `equiangular` for the kinds, the method and the dtypes.

    SA: `d rho/dt = 2 e^{beta rho} (1 - rho)(1 + (n-1) rho) / (e^beta + (n-1) e^{beta rho})`;
    USA: `(2/n) e^{beta rho} (1 - rho)(1 + (n-1) rho)` (docs/science.md section 5).
    """
    return equiangular(ts, beta, n, rho0, kind, r0, alpha)[0]


def mean_cosine_gap(x: Float[ArrayLike, "... n d"]) -> Float[Array, "..."]:
    """One minus the mean pairwise cosine of the tokens: the gap `1 - rho` that `equiangular_rho`
    predicts.

    `1 - (1 / (n (n - 1))) sum_{i != j} <theta_i, theta_j>` with `theta_i = x_i / |x_i|`: the
    directions are compared, so it applies to the schemes whose tokens leave the sphere
    (Pre-LN, Peri-LN, nGPT) as well. For equiangular tokens of common cosine `rho` it is
    `1 - rho` (docs/science.md section 5); it is 0 for one cluster and `n / (n - 1)` for the
    regular simplex. As a statistic of `simulate`: `save=lambda t, x: mean_cosine_gap(x)`.

    Arguments:
        x: tokens, shape `(..., n, d)` with `n >= 2`, none of them zero.

    Returns:
        The gap, shape `x.shape[:-2]`, in `x`'s dtype.
    """
    x = as_float_array(x, "x")
    if x.ndim < 2 or x.shape[-2] < 2:
        raise ValueError(f"x must have shape (..., n, d) with n >= 2 tokens; got {x.shape}")
    n = x.shape[-2]
    theta = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    off = ~jnp.eye(n, dtype=bool)
    cosines = jnp.where(off, theta @ jnp.swapaxes(theta, -1, -2), 0)
    return 1 - jnp.sum(cosines, axis=(-2, -1)) / (n * (n - 1))


@eqx.filter_jit
def _solve_crossing_time(beta, delta, rho0, n: int, kind: str):
    """`crossing_time` for every entry of `beta`, compiled once per `(n, kind, dtype, shape)`:
    `beta`, `delta` and `rho0` are traced arrays."""

    def one(b):
        def rate(u, t, args):
            return 1 / equiangular_speed_over_gap(-jnp.expm1(-u), b, n, kind)

        u0, u1 = -jnp.log1p(-rho0), -jnp.log(delta)
        return _dopri8(rate, u0, u1, jnp.zeros((), beta.dtype), 1e-14)[-1]

    return jax.vmap(one)(beta.reshape(-1)).reshape(beta.shape)


def crossing_time(
    beta: ArrayLike, n: int, delta: float = 1e-3, kind: str = "SA", rho0: float = 0.0
) -> Float[Array, "..."]:
    """The first time `t` with `rho_beta(t) = 1 - delta`, from `rho(0) = rho0` (default 0).

    This traces the phase-transition curve `Gamma = {(t, beta) : rho_beta(t) = 1 - delta}`
    (docs/science.md section 5; Geshkovski et al. Theorem 6.9). Since `rho` increases, `t` is the
    integral of `dt/du = 1 / speed_over_gap` over `u = -log(1 - rho)` from `-log(1 - rho0)` to
    `-log(delta)`, computed with diffrax (Dopri8, rtol 1e-12 in float64, `eps` in float32: see
    `_tolerances`): no root finding, relative accuracy about 1e-10 in float64 and 1e-5 in
    float32. Vectorized over `beta` (any shape), in `beta`'s dtype (float32 `beta` gives float32
    times; a Python float follows JAX's default float). Compiled once per `(n, kind, dtype,
    beta.shape)`: new values of `beta`, `delta` or `rho0` do not recompile. NaN at a `beta`
    where the solve cannot finish (float32 at large `beta`: the steps its tolerance allows run
    out); the other entries keep their values.
    """
    check_equiangular(n, kind)
    if not 0 < delta < 1 - rho0:
        raise ValueError(f"delta must lie in (0, 1 - rho0) = (0, {1 - rho0:g}); got {delta}")
    if not -1 / (n - 1) < rho0 < 1:
        raise ValueError(
            f"rho0 must lie in (-1/(n-1), 1) (at -1/(n-1), the regular simplex, rho never "
            f"moves); got {rho0}"
        )
    beta = check_beta(beta, scalar=False)
    beta, delta, rho0 = (jnp.asarray(a, beta.dtype) for a in (beta, delta, rho0))
    return _solve_crossing_time(beta, delta, rho0, n, kind)
