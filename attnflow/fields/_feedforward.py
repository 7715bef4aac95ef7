"""The feed-forward (MLP) term `w sigma(a x + b)` of a transformer block."""

from collections.abc import Callable

import equinox as eqx
import jax
from jaxtyping import Array, Float

from .._checks import as_float_array, check_finite, check_matrix
from .._types import Points
from ._attention import check_width


class FeedForward(eqx.Module):
    """`x_i -> w sigma(a x_i + b)`, with `a` of shape `(p, d)`, `b` `(p,)`, `w` `(d, p)`.

    Added inside the tangent projection of a sphere field; in discrete time it is applied by
    Lie-Trotter splitting, after the attention step (docs/science.md section 2). `sigma` defaults to
    ReLU and is static. `w`, `a`, `b` must be finite (`ValueError` naming the argument; an
    `EquinoxRuntimeError` under `jit`).
    """

    w: Float[Array, "d p"]
    a: Float[Array, "p d"]
    b: Float[Array, " p"]
    sigma: Callable = eqx.field(static=True)

    def __init__(self, w, a, b, sigma: Callable = jax.nn.relu):
        self.a = check_matrix(a, "a", (None, None))
        p, d = self.a.shape
        self.w = check_matrix(w, "w", (d, p))
        self.b = as_float_array(b, "b")
        if self.b.shape != (p,):
            raise ValueError(f"b must have shape ({p},); got shape {self.b.shape}")
        self.b = check_finite(self.b, "b")
        if not callable(sigma):
            raise ValueError(f"sigma must be callable; got {sigma!r}")
        self.sigma = sigma

    def __call__(self, x: Points) -> Points:
        return self.sigma(x @ self.a.T + self.b) @ self.w.T

    def check(self, x: Points) -> None:
        check_width(x, self.a.shape[1], "feed-forward")
