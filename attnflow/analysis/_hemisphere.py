"""Hemispheres: GLPR Lemma 6.4 / Theorem 6.3 and Wendel's probability."""

import math
from fractions import Fraction

import numpy as np
from scipy.optimize import linprog

from .._checks import as_float_array


def hemisphere(x) -> np.ndarray | None:
    """A direction `w` with `<x_i, w> > 0` for every token, or `None` if there is none.

    Tokens in an open hemisphere `{<x, w> > 0}` cluster exponentially fast (GLPR Theorem 6.3).
    Deciding it is the linear feasibility problem `X w >= 1` (scale any strict solution), solved
    exactly by HiGHS through `scipy.optimize.linprog`: the answer is a certificate that can be
    checked, not an estimate. By Gordan's theorem, `None` means that 0 lies in the convex hull
    of the tokens. Runs on the host (NumPy), not under `jit`.
    """
    x = np.asarray(as_float_array(x, "x"), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must have shape (n, d) with n, d >= 1; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite")
    n, d = x.shape
    result = linprog(
        np.zeros(d), A_ub=-x, b_ub=-np.ones(n), bounds=[(None, None)] * d, method="highs"
    )
    if result.status == 2:  # infeasible
        return None
    if result.status != 0:
        raise RuntimeError(f"linprog failed on the hemisphere problem: {result.message}")
    w = result.x / np.linalg.norm(result.x)
    return w if np.all(x @ w > 0) else None


def in_hemisphere(x) -> bool:
    """Whether all tokens lie in one open hemisphere (see `hemisphere`)."""
    return hemisphere(x) is not None


def wendel_probability(n: int, d: int) -> float:
    """`P(n i.i.d. uniform points on S^{d-1} lie in an open hemisphere)`, Wendel (1962).

    `2^{-(n-1)} sum_{k=0}^{d-1} C(n-1, k)`, computed in exact rational arithmetic, so it is
    correct to the last digit for any `n` (it is 1 when `n <= d`).
    """
    for value, name in ((n, "n"), (d, "d")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    n, d = int(n), int(d)
    count = sum(math.comb(n - 1, k) for k in range(min(d, n)))
    return float(Fraction(count, 2 ** (n - 1)))
