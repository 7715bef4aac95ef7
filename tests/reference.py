"""Independent NumPy/SciPy implementations that attnflow is tested against."""

import numpy as np
from scipy.integrate import solve_ivp


def attention_field(x, beta, Q, K, V, normalized=True):
    """SA/USA velocity written directly from docs/science.md section 2, in NumPy."""
    n = x.shape[0]
    logits = beta * (x @ Q.T) @ (x @ K.T).T
    if normalized:
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
    else:
        w = np.exp(logits) / n
    y = w @ (x @ V.T)
    return y - np.sum(x * y, axis=1, keepdims=True) * x


def solve(field, x0, ts, rtol=1e-12, atol=1e-12):
    """Integrate `field(x)` (x of the shape of x0) with scipy's DOP853; states at ts."""
    shape = x0.shape
    sol = solve_ivp(
        lambda t, y: field(y.reshape(shape)).ravel(),
        (ts[0], ts[-1]),
        np.ravel(x0),
        method="DOP853",
        t_eval=ts,
        rtol=rtol,
        atol=atol,
    )
    assert sol.success
    return sol.y.T.reshape(len(ts), *shape)


def equiangular(n, rho0, rotation=None):
    """`n` unit vectors of R^n with all pairwise inner products equal to rho0 >= -1/(n-1)."""
    simplex = np.eye(n) - 1 / n
    simplex /= np.linalg.norm(simplex, axis=1, keepdims=True)  # <s_i, s_j> = -1/(n-1)
    a2 = ((n - 1) * rho0 + 1) / n
    x = np.sqrt(a2) * np.ones((n, n)) / np.sqrt(n) + np.sqrt(1 - a2) * simplex
    return x if rotation is None else x @ np.asarray(rotation).T


def equiangular_rate(rho, beta, n, kind="SA"):
    """d rho / dt of the equiangular reduction, exactly as docs/science.md section 5 writes it."""
    growth = np.exp(beta * rho) * (1 - rho) * (1 + (n - 1) * rho)
    if kind == "SA":
        return 2 * growth / (np.exp(beta) + (n - 1) * np.exp(beta * rho))
    return 2 * growth / n


def solve_rho(beta, n, rho0, ts, kind="SA"):
    """The equiangular cosine at the times ts, from scipy's DOP853."""
    sol = solve_ivp(
        lambda t, r: equiangular_rate(r, beta, n, kind),
        (ts[0], ts[-1]),
        [rho0],
        method="DOP853",
        t_eval=ts,
        rtol=1e-13,
        atol=1e-14,
    )
    assert sol.success
    return sol.y[0]


def off_diagonal(gram):
    n = gram.shape[-1]
    return gram[..., ~np.eye(n, dtype=bool)]
