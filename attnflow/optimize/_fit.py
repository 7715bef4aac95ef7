"""`fit_trajectory`: the idealized flow fitted to a recorded token trajectory."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from .._checks import as_float_array, check_finite, positive_int, positive_number
from .._simulate import simulate
from ..fields import KINDS, AbstractDotProductAttention, PostLN
from ._objectives import trajectory_loss
from ._search import SearchResult, search


def identifiable(field: PostLN) -> tuple:
    """The combinations `(beta Q^T K, V)` of a dot-product attention field that its flow
    determines; `None` stands for the identity, as in the field.

    The field depends on `beta`, `Q` and `K` only through the logits
    `beta <Q x_i, K x_j> = beta x_i^T (Q^T K) x_j`, so every `(beta', Q', K')` with
    `beta' Q'^T K' = beta Q^T K` gives the same velocity at every configuration, hence the same
    trajectories: `beta`, `Q` and `K` separately can never be recovered from tokens, only the
    `d x d` matrix `beta Q^T K`. `V` is determined (for tokens whose differences span `R^d`).
    """
    attention = getattr(field, "attention", None)
    if not isinstance(attention, AbstractDotProductAttention):
        raise ValueError(
            f"field must be a dot-product attention field such as attnflow.SA(beta, Q, K, V); "
            f"got {type(field).__name__}"
        )
    d = attention.d
    q = attention.Q
    k = attention.K
    if q is None and k is None:
        logits = None if d is None else jnp.eye(d)
    else:
        logits = (jnp.eye(k.shape[1]) if q is None else q).T @ (
            jnp.eye(q.shape[1]) if k is None else k
        )
    A = attention.beta * (jnp.eye(_width(field)) if logits is None else logits)
    return A, attention.V


def _width(field) -> int:
    d = field.attention.d
    if d is None:
        raise ValueError("the field has Q = K = V = identity: give its dimension by passing V")
    return d


def _tolerances(dtype, rtol, atol):
    if rtol is None:
        rtol = 1e-10 if dtype == jnp.float64 else 1e-6
    if atol is None:
        atol = rtol
    return positive_number(rtol, "rtol"), positive_number(atol, "atol")


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
    checkpoint=None,
) -> SearchResult:
    """Fit the idealized attention flow to a recorded trajectory of tokens.

    Minimizes `trajectory_loss(simulate(field, xs[0], ts).xs, xs)`, the mean squared distance
    between the flow started at the first recorded state and the recording, over the
    parameters of `field`, with `search`.

    Arguments:
        ts: the recording times, shape `(T,)`, strictly increasing.
        xs: the recorded tokens, shape `(T, n, d)`, on the unit sphere.
        kind: the dynamics, a name of `attnflow.fields.KINDS` (`"SA"` or `"USA"`).
        init: the field to start from (its floating-point leaves are all fitted). Default:
            `kind(beta=1, Q=I, K=0, V=I)` with `beta` and `Q` held fixed, so that the fitted
            parameters are exactly the identifiable ones: `K` becomes `beta Q^T K` and `V`
            itself (see `identifiable`). `K = 0` is uniform attention, a neutral start.
        steps: the most optimizer steps; `patience` stops earlier once the loss stalls.
        optimizer: an optax optimizer or a name (see `attnflow.optimize.optimizer`);
            default L-BFGS (`optax.lbfgs`), which reaches the rounding floor on these small,
            smooth problems in tens of steps.
        rtol, atol: the ODE tolerances of the fitted flow (default 1e-10 in float64, 1e-6 in
            float32); the recovered parameters cannot be more accurate than the recording.
        progress, checkpoint: as in `search`.

    Returns:
        A `SearchResult` whose `.params` is the fitted field (`.attention.beta`, `.Q`, `.K`,
        `.V`); `identifiable(result.params)` gives `(beta Q^T K, V)`, the only combinations a
        trajectory determines.
    """
    xs = check_finite(as_float_array(xs, "xs"), "xs")
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape (T, n, d); got shape {xs.shape}")
    ts = as_float_array(ts, "ts").astype(xs.dtype)
    if ts.shape != xs.shape[:1]:
        raise ValueError(f"ts must have shape ({xs.shape[0]},) to match xs; got shape {ts.shape}")
    steps = positive_int(steps, "steps")
    rtol, atol = _tolerances(xs.dtype, rtol, atol)
    if init is None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")
        eye = jnp.eye(xs.shape[-1], dtype=xs.dtype)
        build, params = _Identifiable(kind), (jnp.zeros_like(eye), eye)
    else:
        identifiable(init)  # checks that it is a dot-product attention field
        build, params = _as_is, init
    result = search(
        _FitLoss(ts, xs, rtol, atol, build),
        params,
        optax.lbfgs() if optimizer is None else optimizer,
        steps=steps,
        patience=patience,
        progress=progress,
        checkpoint=checkpoint,
    )
    return eqx.tree_at(lambda r: r.params, result, build(result.params))


class _Identifiable(eqx.Module):
    """`(L, V)` -> `kind(beta=1, Q=I, K=L, V)`: the field with logits `<x_i, L x_j>`."""

    kind: str = eqx.field(static=True)

    def __call__(self, params):
        logits, V = params
        return KINDS[self.kind](1.0, jnp.eye(V.shape[0], dtype=V.dtype), logits, V)


def _as_is(field):
    return field


class _FitLoss(eqx.Module):
    """The loss of `fit_trajectory`; a Module so the recording is traced, not baked in: a
    second fit of new data of the same shapes compiles nothing."""

    ts: jnp.ndarray
    xs: jnp.ndarray
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    build: object = eqx.field(static=True)

    def __call__(self, params):
        field = self.build(params)

        def interval(x, t0, t1):
            ts = jnp.stack([t0, t1])
            return simulate(field, x, ts, rtol=self.rtol, atol=self.atol).xs[-1]

        pred = jax.vmap(interval)(self.xs[:-1], self.ts[:-1], self.ts[1:])
        return trajectory_loss(pred, self.xs[1:])
