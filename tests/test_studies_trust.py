"""Trustworthy sweeps (issue 10): results independent of chunking in float32, compiled code
reused across calls, failures recorded as data, every model in the studies."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import monitoring

import attnflow as af
from attnflow.studies import MODELS, SweepFailureWarning, phase_diagram_sample, random_weights

TS = np.array([0, 5, 10, 20, 40, 80]) * 0.1
_COMPILES = []
monitoring.register_event_duration_secs_listener(
    lambda name, duration, **kw: (
        _COMPILES.append(name) if name.endswith("backend_compile_duration") else None
    )
)


def compiles(call):
    """The number of XLA compilations during `call()`, and its result."""
    _COMPILES.clear()
    result = call()
    return len(_COMPILES), result


def plain_counts(key, kind, *, n, d, betas, ts, samples, delta=1e-3, dtype=None, h=0.1, **_):
    """Close-pair counts by a plain loop of `simulate` (on directions for the R^d schemes)."""
    factory = MODELS[kind] if isinstance(kind, str) else kind
    counts = np.zeros((len(betas), samples, len(ts)), np.int64)
    for b, beta in enumerate(betas):
        for s in range(samples):
            x0 = phase_diagram_sample(key, s, n=n, d=d, dtype=dtype)[0]
            field = factory(jnp.asarray(beta, x0.dtype))
            xs = np.asarray(af.simulate(field, x0, ts, solver=af.Layers(h)).xs)
            xs = xs / np.linalg.norm(xs, axis=-1, keepdims=True)
            gram = np.einsum("tid,tjd->tij", xs, xs)
            counts[b, s] = np.sum((gram >= 1 - delta) & ~np.eye(n, dtype=bool), axis=(1, 2))
    return counts


# float64's chunk-size invariance is also tested in test_sweep (default run)
@pytest.mark.parametrize("dtype", [jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)])
def test_results_do_not_depend_on_the_chunk_size_in_either_dtype(dtype):
    """On main, 5-6 of 310 float32 probabilities changed with the chunk size (XLA chooses its
    batched matrix kernels, and their rounding, by shape)."""
    options = dict(n=32, d=8, betas=np.linspace(0.1, 9, 10), ts=np.arange(31.0), samples=64)
    probs = [
        af.phase_diagram(
            key=jax.random.key(0), **options, dtype=dtype, memory=m, progress=False
        ).prob
        for m in (10**9, 1_000_000, 100_000)
    ]
    assert probs[0].dtype == np.float64 and 0 < probs[0].mean() < 1
    for prob in probs[1:]:
        np.testing.assert_array_equal(prob, probs[0])


def test_a_second_identical_phase_diagram_compiles_nothing():
    options = dict(n=8, d=4, ts=TS, samples=16, progress=False)
    betas = np.linspace(0.1, 9, 5)
    first, a = compiles(lambda: af.phase_diagram(key=jax.random.key(0), betas=betas, **options))
    assert first > 0
    again, b = compiles(lambda: af.phase_diagram(key=jax.random.key(0), betas=betas, **options))
    assert again == 0
    np.testing.assert_array_equal(a.prob, b.prob)
    # other betas (same count), another key, another delta: traced values, no new program
    other, _ = compiles(
        lambda: af.phase_diagram(key=jax.random.key(3), betas=betas + 0.5, delta=2e-3, **options)
    )
    assert other == 0


def test_simulate_tolerances_are_values_not_part_of_the_program(getkey):
    x0 = af.sphere.uniform(getkey(), 5, 3)
    ts = jnp.linspace(0, 1, 3)
    af.simulate(af.SA(1.0), x0, ts, rtol=1e-6, atol=1e-8)
    count, _ = compiles(lambda: af.simulate(af.SA(2.0), x0, ts, rtol=1e-7, atol=1e-9))
    assert count == 0


class Exploding(af.AbstractSphereField):
    """SA whose velocity and layers are NaN when beta > 5: a model that fails in the sweep."""

    beta: jax.Array

    def broken(self, y):
        return y * jnp.where(self.beta > 5, jnp.nan, 1.0)

    def __call__(self, t, x, args=None):
        return self.broken(af.SA(self.beta)(t, x))

    def layer(self, t, x, h):
        return self.broken(af.SA(self.beta).layer(t, x, h))

    def check(self, x0):
        return x0


def explode_above_five(beta, Q=None, K=None, V=None):
    return Exploding(beta)


def test_a_failed_item_is_data_not_a_crash_and_never_counted(tmp_path):
    """Non-finite tokens at beta > 5: recorded in .status (and the store), left out of prob,
    reported by a warning; the other betas are exactly the plain SA values."""
    key, betas = jax.random.key(1), [0.5, 3.0, 8.0]
    options = dict(n=5, d=3, betas=betas, ts=TS, samples=16, progress=False)
    with pytest.warns(SweepFailureWarning, match=r"16 of 48 items failed \(16 non-finite state"):
        diagram = af.phase_diagram(
            key=key, **options, kind=explode_above_five, store=tmp_path / "s"
        )
    assert (diagram.status[:2] == 0).all() and (diagram.status[2] == 2).all()
    assert diagram.failed.shape == (16, 2) and (diagram.failed[:, 0] == 2).all()
    assert np.isnan(diagram.prob[2]).all()
    reference = plain_counts(key, "SA", **{**options, "betas": betas[:2]})
    np.testing.assert_array_equal(diagram.prob[:2], reference.mean(axis=1) / 20)
    # the store keeps the status: a resume reads it back, and reports it again
    with pytest.warns(SweepFailureWarning):
        again = af.phase_diagram(key=key, **options, kind=explode_above_five, store=tmp_path / "s")
    np.testing.assert_array_equal(again.status, diagram.status)


def test_an_ode_item_that_fails_is_recorded_not_raised():
    with pytest.warns(SweepFailureWarning, match="solver failed"):
        diagram = af.phase_diagram(
            key=jax.random.key(2),
            n=4,
            d=3,
            betas=[1.0, 8.0],
            ts=[0.0, 0.5, 1.0],
            samples=2,
            solver="tsit5",
            kind=explode_above_five,
            progress=False,
        )
    assert (diagram.status[0] == 0).all() and (diagram.status[1] == 1).all()
    assert np.isnan(diagram.prob[1]).all() and np.isfinite(diagram.prob[0]).all()


@pytest.mark.parametrize("kind", list(MODELS))
def test_every_model_in_the_phase_diagram_equals_a_plain_loop(kind):
    """The sweep (with its exact shortcuts: span coordinates for d > n, early stops) against a
    plain loop of `simulate` on the full tokens; close pairs measured on directions."""
    key, betas = jax.random.key(4), [0.5, 2.5]
    n, d, samples = 4, 6, 3
    diagram = af.phase_diagram(
        key=key, n=n, d=d, betas=betas, ts=TS, samples=samples, kind=kind, progress=False
    )
    expected = plain_counts(key, kind, n=n, d=d, betas=betas, ts=TS, samples=samples)
    np.testing.assert_allclose(diagram.prob, expected.mean(axis=1) / (n * (n - 1)), atol=1e-12)
    assert (diagram.status == 0).all()
    assert diagram.config["kind"] == kind


def test_sinkhorn_that_does_not_converge_is_a_failed_item_not_a_crash():
    """Exactly the items whose Sinkhorn raises in a plain `simulate` are failed in the sweep."""

    def slow(beta, Q=None, K=None, V=None, throw=False):
        return af.PostLN(af.Sinkhorn(beta, Q, K, V, max_iter=2, throw=throw))

    key, betas, samples = jax.random.key(4), [1.0, 4.0], 3
    with pytest.warns(SweepFailureWarning, match="of 6 items failed"):
        diagram = af.phase_diagram(
            key=key, n=4, d=3, betas=betas, ts=TS, samples=samples, kind=slow, progress=False
        )
    assert set(np.unique(diagram.status)) <= {0, 2} and (diagram.status == 2).any()
    for b, beta in enumerate(betas):
        for s in range(samples):
            x0 = phase_diagram_sample(key, s, n=4, d=3)[0]
            field = slow(jnp.asarray(beta), throw=True)
            if diagram.status[b, s] == 0:
                af.simulate(field, x0, TS, solver=af.Layers(0.1))
            else:
                with pytest.raises(Exception, match="Sinkhorn attention did not converge"):
                    af.simulate(field, x0, TS, solver=af.Layers(0.1))


def test_a_callable_kind_gets_no_shortcut_and_the_same_answer():
    key, options = jax.random.key(5), dict(n=4, d=6, betas=[0.5, 4.0], ts=TS, samples=3)
    named = af.phase_diagram(key=key, **options, progress=False)
    called = af.phase_diagram(
        key=key, **options, kind=lambda b, Q, K, V: af.SA(b, Q, K, V), progress=False
    )
    np.testing.assert_allclose(called.prob, named.prob, atol=1e-12)
    assert called.config["kind"].endswith("<lambda>")
    with pytest.raises(ValueError, match="kind must be one of SA, USA, PreLN"):
        af.phase_diagram(key=key, **options, kind="GPT", progress=False)


def test_multi_head_with_identity_weights_is_twice_sa(getkey):
    x = af.sphere.uniform(getkey(), 6, 3)
    np.testing.assert_allclose(MODELS["MultiHead"](2.0)(0.0, x), 2 * af.SA(2.0)(0.0, x), atol=1e-14)


def test_usa_phase_diagram_at_large_beta_has_no_nan_counted_as_data():
    """On main, USA layers gave NaN tokens from beta ~ 400, counted as unclustered pairs."""
    key = jax.random.key(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SweepFailureWarning)
        diagram = af.phase_diagram(
            key=key, n=6, d=3, betas=[400.0, 1000.0], ts=TS, samples=8, kind="USA", progress=False
        )
    assert (diagram.status == 0).all() and np.all(np.isfinite(diagram.prob))
    reference = plain_counts(key, "USA", n=6, d=3, betas=[400.0, 1000.0], ts=TS, samples=8)
    np.testing.assert_array_equal(diagram.prob, reference.mean(axis=1) / 30)


def test_metastability_uses_the_phase_diagram_realizations():
    key = jax.random.key(8)
    study = af.studies.metastability(
        key=key, n=6, betas=[4.0], ts=np.arange(11) * 0.1, samples=4, progress=False
    )
    x0 = phase_diagram_sample(key, 0, n=6, d=2)[0]
    np.testing.assert_array_equal(study.xs[0, 0], x0)
    assert study.status.shape == (1, 4) and (study.status == 0).all()


def test_published_ginibre_qk_is_the_transposed_value_matrix():
    """The code published with GLPR applies V to row vectors: V^T in attnflow's convention."""
    key = jax.random.key(9)
    q, k, v = random_weights(key, 5, "ginibre_qk")
    q_pub, k_pub, v_pub = random_weights(key, 5, "ginibre_qk_published")
    np.testing.assert_array_equal(q_pub, q)
    assert k is None and k_pub is None
    np.testing.assert_array_equal(v_pub, v.T)
    assert not np.allclose(v, v.T)
    for symmetric in ("goe_qk", "ginibre_psd"):  # the conventions agree
        v = random_weights(key, 5, symmetric)[2]
        np.testing.assert_allclose(v, v.T, atol=1e-12)


def test_usa_ode_recovers_from_trial_steps_that_leave_the_range():
    """A first step too long for USA at beta = 9 sends a stage far off the sphere, where the
    velocity overflows (+-inf): diffrax must reject and shrink the step (it does for NaN, while
    inf drove the step to 0 and the time to NaN: every step rejected, the solve failed)."""
    x0 = phase_diagram_sample(jax.random.key(0), 1, n=16, d=3)[0]
    ts = jnp.linspace(0.0, 2.0, 3)
    trajectory = af.simulate(af.USA(9.0), x0, ts)
    assert trajectory.status == 0 and np.all(np.isfinite(trajectory.xs))
    spectrum = af.stability.lyapunov_spectrum(
        af.USA(9.0), x0, 1.0, k=1, key=jax.random.PRNGKey(1980)
    )
    assert np.all(np.isfinite(spectrum.exponents))
