"""Long-context scaling `beta = gamma log n` (Rigollet 2025, Theorem 7; Chen et al. 2025)."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import as_float_array, check_value


def _inputs(n, rho, gamma):
    n = as_float_array(n, "n")
    rho = as_float_array(rho, "rho")
    gamma = as_float_array(gamma, "gamma")
    n = check_value(n, jnp.any(~(n >= 2)), "n must be >= 2 (tokens)")
    rho = check_value(rho, jnp.any(~((rho > 0) & (rho < 1))), "rho must lie in (0, 1)")
    gamma = check_value(gamma, jnp.any(~(gamma >= 0) | ~jnp.isfinite(gamma)), "gamma must be >= 0")
    return jnp.broadcast_arrays(n, rho, gamma)


def long_context_attention(
    n: ArrayLike, rho: ArrayLike, gamma: ArrayLike
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """Softmax weights `(A_ii, A_ij)` of one layer on `n` unit tokens with common cosine `rho`
    and `beta = gamma log n`: `A_ii = 1 / (1 + (n-1) n^{-gamma (1 - rho)})`, `A_ij` the rest of
    the row shared evenly. At `gamma = 1/(1 - rho)`, `A_ii = n / (2n - 1)`. Broadcasts."""
    n, rho, gamma = _inputs(n, rho, gamma)
    damping = jnp.exp(-gamma * (1 - rho) * jnp.log(n))  # e^{-beta (1 - rho)}, no overflow
    diagonal = 1 / (1 + (n - 1) * damping)
    return diagonal, (1 - diagonal) / (n - 1)


def long_context_cosine(n: ArrayLike, rho: ArrayLike, gamma: ArrayLike) -> Float[Array, "..."]:
    """The cosine between two outputs of one attention layer (`Q = K = V = I`, softmax with
    `beta = gamma log n`, outputs renormalized) on `n` unit tokens with common cosine `rho`.

    By symmetry the layer is `Y = W Theta` with `W = (a - b) I + b 11^T` (`a = A_ii`,
    `b = A_ij`, `a + (n-1) b = 1`) and the tokens' Gram matrix is `G = (1 - rho) I + rho 11^T`.
    Both are diagonal in the all-ones direction and its complement, so `Y Y^T = W G W^T` has
    eigenvalues `m = 1 + (n-1) rho` on `1` and `q = (a - b)^2 (1 - rho)` on its complement,
    and the output cosine is
    `(m - q) / (m + (n - 1) q)`: exact, `O(1)` for any `n` (no `n x n` matrix, `n` up to 1e9
    and beyond). As `n -> infinity` it tends to 1 for `gamma < 1/(1 - rho)`, to
    `4 rho / (1 + 3 rho)` at `gamma = 1/(1 - rho)`, and to `rho` above (Rigollet Thm 7).
    Broadcasts over `n`, `rho`, `gamma`.
    """
    n, rho, gamma = _inputs(n, rho, gamma)
    exponent = gamma * (1 - rho) * jnp.log(n)  # beta (1 - rho)
    gap = -jnp.expm1(-exponent) / (1 + (n - 1) * jnp.exp(-exponent))  # a - b, no cancellation
    q = gap**2 * (1 - rho)
    m = 1 + (n - 1) * rho
    return (m - q) / (m + (n - 1) * q)
