"""`simulate_sde`: the noisy flow `dX = drift dt + sqrt(2/kappa) dW`, `W` Brownian on the sphere."""

import numbers
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, ArrayLike, PyTree

from .._checks import as_float_array, check_times, positive_number
from ..fields import AbstractSphereField
from ..sphere import normalize, project, safe_norm
from ._core import Trajectory, solve_checked


def simulate_sde(
    field: AbstractSphereField,
    x0: ArrayLike,
    ts: ArrayLike,
    *,
    kappa: float,
    key: jax.Array,
    dt0: float,
    save: Callable[[Array, Array], PyTree] | None = None,
    max_steps: int = 1_000_000,
) -> Trajectory:
    """The stochastic flow `dx_i = field_i(x) dt + sqrt(2/kappa) P_{x_i} o dW_i` on the sphere
    (docs/science.md section 2, "Noise"; Stratonovich, so the noise is Brownian motion on the
    sphere), from `x0` at `ts[0]`, saved at `ts`.

    Solved with diffrax's SDE machinery: a `VirtualBrownianTree` (so the path is a function of
    `key` alone, whatever the steps), Heun's method (which converges to the Stratonovich
    solution) with constant steps `dt0`. The scheme is projected: it integrates
    `dx = abs(x) (field(theta) dt + sqrt(2/kappa) P_theta o dW)` with `theta = x / abs(x)`, whose
    direction obeys exactly the spherical SDE whatever the radius does, and saves `theta`, so
    the returned tokens lie on the sphere to rounding. `save(t, x)` works as in `simulate`.
    `kappa` is the inverse noise level (`kappa -> infinity`: no noise).
    """
    if not isinstance(field, AbstractSphereField):
        raise ValueError(
            f"field must be a field on the sphere (AbstractSphereField); got {field!r:.80}"
        )
    x0 = field.check(as_float_array(x0, "x0"))
    ts = check_times(as_float_array(ts, "ts").astype(x0.dtype))
    if isinstance(kappa, bool) or not isinstance(kappa, numbers.Real) or not 0 < kappa < jnp.inf:
        raise ValueError(f"kappa must be a positive finite number (inverse noise); got {kappa!r}")
    dt0 = positive_number(dt0, "dt0", "the step size")
    if save is not None and not callable(save):
        raise ValueError(f"save must be a callable save(t, x) or None; got {save!r}")
    kappa = jnp.asarray(kappa, x0.dtype)  # a value, not part of the program: no recompilation
    return _simulate_sde(field, x0, ts, kappa, key, dt0, save, int(max_steps))


@eqx.filter_jit
def _simulate_sde(field, x0, ts, kappa, key, dt0, save, max_steps) -> Trajectory:
    scale = jnp.sqrt(2 / kappa).astype(x0.dtype)
    shape = jax.ShapeDtypeStruct(x0.shape, x0.dtype)

    def drift(t, x, args):
        return safe_norm(x)[..., None] * field(t, normalize(x), args)

    def diffusion(t, x, args):
        return lx.FunctionLinearOperator(
            lambda w: scale * safe_norm(x)[..., None] * project(x, w), shape
        )

    brownian = diffrax.VirtualBrownianTree(ts[0], ts[-1], tol=dt0 / 2, shape=shape, key=key)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, brownian))
    statistic = (lambda t, x: x) if save is None else save
    solution = diffrax.diffeqsolve(
        terms,
        diffrax.Heun(),
        ts[0],
        ts[-1],
        dt0,
        x0,
        saveat=diffrax.SaveAt(ts=ts, fn=lambda t, x, args: statistic(t, normalize(x))),
        max_steps=max_steps,
        throw=False,
    )
    remedy = "the steps of dt0 do not reach the last save time; pass a larger max_steps or dt0"
    solution = solve_checked(solution, True, remedy)
    return Trajectory(ts=ts, xs=solution.ys, status=jnp.zeros((), jnp.int32))
