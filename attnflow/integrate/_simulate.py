"""`simulate`: the checked entry point that evolves tokens under a field, with a diffrax solver
or the discrete layers (`Layers`)."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from .._checks import (
    as_float_array,
    check_bool,
    check_ode_options,
    check_times,
    check_value,
    is_traced,
)
from ..fields import AbstractField, PostLN
from ._core import Layers, Trajectory, _adjoint, as_solver, integrate, layer_indices


def simulate(
    field: AbstractField,
    x0: ArrayLike,
    ts: ArrayLike,
    *,
    solver="tsit5",
    dt0: float | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-8,
    save: Callable[[Array, Array], PyTree] | None = None,
    max_steps: int = 100_000,
    throw: bool = True,
    adjoint="checkpoint",
) -> Trajectory:
    """Evolve the tokens `x0` under `field` and return them at the times `ts`.

    Arguments:
        field: a vector field, e.g. `attnflow.SA(beta)`; called as `field(t, x, args)`.
        x0: initial tokens, shape `(n, d)` on the unit sphere for sphere fields (angles of
            shape `(n,)` for `Circle`). Checked finite and on the sphere (`sqrt(eps)` tolerance).
        ts: strictly increasing save times; the run starts at `ts[0]` and ends at `ts[-1]`.
        solver: `attnflow.Layers(h)`, the discrete post-LN transformer of layer step `h`
            (`ts` must then be multiples of `h`; see `Layers`), a diffrax ODE solver instance,
            or one by name (`"tsit5"`, `"dopri5"`, `"dopri8"`, `"euler"`, `"heun"`, ... see
            `ode_solvers()`). Adaptive solvers use a PID step-size controller with `rtol`,
            `atol` (and `dt0`, if given, as the first step); fixed-step solvers (`"euler"`)
            take steps of `dt0`. (`solver="layers", dt0=h` is the deprecated spelling of
            `Layers(h)`.)
        save: optional statistic `save(t, x)`; if given, `Trajectory.xs` holds its values at
            the save times instead of the states, so a sweep never stores whole trajectories.
        max_steps: cap on the steps of an adaptive solve (diffrax raises past it).
        throw: raise when the solve fails (the default); `False` returns the failure as data
            instead, in `Trajectory.status` (see `STATUS`), as sweeps do: the save times after
            a failed ODE solve hold `inf`, and a non-finite state is reported, never hidden.
        adjoint: how reverse-mode derivatives (`jax.grad`) go through an ODE solve:
            `"checkpoint"` (the default, diffrax's `RecursiveCheckpointAdjoint`: the derivative
            of the numerical solution itself, exact to rounding, with binomial checkpointing
            of the steps), `"backsolve"` (diffrax's `BacksolveAdjoint`: the continuous adjoint
            equations solved backwards in time, memory independent of the number of steps,
            but only as accurate as the solver's tolerances), or a diffrax adjoint instance.
            `Layers` is always differentiated through the layer loop,
            rematerialized (`jax.checkpoint`) so that the `n x n` attention matrices of a
            layer are recomputed, not stored: the tokens at the ends of blocks of layers (the
            gcd of the gaps between save times) are kept, plus those of one block during the
            backward pass. With `save` and `"backsolve"`, the states at the save times are
            stored and the statistic taken afterwards (diffrax's backsolve saves states only).

    Returns:
        A `Trajectory` with `.ts` (shape `(T,)`), `.xs` (`(T, n, d)`, or `save`'s output) and
        `.status` (0 when the run succeeded).

    On the sphere (`AbstractSphereField`): ODE solvers integrate the field as it is, with no
    projection of the state; each norm drifts only by the accumulated truncation error (below
    1e-5 over `t = 30` at the default tolerances, tested). The saved states, and the states
    given to `save`, are then renormalized (`onto_sphere`), so that they are valid inputs again
    (`x0` of another run, a recording for `fit_trajectory`); `Layers` renormalizes at every
    step, exact to rounding.

    `simulate` is jit-compiled (one compilation per field structure, shapes, solver and options;
    `rtol`, `atol` and `dt0` are passed as arrays, so new values do not recompile), works under
    `jax.vmap` over `x0` and over array leaves of the field such as `beta`, and is
    differentiable with respect to `x0` and every array leaf of the field (`beta`, `Q`, `K`,
    `V`, per-layer weights), in reverse mode (see `adjoint`); the gradients are tested against
    central finite differences (docs/guide/gradients.md).
    """
    if not isinstance(field, AbstractField):
        raise ValueError(
            f"field must be an attnflow vector field (AbstractField); got {field!r:.80}"
        )
    x0 = field.check(as_float_array(x0, "x0"))
    given_ts = ts  # concrete save times stay known under an outer jax.jit (for the layers)
    ts = check_times(as_float_array(ts, "ts").astype(x0.dtype))
    if save is not None and not callable(save):
        raise ValueError(f"save must be a callable save(t, x) or None; got {save!r}")
    solver = as_solver(solver, dt0)
    if isinstance(solver, Layers):
        dt0 = None  # the layer step of the deprecated solver="layers", now Layers.h
    reduced = None if is_traced(x0) else span_reduction(field, x0)
    if reduced is not None:  # the same flow in n coordinates instead of d > n
        field, y0, lift = reduced
        trajectory = simulate(
            field,
            y0,
            given_ts,
            solver=solver,
            dt0=dt0,
            rtol=rtol,
            atol=atol,
            save=None if save is None else (lambda t, y: save(t, lift(y))),
            max_steps=max_steps,
            throw=throw,
            adjoint=adjoint,
        )
        if save is not None:
            return trajectory
        xs = lift(trajectory.xs).at[0].set(x0)  # the first state exactly, not to rounding
        return eqx.tree_at(lambda tr: tr.xs, trajectory, xs)
    check_bool(throw, "throw")
    if isinstance(solver, Layers):
        if is_traced(given_ts):
            raise ValueError("ts must be concrete (not traced) with Layers")
        steps = layer_indices(np.asarray(given_ts, dtype=np.float64), solver.h)
        return integrate(
            field, x0, ts, solver, save=save, steps=steps, throw=throw, adjoint=adjoint
        )
    adjoint = _adjoint(adjoint)
    if adjoint == "backsolve" or isinstance(adjoint, diffrax.BacksolveAdjoint):
        # Its adjoint state holds the weights' cotangents beside the tokens': one dtype.
        field = jax.tree.map(lambda a: a.astype(x0.dtype) if eqx.is_inexact_array(a) else a, field)
    dt0, rtol, atol, max_steps = check_ode_options(solver, dt0, rtol, atol, max_steps)
    if throw:  # e.g. USA beyond beta ~ 709: the weights overflow, only the layers do not
        x0 = check_value(
            x0,
            ~eqx.filter_jit(_in_range)(field, ts[0], x0),
            f"the velocity of the field at x0, or the attention output it projects, is not "
            f"finite in {x0.dtype} (the weights e^{{beta <x_i, x_j>}} of unnormalized "
            f"attention, USA, overflow beyond beta about {np.log(np.finfo(x0.dtype).max):.0f});"
            " use solver=attnflow.Layers(h) (computed in log scale) or a smaller beta",
        )
    return integrate(
        field,
        x0,
        ts,
        solver,
        dt0=dt0,
        rtol=rtol,
        atol=atol,
        save=save,
        max_steps=max_steps,
        throw=throw,
        adjoint=adjoint,
    )


def _in_range(field: AbstractField, t, x) -> Array:
    """Whether an ODE solver can integrate `field` from `x`: its velocity is finite and, for
    Post-LN, so is the attention output it projects. Where a token's own weight
    `e^{beta <Q x_i, K x_i>} / n` overflows, the velocity can still be finite while the tokens
    are far apart, but not once the flow brings them together."""
    finite = jnp.all(jnp.isfinite(field(t, x)))
    if isinstance(field, PostLN):
        finite = finite & jnp.all(jnp.isfinite(field.attention(t, x)))
    return finite


def span_reduction(field: AbstractField, x0: Array):
    """`(field in span coordinates, y0, lift)` when `simulate` can evolve `x0` exactly in the
    span of its tokens, `None` otherwise.

    It can when `x0` has more coordinates than tokens (`d > n`) and the field keeps every token
    in the span of the tokens (`field.in_span`: attention with `V = I`, any `Q, K`, under every
    normalization scheme, without a feed-forward term). With `x0 = y0 B^T`, `B` of shape
    `(d, n)` orthonormal (a QR factorization), the flow is `x(t) = y(t) B^T`, `y` evolved by the
    field in the basis, where the weights become one `n x n` matrix `(K B)^T (Q B)`: cost
    `O(n^3)` per step for any `d` instead of `O(n^2 d)`. `simulate` applies it to a concrete
    `x0` only: traced (under `jax.grad` or `jax.jit`) it is computed in full, so that
    derivatives with respect to `x0` (which leave the span) stay exact; derivatives with respect
    to the field's weights go through the reduced flow, exactly. Studies apply it to the tokens
    they draw (their statistics are not differentiated).
    """
    if x0.ndim != 2 or x0.shape[1] <= x0.shape[0]:
        return None
    basis, r = jnp.linalg.qr(x0.T)  # x0^T = B r, so x0 = r^T B^T
    reduced = field.in_span(basis)
    if reduced is None:
        return None

    def lift(y):
        """`y B^T`, with a non-finite row kept `inf` (a failed solve's fill, not `inf * 0`)."""
        finite = jnp.all(jnp.isfinite(y), axis=-1, keepdims=True)
        return jnp.where(finite, jnp.where(finite, y, 0) @ basis.T, jnp.inf)

    return reduced, r.T, lift
