"""`fit_trajectory`: the idealized flow fitted to a recorded token trajectory."""

import functools
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import scipy.interpolate

from .._checks import as_float_array, check_finite, is_traced, positive_int, positive_number
from .._deprecated import default_key
from ..fields import KINDS, AbstractDotProductAttention, PostLN
from ..integrate import simulate
from ..sphere import normalize, on_sphere
from ._objectives import trajectory_loss
from ._search import SearchResult, SearchWarning, search


def identifiable(field: PostLN) -> tuple:
    """The combinations `(beta Q^T K, V)` of a dot-product attention field (shapes `(d, d)`)
    that its flow determines.

    The field depends on `beta`, `Q` and `K` only through the logits
    `beta <Q x_i, K x_j> = beta x_i^T (Q^T K) x_j`, so every `(beta', Q', K')` with
    `beta' Q'^T K' = beta Q^T K` gives the same velocity at every configuration, hence the same
    trajectories: `beta`, `Q` and `K` separately can never be recovered from tokens, only the
    `d x d` matrix `beta Q^T K`. `V` is determined by the flow (for tokens whose differences
    span `R^d`; tested by recovering it).
    """
    attention = getattr(field, "attention", None)
    if not isinstance(attention, AbstractDotProductAttention):
        raise ValueError(
            f"field must be a dot-product attention field such as attnflow.SA(beta, Q, K, V); "
            f"got {type(field).__name__}"
        )
    if attention.d is None:
        raise ValueError(
            "the field has Q = K = V = identity, of no fixed dimension: pass V = jnp.eye(d)"
        )
    eye = jnp.eye(attention.d, dtype=attention.beta.dtype)
    Q, K, V = (eye if a is None else a for a in (attention.Q, attention.K, attention.V))
    return attention.beta * Q.T @ K, V


def _recording(ts, xs):
    """`(ts, xs)` checked to be a recording (data, so concrete) of `T >= 2` times."""
    xs = check_finite(as_float_array(xs, "xs"), "xs")
    if xs.ndim != 3 or xs.size == 0:
        raise ValueError(f"xs must have shape (T, n, d), no size 0; got shape {xs.shape}")
    ts = as_float_array(ts, "ts").astype(xs.dtype)
    if ts.shape != xs.shape[:1]:
        raise ValueError(f"ts must have shape ({xs.shape[0]},) to match xs; got shape {ts.shape}")
    if is_traced((ts, xs)):
        raise ValueError("ts and xs must be concrete arrays (a recording), not traced")
    if xs.shape[0] < 2 or not np.all(np.diff(np.asarray(ts)) > 0):
        raise ValueError(
            f"ts must hold at least two strictly increasing times; got {np.asarray(ts)}"
        )
    if not bool(jnp.all(on_sphere(xs))):
        worst = float(jnp.max(jnp.abs(jnp.linalg.norm(xs, axis=-1) - 1)))
        raise ValueError(
            f"xs must lie on the unit sphere (every token of norm 1); the farthest is off by "
            f"{worst:.2g}: use attnflow.sphere.normalize"
        )
    return ts, xs


def fit_trajectory(
    ts,
    xs,
    *,
    kind: str = "SA",
    init: PostLN | None = None,
    steps: int = 200,
    optimizer=None,
    rtol: float | None = None,
    atol: float | None = None,
    patience: int | None = 20,
    progress: bool = True,
    key=None,
) -> SearchResult:
    """Fit the idealized attention flow to a recorded trajectory of tokens.

    Minimizes the multiple-shooting loss
    `sum_k trajectory_loss(simulate(field, xs[k], [ts[k], ts[k+1]]).xs[-1], xs[k+1]) / (T-1)`:
    every interval is integrated from the recorded state at its start (one solve from `xs[0]`
    over the whole recording has many spurious minima), over the parameters of `field`.

    Arguments:
        ts: the recording times, shape `(T,)`, strictly increasing.
        xs: the recorded tokens, shape `(T, n, d)`, on the unit sphere.
        kind: the dynamics, a name of `attnflow.fields.KINDS` (`"SA"` or `"USA"`); not used
            when `init` is given (the field is then `init`'s).
        init: the field to start from (its floating-point leaves are all fitted). Default:
            `kind(beta=1, Q=I, K=L, V)` with `beta` and `Q` held fixed, so that the fitted
            parameters are exactly the identifiable ones, `L = beta Q^T K` and `V` (see
            `identifiable`), started from `velocity_guess(ts, xs, kind, key=key)`.
        steps: the most optimizer steps.
        optimizer: None (the default) for Levenberg-Marquardt on the shooting residuals
            (`optimistix.LevenbergMarquardt`, Jacobians by reverse mode): a Gauss-Newton
            method, which reaches the ODE tolerance in 15 to 35 steps on random SA problems
            with `n = 8`, `d = 3`, where Adam or L-BFGS crawl along the ill-conditioned
            directions for hundreds. Its `history` holds the initial and the final loss only.
            Or an optax optimizer or a name (see `attnflow.optimize.optimizer`), run by
            `search` on the loss, with its full history, `patience` and `progress`.
        rtol, atol: the ODE tolerances of the fitted flow (default 1e-10 in float64, 1e-6 in
            float32); the recovered parameters cannot be more accurate than the recording.
        patience, progress: as in `search` (with an optax `optimizer`).
        key: a JAX random key for the starts of `velocity_guess` (when `init` is None);
            required there (the call without it is deprecated and uses `jax.random.key(0)`).

    Returns:
        A `SearchResult` whose `.params` is the fitted field (`.attention.beta`, `.Q`, `.K`,
        `.V`); `identifiable(result.params)` gives `(beta Q^T K, V)`, the only combinations a
        trajectory determines.
    """
    ts, xs = _recording(ts, xs)
    steps = positive_int(steps, "steps")
    if rtol is None:
        rtol = 1e-10 if xs.dtype == jnp.float64 else 1e-6
    rtol = positive_number(rtol, "rtol")
    atol = rtol if atol is None else positive_number(atol, "atol")
    if init is None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
        key = default_key(key, "fit_trajectory", jax.random.key(0))
        build, params = _Identifiable(kind), velocity_guess(ts, xs, kind, key=key)
    else:
        identifiable(init)  # checks that it is a dot-product attention field
        build, params = _as_is, init
    shooting = _Shooting(ts, xs, rtol, atol, build)
    if optimizer is None:
        fitted = _levenberg_marquardt(shooting, params, steps, rtol)
    else:
        fitted = search(
            shooting, params, optimizer, steps=steps, patience=patience, progress=progress
        )
    return eqx.tree_at(lambda r: r.params, fitted, build(fitted.params))


def _levenberg_marquardt(shooting, params, steps: int, rtol: float) -> SearchResult:
    """Minimize the shooting residuals by Levenberg-Marquardt (optimistix): Gauss-Newton
    converges in tens of steps here, where first-order methods crawl along the ill-conditioned
    directions."""
    dtype = shooting.xs.dtype
    if jax.config.jax_enable_x64 and dtype != jnp.float64:
        # optimistix mixes its float64 damping into float32 operators when x64 is on (its
        # own float32 path works with x64 off): solve in float64, return in the data's dtype.
        wide = jax.tree.map(
            lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, (shooting, params)
        )
        # back on the sphere to float64 rounding (float32 tokens are off by 1e-7)
        wide = eqx.tree_at(lambda w: w[0].xs, wide, normalize(wide[0].xs))
        solution = _solve_least_squares(*wide, steps, rtol)
        solution = jax.tree.map(lambda a: a.astype(dtype), solution)
    else:
        solution = _solve_least_squares(shooting, params, steps, rtol)
    losses = jnp.stack([shooting(params), shooting(solution)])
    if not bool(jnp.isfinite(losses[1])):
        warnings.warn(
            "Levenberg-Marquardt ended at parameters whose flow fails (non-finite loss); "
            "returning the starting point",
            SearchWarning,
            stacklevel=3,
        )
    best = int(jnp.argmin(jnp.where(jnp.isfinite(losses), losses, jnp.inf)))
    return SearchResult((params, solution)[best], losses[best], losses, jnp.asarray(best))


@eqx.filter_jit
def _solve_least_squares(shooting, params, steps, rtol):
    solver = optx.LevenbergMarquardt(rtol=rtol, atol=rtol * 1e-2)
    solution = optx.least_squares(
        lambda p, _: shooting.residuals(p),
        solver,
        params,
        max_steps=steps,
        throw=False,
        options={"jac": "bwd"},  # reverse mode: diffrax's adjoint has no forward mode
    )
    return solution.value


def _best_values(logits, xs, velocities, kind):
    """For fixed logits `L`, the `V` minimizing `sum |P_{x_i}(V u_i) - v_i|^2`,
    `u_i = sum_j A_ij x_j` (linear least squares: the velocity is linear in `V`), and that mean
    squared residual."""
    d = xs.shape[-1]
    attention = KINDS[kind](1.0, jnp.eye(d, dtype=xs.dtype), logits, None).attention
    u = jax.vmap(lambda x: attention(0.0, x))(xs)

    def velocity(flat):
        w = u @ flat.reshape(d, d).T
        return (w - jnp.sum(xs * w, -1, keepdims=True) * xs).ravel()

    design = jax.jacfwd(velocity)(jnp.zeros(d * d, xs.dtype))
    flat = jnp.linalg.lstsq(design, velocities.ravel())[0]
    return flat.reshape(d, d), jnp.mean((design @ flat - velocities.ravel()) ** 2)


@functools.partial(jax.jit, static_argnames=("kind", "starts", "steps"))
def _velocity_fit(xs, velocities, key, kind, starts=64, steps=300):
    d = xs.shape[-1]
    loss = lambda logits: _best_values(logits, xs, velocities, kind)[1]  # noqa: E731
    scales = jnp.linspace(0, 2, starts, dtype=xs.dtype)[:, None, None]
    logits0 = scales * jax.random.normal(key, (starts, d, d), xs.dtype)
    adam = optax.adam(3e-2)

    def descend(logits):
        def step(carry, _):
            logits, state = carry
            updates, state = adam.update(jax.grad(loss)(logits), state, logits)
            return (optax.apply_updates(logits, updates), state), None

        (logits, _), _ = jax.lax.scan(step, (logits, adam.init(logits)), length=steps)
        return logits, loss(logits)

    candidates, losses = jax.vmap(descend)(logits0)
    best = candidates[jnp.argmin(jnp.where(jnp.isfinite(losses), losses, jnp.inf))]
    return best, _best_values(best, xs, velocities, kind)[0]


def velocity_guess(ts, xs, kind: str = "SA", key=None):
    """A starting point for `fit_trajectory`: `(L, V)`, `L` standing for `beta Q^T K`.

    The trajectory loss has spurious local minima (a fit started from uniform attention,
    `L = 0`, stalls in one for about a third of random SA problems with `n = 8`, `d = 3`), so
    the fit starts from a cheaper problem solved globally enough: match the velocities
    `v_i(t_k)`, estimated as the derivative of a cubic spline through the recording, with
    `P_{x_i}(V u_i)`, `u_i = sum_j A_ij(L) x_j`. For fixed `L` this is linear least squares in
    `V`, so `V` is eliminated (variable projection) and only `L` is searched, by Adam from 64
    starts of increasing scale at once (`jax.vmap`); the best one is returned. Its accuracy is
    that of the spline's derivative (about `h^3` for a recording step `h`): the trajectory fit
    then removes that error. `key` draws the starts (required; the call without it is
    deprecated and uses `jax.random.key(0)`).
    """
    ts, xs = _recording(ts, xs)
    key = default_key(key, "velocity_guess", jax.random.key(0))
    spline = scipy.interpolate.CubicSpline(np.asarray(ts), np.asarray(xs), axis=0)
    velocities = jnp.asarray(spline.derivative()(np.asarray(ts)), xs.dtype)
    return _velocity_fit(xs, velocities, key, kind)


class _Identifiable(eqx.Module):
    """`(L, V)` -> `kind(beta=1, Q=I, K=L, V)`: the field with logits `<x_i, L x_j>`."""

    kind: str = eqx.field(static=True)

    def __call__(self, params):
        logits, V = params
        return KINDS[self.kind](1.0, jnp.eye(V.shape[0], dtype=V.dtype), logits, V)


def _as_is(field):
    return field


class _Shooting(eqx.Module):
    """The multiple-shooting loss of `fit_trajectory`: each interval is integrated from the
    recorded `x(t_k)` (one solve from `x(t_0)` has many more spurious minima). A Module, so the
    recording is traced, not baked in: new data of the same shapes compiles nothing."""

    ts: jnp.ndarray
    xs: jnp.ndarray
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    build: object = eqx.field(static=True)

    def residuals(self, params):
        return self.predict(params) - self.xs[1:]

    def __call__(self, params):
        return trajectory_loss(self.predict(params), self.xs[1:])

    def predict(self, params):
        field = self.build(params)

        def interval(x, t0, t1):
            ts = jnp.stack([t0, t1])
            # throw=False: a trial step whose flow fails gives inf, which the optimizer rejects
            run = simulate(field, x, ts, rtol=self.rtol, atol=self.atol, throw=False)
            return run.xs[-1]

        return jax.vmap(interval)(self.xs[:-1], self.ts[:-1], self.ts[1:])
