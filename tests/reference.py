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


# --- Extended precision (mpmath): attention outputs and velocities, no log scale, no shifts ---
#
# Every quantity below is computed from the exact values of the given floating-point arrays in
# 50-digit arithmetic with an unbounded exponent (so `e^{beta <x_i, x_j>}` never overflows), by
# the formulas of docs/science.md, term by term. `scale` is the size of what a row is made of,
# apart from terms that vanish exactly (token `i`'s own `P_{x_i} x_i`, `x_i - x_i`): the
# rounding that a floating-point computation of the row cannot avoid is a few `eps` times it.


def _mp(a):
    import mpmath

    mpmath.mp.dps = 50
    if isinstance(a, list):  # already in extended precision
        return a
    a = np.asarray(a, np.float64)
    if a.ndim == 1:
        return [mpmath.mpf(float(v)) for v in a]
    return [_mp(row) for row in a]


def _dot(a, b):
    import mpmath

    return mpmath.fsum(u * v for u, v in zip(a, b, strict=True))


def _norm(a):
    import mpmath

    return mpmath.sqrt(_dot(a, a))


def _apply(M, rows):
    return rows if M is None else [[_dot(r, v) for r in _mp(M)] for v in rows]


def _project(x, y):
    c = _dot(x, y) / _dot(x, x)
    return [b - c * a for a, b in zip(x, y, strict=True)]


def mp_weights(xs, beta=0.0, Q=None, K=None, normalized=True, causal=False, weights=None):
    """Rows `{j: A_ij}` of attention weights for the tokens `xs` (mpmath rows):
    `exp(beta <Q x_i, K x_j>) / Z_i` (`normalized`) or `/ n_i`, over `j <= i` if `causal`; or
    the given `weights` (`n x n`) for the kernels whose weights are not exponentials."""
    import mpmath

    qs, ks = _apply(Q, xs), _apply(K, xs)
    rows = []
    for i in range(len(xs)):
        allowed = range(i + 1) if causal else range(len(xs))
        if weights is not None:
            rows.append({j: mpmath.mpf(float(weights[i][j])) for j in allowed})
            continue
        e = {j: mpmath.exp(mpmath.mpf(float(beta)) * _dot(qs[i], ks[j])) for j in allowed}
        norm = mpmath.fsum(e.values()) if normalized else len(e)
        rows.append({j: w / norm for j, w in e.items()})
    return rows


def mp_attention(xs, V=None, centered=False, **weights):
    """`(out, tangent, scale)` for the tokens `xs` (mpmath rows): `out_i = sum_j A_ij V x_j` (or
    `sum_j A_ij V (x_j - x_i)` if `centered`), its tangent part `sum_j A_ij P_{x_i} V x_j`
    (each term projected before it is weighted: token `i`'s own `P_{x_i} x_i` is exactly 0,
    never a difference of numbers as large as `A_ii`), and the sizes `(sum_{j != i} A_ij
    |V x_j|, A_ii |V x_i|)` of the others' terms and of its own (0 if `centered`); `weights`:
    see `mp_weights`."""
    import mpmath

    vs = _apply(V, xs)
    out, tangent, scale = [], [], []
    for i, a in enumerate(mp_weights(xs, **weights)):
        d = len(xs[i])
        terms = (
            {j: [v - u for v, u in zip(vs[j], vs[i], strict=True)] for j in a} if centered else vs
        )
        out.append([mpmath.fsum(w * terms[j][k] for j, w in a.items()) for k in range(d)])
        moves = {j: _project(xs[i], terms[j]) for j in a}
        tangent.append([mpmath.fsum(w * moves[j][k] for j, w in a.items()) for k in range(d)])
        others = mpmath.fsum(abs(w) * _norm(vs[j]) for j, w in a.items() if j != i)
        scale.append((others, 0 if centered or i not in a else abs(a[i]) * _norm(vs[i])))
    return out, tangent, scale


def mp_velocity(x, heads, scheme="PostLN", alpha=1.0, centered=False):
    """`(velocity, scale)` rows (mpmath) of `scheme` with the sum of the attention `heads`
    (keyword dicts of `mp_attention`), docs/science.md section 2: `P_x A` (PostLN),
    `A(x / |x|)` (PreLN), `A / |A|` with `A` on the directions (PeriLN), `alpha P_x (A / |A|)`
    (NGPT), `A` or `sum_j A_ij V (x_j - x_i)` (NoNorm, `centered`)."""
    import mpmath

    xs = _mp(x)  # float arrays, or rows of mpmath numbers
    on = [[v / _norm(row) for v in row] for row in xs] if scheme in ("PreLN", "PeriLN") else xs
    parts = [mp_attention(on, centered=centered, **head) for head in heads]
    n, d = len(xs), len(xs[0])

    def total(which):
        return [[mpmath.fsum(p[which][i][k] for p in parts) for k in range(d)] for i in range(n)]

    rows, tangents = total(0), total(1)
    # the own term A_ii x_i counts, but for its tangent part, which is exactly 0 when V = I
    own = [scheme not in ("PostLN", "NGPT") or head.get("V") is not None for head in heads]
    scale = [
        mpmath.fsum(p[2][i][0] + o * p[2][i][1] for p, o in zip(parts, own, strict=True))
        for i in range(n)
    ]
    if scheme in ("PreLN", "NoNorm"):
        return rows, scale
    if scheme == "PostLN":
        return tangents, scale
    sizes = [_norm(a) for a in rows]
    scale = [c / s if s else c for c, s in zip(scale, sizes, strict=True)]
    if scheme == "PeriLN":
        return [[v / s for v in a] if s else a for a, s in zip(rows, sizes, strict=True)], scale
    alpha = mpmath.mpf(float(alpha))  # NGPT: alpha P_x(A) / |A|
    return [[alpha * v / s for v in p] if s else p for p, s in zip(tangents, sizes, strict=True)], [
        alpha * c for c in scale
    ]


def mp_circle(theta, beta, normalized=True):
    """`(velocity, scale)` of the circle form, `-sum_j w_ij sin(theta_i - theta_j)` with
    `w_ij = exp(beta cos(theta_i - theta_j)) / Z_i` (or `/ n`), and `scale_i = sum_{j != i}
    w_ij`, in 50 digits."""
    import mpmath

    th = _mp(theta)
    beta = mpmath.mpf(float(beta))
    out, scale = [], []
    for ti in th:
        e = [mpmath.exp(beta * mpmath.cos(ti - tj)) for tj in th]
        norm = mpmath.fsum(e) if normalized else len(th)
        out.append(
            -mpmath.fsum(w / norm * mpmath.sin(ti - tj) for w, tj in zip(e, th, strict=True))
        )
        scale.append(mpmath.fsum(w / norm for w, tj in zip(e, th, strict=True) if tj != ti))
    return out, scale


def assert_rows_close(actual, expected, scale, rtol, floor):
    """Each row of `actual` (float) within `rtol |expected_i| + floor scale_i` of the mpmath row
    `expected_i` (+ the dtype's smallest normal, where values underflow), where `expected_i`
    is representable in `actual`'s dtype; `+-inf` with the right sign where it overflows;
    never NaN."""
    import mpmath

    actual = np.asarray(actual)
    finfo = np.finfo(actual.dtype)
    assert not np.any(np.isnan(actual)), actual
    rows = actual.reshape(len(expected), -1)
    for i, (row, ref, s) in enumerate(zip(rows, expected, scale, strict=True)):
        ref = ref if isinstance(ref, list) else [ref]
        if max(abs(v) for v in ref) > mpmath.mpf(float(finfo.max)) / 4:  # near or past overflow
            over = [abs(v) > mpmath.mpf(float(finfo.max)) * 2 for v in ref]
            for a, v, o in zip(row, ref, over, strict=True):
                assert not o or a == (np.inf if v > 0 else -np.inf), (i, row, ref)
            continue
        err = _norm([mpmath.mpf(float(a)) - v for a, v in zip(row, ref, strict=True)])
        bound = rtol * _norm(ref) + floor * s + mpmath.mpf(float(finfo.tiny))
        assert err <= bound, (
            f"row {i}: error {float(err):.3g} > {float(bound):.3g} (|ref| {float(_norm(ref)):.3g}, "
            f"scale {float(s):.3g}); got {row}, expected {[float(v) for v in ref]}"
        )


def mp_jvp(x, dx, heads, scheme="PostLN", step=1e-25):
    """The derivative of `mp_velocity` at `x` in the direction `dx`, by a central difference of
    step `1e-25` in 50 digits (error about `step^2`)."""
    import mpmath

    xs, ds = _mp(x), _mp(dx)
    h = mpmath.mpf(step)
    plus = mp_velocity(
        [[a + h * b for a, b in zip(r, s, strict=True)] for r, s in zip(xs, ds, strict=True)],
        heads,
        scheme,
    )[0]
    minus = mp_velocity(
        [[a - h * b for a, b in zip(r, s, strict=True)] for r, s in zip(xs, ds, strict=True)],
        heads,
        scheme,
    )[0]
    return [
        [(p - m) / (2 * h) for p, m in zip(rp, rm, strict=True)]
        for rp, rm in zip(plus, minus, strict=True)
    ]
