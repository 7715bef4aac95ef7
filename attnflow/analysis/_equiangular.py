"""The equiangular reduction: the common cosine `rho(t)` of tokens whose pairwise inner products
are all equal (SCIENCE.md section 5; Geshkovski et al. Theorem 6.8)."""

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import as_float_array, check_beta, check_value

KINDS = ("SA", "USA")  # the kinds with a closed-form rate in rho alone (crossing_time)
SCHEMES = ("SA", "USA", "PreLN", "PeriLN", "nGPT")


def _check(n, kind: str, kinds=KINDS) -> None:
    if kind not in kinds:
        raise ValueError(f"kind must be one of {', '.join(kinds)}; got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2; got {n!r}")


def _speed_over_gap(rho, beta, n: int, kind: str):
    """`(d rho/dt) / (1 - rho)`, written without overflow for large `beta`.

    SA: `2 (1 + (n-1) rho) / (e^{beta (1 - rho)} + n - 1)`;
    USA: `(2/n) e^{beta rho} (1 + (n-1) rho)`.
    """
    growth = 2 * (1 + (n - 1) * rho)
    if kind == "SA":
        return growth / (jnp.exp(beta * (1 - rho)) + n - 1)
    return growth * jnp.exp(beta * rho) / n


def _rates(u, r, t, beta, n: int, kind: str, alpha):
    """`(du/dt, dr/dt)` for `u = -log(1 - rho)` and the common radius `r`, with `Q = K = V = I`.

    On equiangular directions (cosine `rho`), softmax attention on the directions gives
    `A_i = a theta_i + b sum_{j != i} theta_j` with `b = 1 / (e^{beta (1 - rho)} + n - 1)`,
    `a = e^{beta (1 - rho)} b`. Then `<theta_i, A_i> = a + (n-1) b rho`,
    `abs(A_i)^2 = a^2 + 2 a b (n-1) rho + b^2 (n-1)(1 + (n-2) rho)`, and
    `d rho/dt = 2 b (1 - rho)(1 + (n-1) rho) / s` with the speed factor `s` of the scheme
    (SCIENCE.md section 2): 1 (SA), `r` (Pre-LN), `r abs(A)` (Peri-LN), `abs(A) / alpha(t)`
    (nGPT); `dr/dt = <theta, A>` (Pre-LN), `<theta, A> / abs(A)` (Peri-LN), 0 otherwise.
    """
    rho = -jnp.expm1(-u)
    if kind == "USA":
        return _speed_over_gap(rho, beta, n, kind), jnp.zeros_like(r)
    b = 1 / (jnp.exp(beta * (1 - rho)) + n - 1)
    a = 1 - (n - 1) * b
    along = a + (n - 1) * b * rho
    size = jnp.sqrt(a**2 + 2 * a * b * (n - 1) * rho + b**2 * (n - 1) * (1 + (n - 2) * rho))
    speed, dr = {
        "SA": (1.0, 0.0),
        "PreLN": (r, along),
        "PeriLN": (r * size, along / size),
        "nGPT": (size / (alpha(t) if callable(alpha) else alpha), 0.0),
    }[kind]
    return 2 * b * (1 + (n - 1) * rho) / speed, jnp.zeros_like(r) + dr


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
    derived from the table of SCIENCE.md section 2. Solved with diffrax (Dopri8, rtol 1e-12
    in float64) in `u = -log(1 - rho)`, which keeps the late phase (`1 - rho ~ e^{-2t}` for
    Post-LN, `~ t^{-2}` for Pre-LN and Peri-LN) resolved to full relative precision. `beta` may
    be an array: the results then have shape `beta.shape + (len(ts),)`.
    """
    _check(n, kind, SCHEMES)
    ts = as_float_array(ts, "ts")
    beta = check_beta(beta, scalar=False)
    if ts.ndim != 1 or ts.shape[0] < 1:
        raise ValueError(f"ts must be a non-empty 1-D array; got shape {ts.shape}")
    ts = check_value(ts, jnp.any(jnp.diff(ts) <= 0), "ts must be strictly increasing")
    if not -1 / (n - 1) <= rho0 < 1:
        raise ValueError(f"rho0 must lie in [-1/(n-1), 1) = [{-1 / (n - 1):.6g}, 1); got {rho0}")
    if not r0 > 0:
        raise ValueError(f"r0 must be positive; got {r0}")
    if not callable(alpha) and not alpha > 0:
        raise ValueError(f"alpha must be a positive number or a callable alpha(t); got {alpha}")
    y0 = jnp.stack([-jnp.log1p(-jnp.asarray(rho0, ts.dtype)), jnp.asarray(r0, ts.dtype)])

    def one(b):
        term = diffrax.ODETerm(
            lambda t, y, args: jnp.stack(_rates(y[0], y[1], t, b, n, kind, alpha))
        )
        solution = diffrax.diffeqsolve(
            term,
            diffrax.Dopri8(),
            ts[0],
            ts[-1],
            None,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-12),
            max_steps=100_000,
        )
        return -jnp.expm1(-solution.ys[:, 0]), solution.ys[:, 1]

    rho, r = jax.vmap(one)(beta.reshape(-1))
    return rho.reshape(*beta.shape, ts.shape[0]), r.reshape(*beta.shape, ts.shape[0])


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
    `equiangular` for the kinds and the method.

    SA: `d rho/dt = 2 e^{beta rho} (1 - rho)(1 + (n-1) rho) / (e^beta + (n-1) e^{beta rho})`;
    USA: `(2/n) e^{beta rho} (1 - rho)(1 + (n-1) rho)` (SCIENCE.md section 5).
    """
    return equiangular(ts, beta, n, rho0, kind, r0, alpha)[0]


def crossing_time(
    beta: ArrayLike, n: int, delta: float = 1e-3, kind: str = "SA", rho0: float = 0.0
) -> Float[Array, "..."]:
    """The first time `t` with `rho_beta(t) = 1 - delta`, from `rho(0) = rho0` (default 0).

    This traces the phase-transition curve `Gamma = {(t, beta) : rho_beta(t) = 1 - delta}`
    (SCIENCE.md section 5; Geshkovski et al. Theorem 6.9). Since `rho` increases, `t` is the
    integral of `dt/du = 1 / speed_over_gap` over `u = -log(1 - rho)` from `-log(1 - rho0)` to
    `-log(delta)`, computed with diffrax (Dopri8, rtol 1e-12): no root finding, relative
    accuracy about 1e-10 in float64. Vectorized over `beta` (any shape).
    """
    _check(n, kind)
    if not 0 < delta < 1 - rho0:
        raise ValueError(f"delta must lie in (0, 1 - rho0) = (0, {1 - rho0:g}); got {delta}")
    if not -1 / (n - 1) < rho0 < 1:
        raise ValueError(
            f"rho0 must lie in (-1/(n-1), 1) (at -1/(n-1), the regular simplex, rho never "
            f"moves); got {rho0}"
        )
    beta = check_beta(beta, scalar=False)
    dtype = beta.dtype
    u0 = -jnp.log1p(-jnp.asarray(rho0, dtype))
    u1 = -jnp.log(jnp.asarray(delta, dtype))

    def one(b):
        term = diffrax.ODETerm(lambda u, t, args: 1 / _speed_over_gap(-jnp.expm1(-u), b, n, kind))
        solution = diffrax.diffeqsolve(
            term,
            diffrax.Dopri8(),
            u0,
            u1,
            None,
            jnp.zeros((), dtype),
            stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
            max_steps=100_000,
        )
        return solution.ys[-1]

    return jax.vmap(one)(beta.reshape(-1)).reshape(beta.shape)
