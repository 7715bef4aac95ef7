"""Every kernel and normalization scheme against an extended-precision reference
(`tests/reference.py`, mpmath, 50 digits, unbounded exponent).

Random, clustered, antipodal and coincident tokens, `beta` up to 700 in float64 and to 88 (the
range of `e^beta`) in float32, both dtypes; then a property-based sweep (hypothesis) over SA and
USA with random sizes, weights, masks and blocks. Each row must be within
`8 (1 + beta) eps (|v_i| + scale_i)` of the reference (plus the smallest normal number, where
values underflow):

- relative to `|v_i|`: at most `1.2e-12` in float64 up to `beta = 700` (the bar is `1e-10`), and
  `1.9e-6` in float32 at `beta = 1` (the bar is `1e-5`), growing with `beta` beyond, as the
  logits `beta <Q x_i, K x_j>` carry `beta` times the rounding of the inner products, which no
  float32 computation avoids;
- `scale_i` is the size of the terms the row is made of, apart from token `i`'s own when its
  contribution is exactly 0 (`P_{x_i} x_i`): it allows for the rounding of rows that cancel
  (antipodal, symmetric or clustered tokens), which no float computation avoids either.

At large `beta` token `i`'s own weight outweighs the others' by `e^{beta (1 - <x_i, x_j>)}`: a
velocity that forms the own term and projects it away is off by `eps` against
`scale_i e^{-beta (1 - <x_i, x_j>)}`, far outside this bound.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st
from reference import _norm, assert_rows_close, mp_circle, mp_jvp, mp_velocity

import attnflow as af

DTYPES = [jnp.float32, jnp.float64]
BETAS = {jnp.float32: (1.0, 20.0, 88.0), jnp.float64: (1.0, 40.0, 300.0, 700.0)}
LAYOUTS = ("uniform", "clustered", "antipodal", "coincident")


def tol(dtype, beta) -> float:
    return 8 * (1 + float(beta)) * float(jnp.finfo(dtype).eps)


def tokens(layout, n, d, seed, dtype, spread=None):
    """`n` unit tokens of `R^d`: uniform; in two clusters of angular size `spread` (default
    `1e-3` in float64, `3e-2` in float32); in antipodal pairs; or in coincident pairs.

    Clusters of size about `sqrt(40 / beta)` (`neighbours(beta)`) are where a token's own term
    and its neighbours' dominate the velocity: `beta (1 - <x_i, x_j>)` about 20 in a cluster."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    if layout == "clustered":
        if spread is None:
            spread = 1e-3 if dtype == jnp.float64 else 3e-2
        centers = rng.standard_normal((2, d))
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
        x = centers[np.arange(n) % 2] + spread * x / np.sqrt(d)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if layout in ("antipodal", "coincident"):
        x[1::2] = (-1 if layout == "antipodal" else 1) * x[0::2][: n // 2]
    return jnp.asarray(x, dtype)


def matrices(seed, m, d, dtype):
    rng = np.random.default_rng(seed + 1)
    return [
        jnp.asarray(rng.standard_normal(shape) / np.sqrt(d), dtype)
        for shape in ((m, d), (m, d), (d, d))
    ]


@eqx.filter_jit
def velocity(field, t, x):
    return field(t, x)  # compiled once per field structure: a new beta is a new leaf value


@eqx.filter_jit
def weights(kernel, x):
    return kernel.weights(x)


def neighbours(beta) -> float:
    return min(1.0, (40 / max(beta, 1e-12)) ** 0.5)


def check(field, x, expected, dtype, beta, t=0.0):
    v = velocity(field, t, x)
    assert v.dtype == dtype
    assert_rows_close(v, *expected, rtol=tol(dtype, beta), floor=tol(dtype, beta))


# --- Every kernel and scheme ----------------------------------------------------------------

N, D = 6, 4


def cases(dtype):
    """`name -> (field(beta), reference(x, beta))` for tokens of shape `(N, D)`."""
    Q, K, V = matrices(7, 3, D, dtype)

    def beta_(b):
        return jnp.asarray(b, dtype)

    def sa(b, **kw):
        return dict(beta=b, normalized=True, **kw)

    def usa(b, **kw):
        return dict(beta=b, normalized=False, **kw)

    return {
        "SA": (lambda b: af.SA(beta_(b)), lambda x, b: mp_velocity(x, [sa(b)])),
        "USA": (lambda b: af.USA(beta_(b)), lambda x, b: mp_velocity(x, [usa(b)])),
        "SA Q K V": (
            lambda b: af.SA(beta_(b), Q, K, V),
            lambda x, b: mp_velocity(x, [sa(b, Q=Q, K=K, V=V)]),
        ),
        "USA causal": (
            lambda b: af.PostLN(af.Unnormalized(beta_(b), causal=True)),
            lambda x, b: mp_velocity(x, [usa(b, causal=True)]),
        ),
        "SA causal blockwise": (
            lambda b: af.PostLN(af.Softmax(beta_(b), causal=True, block=4)),
            lambda x, b: mp_velocity(x, [sa(b, causal=True)]),
        ),
        "USA blockwise V": (
            lambda b: af.USA(beta_(b), V=V, block=4),
            lambda x, b: mp_velocity(x, [usa(b, V=V)]),
        ),
        "USA sharded": (
            lambda b: af.PostLN(af.fields.Sharded(af.Unnormalized(beta_(b)), block=4)),
            lambda x, b: mp_velocity(x, [usa(b)]),
        ),
        "multi-head": (
            lambda b: af.PostLN(
                af.MultiHead([af.Softmax(beta_(b)), af.Unnormalized(beta_(b / 2), Q, K, V)])
            ),
            lambda x, b: mp_velocity(x, [sa(b), usa(b / 2, Q=Q, K=K, V=V)]),
        ),
        "per layer": (  # evaluated at t = 1.5: the second layer
            lambda b: af.PostLN(
                af.PerLayer([af.Unnormalized(beta_(1.0)), af.Unnormalized(beta_(b))], 1.0)
            ),
            lambda x, b: mp_velocity(x, [usa(b)]),
        ),
        "PreLN": (
            lambda b: af.PreLN(af.Softmax(beta_(b))),
            lambda x, b: mp_velocity(x, [sa(b)], scheme="PreLN"),
        ),
        "PeriLN": (
            lambda b: af.PeriLN(af.Unnormalized(beta_(b))),
            lambda x, b: mp_velocity(x, [usa(b)], scheme="PeriLN"),
        ),
        "nGPT SA": (
            lambda b: af.NGPT(af.Softmax(beta_(b)), 0.7),
            lambda x, b: mp_velocity(x, [sa(b)], scheme="NGPT", alpha=0.7),
        ),
        "nGPT USA causal": (
            lambda b: af.NGPT(af.Unnormalized(beta_(b), causal=True), 0.7),
            lambda x, b: mp_velocity(x, [usa(b, causal=True)], scheme="NGPT", alpha=0.7),
        ),
        "NoNorm": (
            lambda b: af.NoNorm(af.Softmax(beta_(b), V=V)),
            lambda x, b: mp_velocity(x, [sa(b, V=V)], scheme="NoNorm"),
        ),
        "NoNorm centered": (
            lambda b: af.NoNorm(af.Softmax(beta_(b), Q, K, V), centered=True),
            lambda x, b: mp_velocity(x, [sa(b, Q=Q, K=K, V=V)], scheme="NoNorm", centered=True),
        ),
    }


CASES = list(cases(jnp.float64))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", CASES)
def test_fields_match_extended_precision(name, dtype):
    build, reference = cases(dtype)[name]
    t = 1.5 if name == "per layer" else 0.0
    for beta in BETAS[dtype]:
        for seed, layout in enumerate((*LAYOUTS, "neighbours")):
            if layout == "neighbours":
                x = tokens("clustered", N, D, seed, dtype, spread=neighbours(beta))
            else:
                x = tokens(layout, N, D, seed, dtype)
            if name in ("PreLN", "PeriLN"):  # radii 1/2 ... 16, powers of 2: exact directions
                x = x * (2.0 ** jnp.arange(-1, N - 1, dtype=dtype))[:, None]
            check(build(beta), x, reference(x, beta), dtype, beta, t)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_hardmax_and_sinkhorn_tangents_match_extended_precision(dtype):
    """Kernels whose weights are not exponentials, with the weights they compute as the
    reference's weights: the velocity made from them (Post-LN, and the centered flow of
    Hardmax) keeps relative accuracy where the own weight dominates."""
    Q, K, V = matrices(3, D, D, dtype)
    for seed, layout in enumerate(("uniform", "clustered", "antipodal")):
        x = tokens(layout, N, D, seed, dtype)
        hard = af.Hardmax(Q, K)
        w = np.asarray(weights(hard, x))
        check(af.PostLN(hard), x, mp_velocity(x, [dict(weights=w)]), dtype, 0.0)
        hard = af.Hardmax(Q, K, V)
        w = np.asarray(weights(hard, x))
        expected = mp_velocity(x, [dict(weights=w, V=V)], scheme="NoNorm", centered=True)
        check(af.NoNorm(hard, centered=True), x, expected, dtype, 0.0)
        for beta in (1.0, 8.0):
            sink = af.Sinkhorn(jnp.asarray(beta, dtype), max_iter=20_000)
            w = np.asarray(weights(sink, x))
            check(af.PostLN(sink), x, mp_velocity(x, [dict(weights=w)]), dtype, beta)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("normalized", [True, False], ids=["SA", "USA"])
def test_circle_matches_extended_precision(dtype, normalized):
    rng = np.random.default_rng(5)
    spread = 1e-3 if dtype == jnp.float64 else 3e-2
    layouts = {
        "uniform": rng.uniform(-np.pi, np.pi, 7),
        "clustered": np.r_[
            0.3 + spread * rng.standard_normal(4), 2.0 + spread * rng.standard_normal(3)
        ],
        "antipodal": np.r_[0.4, 0.4 + np.pi, 1.1, 1.1 - np.pi, -2.0, 2.5, 2.5],
        # cosines about -1/2: the others' weights e^{beta (cos - 1)} underflow next to one's
        # own, but the USA velocity e^{beta cos} / n does not
        "spread": np.r_[0.0, 2.1, 4.2] + 0.01 * rng.standard_normal(3),
    }
    for theta in layouts.values():
        theta = jnp.asarray(theta, dtype)
        for beta in BETAS[dtype]:
            field = af.fields.Circle(jnp.asarray(beta, dtype), normalized)
            check(field, theta, mp_circle(theta, beta, normalized), dtype, beta)


def test_usa_velocity_at_beta_100_is_not_zero():
    """The reported case: 4 uniform tokens of S^2 at beta = 100, where the velocity had come
    out exactly 0 (entries of the true one are about 1e23)."""
    x = af.sphere.uniform(jax.random.key(0), 4, 3)
    v = af.USA(100.0)(0.0, x)
    expected = mp_velocity(x, [dict(beta=100.0, normalized=False)])
    assert np.abs(np.asarray(v)).max() > 1.0
    assert_rows_close(v, *expected, rtol=1e-10, floor=tol(jnp.float64, 100.0))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("normalized", [True, False], ids=["SA", "USA"])
def test_linearized_flow_matches_extended_precision(dtype, normalized):
    """The derivative of the velocity (`jax.jvp`, as Lyapunov spectra and the stability of
    fixed points take it) against a central difference in 50 digits, each row to
    `tol |ref_i|`."""
    jvp = eqx.filter_jit(lambda f, x, dx: jax.jvp(lambda y: f(0.0, y), (x,), (dx,))[1])
    for seed, layout in enumerate(("uniform", "clustered")):
        x = tokens(layout, N, D, seed, dtype)
        dx = af.sphere.project(x, jax.random.normal(jax.random.key(seed), x.shape, dtype))
        for beta in BETAS[dtype][:3]:
            kernel = (af.Softmax if normalized else af.Unnormalized)(jnp.asarray(beta, dtype))
            ref = mp_jvp(x, dx, [dict(beta=beta, normalized=normalized)])
            size = [_norm(row) for row in ref]
            assert_rows_close(
                jvp(af.PostLN(kernel), x, dx), ref, size, tol(dtype, beta), tol(dtype, beta)
            )


# --- Property-based: SA and USA over random systems ------------------------------------------


@st.composite
def systems(draw):
    """Plain parameters of a random system (the arrays are made in the test)."""
    dtype = draw(st.sampled_from(DTYPES))
    d = draw(st.integers(2, 6))
    top = 700.0 if dtype == jnp.float64 else 88.0
    return dict(
        dtype=dtype,
        n=draw(st.integers(1, 9)),
        d=d,
        layout=draw(st.sampled_from(LAYOUTS)),
        seed=draw(st.integers(0, 2**31)),
        beta=draw(
            st.one_of(st.sampled_from([0.0, top]), st.floats(-4, 0).map(lambda e: top * 10**e))
        ),
        # None: clusters where the own term and the neighbours' dominate (`neighbours`)
        spread=draw(
            st.one_of(
                st.none(),
                (st.floats(-3, -1) if dtype == jnp.float64 else st.floats(-1.5, -1)).map(
                    lambda e: 10.0**e
                ),
            )
        ),
        normalized=draw(st.booleans()),
        causal=draw(st.booleans()),
        block=draw(st.sampled_from([None, 2, 3])),  # an int goes blockwise
        weights=draw(st.sampled_from(["identity", "identity", "V", "Q K V"])),
        m=draw(st.integers(1, d + 1)),
    )


@given(systems())
def test_sa_and_usa_match_extended_precision_on_random_systems(s):
    dtype = s["dtype"]
    spread = neighbours(s["beta"]) if s["spread"] is None else s["spread"]
    x = tokens(s["layout"], s["n"], s["d"], s["seed"], dtype, spread)
    Q, K, V = matrices(s["seed"], s["m"], s["d"], dtype)
    if s["weights"] == "identity":
        Q = K = V = None
    elif s["weights"] == "V":
        Q = K = None
    kernel = af.Softmax if s["normalized"] else af.Unnormalized
    field = af.PostLN(
        kernel(jnp.asarray(s["beta"], dtype), Q, K, V, causal=s["causal"], block=s["block"])
    )
    head = dict(beta=s["beta"], normalized=s["normalized"], causal=s["causal"], Q=Q, K=K, V=V)
    check(field, x, mp_velocity(x, [head]), dtype, s["beta"])
