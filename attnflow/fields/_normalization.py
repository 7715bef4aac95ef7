"""Normalization schemes other than Post-LN: where a transformer normalizes changes the flow.

Write `x_i = r_i theta_i`, `A_i = attention_i(theta)` (attention on the directions). Then
`d theta_i/dt = P_{theta_i} A_i / s_i` with the speed factor `s_i` and radius of docs/science.md
section 2 ("Normalization schemes", after Rigollet 2025 and Karagodin et al. 2025):

| scheme  | `s_i`                 | radius                          | field in `x`             |
|---------|-----------------------|---------------------------------|--------------------------|
| Post-LN | 1                     | `r_i = 1`                       | `P_x A` (`PostLN`, SA)   |
| Pre-LN  | `r_i`                 | `dr_i/dt = <theta_i, A_i>`      | `A(theta)`               |
| Peri-LN | `r_i abs(A_i)`        | `dr_i/dt = <theta_i, A_i> / abs(A_i)` | `A / abs(A)`       |
| nGPT    | `abs(A_i) / alpha(t)` | `r_i = 1`                       | `alpha P_x (A / abs(A))` |

(the last column is the same flow written for `x = r theta`; `abs` is the Euclidean norm).
`NoNorm` is pure attention in `R^d`, `dx_i/dt = attention_i(x)`, with no normalization at all.

Peri-LN and nGPT move each token along the direction `A_i / abs(A_i)` of its attention output;
where `A_i = 0` (e.g. an antipodal pair, or a regular simplex, at `beta = 0`, or `V = 0`) the
direction is undefined and the token is at rest: velocity 0, and a layer leaves it unchanged
(gradients there are finite). This is for `A_i = 0` exactly in floating point: an `A_i` of the
size of rounding errors (a simplex whose mean rounds to `1e-17`) still has a direction, that of
a nearby configuration, as the flow is discontinuous there.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import check_bool, check_on_sphere, check_value
from .._types import Points, Scalar
from ..sphere import normalize
from ._attention import AbstractAttention, Hardmax, Projected, Sinkhorn, Softmax, scale_by_exp
from ._field import AbstractLayerField, AbstractSphereField, check_kernel, check_tokens


def _row_sizes(a: Points) -> tuple[Array, Points]:
    """`(nonzero, abs(a_i))`: where a row is not 0 (NaN counts as not 0: a failed kernel is
    never a token at rest), and each row's norm, computed divided by `max_k abs(a_ik)` so that
    tiny or huge rows neither underflow nor overflow in `abs(a_i)^2` (1 where `a_i = 0`,
    gradient-safe)."""
    top = jax.lax.stop_gradient(jnp.max(jnp.abs(a), axis=-1, keepdims=True))  # cancels
    nonzero = top != 0
    top = jnp.where(nonzero, top, 1)
    b = a / top
    return nonzero, top * jnp.sqrt(jnp.where(nonzero, jnp.sum(b * b, axis=-1, keepdims=True), 1))


def direction(a: Points) -> Points:
    """`a_i / abs(a_i)` for each row, and 0 where `a_i = 0` (`_row_sizes`: no overflow or
    underflow, gradient 0 at `a_i = 0`, NaN kept)."""
    nonzero, size = _row_sizes(a)
    return jnp.where(nonzero, a / size, 0)


def attention_direction(attention: AbstractAttention, t: Scalar, x: Points) -> Points:
    """`direction(attention(t, x))`, from the kernel's log scale form (exact however large
    the output: the scale drops out)."""
    return direction(attention.scaled(t, x)[1])


def tangent_direction(out: Projected) -> Points:
    """`P_{x_i}(A_i / abs(A_i))` from a kernel's `projected` output: `e^{r_i - s_i} p_i /
    abs(u_i)`, exact however large `A_i` (the scales divide out) and as accurate as the
    tangent part `p_i`; 0 where `A_i = 0` (as `direction`)."""
    nonzero, size = _row_sizes(out.output)
    s, r = out.log_scale, out.tangent_log_scale
    p = out.tangent / size
    if s is not None or r is not None:
        p = scale_by_exp((0 if r is None else r) - (0 if s is None else s), p)
    return jnp.where(nonzero, p, 0)


class AbstractEuclideanField(AbstractLayerField):
    """Tokens in `R^d` (state of shape `(n, d)`), moved by `velocity`; a layer is an Euler step
    `x <- x + h velocity(t, x)` (the residual stream, normalized only inside the block)."""

    attention: AbstractAttention

    def __check_init__(self):
        check_kernel(self.attention)

    def layer(self, t, x, h):
        return (x + h * self(t, x)).astype(x.dtype)

    def check(self, x0):
        x0 = check_tokens(x0, self.attention)
        return check_value(
            x0,
            jnp.any(jnp.linalg.norm(x0, axis=-1) == 0),
            "x0 must have no zero row: the scheme normalizes each token to its direction",
        )

    def in_span(self, basis):
        """Each scheme moves a token along attention outputs (or their directions), which with
        `V = I` lie in the span of the tokens: this field with its kernel in the `basis`
        (`AbstractAttention.in_span`), `None` if the kernel leaves the span."""
        return _with_attention(self, self.attention.in_span(basis))


class PreLN(AbstractEuclideanField):
    """Pre-LN: `dx_i/dt = attention_i(x / abs(x))`: attention on the directions, added to the
    un-normalized residual stream. The radius grows and the angular speed is `1 / r_i`, so
    tokens cluster only polynomially fast (`1 - rho ~ t^{-2}`)."""

    def __call__(self, t, x, args=None):
        return self.attention(t, normalize(x)).astype(x.dtype)


class PeriLN(AbstractEuclideanField):
    """Peri-LN: `dx_i/dt = A_i / abs(A_i)` with `A = attention(x / abs(x))`: the block's output
    is normalized too, so each token moves at unit speed (`1 - rho ~ t^{-2}`), or not at all
    where `A_i = 0` (velocity 0 there: the limit is defined so, see the module docstring)."""

    def __call__(self, t, x, args=None):
        return attention_direction(self.attention, t, normalize(x)).astype(x.dtype)


class NoNorm(AbstractEuclideanField):
    """No normalization ("pure SA" in `R^d`): `dx_i/dt = attention_i(x) = sum_j A_ij V x_j`.

    `centered=True`: `dx_i/dt = sum_j A_ij V (x_j - x_i)`, each token pulled toward its
    attention-weighted mean. For the row-stochastic kernels this takes (`Softmax`, `Hardmax`,
    `Sinkhorn`, single head) it is `attention_i(x) - V x_i`, computed from the attention to the
    other tokens alone (`AbstractDotProductAttention.centered`), without the rounding of
    `V x_i` against the output. Its `Hardmax` form is docs/science.md's zero-temperature flow
    `dx_i/dt = (1/|C_i|) sum_{j in C_i} V (x_j - x_i)`, which comes to rest
    (`attnflow.concentration.limit_map`); the plain form grows like `e^{tV}` instead.
    """

    centered: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        check_bool(self.centered, "centered")
        if self.centered and not isinstance(self.attention, Softmax | Hardmax | Sinkhorn):
            raise ValueError(
                "centered=True needs a row-stochastic single-head kernel (Softmax, Hardmax or "
                f"Sinkhorn), where sum_j A_ij V (x_j - x_i) = attention_i(x) - V x_i; got "
                f"{type(self.attention).__name__}"
            )

    def __call__(self, t, x, args=None):
        kernel = self.attention.centered if self.centered else self.attention
        return kernel(t, x).astype(x.dtype)

    def check(self, x0):
        return check_tokens(x0, self.attention)


class NGPT(AbstractSphereField):
    """nGPT on the sphere: `dx_i/dt = alpha(t) P_{x_i}(A_i / abs(A_i))`, `A = attention(x)`.

    `alpha`: a finite positive number or a schedule `alpha(t) -> positive scalar` (the step
    size per unit depth); non-positive or non-finite values raise (an `EquinoxRuntimeError`
    under `jit`). Discrete layer: `x_i <- normalize(x_i + h alpha(t) A_i / abs(A_i))`. Where
    `A_i = 0` the token is at rest: velocity 0 and a layer leaves it unchanged.
    """

    attention: AbstractAttention
    alpha: Callable | float

    def __check_init__(self):
        check_kernel(self.attention)
        alpha = self.alpha
        number = isinstance(alpha, int | float) and not isinstance(alpha, bool)
        if not callable(alpha) and not (number and alpha > 0 and math.isfinite(alpha)):
            note = " (not finite)" if number and not math.isfinite(alpha) else ""
            raise ValueError(
                f"alpha must be a positive number or a callable alpha(t); got {alpha!r}{note}"
            )

    def _alpha(self, t, x):
        alpha = jnp.asarray(self.alpha(t) if callable(self.alpha) else self.alpha)
        return check_value(
            alpha.astype(x.dtype),
            ~(jnp.isfinite(alpha) & (alpha > 0)),
            "alpha(t) must be positive and finite",
            lambda: f"; got {alpha}",
        )

    def __call__(self, t, x, args=None):
        out = self.attention.projected(t, x)
        return (self._alpha(t, x) * tangent_direction(out)).astype(x.dtype)

    def layer(self, t, x, h):
        step = self._alpha(t, x) * attention_direction(self.attention, t, x)
        return normalize(x + h * step).astype(x.dtype)

    def check(self, x0):
        return check_on_sphere(check_tokens(x0, self.attention), "x0")

    def in_span(self, basis):
        """As for the schemes in `R^d`: `alpha P_{x_i}(A_i / abs(A_i))` stays in the span when
        the kernel's output does."""
        return _with_attention(self, self.attention.in_span(basis))


def _with_attention(field, attention):
    """`field` with its kernel replaced by `attention`, `None` if `attention` is."""
    return None if attention is None else eqx.tree_at(lambda f: f.attention, field, attention)
