"""Attention fields against direct formulas, invariants and published identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import attention_field
from scipy.special import softmax

import attnflow as af
from attnflow import sphere


def random_weights(key, m, d):
    kq, kk, kv = jax.random.split(key, 3)
    return (
        jax.random.normal(kq, (m, d)) / np.sqrt(d),
        jax.random.normal(kk, (m, d)) / np.sqrt(d),
        jax.random.normal(kv, (d, d)) / np.sqrt(d),
    )


@pytest.mark.parametrize("make, normalized", [(af.SA, True), (af.USA, False)])
def test_field_matches_direct_formula(getkey, make, normalized):
    x = sphere.uniform(getkey(), 7, 4)
    Q, K, V = random_weights(getkey(), 3, 4)
    expected = attention_field(
        np.asarray(x), 2.0, np.asarray(Q), np.asarray(K), np.asarray(V), normalized
    )
    np.testing.assert_allclose(make(2.0, Q, K, V)(0.0, x), expected, rtol=1e-12, atol=1e-14)
    eye = np.eye(4)
    np.testing.assert_allclose(
        make(2.0)(0.0, x),
        attention_field(np.asarray(x), 2.0, eye, eye, eye, normalized),
        rtol=1e-12,
        atol=1e-14,
    )


def test_post_ln_is_sa_and_projects():
    x = sphere.uniform(jax.random.key(1), 5, 3)
    sa = af.SA(1.5)
    np.testing.assert_array_equal(af.PostLN(af.Softmax(1.5))(0.0, x), sa(0.0, x))
    np.testing.assert_allclose(jnp.sum(sa(0.0, x) * x, axis=-1), 0, atol=1e-15)


def test_beta_zero_is_projected_mean(getkey):
    x = sphere.uniform(getkey(), 6, 3)
    expected = sphere.project(x, jnp.broadcast_to(x.mean(0), x.shape))
    np.testing.assert_allclose(af.SA(0.0)(0.0, x), expected, atol=1e-15)
    np.testing.assert_allclose(af.USA(0.0)(0.0, x), expected, atol=1e-15)
    np.testing.assert_allclose(af.SA(1e-9)(0.0, x), expected, atol=1e-8)


def test_large_beta_is_finite_and_correct(getkey):
    x = sphere.uniform(getkey(), 9, 5)
    Q, K, V = random_weights(getkey(), 3, 5)
    logits = 1e3 * np.asarray((x @ Q.T) @ (x @ K.T).T)
    y = softmax(logits, axis=1) @ np.asarray(x @ V.T)
    expected = y - np.sum(np.asarray(x) * y, axis=1, keepdims=True) * np.asarray(x)
    v = af.SA(1e3, Q, K, V)(0.0, x)
    np.testing.assert_allclose(v, expected, rtol=1e-9, atol=1e-12)
    v32 = af.SA(1e3, Q, K, V)(0.0, x.astype(jnp.float32))
    assert v32.dtype == jnp.float32 and jnp.all(jnp.isfinite(v32))
    # USA weights are e^{beta s} / n: compare with the direct formula rescaled by e^{-500}.
    scaled = np.exp(500 * np.asarray(x @ x.T) - 500) / 9
    y = scaled @ np.asarray(x)
    expected = y - np.sum(np.asarray(x) * y, axis=1, keepdims=True) * np.asarray(x)
    np.testing.assert_allclose(
        af.USA(500.0)(0.0, x) * np.exp(-500), expected, rtol=1e-9, atol=1e-14
    )


def lone_token_fields(beta):
    return {
        "SA": af.SA(beta),
        "causal USA": af.PostLN(af.Unnormalized(beta, causal=True)),
        "nGPT USA": af.NGPT(af.Unnormalized(beta), 0.5),
        "centered": af.NoNorm(af.Softmax(beta), centered=True),
        "multi-head": af.PostLN(af.MultiHead([af.Softmax(beta), af.Unnormalized(beta)])),
    }


@pytest.mark.parametrize("beta", [0.0, 1e3])
def test_single_token_is_fixed(beta):
    """A token with no other to attend to (`n = 1`, or the first token of a causal kernel) is
    at rest, exactly, with finite derivatives in `x` and `beta` (its attention to the others
    has log scale `-inf`)."""
    one = jnp.array([[0.6, 0.8, 0.0]])
    three = jnp.eye(3)  # orthogonal: USA stays finite at beta = 1e3
    for name, field in lone_token_fields(beta).items():
        np.testing.assert_array_equal(field(0.0, one), 0.0, err_msg=name)
        np.testing.assert_array_equal(field(0.0, three)[0] if "causal" in name else 0.0, 0.0)
        for x in (one, three):
            grad = jax.grad(lambda x, f=field: jnp.sum(jnp.sin(f(0.0, x))))(x)
            assert jnp.all(jnp.isfinite(grad)), name
            dbeta = jax.grad(lambda b, name=name, x=x: jnp.sum(lone_token_fields(b)[name](0.0, x)))(
                jnp.asarray(beta)
            )
            assert jnp.isfinite(dbeta), name
    for normalized in (True, False):
        circle = af.fields.Circle(beta, normalized)
        np.testing.assert_array_equal(circle(0.0, jnp.array([0.3])), 0.0)
        assert jnp.all(jnp.isfinite(jax.grad(lambda th, c=circle: c(0.0, th)[0])(jnp.array([0.3]))))


def test_permutation_equivariance(getkey):
    x = sphere.uniform(getkey(), 8, 4)
    Q, K, V = random_weights(getkey(), 2, 4)
    perm = jax.random.permutation(getkey(), 8)
    for field in (af.SA(3.0, Q, K, V), af.USA(3.0, Q, K, V)):
        np.testing.assert_allclose(field(0.0, x[perm]), field(0.0, x)[perm], rtol=1e-12)


def test_rotation_equivariance_for_identity_weights(getkey):
    x = sphere.uniform(getkey(), 8, 4)
    r = sphere.random_rotation(getkey(), 4)
    for field in (af.SA(2.0), af.USA(2.0)):
        np.testing.assert_allclose(field(0.0, x @ r.T), field(0.0, x) @ r.T, atol=1e-13)


def test_duplicating_tokens_changes_nothing(getkey):
    x = sphere.uniform(getkey(), 5, 3)
    Q, K, V = random_weights(getkey(), 3, 3)
    for field in (af.SA(2.0, Q, K, V), af.USA(2.0, Q, K, V)):
        doubled = field(0.0, jnp.concatenate([x, x]))
        np.testing.assert_allclose(doubled[:5], field(0.0, x), rtol=1e-12)
        np.testing.assert_allclose(doubled[5:], field(0.0, x), rtol=1e-12)


def test_identical_heads_with_scaled_values_equal_one_head(getkey):
    x = sphere.uniform(getkey(), 6, 4)
    Q, K, V = random_weights(getkey(), 2, 4)
    for kernel in (af.Softmax, af.Unnormalized):
        heads = af.MultiHead([kernel(1.7, Q, K, V / 3)] * 3)
        np.testing.assert_allclose(
            af.PostLN(heads)(0.0, x), af.PostLN(kernel(1.7, Q, K, V))(0.0, x), rtol=1e-12
        )


def test_heads_have_their_own_partition_function(getkey):
    x = sphere.uniform(getkey(), 6, 4)
    Q1, K1, V1 = random_weights(getkey(), 2, 4)
    Q2, K2, V2 = random_weights(getkey(), 3, 4)
    v = af.PostLN(af.MultiHead([af.Softmax(1.0, Q1, K1, V1), af.Softmax(2.0, Q2, K2, V2)]))(0.0, x)
    xn = np.asarray(x)
    expected = attention_field(xn, 1.0, *map(np.asarray, (Q1, K1, V1))) + attention_field(
        xn, 2.0, *map(np.asarray, (Q2, K2, V2))
    )
    np.testing.assert_allclose(v, expected, rtol=1e-12)


def test_feed_forward_inside_projection(getkey):
    x = sphere.uniform(getkey(), 5, 3)
    w, a = jax.random.normal(getkey(), (3, 4)), jax.random.normal(getkey(), (4, 3))
    b = jax.random.normal(getkey(), (4,))
    field = af.PostLN(af.Softmax(1.0), mlp=af.FeedForward(w, a, b, sigma=jnp.tanh))
    y = (
        np.asarray(af.Softmax(1.0)(0.0, x))
        + np.tanh(np.asarray(x) @ np.asarray(a).T + np.asarray(b)) @ np.asarray(w).T
    )
    expected = y - np.sum(np.asarray(x) * y, axis=1, keepdims=True) * np.asarray(x)
    np.testing.assert_allclose(field(0.0, x), expected, rtol=1e-12)


def test_per_layer_weights_are_piecewise_constant(getkey):
    x = sphere.uniform(getkey(), 5, 3)
    kernels = [af.Softmax(b, *random_weights(getkey(), 2, 3)) for b in (0.5, 1.0, 2.0)]
    field = af.PostLN(af.PerLayer(kernels, h=0.1))
    for t, k in [(-1.0, 0), (0.0, 0), (0.05, 0), (0.1, 1), (3 * 0.1, 2), (0.299, 2), (7.0, 2)]:
        np.testing.assert_array_equal(field(t, x), af.PostLN(kernels[k])(t, x), err_msg=f"t={t}")
    # At the layer times t = k h, where t / h rounds below k for some k (h = 0.7, 0.01).
    for h in (0.7, 0.01):
        deep = af.PerLayer([af.Softmax(float(b)) for b in range(1000)], h=h)
        for dtype in (jnp.float32, jnp.float64):
            k = jnp.arange(1000)
            t = k.astype(dtype) * jnp.asarray(h, dtype)
            np.testing.assert_array_equal(jax.vmap(lambda t, f=deep: f.layer(t).beta)(t), k)
    with pytest.raises(ValueError, match="same kind with the same weight shapes"):
        af.PerLayer([af.Softmax(1.0), af.Softmax(1.0, V=jnp.eye(3))], h=0.1)
    with pytest.raises(ValueError, match="h must be a positive number"):
        af.PerLayer(kernels, h=0)


def test_mean_shift_identity(getkey):
    """SA (Q = K = V = I) = (1/beta) P_x grad_x log sum_j exp(-beta |x - x_j|^2 / 2)."""
    x = sphere.uniform(getkey(), 7, 3)
    beta = 2.5

    def log_kde(y, i):
        others = x.at[i].set(y)
        return jax.nn.logsumexp(-beta * jnp.sum((y - others) ** 2, axis=-1) / 2)

    grads = jnp.stack([jax.grad(log_kde)(x[i], i) for i in range(7)])
    np.testing.assert_allclose(af.SA(beta)(0.0, x), sphere.project(x, grads) / beta, atol=1e-13)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(beta=-1.0), r"beta must be finite and >= 0; got -1.0"),
        (dict(beta=float("nan")), r"beta must be finite and >= 0"),
        (dict(beta=jnp.ones(2)), r"beta must be a scalar; got shape \(2,\)"),
        (
            dict(beta=1.0, Q=jnp.ones((2, 3)), K=jnp.ones((2, 4))),
            r"K must have shape \(2, 3\); got shape \(2, 4\)",
        ),
        (
            dict(beta=1.0, Q=jnp.ones((2, 3)), K=jnp.ones((3, 3))),
            r"K must have shape \(2, 3\); got shape \(3, 3\)",
        ),
        (
            dict(beta=1.0, Q=jnp.ones((2, 3))),
            r"Q must be square, shape \(3, 3\), when K is the identity \(None\); got shape \(2, 3\)",
        ),
        (dict(beta=1.0, V=jnp.ones((3, 2))), r"V must have shape \(2, 2\); got shape \(3, 2\)"),
        (dict(beta=1.0, V=jnp.ones(3)), r"V must have shape \(\*, \*\); got shape \(3,\)"),
    ],
)
def test_bad_weights(kwargs, match):
    with pytest.raises(ValueError, match=match):
        af.SA(**kwargs)


def test_negative_beta_under_jit_is_caught():
    with pytest.raises(Exception, match="beta must be finite and >= 0"):
        jax.jit(lambda b: af.SA(b)(0.0, jnp.eye(2)))(-1.0).block_until_ready()
