"""Trust in the analysis and stability numbers at the edges: large beta (USA's e^beta), float32
end to end, one compilation per configuration, and long contexts near the largest float."""

import contextlib
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow.stability import classify_fixed_point, cluster, known_results, simplex

F32 = jnp.float32


def _rotated_cluster(n, d, dtype, seed=0):
    """The single cluster at a random point: an equilibrium that is not exact in floating point
    (its residual is the rounding of the field, `eps` times its scale)."""
    rotation = af.sphere.random_rotation(jax.random.key(seed), d)
    return (cluster(n, d, jnp.float64) @ rotation.T).astype(dtype)


# 1. classify_fixed_point at large beta and in float32


@pytest.mark.parametrize("beta", [19.0, 100.0, 700.0])
def test_usa_cluster_is_a_sink_modulo_rotations_at_large_beta(beta):
    """Eigenvalues -e^beta, symmetry modes computed as rounding errors of size eps e^beta: both
    relative to |J| = e^beta, the cluster is a sink modulo its d - 1 rotations."""
    n, d = 3, 3
    for x in (cluster(n, d), _rotated_cluster(n, d, jnp.float64)):
        result = classify_fixed_point(af.USA(beta), x)
        assert (result.type, result.symmetry_dim, result.center_dim) == ("sink", d - 1, 0)
        assert len(result.eigenvalues) == (n - 1) * (d - 1)
        np.testing.assert_allclose(result.eigenvalues.real, -math.exp(beta), rtol=1e-7)
    # without the symmetry modes removed, they are centers (no sign for rounding errors)
    raw = classify_fixed_point(af.USA(beta), cluster(n, d), symmetries=None)
    assert (raw.type, raw.center_dim, raw.stable_dim) == ("degenerate", d - 1, (n - 1) * (d - 1))


@pytest.mark.parametrize("beta", [19.0, 100.0, 1e3])
def test_sa_cluster_is_a_sink_at_large_beta(beta):
    result = classify_fixed_point(af.SA(beta), _rotated_cluster(4, 3, jnp.float64))
    assert (result.type, result.symmetry_dim) == ("sink", 2)
    np.testing.assert_allclose(result.eigenvalues, -1.0, atol=1e-10)


@pytest.mark.parametrize(
    ("kind", "beta"), [("USA", 1.5), ("USA", 19.0), ("USA", 60.0), ("SA", 19.0)]
)
def test_classification_in_float32(kind, beta):
    """float32 tokens: tolerances from float32's eps, not float64 constants."""
    field = {"SA": af.SA, "USA": af.USA}[kind](beta)
    x = _rotated_cluster(4, 3, F32, seed=1)
    result = classify_fixed_point(field, x)
    assert (result.type, result.symmetry_dim, result.center_dim) == ("sink", 2, 0)
    sink = -1.0 if kind == "SA" else -math.exp(beta)
    np.testing.assert_allclose(result.eigenvalues.real, sink, rtol=1e-4)
    np.testing.assert_allclose(result.eigenvalues.imag, 0.0, atol=1e-4 * abs(sink))
    # the regular simplex repels along its symmetric direction (float32 SA at beta = 1.5)
    x = simplex(3, 3, F32)
    rate = af.stability.simplex_rate(1.5, 3)
    result = classify_fixed_point(af.SA(1.5), x)
    assert result.unstable_dim >= 1 and result.symmetry_dim == 3
    assert np.min(np.abs(result.eigenvalues - rate)) < 1e-4


def test_unrepresentable_jacobian_is_refused():
    # USA at beta = 1e3: e^beta overflows float64 (and beta = 100 overflows float32)
    with pytest.raises(ValueError, match="not representable in float64"):
        classify_fixed_point(af.USA(1e3), cluster(3, 3))
    with pytest.raises(ValueError, match="not representable in float32"):
        classify_fixed_point(af.USA(100.0), cluster(3, 3, F32))
    with pytest.raises(ValueError, match="not representable"):
        known_results(1e3, 3, 3, "USA", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"tol must lie in \[0, 1\)"):
        classify_fixed_point(af.SA(1.0), cluster(3, 3), tol=2.0)


@pytest.mark.parametrize(
    ("beta", "kind"), [(19.0, "USA"), (100.0, "USA"), (19.0, "SA"), (100.0, "SA"), (1e3, "SA")]
)
def test_known_results_hold_at_large_beta(beta, kind):
    results = known_results(beta, 3, 3, kind, guesses=8, key=jax.random.PRNGKey(0))
    assert all(r.holds for r in results), results


# 2. float32 end to end: crossing_time, equiangular (closed forms at beta = 0)


def _closed_form(kind, n, rho0, tau, r0=1.0, alpha=1.0):
    """`(t, rho, r)` at `beta = 0` along the solution, parametrized by `tau`.

    At `beta = 0` the attention is the mean: `b = a = 1/n`, `<theta_i, A_i> = m / n` and
    `|A_i| = sqrt(m / n)` with `m = 1 + (n-1) rho`. SA (and USA, the same at beta = 0):
    `d rho/dt = (2/n)(1 - rho) m`, and `log(m / (1 - rho))` has derivative
    `((n-1)/m + 1/(1 - rho)) d rho/dt = 2`, so with `C = c e^{2 tau}`,
    `c = (1 + (n-1) rho0) / (1 - rho0)`: `rho = (C - 1) / (C + n - 1)`, `tau = t`, and
    `m / n = C / (C + k)`, `k = n - 1`. The other schemes divide the SA rate by their speed
    factor `s` (docs/science.md section 2), so `d tau = dt / s` keeps `rho(tau)`:
    Pre-LN (`s = r`, `dr/dt = m/n`): `dr/d tau = r C / (C + k)`, so
    `r = r0 sqrt((C + k) / (c + k))`, and `t = int r d tau`; with `w = sqrt(C + k)`,
    `d tau = w dw / (w^2 - k)`: `t = r0 / sqrt(c + k) [w + (sqrt(k)/2) log((w - sqrt k) /
    (w + sqrt k))]` from `w0 = sqrt(c + k)`.
    Peri-LN (`s = r |A|`, `dr/dt = sqrt(m/n)`): the same `r(tau)`, and
    `dt = r sqrt(m/n) d tau = r0 sqrt(c) e^tau / sqrt(c + k) d tau`.
    nGPT (`s = |A| / alpha`, `r = r0`): `alpha dt = sqrt(C / (C + k)) d tau`, so
    `alpha t = asinh(sqrt(c/k) e^tau) - asinh(sqrt(c/k))`.
    """
    k = n - 1
    c = (1 + k * rho0) / (1 - rho0)
    big = c * np.exp(2 * tau)
    rho = (big - 1) / (big + k)
    r = np.full_like(tau, r0)
    if kind in ("SA", "USA"):
        t = tau
    elif kind == "nGPT":
        t = (np.arcsinh(np.sqrt(c / k) * np.exp(tau)) - np.arcsinh(np.sqrt(c / k))) / alpha
    else:
        r = r0 * np.sqrt((big + k) / (c + k))
        if kind == "PeriLN":
            t = r0 * np.sqrt(c) * np.expm1(tau) / np.sqrt(c + k)
        else:
            w, sk = np.sqrt(big + k), math.sqrt(k)
            primitive = w + sk / 2 * np.log((w - sk) / (w + sk))
            w0 = math.sqrt(c + k)
            t = (
                r0
                / math.sqrt(c + k)
                * (primitive - (w0 + sk / 2 * math.log((w0 - sk) / (w0 + sk))))
            )
    return t, rho, r


NS_ALL = [
    pytest.param(n, kind, marks=[] if n == 32 or kind == "SA" else pytest.mark.slow)
    for n in (2, 32, 1024)
    for kind in ("SA", "USA", "PreLN", "PeriLN", "nGPT")
]


@pytest.mark.parametrize(("n", "kind"), NS_ALL)
def test_equiangular_in_float32_and_closed_forms_at_beta_zero(n, kind):
    """float32 in, float32 out, within ~1e-5 of float64 for betas 0..9; both dtypes on the
    closed forms at beta = 0 (float64: the gap 1 - rho to 1e-8 relative)."""
    rho0, r0, alpha = 0.1, 1.5, 0.7
    tau = np.linspace(0.0, 5.0, 11)
    t, rho, r = _closed_form(kind, n, rho0, tau, r0, alpha)
    betas = np.arange(10.0)
    kwargs = dict(rho0=rho0, kind=kind, r0=r0, alpha=alpha)
    rho64, r64 = af.analysis.equiangular(t, betas, n, **kwargs)
    rho32, r32 = af.analysis.equiangular(
        t.astype(np.float32), betas.astype(np.float32), n, **kwargs
    )
    assert rho32.dtype == r32.dtype == F32 and rho64.dtype == jnp.float64
    assert rho32.shape == (10, 11)
    np.testing.assert_allclose(1 - rho64[0], 1 - rho, rtol=1e-8)
    np.testing.assert_allclose(r64[0], r, rtol=1e-9)
    np.testing.assert_allclose(rho32[0], rho, rtol=2e-5)
    np.testing.assert_allclose(r32[0], r, rtol=2e-5)
    np.testing.assert_allclose(rho32, rho64, rtol=3e-5, atol=1e-6)
    np.testing.assert_allclose(r32, r64, rtol=3e-5)


@pytest.mark.parametrize("n", [2, 32, pytest.param(1024, marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_crossing_time_in_float32(n, kind):
    betas = np.arange(10.0).reshape(2, 5)
    t32 = af.crossing_time(betas.astype(np.float32), n, kind=kind)
    t64 = af.crossing_time(betas, n, kind=kind)
    assert t32.dtype == F32 and t32.shape == (2, 5) and t64.dtype == jnp.float64
    np.testing.assert_allclose(t32, t64, rtol=1e-5)
    # beta = 0: rho = 1 - delta when C = c e^{2t} = (n - (n-1) delta) / delta (the SA closed
    # form of _closed_form), from rho0 = 0 (c = 1) and rho0 = 0.3
    for rho0, delta in ((0.0, 1e-3), (0.3, 1e-2)):
        c = (1 + (n - 1) * rho0) / (1 - rho0)
        exact = 0.5 * math.log((n - (n - 1) * delta) / (delta * c))
        for dtype, rtol in ((np.float64, 1e-10), (np.float32, 1e-5)):
            t = af.crossing_time(np.zeros(1, dtype), n, delta, kind, rho0)
            assert t.dtype == dtype
            np.testing.assert_allclose(t, exact, rtol=rtol)


def test_phase_diagram_gamma_in_float32():
    # gamma reads only .betas and .config (a duck-typed diagram: the result type's other fields
    # are not the point here)
    diagram = types.SimpleNamespace(
        betas=np.array([0.1, 1.0, 4.0, 9.0], np.float32),
        config={"n": 32, "delta": 1e-3, "kind": "SA"},
    )
    gamma = af.studies.PhaseDiagram.gamma(diagram)
    assert gamma.dtype == np.float32
    expected = af.studies.PhaseDiagram.gamma(diagram, np.array([0.1, 1.0, 4.0, 9.0]))
    np.testing.assert_allclose(gamma, expected, rtol=1e-5)


def test_python_floats_follow_the_default_dtype():
    # x64 is on in the tests: float64
    assert af.crossing_time(1.0, 8).dtype == jnp.float64
    assert af.equiangular_rho([0.0, 1.0], 1.0, 8).dtype == jnp.float64
    assert af.equiangular_rho(jnp.array([0.0, 1.0], F32), 1.0, 8).dtype == F32


# 3. one compilation per configuration


@contextlib.contextmanager
def _compilations():
    """The names of the functions XLA compiles inside the block (jax.monitoring events)."""
    names = []

    def listen(event, duration, **kwargs):
        if event.endswith("backend_compile_duration") or event.endswith("jaxpr_trace_duration"):
            names.append(kwargs.get("fun_name", event))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_new_beta_delta_rho0_do_not_recompile():
    af.crossing_time(jnp.array([1.0, 2.0]), 16)
    af.crossing_time(jnp.array([1.0, 2.0], F32), 16, kind="USA")
    af.crossing_time(3.0, 16)
    with _compilations() as names:
        af.crossing_time(jnp.array([5.0, 0.5]), 16, delta=1e-2, rho0=0.2)
        af.crossing_time(jnp.array([7.0, 3.0], F32), 16, delta=0.3, rho0=-0.01, kind="USA")
        af.crossing_time(4.0, 16, delta=0.1)
    assert names == []

    schedule = lambda t: 1.0 + 0.1 * t  # noqa: E731
    ts = jnp.linspace(0.0, 3.0, 4)
    af.analysis.equiangular(ts, jnp.array([1.0, 2.0]), 16, kind="nGPT", alpha=0.5, r0=2.0)
    af.analysis.equiangular(ts, 1.0, 16, kind="nGPT", alpha=schedule)
    af.equiangular_rho(ts, 1.0, 16, kind="PreLN")
    later, longer, betas = ts + 1, 2 * ts, jnp.array([3.0, 0.0])  # (compiles add, multiply)
    with _compilations() as names:
        af.analysis.equiangular(later, betas, 16, rho0=0.2, kind="nGPT", alpha=2.0, r0=0.5)
        af.analysis.equiangular(longer, 7.0, 16, rho0=-0.05, kind="nGPT", alpha=schedule)
        af.equiangular_rho(ts, 4.0, 16, rho0=0.3, kind="PreLN", r0=3.0)
    assert names == []


# 4. long_context_cosine in float32


def test_long_context_in_float32():
    n = np.array([2.0, 9.0, 1e3, 1e9, 1e20, 1e38], np.float32)[:, None, None]
    rho = np.array([0.01, 0.2, 0.5, 0.8, 0.99], np.float32)[None, :, None]
    gamma = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 100.0, 1e3], np.float32)[None, None, :]
    gamma = np.concatenate([np.broadcast_to(gamma, (1, 5, 7)), 1 / (1 - rho)], axis=-1)  # critical
    exact = [a.astype(np.float64) for a in (n, rho, gamma)]  # the same inputs, in float64
    cos32 = af.long_context_cosine(n, rho, gamma)
    assert cos32.dtype == F32 and cos32.shape == (6, 5, 8)
    assert bool(jnp.all(jnp.isfinite(cos32)))
    np.testing.assert_allclose(cos32, af.long_context_cosine(*exact), rtol=1e-5)
    a64, b64 = af.analysis.long_context_attention(*exact)
    a32, b32 = af.analysis.long_context_attention(n, rho, gamma)
    assert a32.dtype == b32.dtype == F32
    for w32, w64 in ((a32, a64), (b32, b64)):
        normal = np.asarray(w64) > 1e-30  # representable in float32 (not subnormal)
        np.testing.assert_allclose(np.asarray(w32)[normal], np.asarray(w64)[normal], rtol=1e-5)
    # on the critical line 4 rho / (1 + 3 rho) at n = 1e38, the largest decade of float32
    rho = jnp.array([0.2, 0.5, 0.8], F32)
    np.testing.assert_allclose(
        af.long_context_cosine(jnp.asarray(1e38, F32), rho, 1 / (1 - rho)),
        4 * rho / (1 + 3 * rho),
        rtol=1e-5,
    )
    # an integer n (a count) takes the dtype of rho and gamma
    assert af.long_context_cosine(1024, jnp.float32(0.5), jnp.float32(2.0)).dtype == F32


def test_long_context_off_diagonal_weight_does_not_cancel():
    # b = n^{-gamma (1 - rho)} a, not (1 - a) / (n - 1): the latter is 0 once a rounds to 1
    n, rho, gamma = 2.0, 0.5, 200.0  # b = 2^-100 / (1 + 2^-100): a rounds to 1
    _, b = af.analysis.long_context_attention(n, rho, gamma)
    damping = n ** (-gamma * (1 - rho))
    np.testing.assert_allclose(b, damping / (1 + damping), rtol=1e-13)
