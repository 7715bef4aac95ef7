"""The circle form of SA and USA on angles (`d = 2`, `Q = K = V = I`): Kuramoto-type models."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_beta
from .._types import Angles, Scalar
from ._attention import attention_weights
from ._field import AbstractField, check_finite


class Circle(AbstractField):
    """SA or USA on the circle, in angles `theta_i` (`x_i = (cos theta_i, sin theta_i)`).

    `dtheta_i/dt = -sum_j w_ij sin(theta_i - theta_j)`, `w_ij = exp(beta cos(theta_i - theta_j))`
    divided by `Z_i = sum_k exp(beta cos(theta_i - theta_k))` (`normalized=True`, SA) or by `n`
    (`normalized=False`, USA; at `beta = 0` the Kuramoto model with `omega = 0` and `K = 1`).
    docs/science.md section 2, "Circle (d = 2) and Kuramoto".
    """

    beta: Float[Array, ""]
    normalized: bool = eqx.field(static=True)

    def __init__(self, beta: Scalar, normalized: bool = True):
        self.beta = check_beta(beta)
        if not isinstance(normalized, bool):
            raise ValueError(f"normalized must be True or False; got {normalized!r}")
        self.normalized = normalized

    def __call__(self, t, theta: Angles, args=None) -> Angles:
        diff = theta[:, None] - theta[None, :]
        weights = attention_weights(self.beta * jnp.cos(diff), self.normalized)
        return -jnp.sum(weights * jnp.sin(diff), axis=-1).astype(theta.dtype)

    def check(self, x0):
        if x0.ndim != 1 or x0.shape[0] < 1:
            raise ValueError(f"x0 must be a vector of n >= 1 angles, shape (n,); got {x0.shape}")
        return check_finite(x0)
