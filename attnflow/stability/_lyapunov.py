"""`lyapunov_spectrum`: Lyapunov exponents by the Benettin/QR method, tangents by `jax.jvp`."""

import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_bool, check_ode_options, check_value, positive_int, positive_number
from .._deprecated import default_key
from ..fields import AbstractSphereField
from ..integrate import Layers, Stepper, as_solver
from ..sphere import project
from ._tangent import check_state, value_and_jvps


class LyapunovSpectrum(eqx.Module):
    """Lyapunov exponents of one trajectory, with their running estimates.

    `exponents`: shape `(k,)`, largest first, the estimates at the final time `t1`.
    `history`: shape `(m, k)`, the running estimates (each row largest first) at the times
    `ts`, shape `(m,)`, the re-orthonormalization times after the transient; plot it to judge
    convergence (`attnflow.plotting.plot_lyapunov`).
    `dimension`: the dimension of the space the exponents live on: `n (d - 1)` on the tangent
    bundle of `(S^{d-1})^n`, the state's size otherwise.
    """

    exponents: Float[Array, " k"]
    history: Float[Array, "m k"]
    ts: Float[Array, " m"]
    dimension: int = eqx.field(static=True)


def _intervals(t0: float, t1: float, every: float, transient: float) -> tuple[int, int]:
    """`(m, skip)`: `m` equal intervals of length at most `every` from `t0` to `t1`, the first
    `skip` of which (the transient) are left out of the estimates."""
    m = max(1, math.ceil((t1 - t0) / every - 1e-9))
    skip = round(transient / ((t1 - t0) / m))
    if skip >= m:
        raise ValueError(
            f"transient must be shorter than t1 - t0 = {t1 - t0} by at least one "
            f"re-orthonormalization interval; got transient = {transient}"
        )
    return m, skip


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number; got {value!r}")
    return float(value)


def lyapunov_spectrum(
    field,
    y0,
    t1: float,
    *,
    k: int | None = None,
    t0: float = 0.0,
    transient: float = 0.0,
    every: float = 1.0,
    args=None,
    tangent: bool | None = None,
    solver="tsit5",
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    max_steps: int = 100_000,
    key: jax.Array | None = None,
    throw: bool = True,
) -> LyapunovSpectrum:
    """The `k` largest Lyapunov exponents of `dy/dt = field(t, y, args)` from `y0`, over `[t0, t1]`.

    The Benettin/QR method: `k` tangent vectors `W` follow the linearized flow
    `dW/dt = J(t, y) W` (`J W` by `jax.linearize` and `jax.vmap` of its `jvp`: `k` Jacobian-vector
    products, never the full Jacobian unless `k` is the dimension; fields with only a
    reverse-mode rule, such as `Sinkhorn`, fall back to the full Jacobian by `jax.jacrev`),
    integrated by diffrax together with the state. Every `every` time units `W = Q R` is
    re-orthonormalized (QR) and `log |R_jj|` is added to exponent `j`'s sum; the estimate at
    time `t` is the sum over `t - t0 - transient`.

    Arguments:
        field: a vector field `field(t, y, args)` on an array state (an attnflow field or any
            function returning an array of `y`'s shape).
        y0: the initial state (any shape; `(n, d)` tokens on the sphere for sphere fields).
        t1: the final time.
        k: how many exponents (default: all, the dimension).
        t0: the initial time.
        transient: time integrated (and re-orthonormalized) before the sums start, so the
            tangent vectors align with the Lyapunov vectors first.
        every: the re-orthonormalization interval (the grid is `t0` to `t1` in equal steps of at
            most `every`; with `Layers`, a whole number of layers).
        args: passed to `field`.
        tangent: take the spectrum on the tangent bundle of `(S^{d-1})^n` (default: when `field`
            is a sphere field, `AbstractSphereField`). The `n` normal directions `x_i`, along
            which the flow is neutral because it conserves each `|x_i|`, are excluded: tangent
            vectors start tangent and are projected back onto the tangent space at every QR, so
            there are `n (d - 1)` exponents in all, not `n d`.
        solver, dt0, rtol, atol, max_steps: as in `attnflow.simulate` (`max_steps` per interval);
            `solver=attnflow.Layers(h)` gives the exponents of the discrete layer map
            `y <- field.layer(t, y, h)`, per unit time.
        key: a PRNG key for the random initial tangent vectors, required (the call without
            it is deprecated and uses `PRNGKey(1980)`). Not the key that drew `y0`: the first
            tangent vector would be `y0` itself, which the projection onto the tangent space
            kills.
        throw: raise when a solve fails or the sums are not finite (the default); `False`
            returns non-finite estimates instead, for sweeps that record failures as data.

    Returns:
        A `LyapunovSpectrum` with `.exponents` (largest first), `.history` and `.ts`.

    With `d` larger than `n (k + 1)` and a field that keeps tokens in their span (attention with
    `V = I`, `field.in_span`), the tokens and tangent vectors are evolved in coordinates of the
    span of both (`span_of_tangents`): the same exponents, a cost per step independent of `d`.

    Works under `jax.jit` and `jax.vmap` (over `y0` and over array leaves of `field` such as
    `beta`): the times and `k` are static, values are checked with `eqx.error_if`. The exponents
    are differentiable in reverse mode (through diffrax's checkpointed adjoint and the QRs), so
    `jax.grad` of an exponent with respect to `beta` or weights can drive an optax search.
    Reference: Benettin, Galgani, Giorgilli, Strelcyn, Meccanica 15 (1980).
    """
    if not callable(field):
        raise ValueError(f"field must be a callable field(t, y, args); got {field!r:.80}")
    t0, t1 = _number(t0, "t0"), _number(t1, "t1")
    if not t1 > t0:
        raise ValueError(f"t1 must be greater than t0 = {t0}; got {t1}")
    every = positive_number(every, "every", "the re-orthonormalization interval")
    transient = _number(transient, "transient")
    if transient < 0:
        raise ValueError(f"transient must be >= 0; got {transient}")
    y0 = check_state(field, y0, "y0", t0, args)
    tangent = isinstance(field, AbstractSphereField) if tangent is None else bool(tangent)
    if tangent and (y0.ndim != 2 or y0.shape[1] < 2):
        raise ValueError(
            f"tangent=True needs tokens of shape (n, d) with d >= 2; got shape {y0.shape}"
        )
    dimension = y0.shape[0] * (y0.shape[1] - 1) if tangent else y0.size
    k = dimension if k is None else positive_int(k, "k")
    if k > dimension:
        raise ValueError(
            f"k must be at most the dimension {dimension} "
            f"({'n (d - 1), the tangent bundle' if tangent else 'the size of y0'}); got k = {k}"
        )
    key = default_key(key, "lyapunov_spectrum", jax.random.PRNGKey(1980))
    check_bool(throw, "throw")
    solver = as_solver(solver, dt0)
    if isinstance(solver, Layers):
        h = solver.h
        layers = round((t1 - t0) / h)
        if abs(layers * h - (t1 - t0)) > 1e-6 * max(1.0, abs(t1 - t0)):
            raise ValueError(f"t1 - t0 must be a whole number of layers h = {h}; got {t1 - t0}")
        per = max(1, min(layers, round(every / h)))
        if layers % per:
            raise ValueError(
                f"t1 - t0 = {t1 - t0} must be a whole number of intervals of {per} layers "
                f"(every = {every}, h = {h})"
            )
        step = Stepper(solver, layers=per)
        every = per * h
    else:
        dt0, rtol, atol, max_steps = check_ode_options(solver, dt0, rtol, atol, max_steps)
        rtol, atol = (jnp.asarray(tol, y0.dtype) for tol in (rtol, atol))
        step = Stepper(solver, dt0, rtol, atol, max_steps, throw)
    m, skip = _intervals(t0, t1, every, transient)
    return _benettin(field, y0, args, key, k, tangent, t0, t1, m, skip, step, dimension, throw)


def _tangents(f, state):
    """`(f(y), Df(y) W)` for `state = (y, W)`: the state and its tangent vectors under `f`."""
    return value_and_jvps(f, *state)


def _orthonormalize(y, w, tangent: bool):
    """`(Q, log |diag R|)` for the QR factorization of the tangent vectors `w` (shape `(k, ...)`),
    projected first onto the tangent space at `y` when `tangent`."""
    if tangent:
        w = project(y, w)
    q, r = jnp.linalg.qr(w.reshape(w.shape[0], -1).T)
    return q.T.reshape(w.shape), jnp.log(jnp.abs(jnp.diagonal(r)))


def span_of_tangents(field, y0, w0):
    """`(field, y0, w0)` in coordinates of an orthonormal basis `B` of the span of the tokens
    `y0` and of the rows of the tangent vectors `w0`, when the field allows it
    (`field.in_span`: attention with `V = I`) and the span is smaller than `d`; otherwise
    unchanged.

    Exact: the velocity of each token lies in the span of the tokens, and its derivative in a
    direction `W` in the span of the tokens and of `W`'s rows, so the flow and its tangents stay
    in `span(B)`, where the field in the basis is the field restricted to it. Inner products,
    hence the QR factors and the exponents, are the same in the basis: `n (k + 1)` coordinates
    instead of `d`.
    """
    in_span = getattr(field, "in_span", None)
    if in_span is None or y0.ndim != 2 or y0.shape[0] * (w0.shape[0] + 1) >= y0.shape[1]:
        return field, y0, w0
    basis, _ = jnp.linalg.qr(jnp.concatenate([y0, w0.reshape(-1, y0.shape[1])]).T)
    reduced = in_span(basis)
    if reduced is None:
        return field, y0, w0
    return reduced, y0 @ basis, w0 @ basis


@eqx.filter_jit
def _benettin(field, y0, args, key, k, tangent, t0, t1, m, skip, step, dimension, throw=True):
    w0 = jax.random.normal(key, (k, *y0.shape), y0.dtype)
    w0, _ = _orthonormalize(y0, w0, tangent)
    field, y0, w0 = span_of_tangents(field, y0, w0)
    grid = jnp.linspace(t0, t1, m + 1, dtype=y0.dtype)

    def interval(carry, j):
        state, dt = carry
        (y, w), dt = step(field, args, grid[j], grid[j + 1], state, dt, _tangents)
        w, growth = _orthonormalize(y, w, tangent)
        return ((y, w), dt), growth

    dt = jnp.asarray(step.first_dt((t1 - t0) / m), y0.dtype)
    _, growth = jax.lax.scan(interval, ((y0, w0), dt), jnp.arange(m))
    if throw:
        growth = check_value(
            growth,
            ~jnp.all(jnp.isfinite(growth)),
            "the Lyapunov sums are not finite: the trajectory or its tangents overflowed "
            "(raise max_steps, lower every, or check the field)",
        )
    ts = grid[skip + 1 :]
    history = jnp.cumsum(growth[skip:], axis=0) / (ts - grid[skip])[:, None]
    history = -jnp.sort(-history, axis=-1)
    return LyapunovSpectrum(exponents=history[-1], history=history, ts=ts, dimension=dimension)
