"""Vector fields: `field(t, x, args) -> dx/dt`, diffrax's convention."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from .._checks import check_finite, check_on_sphere
from .._types import Points, Scalar
from ..sphere import normalize, project
from ._attention import AbstractAttention, Softmax, Unnormalized, apply_scale
from ._feedforward import FeedForward


class AbstractField(eqx.Module):
    """A vector field `(t, x, args) -> dx/dt` for a state `x` of a fixed shape."""

    @abc.abstractmethod
    def __call__(self, t: Scalar, x, args=None):
        """The velocity at time `t` and state `x` (`args` is unused, for diffrax)."""

    @abc.abstractmethod
    def check(self, x0):
        """`x0`, validated as an initial state: `ValueError` on a bad shape or value."""

    def in_span(self, basis) -> "AbstractField | None":
        """This field in coordinates `y` of the orthonormal `basis` (`x = y basis^T`) when it
        keeps every token in the span of the tokens, so that a flow from tokens in the span
        can be computed there exactly (`simulate` does for `d > n`); `None` where it does not
        (the default)."""
        return None


class AbstractLayerField(AbstractField):
    """A field that is the continuous-time limit of discrete transformer layers."""

    @abc.abstractmethod
    def layer(self, t: Scalar, x: Points, h: Scalar) -> Points:
        """One discrete transformer layer of step `h` at time `t` (for `Layers`)."""


class AbstractSphereField(AbstractLayerField):
    """A field on the product of spheres `(S^{d-1})^n`, state of shape `(n, d)`."""


def check_kernel(attention) -> None:
    if not isinstance(attention, AbstractAttention):
        raise ValueError(f"attention must be an attention kernel; got {attention!r:.80}")


def check_tokens(x0, attention: AbstractAttention, mlp=None):
    """`x0` of shape `(n, d)`, fitting the kernel's weights, finite."""
    if x0.ndim != 2 or x0.shape[0] < 1 or x0.shape[1] < 1:
        raise ValueError(f"x0 must have shape (n, d) with n, d >= 1; got shape {x0.shape}")
    attention.check(x0)
    if mlp is not None:
        mlp.check(x0)
    return check_finite(x0)


class PostLN(AbstractSphereField):
    """Post-LN dynamics on the sphere: `dx_i/dt = P_{x_i}(attention_i(x) + mlp(x_i))`.

    Continuous time: the velocity is orthogonal to each `x_i` (`sphere.project`), so each
    `|x_i|` is conserved exactly by the flow: the sphere is invariant and neutrally stable, and
    integrators only drift off it by their accumulated truncation error.
    Discrete time (`layer`): the attention output is added and the result renormalized,
    `x_i <- normalize(x_i + h attention_i(x))`, then the same for the feed-forward term
    (Lie-Trotter splitting). docs/science.md section 2.

    The velocity is the kernel's tangent part (`AbstractAttention.projected`), computed
    without token `i`'s own term where it has no tangent part: accurate to a few `eps` of the
    terms each row is made of, also at large `beta`, where `A_ii` outweighs the other tokens'
    weights by `e^{beta (1 - <x_i, x_j>)}`. Kernels in log scale (`Unnormalized`:
    `attention_i = e^{s_i} u_i`) give it as `e^{r_i} p_i`, finite whenever it is representable
    (`+-inf` beyond, never NaN), and the layer is
    `normalize(e^{-m_i} x_i + e^{log h + s_i - m_i} u_i)` with `m_i = max(0, log h + s_i)`: the
    same point, computed without overflow for any `s_i`.
    """

    attention: AbstractAttention
    mlp: FeedForward | None = None

    def __check_init__(self):
        check_kernel(self.attention)
        if self.mlp is not None and not isinstance(self.mlp, FeedForward):
            raise ValueError(f"mlp must be a FeedForward or None; got {self.mlp!r:.80}")

    def __call__(self, t, x, args=None):
        out = self.attention.projected(t, x)
        v = apply_scale(out.tangent_log_scale, out.tangent)
        if self.mlp is not None:
            v = v + project(x, self.mlp(x))
        return v.astype(x.dtype)

    def layer(self, t, x, h):
        log_scale, u = self.attention.scaled(t, x)
        if log_scale is None:
            y = normalize(x + h * u)
        else:  # normalize(x + h e^s u), both terms divided by e^m <= max(1, h e^s)
            log_step = jnp.log(h) + log_scale
            m = jax.lax.stop_gradient(jnp.maximum(0, log_step))  # cancels exactly
            y = normalize(jnp.exp(-m)[..., None] * x + jnp.exp(log_step - m)[..., None] * u)
        if self.mlp is not None:
            y = normalize(y + h * self.mlp(y))
        return y.astype(x.dtype)

    def check(self, x0):
        return check_on_sphere(check_tokens(x0, self.attention, self.mlp), "x0")

    def in_span(self, basis):
        """This field in coordinates of the orthonormal `basis` (see `AbstractAttention.in_span`):
        the projection `P_{x_i}` keeps the span, a feed-forward term does not (`None`)."""
        attention = self.attention.in_span(basis)
        return None if attention is None or self.mlp is not None else PostLN(attention)


def SA(beta: Scalar, Q=None, K=None, V=None, *, block="auto") -> PostLN:
    """Self-attention dynamics on the sphere, `PostLN(Softmax(beta, Q, K, V))`.

    `dx_i/dt = P_{x_i}(sum_j A_ij V x_j)`, `A_ij = exp(beta <Q x_i, K x_j>) / Z_i`; `Q, K` of
    shape `(m, d)`, `V` of shape `(d, d)`, identity when omitted. docs/science.md section 2;
    Geshkovski, Letrouit, Polyanskiy, Rigollet (2023). `block`: dense `n x n` matrix or key
    blocks, see `Softmax` (`"auto"`: blockwise above 2048 tokens).
    """
    return PostLN(Softmax(beta, Q, K, V, block=block))


def USA(beta: Scalar, Q=None, K=None, V=None, *, block="auto") -> PostLN:
    """Unnormalized self-attention on the sphere, `PostLN(Unnormalized(beta, Q, K, V))`.

    `dx_i/dt = P_{x_i}((1/n) sum_j exp(beta <Q x_i, K x_j>) V x_j)`: `Z_i` replaced by `n`.
    With `Q = K = V = I` it is the gradient ascent `dX/dt = n grad E_beta` (docs/science.md,
    section 3). The layers (`Layers`) are finite for any `beta`, the velocity wherever its true
    value is representable (see `Unnormalized`). `block`: dense `n x n` matrix or key blocks,
    see `Unnormalized`.
    """
    return PostLN(Unnormalized(beta, Q, K, V, block=block))
