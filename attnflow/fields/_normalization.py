"""Normalization schemes other than Post-LN: where a transformer normalizes changes the flow.

Write `x_i = r_i theta_i`, `A_i = attention_i(theta)` (attention on the directions). Then
`d theta_i/dt = P_{theta_i} A_i / s_i` with the speed factor `s_i` and radius of SCIENCE.md
section 2 ("Normalization schemes", after Rigollet 2025 and Karagodin et al. 2025):

| scheme  | `s_i`                 | radius                          | field in `x`             |
|---------|-----------------------|---------------------------------|--------------------------|
| Post-LN | 1                     | `r_i = 1`                       | `P_x A` (`PostLN`, SA)   |
| Pre-LN  | `r_i`                 | `dr_i/dt = <theta_i, A_i>`      | `A(theta)`               |
| Peri-LN | `r_i abs(A_i)`        | `dr_i/dt = <theta_i, A_i> / abs(A_i)` | `A / abs(A)`       |
| nGPT    | `abs(A_i) / alpha(t)` | `r_i = 1`                       | `alpha P_x (A / abs(A))` |

(the last column is the same flow written for `x = r theta`; `abs` is the Euclidean norm).
`NoNorm` is pure attention in `R^d`, `dx_i/dt = attention_i(x)`, with no normalization at all.
"""

from collections.abc import Callable

import jax.numpy as jnp

from .._checks import check_value
from .._types import Points
from ..sphere import normalize, project
from ..sphere._sphere import safe_norm
from ._attention import AbstractAttention
from ._field import (
    AbstractLayerField,
    AbstractSphereField,
    check_kernel,
    check_on_sphere,
    check_tokens,
)


def _nonzero_rows(x0: Points) -> Points:
    return check_value(
        x0,
        jnp.any(jnp.linalg.norm(x0, axis=-1) == 0),
        "x0 must have no zero row: the scheme normalizes each token to its direction",
    )


class AbstractEuclideanField(AbstractLayerField):
    """Tokens in `R^d` (state of shape `(n, d)`), moved by `velocity`; a layer is an Euler step
    `x <- x + h velocity(t, x)` (the residual stream, normalized only inside the block)."""

    attention: AbstractAttention

    def __check_init__(self):
        check_kernel(self.attention)

    def layer(self, t, x, h):
        return (x + h * self(t, x)).astype(x.dtype)

    def check(self, x0):
        return _nonzero_rows(check_tokens(x0, self.attention))


class PreLN(AbstractEuclideanField):
    """Pre-LN: `dx_i/dt = attention_i(x / abs(x))`: attention on the directions, added to the
    un-normalized residual stream. The radius grows and the angular speed is `1 / r_i`, so
    tokens cluster only polynomially fast (`1 - rho ~ t^{-2}`)."""

    def __call__(self, t, x, args=None):
        return self.attention(t, normalize(x)).astype(x.dtype)


class PeriLN(AbstractEuclideanField):
    """Peri-LN: `dx_i/dt = A_i / abs(A_i)` with `A = attention(x / abs(x))`: the block's output
    is normalized too, so each token moves at unit speed (`1 - rho ~ t^{-2}`)."""

    def __call__(self, t, x, args=None):
        return normalize(self.attention(t, normalize(x))).astype(x.dtype)


class NoNorm(AbstractEuclideanField):
    """No normalization ("pure SA" in `R^d`): `dx_i/dt = attention_i(x)`."""

    def __call__(self, t, x, args=None):
        return self.attention(t, x).astype(x.dtype)

    def check(self, x0):
        return check_tokens(x0, self.attention)


class NGPT(AbstractSphereField):
    """nGPT on the sphere: `dx_i/dt = alpha(t) P_{x_i}(A_i / abs(A_i))`, `A = attention(x)`.

    `alpha`: a positive number or a schedule `alpha(t) -> positive scalar` (the step size per
    unit depth); non-positive values raise (an `EquinoxRuntimeError` under `jit`). Discrete
    layer: `x_i <- normalize(x_i + h alpha(t) A_i / abs(A_i))`.
    """

    attention: AbstractAttention
    alpha: Callable | float

    def __check_init__(self):
        check_kernel(self.attention)
        if not callable(self.alpha) and not (
            isinstance(self.alpha, int | float)
            and not isinstance(self.alpha, bool)
            and self.alpha > 0
        ):
            raise ValueError(
                f"alpha must be a positive number or a callable alpha(t); got {self.alpha!r}"
            )

    def _step(self, t, x):
        alpha = self.alpha(t) if callable(self.alpha) else self.alpha
        alpha = check_value(
            jnp.asarray(alpha, x.dtype), ~(jnp.asarray(alpha) > 0), "alpha(t) must be positive"
        )
        a = self.attention(t, x)
        return alpha * a / safe_norm(a)[..., None]

    def __call__(self, t, x, args=None):
        return project(x, self._step(t, x)).astype(x.dtype)

    def layer(self, t, x, h):
        return normalize(x + h * self._step(t, x)).astype(x.dtype)

    def check(self, x0):
        return check_on_sphere(check_tokens(x0, self.attention))
