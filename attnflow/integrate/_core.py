"""`integrate`, which every run goes through (`lyapunov_spectrum` one interval at a time, by
`Stepper`), with the one step-size rule (`controller`), the one way to name a solver
(`as_solver`) and the failure codes (`STATUS`)."""

import functools
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PyTree

from .._checks import check_value, is_traced, positive_number
from .._deprecated import deprecated
from ..fields import AbstractLayerField, AbstractSphereField
from ..sphere import normalize

# The name of `Layers` in the configurations that studies store (so that a store written
# before `Layers` existed resumes), and its deprecated spelling `solver="layers", dt0=h`.
LAYERS = "layers"


class Trajectory(eqx.Module):
    """The states (or statistics) of one run at its save times.

    `ts`: the save times, shape `(T,)`. `xs`: the state at each save time, shape `(T, n, d)`
    (`(T, n)` for angle fields), or, when `simulate` was given `save`, the statistic
    `save(t, x)` stacked along a leading axis of length `T`. `status`: an int32 scalar, 0 when
    the run succeeded, otherwise the index of its failure in `STATUS` (with `throw=False`).
    """

    ts: Float[Array, " T"]
    xs: PyTree
    status: Int[Array, ""]


STATUS = (
    "ok",
    "solver failed (max_steps reached or step size too small)",
    "non-finite state (an overflow, or attention that did not converge)",
)
SOLVER_FAILED, NON_FINITE = 1, 2


def state_status(x, status=0) -> Array:
    """`status` (0 by default), or `NON_FINITE` if it is 0 and the state `x` is not finite."""
    finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(x)]))
    return jnp.where((status == 0) & ~finite, NON_FINITE, status).astype(jnp.int32)


class Layers(eqx.Module):
    """The discrete post-LN transformer as a solver: `x_i <- normalize(x_i + h sum_j A_ij V x_j)`,
    layer `k` at time `t = k h`, the step being the field's own `layer(t, x, h)`.

    Pass it where a diffrax solver goes: `simulate(field, x0, ts, solver=Layers(0.1))`. The
    save times must then be multiples of `h` (`layer_indices`). The attention output is added
    before renormalization, not projected (docs/science.md section 2): `Layers(h)` is the
    transformer itself, and its flow tends to the ODE's as `h -> 0`.
    """

    h: float = eqx.field(static=True, converter=lambda h: positive_number(h, "h", "the layer step"))

    def __repr__(self) -> str:
        return f"Layers({self.h!r})"


@functools.cache
def ode_solvers() -> dict[str, type[diffrax.AbstractSolver]]:
    """diffrax's ODE solvers by lower-case name (`"tsit5"`, `"dopri5"`, `"kvaerno5"`, ...)."""
    solvers = {}
    for name, cls in vars(diffrax).items():
        if not (isinstance(cls, type) and issubclass(cls, diffrax.AbstractSolver)):
            continue
        try:
            instance = cls()
        except TypeError:  # abstract, or a wrapper such as HalfSolver
            continue
        if instance.term_structure is diffrax.AbstractTerm:  # ODEs, not SDE-only solvers
            solvers[name.lower()] = cls
    return solvers


def as_solver(solver, dt0=None) -> "Layers | diffrax.AbstractSolver":
    """`solver` as a solver object: a diffrax solver or `Layers` as given, a diffrax ODE solver
    by lower-case name (`ode_solvers()`) built with its defaults. `dt0`, the step a caller was
    given, is refused beside `Layers` (whose step is its own `h`).

    The old spelling `"layers"` (with the layer step in `dt0`) gives `Layers(dt0)` and a
    `DeprecationWarning`."""
    if isinstance(solver, Layers):
        if dt0 is not None:
            raise ValueError(f"dt0 does not apply to Layers (its step is Layers.h); got {dt0!r}")
        return solver
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    if isinstance(solver, str) and solver.lower() == LAYERS:
        deprecated("solver='layers' (with the step in dt0 or h)", "solver=attnflow.Layers(h)")
        return Layers(positive_number(dt0, "dt0", "the layer step h of solver='layers'"))
    solvers = ode_solvers()
    if not isinstance(solver, str) or solver.lower() not in solvers:
        names = ", ".join(sorted(solvers))
        raise ValueError(
            f"solver must be one of {names}, attnflow.Layers(h) or a diffrax solver; got {solver!r}"
        )
    return solvers[solver.lower()]()


def controller(solver, rtol, atol) -> diffrax.AbstractStepSizeController:
    """The step-size rule of every solve: a PID controller with `rtol`, `atol` for an adaptive
    solver, constant steps of `dt0` otherwise. Tolerances may be traced (new values do not
    recompile)."""
    if isinstance(solver, diffrax.AbstractAdaptiveSolver):
        return diffrax.PIDController(rtol=rtol, atol=atol)
    return diffrax.ConstantStepSize()


def _check_layer_map(field) -> None:
    if not isinstance(field, AbstractLayerField):
        raise ValueError(
            "Layers needs a field with a discrete layer map (AbstractLayerField); "
            f"got {type(field).__name__}"
        )


def layer_indices(ts: np.ndarray, h: float) -> tuple[int, ...]:
    """The layer index `k = t / h` of each save time; `ValueError` if one is not a multiple of
    `h`, or two are less than one layer apart."""
    k = np.rint(ts / h)
    off = np.abs(ts / h - k) > 1e-3
    if off.any():
        i = int(np.argmax(off))
        raise ValueError(
            f"ts must be multiples of the layer step h = {h} of Layers; got ts[{i}] = {ts[i]}"
        )
    if np.any(np.diff(k) < 1):
        raise ValueError(f"ts must be at least one layer step h = {h} apart; got {ts}")
    return tuple(int(i) for i in k)


def solver_config(solver) -> dict:
    """How a study records `solver` (JSON-ready): `{"solver": "layers", "h": h}` for `Layers`,
    `{"solver": name, "h": None}` for a diffrax solver."""
    if isinstance(solver, Layers):
        return {"solver": LAYERS, "h": solver.h}
    return {"solver": type(solver).__name__.lower(), "h": None}


def integrate(
    field,
    x0,
    ts,
    solver,
    *,
    dt0=None,
    rtol=1e-6,
    atol=1e-8,
    save: Callable[[Array, Array], PyTree] | None = None,
    until: Callable[[PyTree], Array] | None = None,
    steps: tuple[int, ...] | None = None,
    max_steps: int = 100_000,
    throw: bool = True,
    adjoint="checkpoint",
) -> "Trajectory":
    """Evolve `x0` under `field` from `ts[0]`, saved at the times `ts`: the core under
    `simulate`, the studies and the sweeps. It checks nothing that `simulate` checks (`x0` on
    the sphere, `ts` increasing, the tolerances positive): it is the form to call from
    compiled code, with traced `x0`, `ts`, tolerances and field leaves.

    Arguments:
        solver: `Layers(h)` or a diffrax solver instance (`as_solver` turns a name into one).
        dt0: the first step of an adaptive solver (None: diffrax's choice), the step of a
            fixed-step one; unused by `Layers`.
        rtol, atol: the tolerances of an adaptive solver (`controller`), possibly traced.
        save, max_steps, throw, adjoint: as in `simulate`.
        until: `Layers` only; `until(statistic) -> bool` at a save time says that the state is
            absorbing for the statistic (the caller proves it): the remaining layers are
            skipped and the statistic is held at its last value. A measured win in sweeps.
        steps: `Layers` only; the layer index of each save time (`layer_indices(ts, h)`), for
            traced `ts`; computed from `ts` when they are concrete.

    Returns a `Trajectory`. With `throw=False` a failure is data, in `Trajectory.status`.
    """
    if isinstance(solver, Layers):
        _check_layer_map(field)
        if not (isinstance(adjoint, str) and adjoint == "checkpoint"):
            raise ValueError(
                "adjoint applies to ODE solvers; Layers is differentiated through its "
                f"rematerialized layer loop (leave adjoint='checkpoint'); got {adjoint!r}"
            )
        if steps is None:
            if is_traced(ts):
                raise ValueError("ts must be concrete (not traced) with Layers, or steps given")
            steps = layer_indices(np.asarray(ts, dtype=np.float64), solver.h)
        trajectory = _simulate_layers(field, x0, ts, steps, solver.h, save, until)
        if not throw:
            return trajectory
        return check_value(
            trajectory,
            trajectory.status != 0,
            "the layers produced non-finite tokens (an overflow in the field); "
            "pass throw=False to get them with Trajectory.status instead",
        )
    if not isinstance(solver, diffrax.AbstractSolver):
        raise ValueError(f"solver must be Layers(h) or a diffrax solver; got {solver!r}")
    if until is not None:
        raise ValueError("until applies to Layers only")
    adjoint = _adjoint(adjoint)
    rtol, atol = (jnp.asarray(tol, x0.dtype) for tol in (rtol, atol))
    dt0 = None if dt0 is None else jnp.asarray(dt0, x0.dtype)
    return _simulate_ode(field, x0, ts, solver, dt0, rtol, atol, save, max_steps, throw, adjoint)


ADJOINTS = ("checkpoint", "backsolve")


def _adjoint(adjoint) -> diffrax.AbstractAdjoint | str:
    """A diffrax adjoint as given, or a name of `ADJOINTS` (built in `_simulate_ode`)."""
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    if not isinstance(adjoint, str) or adjoint not in ADJOINTS:
        raise ValueError(
            f"adjoint must be one of {', '.join(map(repr, ADJOINTS))} or a diffrax adjoint; "
            f"got {adjoint!r}"
        )
    return adjoint


class Rejectable(eqx.Module):
    """`field` with every non-finite velocity made NaN, for diffrax's adaptive step control.

    A trial stage of a step that is too long can leave the range of the field (USA's weights
    `e^{beta <x_i, x_j>}` off the sphere); diffrax rejects a step whose error is NaN and shrinks
    it, but an `inf` error (the field's `+-inf` where the velocity overflows) drives the next
    step size to 0 and the time to NaN. The states the solver accepts are unchanged.

    A Module, not a closure, so that the field's parameters are leaves of the diffrax term:
    the backsolve adjoint differentiates with respect to the term, not its closures."""

    field: Callable

    def __call__(self, t, y, args):
        v = self.field(t, y, args)
        return jax.tree.map(lambda a: jnp.where(jnp.isfinite(a), a, jnp.nan), v)


class Stepper(eqx.Module):
    """One interval of a run, `stepper(field, args, ta, tb, state, dt, lift) -> (state, dt)`:
    `state` from `ta` to `tb` by a diffrax solve under `controller`, or, with `Layers(h)`, by
    `layers` steps of the field's own layer map `field.layer(t, x, h)`. `dt0`, `rtol`, `atol`
    (arrays: new values do not recompile), `max_steps` (per interval) and `throw` are as in
    `integrate` and unchecked: the caller checks them, as `lyapunov_spectrum` does.

    `lift(f, state)` moves the state by `f`, the tokens' velocity `field(t, ., args)` or layer
    map: `f(state)` by default; `(f(y), Df(y) W)` carries tangent vectors `W` along. An adaptive
    solve starts from the step `dt` and returns the interval's mean accepted step for the next
    one (`first_dt` for the first) instead of restarting diffrax's initial-step heuristic and
    its ramp-up of small steps: about half the cost of intervals of length 1.
    """

    solver: "Layers | diffrax.AbstractSolver"
    dt0: float | None = eqx.field(static=True, default=None)
    rtol: Array | None = None
    atol: Array | None = None
    max_steps: int = eqx.field(static=True, default=100_000)
    throw: bool = eqx.field(static=True, default=True)
    layers: int = eqx.field(static=True, default=1)

    @property
    def adaptive(self) -> bool:
        return isinstance(self.solver, diffrax.AbstractAdaptiveSolver)

    def first_dt(self, every):
        """The first step of the first interval, of length `every`."""
        if isinstance(self.solver, Layers):
            return self.solver.h
        if not self.adaptive:
            return self.dt0
        return every / 10 if self.dt0 is None else min(self.dt0, every)

    def __call__(self, field, args, ta, tb, state, dt, lift=lambda f, state: f(state)):
        if isinstance(self.solver, Layers):
            _check_layer_map(field)
            h = self.solver.h

            def one_layer(j, state):
                t = ta + j * h
                return lift(lambda y: field.layer(t, y, h), state)

            return jax.lax.fori_loop(0, self.layers, one_layer, state), dt
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(Rejectable(lambda t, s, args: lift(lambda y: field(t, y, args), s))),
            self.solver,
            t0=ta,
            t1=tb,
            dt0=dt,
            y0=state,
            args=args,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller(self.solver, self.rtol, self.atol),
            max_steps=self.max_steps,
            throw=False,
        )
        solution = solve_checked(solution, self.throw)
        if self.adaptive:
            dt = (tb - ta) / jnp.maximum(solution.stats["num_accepted_steps"], 1)
        return jax.tree.map(lambda a: a[0], solution.ys), dt


@eqx.filter_jit
def _simulate_ode(
    field, x0, ts, solver, dt0, rtol, atol, save, max_steps, throw=True, adjoint="checkpoint"
) -> Trajectory:
    if adjoint == "checkpoint":
        adjoint = diffrax.RecursiveCheckpointAdjoint()
    elif adjoint == "backsolve" and isinstance(solver, diffrax.AbstractAdaptiveSolver):
        # Step control on the tokens and their adjoint only, not on the weights' adjoints
        # (integrals that feed nothing back): a seminorm, Kidger, Chen, Lyons 2021.
        backward = diffrax.PIDController(rtol=rtol, atol=atol, norm=diffrax.adjoint_rms_seminorm)
        adjoint = diffrax.BacksolveAdjoint(stepsize_controller=backward)
    elif adjoint == "backsolve":
        adjoint = diffrax.BacksolveAdjoint()
    # The backsolve adjoint saves states only: a statistic is then taken afterwards.
    save_after = save is not None and isinstance(adjoint, diffrax.BacksolveAdjoint)
    # A sphere field's states are saved (and given to `save`) renormalized: see `onto_sphere`.
    onto = onto_sphere if isinstance(field, AbstractSphereField) else (lambda y: y)
    if save is None or save_after:
        saveat = diffrax.SaveAt(ts=ts)
    else:
        saveat = diffrax.SaveAt(ts=ts, fn=lambda t, y, args: save(t, onto(y)))
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(Rejectable(field)),
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=dt0,
        y0=x0,
        saveat=saveat,
        stepsize_controller=controller(solver, rtol, atol),
        max_steps=max_steps,
        throw=False,
        adjoint=adjoint,
    )
    solution = solve_checked(solution, throw)
    failed = jnp.where(solution.result == diffrax.RESULTS.successful, 0, SOLVER_FAILED)
    if save is None:
        xs = onto(solution.ys)
    elif save_after:
        xs = jax.vmap(save)(ts, onto(solution.ys))
    else:
        xs = solution.ys  # the statistic, already of the renormalized states
    return Trajectory(ts=ts, xs=xs, status=failed.astype(jnp.int32))


# What a failed ODE solve raises (`solve_checked`): diffrax's own errors name neither the
# cause in the terms of the flow nor what to do about it.
ODE_REMEDY = (
    "the flow is too stiff or too long for it at these tolerances (a large beta, USA's "
    "e^beta weights); pass a larger max_steps, solve with attnflow.Layers(h), use float64, or "
    "pass throw=False to get the run up to the failure, with Trajectory.status"
)


def solve_checked(
    solution: diffrax.Solution, throw: bool, remedy: str = ODE_REMEDY
) -> diffrax.Solution:
    """`solution`, and with `throw` an error when the solve failed that says why and what to
    try (`remedy`), raised when the compiled code runs: the solver reached its maximum number
    of steps, or failed otherwise (its step size shrank to nothing, a non-finite field)."""
    if not throw:
        return solution
    result = solution.result
    messages = (
        "the ODE solver reached its maximum number of solver steps (max_steps) before the "
        f"last save time: {remedy}",
        "the ODE solver failed before the last save time (its step size shrank to nothing or "
        f"the field was not finite): {remedy}",
    )
    which = jnp.where(result == diffrax.RESULTS.max_steps_reached, 0, 1)
    return eqx.branched_error_if(solution, result != diffrax.RESULTS.successful, which, messages)


def onto_sphere(x: Float[Array, "... n d"]) -> Float[Array, "... n d"]:
    """Each finite token divided by its norm; a non-finite token (the `inf` fill of the save
    times after a failed solve) kept as it is, never made NaN.

    The exact flow of a sphere field conserves every `|x_i| = 1` (its velocity is tangent), so
    this removes only the integrator's drift off the sphere, a truncation error of the order
    of the tolerances (about `1e-6` over `t = 30` at the default ones), and leaves the
    directions as solved."""
    finite = jnp.all(jnp.isfinite(x), axis=-1, keepdims=True)
    return jnp.where(finite, normalize(jnp.where(finite, x, 1)), x)


@eqx.filter_jit
def _simulate_layers(
    field, x0, ts, steps: tuple[int, ...], h: float, save, until=None
) -> Trajectory:
    """Step the layers in blocks of `g` = gcd of the gaps between save steps.

    A scan over blocks saves the statistic after each block, so memory grows with the number
    of blocks (the number of save times when they are evenly spaced), never with the depth.
    With `until` (see `integrate`), the layers go by `_layers_until` instead.
    """
    statistic = (lambda t, x: x) if save is None else save

    @jax.checkpoint  # reverse mode recomputes a layer's attention matrix instead of storing it
    def one_layer(x, k):
        return field.layer(k.astype(x.dtype) * h, x, h), None

    if until is not None:
        xs, last = _layers_until(one_layer, statistic, until, x0, ts, steps, h)
        return Trajectory(ts=ts, xs=xs, status=state_status(last))
    offsets = np.asarray(steps) - steps[0]
    block = int(np.gcd.reduce(np.diff(offsets)))

    @jax.checkpoint  # reverse mode keeps the tokens at block ends only, not at every layer
    def one_block(x, b):
        start = steps[0] + b * block
        x, _ = jax.lax.scan(one_layer, x, start + jnp.arange(block))
        return x, statistic((start + block).astype(x.dtype) * h, x)

    first = statistic(ts[0], x0)
    last, rest = jax.lax.scan(one_block, x0, jnp.arange(offsets[-1] // block))
    stats = jax.tree.map(lambda f, r: jnp.concatenate([f[None], r]), first, rest)
    xs = jax.tree.map(lambda s: s[offsets // block], stats)
    return Trajectory(ts=ts, xs=xs, status=state_status(last))


def _layers_until(one_layer, statistic, until, x0, ts, steps, h):
    """Layers from save time to save time (the statistic only there), stopping once `until`.

    A `while_loop` over save times with a `fori_loop` of layers inside: under `vmap` it runs
    until the last item stops, so it pays off on chunks of similar items. Reverse-mode
    differentiation does not go through it; the `scan` path of `_simulate_layers` does.
    Returns the statistics and the last state computed.
    """
    steps = jnp.asarray(steps)
    first = statistic(ts[0], x0)
    stats = jax.tree.map(lambda f: jnp.zeros((len(ts), *f.shape), f.dtype).at[0].set(f), first)

    def running(carry):
        i, _, _, done = carry
        return (i < len(ts) - 1) & ~done

    def step(carry):
        i, x, stats, _ = carry
        x = jax.lax.fori_loop(steps[i], steps[i + 1], lambda k, x: one_layer(x, k)[0], x)
        stat = statistic(steps[i + 1].astype(x.dtype) * h, x)
        stats = jax.tree.map(lambda buffer, s: buffer.at[i + 1].set(s), stats, stat)
        return i + 1, x, stats, until(stat)

    last, x, stats, _ = jax.lax.while_loop(running, step, (0, x0, stats, until(first)))
    after = jnp.arange(len(ts)) > last

    def held(s):  # the statistic of the last save time computed, from there on
        return jnp.where(after.reshape(-1, *[1] * (s.ndim - 1)), s[last], s)

    return jax.tree.map(held, stats), x
