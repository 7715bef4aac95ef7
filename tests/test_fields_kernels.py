"""Causal, hardmax and Sinkhorn attention against prefixes, limits and their defining sums."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af


@pytest.mark.parametrize("kernel", [af.Softmax, af.Unnormalized])
def test_causal_equals_attention_on_each_prefix(getkey, kernel):
    n, d = 7, 4
    x = af.sphere.uniform(getkey(), n, d)
    q, k, v = jax.random.normal(getkey(), (3, d, d))
    causal = kernel(2.5, q, k, v, causal=True)(0.0, x)
    for i in range(n):
        prefix = kernel(2.5, q, k, v)(0.0, x[: i + 1])
        np.testing.assert_allclose(causal[i], prefix[i], rtol=1e-13, atol=1e-15)
    weights = kernel(2.5, q, k, v, causal=True).weights(x)
    assert np.all(np.triu(np.asarray(weights), 1) == 0)


def test_causal_flow_of_the_first_token_is_at_rest(getkey):
    x0 = af.sphere.uniform(getkey(), 5, 3)
    traj = af.simulate(af.PostLN(af.Softmax(1.0, causal=True)), x0, jnp.array([0.0, 5.0]))
    np.testing.assert_allclose(traj.xs[-1, 0], x0[0], atol=1e-12)  # it attends only to itself
    assert not np.allclose(traj.xs[-1, 1:], x0[1:])


def test_hardmax_is_the_large_beta_limit_of_softmax(getkey):
    n, d = 9, 5
    x = af.sphere.uniform(getkey(), n, d)
    q, k, v = jax.random.normal(getkey(), (3, d, d))
    hard = af.Hardmax(q, k, v)(0.0, x)
    soft = af.Softmax(1e5, q, k, v)(0.0, x)  # gaps between logits are far above 1e-5 here
    np.testing.assert_allclose(hard, soft, atol=1e-12)
    assert np.all(np.sum(np.asarray(af.Hardmax(q, k, v).weights(x)) > 0, axis=1) == 1)


def test_hardmax_splits_ties_evenly():
    """Tokens 1 and 2 have the same logit against token 1's query: weight 1/2 each."""
    p = jnp.diag(jnp.array([1.0, 0.0, 0.0]))
    x = jnp.array([[-1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.6, -0.8, 0.0]])
    weights = af.Hardmax(p, p).weights(x)
    np.testing.assert_array_equal(weights[1], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(af.Hardmax(p, p)(0.0, x)[1], [0.6, 0.0, 0.0])


@pytest.mark.parametrize("beta", [0.1, 3.0, 1e3])
def test_sinkhorn_is_doubly_stochastic(getkey, beta):
    x = af.sphere.uniform(getkey(), 12, 3)
    weights = np.asarray(af.Sinkhorn(beta, tol=1e-10).weights(x))
    assert np.all(weights >= 0) and np.all(np.isfinite(weights))
    np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-10)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-10)


def test_sinkhorn_is_permutation_equivariant_and_symmetric(getkey):
    x = af.sphere.uniform(getkey(), 10, 4)
    perm = jax.random.permutation(getkey(), 10)
    kernel = af.Sinkhorn(2.0, tol=1e-12)
    weights = kernel.weights(x)
    np.testing.assert_allclose(kernel.weights(x[perm]), weights[perm][:, perm], atol=1e-12)
    np.testing.assert_allclose(weights, weights.T, atol=1e-12)  # symmetric logits (Q = K = I)


def test_sinkhorn_is_differentiable(getkey):
    x = af.sphere.uniform(getkey(), 6, 3)

    def loss(beta):
        return jnp.sum(af.Sinkhorn(beta, tol=1e-13).weights(x) ** 2)

    eps = 1e-5
    numeric = (loss(2.0 + eps) - loss(2.0 - eps)) / (2 * eps)
    np.testing.assert_allclose(jax.grad(loss)(2.0), numeric, rtol=1e-6)


def test_sinkhorn_reports_non_convergence_and_bad_options(getkey):
    x = af.sphere.uniform(getkey(), 16, 3)
    with pytest.raises(eqx.EquinoxRuntimeError, match="did not converge"):
        af.Sinkhorn(5.0, max_iter=2).weights(x)
    # failures as data: NaN weights, and NaN in every field built on them, never a number
    quiet = af.Sinkhorn(5.0, max_iter=2, throw=False)
    assert jnp.all(jnp.isnan(quiet.weights(x)))
    fields = (
        af.PostLN(quiet),
        af.NGPT(quiet, 1.0),
        af.PeriLN(quiet),
        af.NoNorm(quiet, centered=True),
    )
    for field in fields:
        assert jnp.all(jnp.isnan(field(0.0, x))), field
    with pytest.raises(ValueError, match="tol must be a positive number"):
        af.Sinkhorn(1.0, tol=0.0)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):
        af.Sinkhorn(1.0, max_iter=0)


def test_sinkhorn_flow_on_the_sphere(getkey):
    x0 = af.sphere.uniform(getkey(), 8, 3)
    traj = af.simulate(af.PostLN(af.Sinkhorn(1.0)), x0, jnp.linspace(0.0, 10.0, 3))
    np.testing.assert_allclose(jnp.linalg.norm(traj.xs, axis=-1), 1.0, atol=1e-6)
    gram = traj.xs[-1] @ traj.xs[-1].T
    assert jnp.min(gram) > jnp.min(x0 @ x0.T)  # the tokens gather
