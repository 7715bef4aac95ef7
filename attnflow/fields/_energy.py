"""The interaction energy `E_beta` (docs/science.md section 3)."""

import jax
import jax.numpy as jnp

from .._checks import as_float_array, check_beta, check_finite, check_value, is_traced
from .._types import Points, Scalar


def log_energy(x: Points, beta: Scalar):
    """`log E_beta(X)`, finite for any `beta > 0` (see `energy`)."""
    x = as_float_array(x, "x")
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(f"x must have shape (n, d) with n, d >= 1; got shape {x.shape}")
    if not is_traced(x):  # traced, in a sweep: a failed run's NaN is recorded as data
        x = check_finite(x, "x")
    beta = check_beta(beta)
    beta = check_value(
        beta, beta <= 0, "beta must be > 0 for the energy (E_beta diverges like 1/(2 beta))"
    )
    return jax.nn.logsumexp(beta * (x @ x.T)) - jnp.log(2 * beta * x.shape[0] ** 2)


def energy(x: Points, beta: Scalar):
    """Interaction energy `E_beta(X) = (1 / (2 beta n^2)) sum_{i,j} exp(beta <x_i, x_j>)`.

    Non-decreasing along SA and USA with `Q = K = V = I`; USA is its gradient ascent,
    `dX/dt = n grad_X E_beta` on the product of spheres. Computed as `exp(log_energy(x, beta))`
    through a log-sum-exp: finite whenever `E_beta` is representable (for unit tokens about
    `e^beta / (2 beta)`, so `beta` up to about 700 in float64; use `log_energy` beyond).
    docs/science.md section 3.
    """
    return jnp.exp(log_energy(x, beta))
