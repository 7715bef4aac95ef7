"""Long-context scaling `beta = gamma log n` (Rigollet 2025, Theorem 7; Chen et al. 2025)."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import as_float_array, check_value


def _inputs(n, rho, gamma):
    """The checked inputs, broadcast, and `(log(n - 1) - beta (1 - rho), beta (1 - rho))`.

    An integer `n` (a count) takes the dtype of `rho` and `gamma`, so float32 `rho` and `gamma`
    give float32 results for `n = 1024`; a floating-point `n` promotes with them as usual.
    """
    integer = jnp.issubdtype(jnp.asarray(n).dtype, jnp.integer)
    rho = as_float_array(rho, "rho")
    gamma = as_float_array(gamma, "gamma")
    n = as_float_array(n, "n")
    if integer:
        n = n.astype(jnp.result_type(rho, gamma))
    n = check_value(n, jnp.any(~((n >= 2) & (n < jnp.inf))), "n must be >= 2 and finite (tokens)")
    rho = check_value(rho, jnp.any(~((rho > 0) & (rho < 1))), "rho must lie in (0, 1)")
    gamma = check_value(gamma, jnp.any(~(gamma >= 0) | ~jnp.isfinite(gamma)), "gamma must be >= 0")
    n, rho, gamma = jnp.broadcast_arrays(n, rho, gamma)
    scaled = gamma * (1 - rho)
    # log(n - 1) - beta (1 - rho), without the cancellation of two terms of size log n near
    # the critical gamma = 1 / (1 - rho), where it is ~ 0
    log_others = jnp.log(n) * (1 - scaled) + jnp.log1p(-1 / n)
    return n, rho, gamma, log_others, scaled * jnp.log(n)


def long_context_attention(
    n: ArrayLike, rho: ArrayLike, gamma: ArrayLike
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """Softmax weights `(A_ii, A_ij)` of one layer on `n` unit tokens with common cosine `rho`
    and `beta = gamma log n`: `A_ii = 1 / (1 + (n-1) n^{-gamma (1 - rho)})`, `A_ij` the rest of
    the row shared evenly. At `gamma = 1/(1 - rho)`, `A_ii = n / (2n - 1)`. Broadcasts.

    Both in the log domain: `(n - 1) n^{-gamma (1 - rho)} = e^{log(n - 1) - beta (1 - rho)}`
    neither overflows nor passes through a subnormal `n^{-gamma (1 - rho)}` (float32 flushes
    those to zero), and `A_ij = n^{-gamma (1 - rho)} A_ii` is computed as such, not as
    `(1 - A_ii) / (n - 1)`, which cancels to 0 when `A_ii` rounds to 1.
    """
    n, rho, gamma, log_others, exponent = _inputs(n, rho, gamma)
    log_total = jnp.logaddexp(0.0, log_others)  # log(1 + (n-1) n^{-gamma (1 - rho)})
    return jnp.exp(-log_total), jnp.exp(-exponent - log_total)


def long_context_cosine(n: ArrayLike, rho: ArrayLike, gamma: ArrayLike) -> Float[Array, "..."]:
    """The cosine between two outputs of one attention layer (`Q = K = V = I`, softmax with
    `beta = gamma log n`, outputs renormalized) on `n` unit tokens with common cosine `rho`.

    By symmetry the layer is `Y = W Theta` with `W = (a - b) I + b 11^T` (`a = A_ii`,
    `b = A_ij`, `a + (n-1) b = 1`) and the tokens' Gram matrix is `G = (1 - rho) I + rho 11^T`.
    Both are diagonal in the all-ones direction and its complement, so `Y Y^T = W G W^T` has
    eigenvalues `m = 1 + (n-1) rho` on `1` and `q = (a - b)^2 (1 - rho)` on its complement,
    and the output cosine is `(m - q) / (m + (n - 1) q)`: exact, `O(1)` for any `n` (no `n x n`
    matrix, `n` up to 1e9 and beyond). As `n -> infinity` it tends to 1 for `gamma < 1/(1 - rho)`,
    to `4 rho / (1 + 3 rho)` at `gamma = 1/(1 - rho)`, and to `rho` above (Rigollet Thm 7).
    Broadcasts over `n`, `rho`, `gamma`, in their dtype (an integer `n` takes theirs).

    Computed as `(rho + s (1 - q)) / (rho + q + s)` with `s = 1 / (n - 1)` (the same fraction
    divided by `n - 1`: no overflow of `m + (n - 1) q` for `n` near the largest float), and
    `a - b = (1 - n^{-gamma (1 - rho)}) / (1 + (n - 1) n^{-gamma (1 - rho)})` without
    cancellation, its denominator in the log domain (see `long_context_attention`): finite and
    accurate in float32 up to `n ~ 1e38`.
    """
    n, rho, gamma, log_others, exponent = _inputs(n, rho, gamma)
    gap = -jnp.expm1(-exponent) * jnp.exp(-jnp.logaddexp(0.0, log_others))  # a - b
    q = gap**2 * (1 - rho)
    s = 1 / (n - 1)
    return (rho + s * (1 - q)) / (rho + q + s)
