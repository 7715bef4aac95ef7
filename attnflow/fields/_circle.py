"""The circle form of SA and USA on angles (`d = 2`, `Q = K = V = I`): Kuramoto-type models."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_beta, check_bool, check_finite
from .._types import Angles, Scalar
from ._attention import masked_softmax, scale_by_exp
from ._field import AbstractField


class Circle(AbstractField):
    """SA or USA on the circle, in angles `theta_i` (`x_i = (cos theta_i, sin theta_i)`).

    `dtheta_i/dt = -sum_j w_ij sin(theta_i - theta_j)`, `w_ij = exp(beta cos(theta_i - theta_j))`
    divided by `Z_i = sum_k exp(beta cos(theta_i - theta_k))` (`normalized=True`, SA) or by `n`
    (`normalized=False`, USA; at `beta = 0` the Kuramoto model with `omega = 0` and `K = 1`).
    docs/science.md section 2, "Circle (d = 2) and Kuramoto".

    Token `i`'s own term is 0 (`sin 0`) and is left out: the others' weights are kept in a log
    scale of their own, `w_ij = e^{b_i} softmax_{j != i}(beta cos(theta_i - theta_j))`, so
    that none underflows next to `e^beta`, and the velocity is finite wherever its true value
    is representable (USA, beyond `beta` about 709 in float64: `+-inf`, never NaN).
    """

    beta: Float[Array, ""]
    normalized: bool = eqx.field(static=True)

    def __init__(self, beta: Scalar, normalized: bool = True):
        self.beta = check_beta(beta)
        self.normalized = check_bool(normalized, "normalized")

    def __call__(self, t, theta: Angles, args=None) -> Angles:
        n = theta.shape[0]
        diff = theta[:, None] - theta[None, :]
        lse, w = masked_softmax(self.beta * jnp.cos(diff), ~jnp.eye(n, dtype=bool))
        # w_ij = exp(beta cos(theta_i - theta_j) - norm_i), norm_i = log Z_i or log n
        norm = jnp.logaddexp(self.beta, lse) if self.normalized else jnp.log(n).astype(lse.dtype)
        pull = jnp.sum(w * jnp.sin(diff), axis=-1)
        return -scale_by_exp(lse - norm, pull[:, None])[:, 0].astype(theta.dtype)

    def check(self, x0):
        if x0.ndim != 1 or x0.shape[0] < 1:
            raise ValueError(f"x0 must be a vector of n >= 1 angles, shape (n,); got {x0.shape}")
        return check_finite(x0)
