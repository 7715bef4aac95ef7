"""Numerical robustness of the fields: USA in log scale, the limits of Peri-LN and nGPT at
`A_i = 0`, non-finite parameters refused, Sinkhorn's dtype-aware tolerance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from reference import equiangular

import attnflow as af
from attnflow import sphere

DTYPES = [jnp.float32, jnp.float64]
INF, NAN = float("inf"), float("nan")


def tolerance(dtype, f64, f32):
    return f64 if dtype == jnp.float64 else f32


def in_a_cap(key, n, d, beta, dtype):
    """`n` tokens near `e_1`, at angles about `2 / sqrt(beta)`: weights `e^{beta <x_i, x_j>}`
    within a few `e`-folds of each other, so every token moves."""
    g = jax.random.normal(key, (n, d), dtype=dtype)
    return sphere.normalize(jnp.zeros((n, d), dtype).at[:, 0].set(1) + float(2 / np.sqrt(beta)) * g)


def usa_layers_mpmath(x0, beta, h, layers):
    """`x_i <- normalize(x_i + (h / n) sum_j e^{beta <x_i, x_j>} x_j)` in 40-digit arithmetic
    with an unbounded exponent range (no log scale, no softmax)."""
    mpmath.mp.dps = 40
    x = [[mpmath.mpf(float(v)) for v in row] for row in np.asarray(x0, np.float64)]
    n = len(x)
    for _ in range(layers):
        y = []
        for xi in x:
            w = [
                h / n * mpmath.exp(beta * mpmath.fsum(a * b for a, b in zip(xi, xj, strict=True)))
                for xj in x
            ]
            yi = [xi[k] + mpmath.fsum(w[j] * x[j][k] for j in range(n)) for k in range(len(xi))]
            size = mpmath.sqrt(mpmath.fsum(v * v for v in yi))
            y.append([v / size for v in yi])
        x = y
    return np.array([[float(v) for v in row] for row in x])


def equiangular_gaps(beta, n, m, gap0, h, layers):
    """`1 - rho` after each layer for groups of `m` equiangular tokens (cosine `rho`) among `n`,
    the groups orthogonal (their weights `e^0` vanish next to `e^beta`, also in rounding).

    One layer maps the group to `y_i = a x_i + b sum_{j != i} x_j`, `a = 1 + (h/n) e^beta`,
    `b = (h/n) e^{beta rho}`: equiangular again with `1 - rho' = (1 - rho) (a - b)^2 / |y_i|^2`,
    `|y_i|^2 = a^2 + 2ab (m-1) rho + b^2 (m-1) (1 + (m-2) rho)`; here with `a = 1`, `b = b/a`
    taken in log scale.
    """
    gaps = [gap0]
    for _ in range(layers):
        rho = 1 - gaps[-1]
        log_c = np.log(h / n)
        b = np.exp(log_c + beta * rho - np.logaddexp(0.0, log_c + beta))
        size = 1 + 2 * b * (m - 1) * rho + b**2 * (m - 1) * (1 + (m - 2) * rho)
        gaps.append(gaps[-1] * (1 - b) ** 2 / size)
    return np.array(gaps)


# --- 1. USA in log scale --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [400.0, 700.0, 1e3])
def test_usa_layers_at_large_beta_match_exact_arithmetic(getkey, dtype, beta):
    x0 = in_a_cap(getkey(), 6, 3, beta, dtype)
    ts = jnp.array([0.0, 0.5])
    xs = af.simulate(af.USA(beta), x0, ts, solver=af.Layers(0.1)).xs
    assert xs.dtype == dtype and jnp.all(jnp.isfinite(xs))
    expected = usa_layers_mpmath(x0, beta, 0.1, 5)
    assert np.abs(expected - np.asarray(x0)).max() > 1e-2  # the tokens did move
    np.testing.assert_allclose(xs[-1], expected, atol=tolerance(dtype, 1e-11, 2e-4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("beta", [400.0, 700.0, 1e3])
def test_usa_layers_on_equiangular_groups_contract_as_the_closed_form(dtype, beta):
    """Two orthogonal groups of 4 equiangular tokens: each contracts as `equiangular_gaps`
    says, and the cluster count goes from 8 to 2."""
    m, gap0, h, layers, delta = 4, 2 / beta, 0.1, 6, 3e-4
    group = equiangular(m, 1 - gap0)
    x0 = np.zeros((2 * m, 2 * m))
    x0[:m, :m], x0[m:, m:] = group, group
    x0 = jnp.asarray(x0, dtype)
    ts = h * jnp.arange(layers + 1)

    def statistic(t, x):
        gram = x @ x.T
        return {
            "gap": 1 - gram[0, 1],
            "between": gram[0, m],
            "clusters": af.analysis.count_clusters(x, delta),
        }

    stats = af.simulate(af.USA(beta), x0, ts, solver=af.Layers(h), save=statistic).xs
    gaps = equiangular_gaps(beta, 2 * m, m, gap0, h, layers)
    np.testing.assert_allclose(
        stats["gap"], gaps, rtol=tolerance(dtype, 1e-9, 2e-2), atol=tolerance(dtype, 1e-14, 5e-7)
    )  # float32 atol: 4 eps, the rounding of `1 - <x_0, x_1>` once the gap is below it
    np.testing.assert_allclose(stats["between"], 0.0, atol=tolerance(dtype, 1e-15, 1e-6))
    assert np.all((gaps > 2 * delta) | (gaps < delta / 2))  # no count on the edge
    expected = np.where(gaps > delta, 2 * m, 2)
    assert expected[0] == 2 * m and expected[-1] == 2
    np.testing.assert_array_equal(stats["clusters"], expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_usa_layers_are_differentiable_at_large_beta(getkey, dtype):
    x0 = in_a_cap(getkey(), 5, 3, 1e3, dtype)
    w = jax.random.normal(getkey(), x0.shape, dtype)

    def loss(x):
        return jnp.sum(
            w * af.simulate(af.USA(1e3), x, jnp.array([0.0, 0.3]), solver=af.Layers(0.1)).xs[-1]
        )

    grad = jax.grad(loss)(x0)
    assert jnp.all(jnp.isfinite(grad)) and jnp.any(grad != 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_heads_and_layers_in_log_scale(getkey, dtype):
    """Identical USA heads with `V / 2` are one head, a softmax head is lost in rounding next
    to `e^beta`, and `PerLayer` uses each layer's log scale: all at `beta = 1e3`."""
    x = in_a_cap(getkey(), 6, 3, 1e3, dtype)
    V = jnp.eye(3, dtype=dtype) + 0.1 * jax.random.normal(getkey(), (3, 3), dtype)
    one = af.PostLN(af.Unnormalized(1e3, V=V)).layer(0.0, x, 0.1)
    assert jnp.all(jnp.isfinite(one))
    tol = tolerance(dtype, 1e-13, 1e-5)
    heads = af.MultiHead([af.Unnormalized(1e3, V=V / 2)] * 2)
    np.testing.assert_allclose(af.PostLN(heads).layer(0.0, x, 0.1), one, atol=tol)
    mixed = af.MultiHead([af.Unnormalized(1e3, V=V), af.Softmax(1e3)])
    np.testing.assert_allclose(af.PostLN(mixed).layer(0.0, x, 0.1), one, atol=tol)
    deep = af.PerLayer([af.Unnormalized(5.0, V=V), af.Unnormalized(1e3, V=V)], h=0.1)
    np.testing.assert_allclose(af.PostLN(deep).layer(0.1, x, 0.1), one, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_usa_velocity_is_finite_where_representable(dtype):
    """Two tokens at cosine `c`: the velocity of token `i` is `(1/2) e^{beta c} (x_j - c x_i)`,
    representable although `Z_i / n = (e^beta + e^{beta c}) / 2` overflows."""
    beta, c = (720.0, 0.98) if dtype == jnp.float64 else (92.0, 0.95)
    x = jnp.array([[1.0, 0.0, 0.0], [c, np.sqrt(1 - c**2), 0.0]], dtype)
    assert beta > np.log(np.finfo(dtype).max)  # e^beta overflows
    v = af.USA(beta)(0.0, x)
    xn = np.asarray(x, np.float64)
    cos = xn[0] @ xn[1]
    scale = 0.5 * np.exp(beta * cos)
    rtol = tolerance(dtype, 1e-8, 1e-3)
    np.testing.assert_allclose(v[0], scale * (xn[1] - cos * xn[0]), rtol=rtol, atol=0)
    np.testing.assert_allclose(v[1], scale * (xn[0] - cos * xn[1]), rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_by_exp_beyond_the_range_of_exp(dtype):
    """`e^s v` where `e^s` overflows: exact where representable, `+-inf` where not, 0 at
    `v = 0`; its derivative in `v` is `e^s dv`, `+-inf` (not 0) where that overflows."""
    from attnflow.fields._attention import scale_by_exp

    top = float(np.log(np.finfo(dtype).max))
    s = jnp.asarray([top + 10.0], dtype)
    v = jnp.asarray([[np.exp(-20.0), -np.exp(-20.0), 0.0, 1.0]], dtype)
    out = scale_by_exp(s, v)
    expected = np.exp(top - 10.0)
    np.testing.assert_allclose(
        out[0, :2], [expected, -expected], rtol=tolerance(dtype, 1e-13, 1e-5)
    )
    assert out[0, 2] == 0 and out[0, 3] == np.inf
    _, tangent = jax.jvp(lambda v: scale_by_exp(s, v), (v,), (jnp.ones_like(v),))
    assert jnp.all(tangent == np.inf), tangent
    two = jnp.asarray([2.0], dtype)
    np.testing.assert_array_equal(scale_by_exp(two, v), jnp.exp(two)[:, None] * v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_usa_velocity_beyond_the_range_is_never_nan(getkey, dtype):
    x = sphere.uniform(getkey(), 8, 3, dtype=dtype)
    for kernel in (af.Unnormalized(1e3), af.Unnormalized(1e3, causal=True)):
        v = af.PostLN(kernel)(0.0, x)
        assert not jnp.any(jnp.isnan(v)) and not jnp.all(jnp.isfinite(v))
        assert not jnp.any(jnp.isnan(kernel(0.0, x)))
        assert not jnp.any(jnp.isnan(kernel.weights(x)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ode_solvers_refuse_an_overflowing_velocity(getkey, dtype):
    """Beyond `beta` about 709 (float64) or 88 (float32) a token's own weight `e^beta / n`
    overflows: refused, for tokens in a cap (the velocity overflows too) and for uniform tokens
    (the velocity can still be finite, until the flow brings tokens together)."""
    x0 = sphere.uniform(getkey(), 8, 3, dtype=dtype)
    ts = jnp.array([0.0, 1.0])
    match = rf"the velocity of the field at x0, or the attention output it projects, is not finite in {jnp.dtype(dtype).name}.*solver=attnflow.Layers\(h\)"
    for beta in (1e3, tolerance(dtype, 750.0, 100.0)):
        cap = in_a_cap(getkey(), 8, 3, beta, dtype)
        assert not jnp.all(jnp.isfinite(af.USA(beta)(0.0, cap)))
        for tokens in (cap, x0):
            with pytest.raises(ValueError, match=match):
                af.simulate(af.USA(beta), tokens, ts)
    with pytest.raises(Exception, match="the velocity of the field at x0, or the attention"):
        jax.jit(lambda b: af.simulate(af.USA(b), x0, ts).xs)(jnp.asarray(1e3, dtype))
    # failures as data: the solve fails and says so instead
    assert af.simulate(af.USA(1e3), x0, ts, throw=False).status[()] != 0


# --- 2. Peri-LN and nGPT where A_i = 0 ------------------------------------------------------


def zero_attention(case, dtype):
    """Tokens and the `(beta, V)` of a softmax kernel with `A_i = 0` for every `i`, exactly in
    floating point."""
    if case == "antipodal pair":
        return jnp.array([[0.6, 0.8, 0.0], [-0.6, -0.8, 0.0]], dtype), 0.0, None
    if case == "simplex of 4":  # its mean is 0 exactly: the weights 1/4 and entries +-1/sqrt(3)
        corners = jnp.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype)
        return sphere.normalize(corners), 0.0, None
    return sphere.uniform(jax.random.key(3), 5, 3, dtype=dtype), 1.5, jnp.zeros((3, 3), dtype)


def scheme_field(scheme, kernel):
    return af.PeriLN(kernel) if scheme == "PeriLN" else af.NGPT(kernel, 1.5)


# float64 runs the antipodal pair by default and the other cases with -m slow (suite time).
ZERO_CASES = [
    pytest.param(
        dtype,
        case,
        marks=pytest.mark.slow if dtype == jnp.float64 and case != "antipodal pair" else (),
        id=f"{case}-{jnp.dtype(dtype).name}",
    )
    for dtype in DTYPES
    for case in ("antipodal pair", "simplex of 4", "V = 0")
]


@pytest.mark.parametrize("scheme", ["PeriLN", "NGPT"])
@pytest.mark.parametrize("dtype, case", ZERO_CASES)
def test_zero_attention_leaves_tokens_at_rest(dtype, case, scheme):
    x0, beta, V = zero_attention(case, dtype)
    field = scheme_field(scheme, af.Softmax(beta, V=V))
    if scheme == "PeriLN":  # radii other than 1, by powers of 2 (exact directions)
        x0 = x0 * (2.0 ** jnp.arange(1, x0.shape[0] + 1, dtype=dtype))[:, None]
    assert jnp.all(field.attention(0.0, sphere.normalize(x0)) == 0)
    np.testing.assert_array_equal(field(0.0, x0), 0.0)
    ts = jnp.array([0.0, 0.3])
    eps = float(jnp.finfo(dtype).eps)
    for options in (dict(), dict(solver=af.Layers(0.1))):
        xs = af.simulate(field, x0, ts, **options).xs
        assert xs.dtype == dtype
        np.testing.assert_allclose(xs[-1], x0, rtol=4 * eps, atol=4 * eps, err_msg=str(options))
    w = jax.random.normal(jax.random.key(0), x0.shape, dtype)
    grads = [
        jax.grad(lambda x: jnp.sum(w * field(0.0, x)))(x0),
        jax.grad(lambda x: jnp.sum(w * field.layer(0.0, x, 0.1)))(x0),
        jax.grad(lambda b: jnp.sum(w * scheme_field(scheme, af.Softmax(b, V=V))(0.0, x0)))(
            jnp.asarray(beta, dtype)
        ),
    ]
    for grad in grads:
        assert jnp.all(jnp.isfinite(grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ngpt_direction_is_exact_for_usa_at_any_beta(getkey, dtype):
    """`A / abs(A)` is the same for USA and SA (their rows differ by the factor `Z_i / n`)."""
    x = sphere.uniform(getkey(), 7, 3, dtype=dtype)
    for beta in (2.0, 1e3):
        for scheme in (lambda k: af.NGPT(k, 0.7), af.PeriLN):
            usa = scheme(af.Unnormalized(beta))(0.0, x)
            assert jnp.all(jnp.isfinite(usa))
            sa = scheme(af.Softmax(beta))(0.0, x)
            np.testing.assert_allclose(usa, sa, atol=tolerance(dtype, 1e-13, 1e-5))


# --- 3. Non-finite parameters ---------------------------------------------------------------


def bad(shape, dtype, value=INF, count=1):
    a = np.ones(shape)
    a.flat[:count] = value
    return jnp.asarray(a, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["Q", "K", "V"])
@pytest.mark.parametrize("kernel", [af.Softmax, af.Unnormalized, af.Sinkhorn])
def test_non_finite_weights_are_refused(dtype, name, kernel):
    with pytest.raises(ValueError, match=rf"^{name} must hold only finite numbers; got 3 non"):
        kernel(1.0, **{name: bad((3, 3), dtype, NAN, count=3)})
    with pytest.raises(ValueError, match=rf"^{name} must hold only finite numbers; got 1 non"):
        af.Hardmax(**{name: bad((3, 3), dtype)})
    x = sphere.uniform(jax.random.key(0), 4, 3, dtype=dtype)
    run = jax.jit(lambda a: af.PostLN(kernel(1.0, **{name: a}))(0.0, x))
    with pytest.raises(Exception, match=f"{name} must hold only finite numbers"):
        run(bad((3, 3), dtype)).block_until_ready()
    assert jnp.all(jnp.isfinite(run(jnp.eye(3, dtype=dtype))))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["w", "a", "b"])
def test_non_finite_feed_forward_is_refused(dtype, name):
    good = dict(w=jnp.ones((3, 2), dtype), a=jnp.ones((2, 3), dtype), b=jnp.ones(2, dtype))
    broken = {**good, name: bad(good[name].shape, dtype)}
    with pytest.raises(ValueError, match=rf"^{name} must hold only finite numbers; got 1 non"):
        af.FeedForward(**broken)
    x = sphere.uniform(jax.random.key(0), 4, 3, dtype=dtype)
    run = jax.jit(lambda p: af.PostLN(af.Softmax(1.0), mlp=af.FeedForward(**p))(0.0, x))
    with pytest.raises(Exception, match=f"{name} must hold only finite numbers"):
        run(broken).block_until_ready()


@pytest.mark.parametrize("value", [INF, -INF, NAN, 0.0, -1.0])
def test_non_finite_or_non_positive_options_are_refused(value):
    text = f"{value!r}"
    with pytest.raises(ValueError, match=rf"alpha must be a positive number or .*; got {text}"):
        af.NGPT(af.Softmax(1.0), value)
    with pytest.raises(ValueError, match=rf"tol must be a positive number .*; got {text}"):
        af.Sinkhorn(1.0, tol=value)
    with pytest.raises(ValueError, match=rf"h must be a positive number .*; got {text}"):
        af.PerLayer([af.Softmax(1.0)], h=value)
    x0 = sphere.uniform(jax.random.key(0), 4, 3)
    ts = jnp.array([0.0, 1.0])
    for option in ("rtol", "atol", "dt0"):
        with pytest.raises(ValueError, match=rf"{option} must be a positive number .*; got {text}"):
            af.simulate(af.SA(1.0), x0, ts, **{option: value})
    with pytest.raises(
        ValueError, match=rf"h must be a positive number \(the layer step\); got {text}"
    ):
        af.simulate(af.SA(1.0), x0, ts, solver=af.Layers(value))


def test_non_finite_values_say_so():
    with pytest.raises(ValueError, match=r"got inf \(not finite\)"):
        af.NGPT(af.Softmax(1.0), INF)
    with pytest.raises(
        ValueError,
        match=r"rtol must be a positive number \(relative tolerance\); got inf \(not finite\)",
    ):
        af.simulate(af.SA(1.0), jnp.eye(3), jnp.array([0.0, 1.0]), rtol=INF)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_alpha_schedule_is_refused(dtype):
    x0 = sphere.uniform(jax.random.key(0), 4, 3, dtype=dtype)
    with pytest.raises(ValueError, match=r"alpha\(t\) must be positive and finite; got inf"):
        af.NGPT(af.Softmax(1.0), lambda t: INF)(0.0, x0)
    field = af.NGPT(af.Softmax(1.0), lambda t: jnp.where(t < 0.5, 1.0, jnp.inf))
    with pytest.raises(Exception, match=r"alpha\(t\) must be positive and finite"):
        af.simulate(field, x0, jnp.array([0.0, 1.0]))
    with pytest.raises(Exception, match=r"alpha\(t\) must be positive and finite"):
        af.simulate(field, x0, jnp.array([0.0, 1.0]), solver=af.Layers(0.1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_circle_parameters_are_checked(dtype):
    for beta in (INF, NAN):
        with pytest.raises(ValueError, match="beta must be finite and >= 0"):
            af.Circle(jnp.asarray(beta, dtype))
    with pytest.raises(Exception, match="beta must be finite and >= 0"):
        theta = jnp.linspace(0.0, 3.0, 4, dtype=dtype)
        jax.jit(lambda b: af.Circle(b)(0.0, theta))(jnp.asarray(INF, dtype)).block_until_ready()
    with pytest.raises(ValueError, match="normalized must be True or False; got 'no'"):
        af.Circle(1.0, normalized="no")


# --- 4. Sinkhorn's tolerance follows the dtype ----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, beta", [(8, 1.0), (32, 1.0), (32, 10.0)])
def test_sinkhorn_converges_at_its_default_tol(getkey, dtype, n, beta):
    x = sphere.uniform(getkey(), n, 3, dtype=dtype)
    kernel = af.Sinkhorn(beta)
    weights = kernel.weights(x)  # raises if it did not converge
    assert weights.dtype == dtype
    w = np.asarray(weights, np.float64)
    tol = tolerance(dtype, 1e-9, 1.2e-5) + n * float(jnp.finfo(dtype).eps)  # + the sums' rounding
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=tol)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=tol)
    v = af.PostLN(kernel)(0.0, x)
    assert v.dtype == dtype and jnp.all(jnp.isfinite(v))


def test_sinkhorn_float32_with_well_separated_tokens(getkey):
    """`beta = 10`, 8 tokens: converges in float32 in high dimension (nearly orthogonal tokens)."""
    x = sphere.uniform(getkey(), 8, 16, dtype=jnp.float32)
    w = np.asarray(af.Sinkhorn(10.0).weights(x), np.float64)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1.2e-5 + 8 * 1.2e-7)


def test_sinkhorn_explicit_tol_and_static_structure(getkey):
    x = sphere.uniform(getkey(), 8, 3, dtype=jnp.float32)
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge to tol = 1e-09"):
        af.Sinkhorn(1.0, tol=1e-9).weights(x)  # below float32's resolution of the sums
    w = np.asarray(af.Sinkhorn(1.0, tol=1e-3).weights(x), np.float64)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-3)
    assert af.Sinkhorn(1.0).tol is None and af.Sinkhorn(1.0, tol=1e-4).tol == 1e-4
    structures = {jax.tree.structure(af.Sinkhorn(b)) for b in (1.0, 2.0)}
    assert len(structures) == 1  # hashable, and a new beta shares the compiled code
