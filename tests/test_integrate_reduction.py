"""Exact reductions: a flow with `V = I` and `d > n` computed in the span of the tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow import sphere
from attnflow.fields import (
    NGPT,
    FeedForward,
    MultiHead,
    NoNorm,
    PeriLN,
    PerLayer,
    PostLN,
    PreLN,
    Softmax,
    Unnormalized,
)
from attnflow.integrate import _simulate

N, D = 8, 64


def weights(m=5, dtype=jnp.float64):
    q, k = (
        jax.random.normal(key, (m, D), dtype) / 8 for key in jax.random.split(jax.random.key(1))
    )
    return q, k


def fields(dtype=jnp.float64):
    q, k = weights(dtype=dtype)
    beta = jnp.asarray(2.0, dtype)
    return {
        "SA": af.SA(beta),
        "USA": af.USA(beta / 2),
        "general Q, K": af.SA(beta, q, k),
        "K only": af.SA(beta, None, jnp.eye(D, dtype=dtype) + k.T @ k),
        "causal": PostLN(Softmax(beta, causal=True)),
        "MultiHead": PostLN(MultiHead([Softmax(beta, q, k), Unnormalized(beta / 2)])),
        "PerLayer": PostLN(PerLayer([Softmax(beta, q, k), Softmax(beta, k, q)], h=1.5)),
        "PreLN": PreLN(Softmax(beta, q, k)),
        "PeriLN": PeriLN(Softmax(beta)),
        "NoNorm centered": NoNorm(Softmax(beta, q, k), centered=True),
        "nGPT": NGPT(Softmax(beta, q, k), 0.5),
    }


@pytest.fixture
def reductions(monkeypatch):
    """The reductions `simulate` takes, recorded: `(n, d)` of each x0 it reduced."""
    real, taken = _simulate.span_reduction, []

    def recorded(field, x0):
        out = real(field, x0)
        if out is not None:
            taken.append(x0.shape)
        return out

    monkeypatch.setattr(_simulate, "span_reduction", recorded)
    return taken


def full(field, x0, ts, **options):
    """The flow without the reduction: `simulate` traced (under jit) computes in full."""
    return jax.jit(lambda x0: af.simulate(field, x0, ts, **options).xs)(x0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("name", list(fields()))
def test_reduced_flow_equals_full_flow(dtype, name, reductions):
    field = fields(dtype)[name]
    x0 = sphere.uniform(jax.random.key(0), N, D, dtype=dtype)
    reduced, y0, _ = af.span_reduction(field, x0)
    for kernel in jax.tree.leaves(reduced, is_leaf=lambda a: isinstance(a, Softmax)):
        if isinstance(kernel, Softmax) and kernel.Q is not None:  # one n x n matrix: O(n^3)
            assert kernel.Q.shape[-2:] == (N, N) and kernel.K is None
    ts = jnp.linspace(0.0, 3.0, 4, dtype=dtype)
    eps = float(jnp.finfo(dtype).eps)
    layers = af.simulate(field, x0, ts, solver=af.Layers(0.1)).xs
    assert reductions == [(N, D)]  # simulate took the reduction (full() below does not)
    assert layers.shape == (4, N, D) and layers.dtype == dtype
    np.testing.assert_array_equal(layers[0], x0)
    np.testing.assert_allclose(layers, full(field, x0, ts, solver=af.Layers(0.1)), atol=50 * eps)
    # Adaptive steps differ (the error norm runs over n x n entries instead of n x d), so the
    # two solutions agree to the solver's tolerance.
    ode = af.simulate(field, x0, ts, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ode.xs, full(field, x0, ts, rtol=1e-7, atol=1e-9), atol=1e-4)
    if isinstance(field, af.fields.AbstractSphereField):
        assert np.max(np.abs(np.linalg.norm(ode.xs[-1], axis=-1) - 1)) < 1e-4


def test_statistic_sees_the_tokens_in_full(reductions):
    x0 = sphere.uniform(jax.random.key(2), N, D)
    ts = jnp.linspace(0.0, 2.0, 3)
    shapes = []

    def save(t, x):
        shapes.append(x.shape)
        return x @ jnp.arange(D, dtype=x.dtype)

    got = af.simulate(af.SA(1.0), x0, ts, save=save, solver=af.Layers(0.1)).xs
    assert set(shapes) == {(N, D)} and reductions == [(N, D)]
    want = full(af.SA(1.0), x0, ts, solver=af.Layers(0.1)) @ jnp.arange(D, dtype=x0.dtype)
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_gradient_with_respect_to_the_weights_through_the_reduced_flow(reductions):
    x0 = sphere.uniform(jax.random.key(3), N, D)
    q, k = weights()
    ts = jnp.linspace(0.0, 2.0, 3)
    target = jnp.arange(D, dtype=x0.dtype)

    def loss(beta, q, reduce):
        if reduce:
            xs = af.simulate(af.SA(beta, q, k), x0, ts, solver=af.Layers(0.1)).xs
        else:
            xs = full(af.SA(beta, q, k), x0, ts, solver=af.Layers(0.1))
        return jnp.sum((xs[-1] @ target) ** 2)

    reduced = jax.grad(loss, (0, 1))(1.5, q, True)
    assert reductions == [(N, D)]
    for a, b in zip(reduced, jax.grad(loss, (0, 1))(1.5, q, False), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_failed_solve_keeps_inf_not_nan(reductions):
    """A failed ODE solve holds `inf` at the later save times, reduced or not."""
    x0 = sphere.uniform(jax.random.key(7), 3, 8)
    ts = jnp.linspace(0.0, 5.0, 4)
    got = af.simulate(af.SA(4.0), x0, ts, max_steps=2, throw=False)
    want = jax.jit(lambda x0: af.simulate(af.SA(4.0), x0, ts, max_steps=2, throw=False))(x0)
    assert reductions == [(3, 8)] and got.status == want.status == 1
    np.testing.assert_array_equal(np.isposinf(got.xs), np.isposinf(want.xs))
    assert not np.any(np.isnan(got.xs))


def test_where_the_reduction_does_not_hold():
    x0 = sphere.uniform(jax.random.key(4), N, D)
    v = jnp.eye(D) + 0.1 * jax.random.normal(jax.random.key(5), (D, D))
    mlp = FeedForward(
        jnp.ones((D, 4)) / 4, jax.random.normal(jax.random.key(6), (4, D)), jnp.zeros(4)
    )
    assert af.span_reduction(af.SA(1.0, V=v), x0) is None  # V leaves the span
    assert af.span_reduction(PostLN(Softmax(1.0), mlp), x0) is None
    assert af.span_reduction(af.SA(1.0), x0[:, :N]) is None  # d <= n: nothing to gain


def test_metastability_reduced_equals_full(monkeypatch):
    from attnflow.studies import _metastability, metastability

    options = dict(n=6, d=40, betas=[2.0], ts=np.arange(0, 31, 10) * 0.1, samples=3)
    real, used = _metastability.span_reduction, []

    def recorded(field, x0):
        used.append(real(field, x0) is not None)
        return real(field, x0)

    monkeypatch.setattr(_metastability, "span_reduction", recorded)
    reduced = metastability(key=jax.random.key(0), progress=False, **options)
    assert used and all(used)  # the reduction was taken
    monkeypatch.setattr(_metastability, "span_reduction", lambda field, x0: None)
    computed_in_full = metastability(key=jax.random.key(0), progress=False, **options)
    np.testing.assert_array_equal(reduced.clusters, computed_in_full.clusters)
    np.testing.assert_allclose(reduced.energy, computed_in_full.energy, rtol=1e-12)
    np.testing.assert_allclose(reduced.xs, computed_in_full.xs, atol=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_lyapunov_exponents_reduced_equal_full(dtype, monkeypatch):
    """The tokens and their tangent vectors stay in the span of both: the exponents in
    `n (k + 1)` coordinates equal those in `d`."""
    from attnflow.stability import _lyapunov, lyapunov_spectrum

    q, k = weights(dtype=dtype)
    field = af.SA(jnp.asarray(3.0, dtype), q, k)
    x0 = sphere.uniform(jax.random.key(11), 6, D, dtype=dtype)
    real, taken = _lyapunov.span_of_tangents, []

    def recorded(field, y0, w0):
        out = real(field, y0, w0)
        taken.append(out[1].shape)
        return out

    def spectra():
        key = jax.random.PRNGKey(1980)
        layers = lyapunov_spectrum(field, x0, 4.0, k=2, solver=af.Layers(0.1), key=key)
        ode = lyapunov_spectrum(field, x0, 4.0, k=1, rtol=1e-8, atol=1e-10, key=key)
        return layers.history, ode.history

    monkeypatch.setattr(_lyapunov, "span_of_tangents", recorded)
    reduced = spectra()
    assert taken == [(6, 18), (6, 12)]  # n (k + 1) coordinates instead of 64
    monkeypatch.setattr(_lyapunov, "span_of_tangents", lambda field, y0, w0: (field, y0, w0))
    in_full = spectra()
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(reduced[0], in_full[0], atol=1e4 * eps)
    np.testing.assert_allclose(reduced[1], in_full[1], atol=1e-5 if dtype == jnp.float64 else 1e-3)


def test_lyapunov_spectrum_second_call_compiles_nothing():
    """A new `beta` and new tokens, same shapes: no compilation (the Benettin loop is one
    jitted function, the span reduction traced inside it)."""
    from attnflow.stability import lyapunov_spectrum

    def spectrum(beta, seed):
        x0 = sphere.uniform(jax.random.key(seed), N, D)
        return lyapunov_spectrum(
            af.SA(beta), x0, 2.0, k=1, solver=af.Layers(0.1), key=jax.random.PRNGKey(1980)
        )

    spectrum(1.0, 0)
    compiled = []

    def listen(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            compiled.append(kwargs.get("fun_name", event))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        spectrum(2.5, 1).exponents.block_until_ready()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == []
