"""Long-context scaling: the symmetric formula against an n x n computation, and Theorem 7."""

import jax.numpy as jnp
import numpy as np
import pytest
from reference import equiangular

import attnflow as af


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0 / 0.7, 3.0])
def test_cosine_matches_a_direct_layer(gamma):
    n, rho = 9, 0.3
    x = equiangular(n, rho)
    logits = gamma * np.log(n) * x @ x.T
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    y = (w / w.sum(axis=1, keepdims=True)) @ x
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(af.long_context_cosine(n, rho, gamma), y[0] @ y[5], rtol=1e-13)
    a, b = af.analysis.long_context_attention(n, rho, gamma)
    np.testing.assert_allclose([a, b], [w[0, 0] / w[0].sum(), w[0, 1] / w[0].sum()], rtol=1e-13)


def test_critical_weight():
    n = np.array([10.0, 1e3, 1e9])
    rho = np.array([0.2, 0.5, 0.9])
    a, _ = af.analysis.long_context_attention(n, rho, 1 / (1 - rho))
    np.testing.assert_allclose(a, n / (2 * n - 1), rtol=1e-14)


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.8])
def test_the_three_limits_of_theorem_7(rho):
    """n = 1e9: 1 below the critical gamma = 1/(1 - rho), 4 rho/(1 + 3 rho) on it, rho above."""
    critical = 1 / (1 - rho)
    n = 1e9
    below, on, above = (af.long_context_cosine(n, rho, g * critical) for g in (0.5, 1.0, 2.0))
    np.testing.assert_allclose(below, 1.0, atol=1e-6)  # 1 - cos ~ n^{-1}
    np.testing.assert_allclose(on, 4 * rho / (1 + 3 * rho), rtol=1e-6)
    np.testing.assert_allclose(above, rho, rtol=1e-6)  # cos - rho ~ n^{-1}
    # and nothing blows up for astronomically long contexts or large gamma
    assert np.isfinite(af.long_context_cosine(1e300, rho, 1e3))


def test_bad_input():
    with pytest.raises(ValueError, match="rho must lie in"):
        af.long_context_cosine(100, 1.0, 1.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        af.long_context_cosine(100, 0.5, -1.0)
    with pytest.raises(ValueError, match="n must be >= 2"):
        af.long_context_cosine(1, 0.5, 1.0)
    for f in (af.long_context_cosine, af.analysis.long_context_attention):
        with pytest.raises(ValueError, match=r"n must be >= 2 and finite"):
            f(np.inf, 0.5, 2.0)  # the critical gamma: NaN; elsewhere the limit, silently
    assert af.long_context_cosine(jnp.array([10.0, 100.0]), 0.5, 1.0).shape == (2,)
