"""The zero-temperature (hardmax) attention flow in `R^d`, its limit as `t -> infinity` (the
projection map of Alcalde, Bungert, Riedl, Roith 2026, ABRR) and the push-forward measure.

The flows (docs/science.md section 2, "Hardmax"; ABRR), for tokens `x_i in R^d` and general
`Q, K` (`m x d`) and `V` (`d x d`):

    finite beta:   dx_i/dt = sum_j A_ij V (x_j - x_i),   A_ij = softmax_j(beta <Q x_i, K x_j>)
    zero temp.:    dx_i/dt = (1/|C_i|) sum_{j in C_i} V (x_j - x_i),   C_i = argmax_j <Q x_i, K x_j>

(`NoNorm(Softmax(beta, Q, K, V), centered=True)` and `NoNorm(Hardmax(Q, K, V), centered=True)`).
Each token is pulled toward the tokens it attends to; the second flow is the `beta -> infinity`
limit of the first (Laplace's principle). Ties are split evenly among the `j` whose logits are
equal in floating point (`Hardmax`). attnflow's plain `NoNorm`, `dx_i/dt = sum_j A_ij V x_j`,
has no such limit: its tokens grow like `e^{tV}` (the pull toward `V x_i` is what makes the
flow come to rest).
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._checks import as_float_array, check_finite, check_shape, positive_int, positive_number
from ..fields import Hardmax, NoNorm, Softmax
from ..integrate import Rejectable, as_solver, controller

# What `Limit.status` means.
LIMIT_STATUS = (
    "converged",
    "not at rest by max_time",
    "solver failed (max_steps reached or step size too small)",
    "non-finite state",
)
CONVERGED, NOT_AT_REST, SOLVER_FAILED, NON_FINITE = range(4)


class LimitNotReached(RuntimeError):
    """The zero-temperature flow did not come to rest: no limit map was computed."""


def attention_flow(beta, Q=None, K=None, V=None) -> NoNorm:
    """The finite-temperature flow `dx_i/dt = sum_j A_ij V (x_j - x_i)` (softmax weights)."""
    return NoNorm(Softmax(beta, Q, K, V), centered=True)


def hardmax_flow(Q=None, K=None, V=None) -> NoNorm:
    """The zero-temperature flow `dx_i/dt = (1/|C_i|) sum_{j in C_i} V (x_j - x_i)`."""
    return NoNorm(Hardmax(Q, K, V), centered=True)


def default_tolerances(dtype) -> tuple[float, float, float]:
    """`(tol, rtol, atol)` for the hardmax flow in `dtype`: the rest speed (relative to the
    largest token norm) and the adaptive solver's tolerances."""
    if jnp.finfo(dtype).bits >= 64:
        return 1e-7, 1e-8, 1e-10
    return 1e-3, 1e-5, 1e-7


def solver_tolerances(dtype, tol=None, rtol=None, atol=None):
    """`(tol, rtol, atol)` of a run of the hardmax flow: the given ones, else the defaults of
    `default_tolerances`, with the solver's at most `tol / 10` and `tol / 1000` (as `1e-8`,
    `1e-10` are for `tol = 1e-7`): its error must stay below the rest threshold, else the
    speed it leaves is noise above `tol` and the flow never looks at rest."""
    tol0, rtol0, atol0 = default_tolerances(dtype)
    tol = tol0 if tol is None else tol
    rtol = jnp.minimum(rtol0, tol / 10) if rtol is None else rtol
    atol = jnp.minimum(atol0, tol / 1000) if atol is None else atol
    return tol, rtol, atol


class Limit(eqx.Module):
    """Where a run of the hardmax flow stopped.

    `points`: the tokens, shape `(n, d)`; `time`: when the run stopped; `speed`: the largest
    token speed `max_i |dx_i/dt|` there; `status`: an index into `LIMIT_STATUS` (0: at rest,
    `speed <= tol * scale`, where `scale = max(1, max_i |x_i(0)|)`).
    """

    points: Float[Array, "n d"]
    time: Float[Array, ""]
    speed: Float[Array, ""]
    status: Int[Array, ""]


def _speed(field, x):
    return jnp.max(jnp.linalg.norm(field(0.0, x), axis=-1))


@eqx.filter_jit
def hardmax_limit(
    x0: Float[Array, "n d"],
    Q=None,
    K=None,
    V=None,
    *,
    tol=None,
    max_time=1e3,
    solver="tsit5",
    dt0=None,
    rtol=None,
    atol=None,
    max_steps: int = 1_000_000,
) -> Limit:
    """Run the hardmax flow from `x0` until it is at rest (or `max_time`), never raising: the
    form for sweeps (`jax.vmap` over `x0` and the weights), which record `Limit.status` as data.

    Arguments as `limit_map`. The run stops at the first accepted step after which
    `max_i |dx_i/dt| <= tol * scale` (a diffrax event), with `scale = max(1, max_i |x0_i|)`.
    """
    field = hardmax_flow(Q, K, V)
    dtype = x0.dtype
    tol, rtol, atol = solver_tolerances(dtype, tol, rtol, atol)
    scale = jnp.maximum(1, jnp.max(jnp.linalg.norm(x0, axis=-1)))
    threshold = scale * tol
    solver = as_solver(solver)

    def at_rest(t, y, args, **kwargs):
        return _speed(field, y) <= threshold

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(Rejectable(field)),
        solver,
        t0=0.0,
        t1=jnp.asarray(max_time, dtype),
        dt0=dt0,
        y0=x0,
        saveat=diffrax.SaveAt(t1=True),
        stepsize_controller=controller(solver, rtol, atol),
        max_steps=max_steps,
        throw=False,
        event=diffrax.Event(at_rest),
    )
    points, time = solution.ys[-1], solution.ts[-1]
    speed = _speed(field, points)
    resting = speed <= threshold
    status = jnp.select(
        [~jnp.all(jnp.isfinite(points)), resting, solution.result == diffrax.RESULTS.successful],
        [NON_FINITE, CONVERGED, NOT_AT_REST],
        SOLVER_FAILED,
    )
    # At rest from the start: diffrax's event is not checked at t0.
    start = _speed(field, x0) <= threshold
    points = jnp.where(start, x0, points)
    time = jnp.where(start, 0, time).astype(dtype)
    status = jnp.where(start, CONVERGED, status).astype(jnp.int32)
    return Limit(points=points, time=time, speed=jnp.where(start, 0, speed), status=status)


def check_tokens(x, name: str = "x") -> jax.Array:
    """`x` as a finite float array of shape `(n, d)`, `n, d >= 1`."""
    x = as_float_array(x, name)
    check_shape(x, name, (None, None))
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (n, d) with n, d >= 1; got shape {x.shape}")
    return check_finite(x, name)


def check_options(
    *, tol=None, max_time=1e3, max_steps=1_000_000, dt0=None, rtol=None, atol=None, solver=None
) -> None:
    """`ValueError` for a bad option of `limit_map` (each a positive number, or None)."""
    for value, name in ((tol, "tol"), (dt0, "dt0"), (rtol, "rtol"), (atol, "atol")):
        if value is not None:
            positive_number(value, name)
    positive_number(max_time, "max_time", "the longest run of the hardmax flow")
    positive_int(max_steps, "max_steps")


def limit_map(
    x: Float[Array, "n d"],
    Q=None,
    K=None,
    V=None,
    *,
    tol: float | None = None,
    max_time: float = 1e3,
    solver="tsit5",
    dt0: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 1_000_000,
) -> Float[Array, "n d"]:
    r"""The projection map of ABRR: where the zero-temperature flow started at the tokens `x`
    comes to rest, `T(x_i) = lim_{t -> infinity} x_i(t)`.

    Arguments:
        x: tokens, shape `(n, d)`: the atoms of the initial measure `(1/n) sum_i delta_{x_i}`;
            each moves in the field of all of them (`hardmax_flow`).
        Q, K, V: `(m, d)`, `(m, d)` and `(d, d)`; `None` is the identity.
        tol: the run stops once `max_i |dx_i/dt| <= tol * max(1, max_i |x_i|)` (default
            `1e-7` in float64, `1e-3` in float32: above the noise floor of the solver's
            tolerances); the flow contracts toward its limit at the rate of the smallest real
            part of `V`'s eigenvalues, so the tokens are then within about `tol / that rate`
            (relative) of their limits.
        max_time: the longest run; not at rest by then raises `LimitNotReached`.
        solver, dt0, rtol, atol, max_steps: the diffrax solver (by name, or an instance) and
            its options. The default adaptive `"tsit5"` (`rtol, atol = 1e-8, 1e-10` in
            float64, `1e-5, 1e-7` in float32, and at most `tol / 10`, `tol / 1000`) rejects
            the steps that cross a switch of the argmax sets and so integrates the
            piecewise-linear flow to its tolerance; a fixed-step `"euler"` with `dt0` follows
            sliding modes at first order in `dt0`.

    Returns:
        `T(x)`, shape `(n, d)`, in `x`'s dtype. Raises `LimitNotReached` (with the time reached,
        the residual speed and `V`'s spectrum) when the flow did not come to rest.

    Characterization (proved here; `V = I`, `B = Q^T K` so that `<Q x, K y> = x^T B y`). Call
    the token `v` a *leader* if it strictly maximizes its own logit, `<B v, v> > <B v, y>` for
    every other token `y`. If the argmax `C_i(0)` of every token is a single leader `l(i)`,
    then `x_i(t) = l(i) + e^{-t} (x_i(0) - l(i))` and

        T(x_i) = l(i) = argmax_j <Q x_i, K x_j>.

    Proof: take `s = 1 - e^{-t}`, `a = x_i(0)`, `v = l(i)`. Every token is at all times a convex
    combination `(1 - s) b + s w` of its start `b` and its leader `w`, both tokens at time 0, and
    `x_i(t) = (1 - s) a + s v`. Then `<B x_i(t), v - y> = (1 - s)^2 <B a, v - b> + (1 - s) s
    (<B a, v - w> + <B v, v - b>) + s^2 <B v, v - w>`, where `<B a, v - .> >= 0` (`v` maximizes
    `a`'s logit) and `<B v, v - .> > 0` (`v` leads) at tokens other than `v`: so `C_i(t) =
    {v}` for all `t` and the flow is the stated one. Thus `T` maps each token to the leader of
    its cell, leaders to themselves (`T o T = T`), and `T_# mu_0` puts the mass of each cell on
    its leader. Example: for `Q = K = I` and the uniform measure on the unit ball every
    boundary point leads and `T(x) = x / |x|`, the radial projection onto the sphere (for
    tokens sampled from the ball, the leaders are the extreme samples).

    For `V != I` the paths `x_i(t) = v + e^{-tV} (a - v)` (while `C_i = {v}`) are curved and
    can leave the convex hull of the tokens; a token that does becomes its own argmax and
    stops, a new leader, and on the switching surfaces the flow slides (Filippov). The
    limit then depends on `V` as well, is computed by integration only, and needs `V`'s
    eigenvalues to have positive real parts for the flow to come to rest.
    """
    return _at_rest(
        check_tokens(x),
        Q,
        K,
        V,
        tol=tol,
        max_time=max_time,
        solver=solver,
        dt0=dt0,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    ).points


def _at_rest(x, Q, K, V, **options) -> Limit:
    """`hardmax_limit` of the checked tokens `x` with its options checked, raising
    `LimitNotReached` (with the time, the residual speed and `V`'s spectrum) unless the flow
    came to rest: what `limit_map` and `pushforward` run."""
    hardmax_flow(Q, K, V).check(x)  # the weights' shapes and values, now rather than under jit
    check_options(**options)
    limit = hardmax_limit(x, Q, K, V, **options)
    status = int(limit.status)
    if status == CONVERGED:
        return limit
    if V is None:
        spectrum = "V = I"
    else:
        low = _slowest_rate(V)
        spectrum = f"smallest real part of V's eigenvalues {low:.3g}"
        if low <= 0:
            spectrum += " (<= 0: the flow need not come to rest)"
    raise LimitNotReached(
        f"the zero-temperature flow did not come to rest: {LIMIT_STATUS[status]} (t = "
        f"{float(limit.time):.4g} of max_time = {options.get('max_time', 1e3):g}, largest speed "
        f"{float(limit.speed):.3g}); {spectrum}. It comes to rest when V's eigenvalues have "
        "positive real parts; raise max_time or max_steps, or use solver='euler' with a dt0 "
        "for flows that slide along switching surfaces"
    )


def _slowest_rate(V) -> float:
    """The rate at which the flow contracts to its limit: the smallest real part of `V`'s
    eigenvalues (1 for `V = I`)."""
    if V is None:
        return 1.0
    return float(np.min(np.linalg.eigvals(np.asarray(V, np.float64)).real))


class Pushforward(eqx.Module):
    """The push-forward `T_# mu_0` of the tokens' empirical measure by the limit map `T`.

    `points`: `T(x_i)` for each token, shape `(n, d)` (atoms of mass `1/n`, the form for
    Wasserstein distances); `atoms`: the distinct limit points, shape `(k, d)`, and `weights`:
    their masses, shape `(k,)`, summing to 1, heaviest first; `time`: when the flow came to
    rest.
    """

    points: np.ndarray
    atoms: np.ndarray
    weights: np.ndarray
    time: float


def pushforward(x0, Q=None, K=None, V=None, *, radius: float | None = None, **options):
    """`T_# mu_0` for `mu_0 = (1/n) sum_i delta_{x0_i}`: the limit map (`limit_map`, with its
    `options`) applied to every token, then the limit points within `radius` of each other
    merged into one atom (default `radius = 10 tol max(1, max |x0_i|) / c`, `c` the smallest
    real part of `V`'s eigenvalues (1 for `V = I`): a token at rest is within about
    `tol max(1, max |x0_i|) / c` of its limit). Returns a `Pushforward`; raises `LimitNotReached`
    as `limit_map` does."""
    x0 = check_tokens(x0, "x0")
    if radius is not None:
        radius = positive_number(radius, "radius")
    limit = _at_rest(x0, Q, K, V, **options)
    if radius is None:
        tol = options.get("tol") or default_tolerances(x0.dtype)[0]
        scale = max(1.0, float(jnp.max(jnp.linalg.norm(x0, axis=-1))))
        radius = 10 * tol * scale / max(_slowest_rate(V), 1e-3)  # at least 1e-3
    points = np.asarray(limit.points)
    atoms, weights = merge(points, radius)
    return Pushforward(points=points, atoms=atoms, weights=weights, time=float(limit.time))


def merge(points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The atoms (means of the groups of points within `radius` of a group's first point, in
    order of mass) and their masses, for points of equal mass `1 / len(points)`."""
    left = np.ones(len(points), bool)
    atoms, counts = [], []
    while left.any():
        first = points[np.argmax(left)]
        group = left & (np.linalg.norm(points - first, axis=-1) <= radius)
        atoms.append(points[group].mean(axis=0))
        counts.append(int(group.sum()))
        left &= ~group
    order = np.argsort(counts, kind="stable")[::-1]
    atoms = np.asarray(atoms)[order]
    weights = np.asarray(counts, np.float64)[order] / len(points)
    return atoms.astype(points.dtype), weights
