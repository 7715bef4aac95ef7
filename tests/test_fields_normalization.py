"""Normalization schemes against scipy integrations of the (theta, r) table of docs/science.md."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import equiangular, solve
from scipy.integrate import solve_ivp

import attnflow as af


def numpy_attention(theta, beta, q, k, v):
    """`A_i = sum_j A_ij V theta_j`, softmax over `beta <Q theta_i, K theta_j>`, in NumPy."""
    logits = beta * (theta @ q.T) @ (theta @ k.T).T
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return w @ (theta @ v.T)


def polar_solution(scheme, x0, ts, beta, q, k, v, alpha=1.0):
    """Integrate directions and radii as the table writes them:
    `d theta_i/dt = P_theta A_i / s_i` and the radius law; return `x = r theta` at `ts`."""
    n, d = x0.shape
    r0 = np.linalg.norm(x0, axis=1)

    def rhs(t, y):
        theta, r = y[: n * d].reshape(n, d), y[n * d :]
        a = numpy_attention(theta, beta, q, k, v)
        along = np.sum(theta * a, axis=1)
        size = np.linalg.norm(a, axis=1)
        tangent = a - along[:, None] * theta
        speed, dr = {
            "PreLN": (r, along),
            "PeriLN": (r * size, along / size),
            "NGPT": (size / alpha(t), np.zeros(n)),
        }[scheme]
        return np.concatenate([(tangent / speed[:, None]).ravel(), dr])

    y0 = np.concatenate([(x0 / r0[:, None]).ravel(), r0])
    sol = solve_ivp(rhs, (ts[0], ts[-1]), y0, method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-12)
    theta = sol.y[: n * d].T.reshape(len(ts), n, d)
    return theta * sol.y[n * d :].T[:, :, None]


@pytest.mark.parametrize("scheme", ["PreLN", "PeriLN", "NGPT"])
def test_schemes_match_the_polar_form(getkey, scheme):
    n, d, beta = 6, 4, 1.5
    q, k, v = (np.eye(d) + 0.3 * np.asarray(jax.random.normal(getkey(), (d, d))) for _ in range(3))
    x0 = af.sphere.uniform(getkey(), n, d)
    if scheme != "NGPT":  # radii other than 1
        x0 = x0 * jax.random.uniform(getkey(), (n, 1), minval=0.5, maxval=2.0)
    ts = np.linspace(0.0, 3.0, 4)
    alpha = lambda t: 1.0 + 0.5 * t  # noqa: E731
    kernel = af.Softmax(beta, q, k, v)
    field = {"PreLN": af.PreLN(kernel), "PeriLN": af.PeriLN(kernel), "NGPT": af.NGPT(kernel, alpha)}
    xs = af.simulate(field[scheme], x0, ts, rtol=1e-11, atol=1e-12).xs
    expected = polar_solution(scheme, np.asarray(x0), ts, beta, q, k, v, alpha)
    np.testing.assert_allclose(xs, expected, atol=1e-8)


def test_no_normalization_is_pure_attention_in_rd(getkey):
    n, d, beta = 5, 3, 0.7
    x0 = 1.5 * af.sphere.uniform(getkey(), n, d)
    ts = np.linspace(0.0, 1.0, 3)
    eye = np.eye(d)
    xs = af.simulate(af.NoNorm(af.Softmax(beta)), x0, ts, rtol=1e-11, atol=1e-12).xs
    expected = solve(lambda x: numpy_attention(x, beta, eye, eye, eye), np.asarray(x0), ts)
    np.testing.assert_allclose(xs, expected, atol=1e-8)


def test_layers_approach_the_flow_for_every_scheme(getkey):
    x0 = af.sphere.uniform(getkey(), 6, 3)
    ts = jnp.array([0.0, 2.0])
    for field in (
        af.PreLN(af.Softmax(1.0)),
        af.PeriLN(af.Softmax(1.0)),
        af.NGPT(af.Softmax(1.0), 2.0),
    ):
        flow = af.simulate(field, x0, ts, rtol=1e-10, atol=1e-12).xs[-1]
        errors = [
            jnp.abs(af.simulate(field, x0, ts, solver=af.Layers(h)).xs[-1] - flow).max()
            for h in (0.02, 0.01)
        ]
        assert 0.4 * errors[0] < errors[1] < 0.6 * errors[0]  # first order in h


@pytest.mark.parametrize("scheme", [af.PreLN, af.PeriLN])
def test_pre_and_peri_ln_cluster_polynomially(scheme):
    """docs/science.md section 2: `1 - rho ~ t^{-2}` for Pre-LN and Peri-LN (Post-LN: `e^{-2t}`)."""
    x0 = jnp.asarray(equiangular(6, 0.0))
    ts = jnp.array([0.0, 200.0, 400.0, 800.0])
    xs = af.simulate(scheme(af.Softmax(1.0)), x0, ts, rtol=1e-10, atol=1e-12, max_steps=10**6).xs
    theta = xs / jnp.linalg.norm(xs, axis=-1, keepdims=True)
    gap = 1 - np.asarray(jnp.einsum("td,td->t", theta[:, 0], theta[:, 1]))
    slopes = np.diff(np.log(gap[1:])) / np.log(2.0)
    np.testing.assert_allclose(slopes, -2.0, atol=0.02)


def test_bad_input(getkey):
    kernel = af.Softmax(1.0)
    with pytest.raises(ValueError, match="alpha must be a positive number or a callable"):
        af.NGPT(kernel, 0.0)
    with pytest.raises(ValueError, match="attention must be an attention kernel"):
        af.PreLN(af.SA(1.0))
    x0 = af.sphere.uniform(getkey(), 4, 3)
    with pytest.raises(ValueError, match="no zero row"):
        af.simulate(af.PreLN(kernel), x0.at[0].set(0.0), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="x0 must lie on the unit sphere"):
        af.simulate(af.NGPT(kernel, 1.0), 2 * x0, jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"alpha\(t\) must be positive"):
        af.NGPT(kernel, lambda t: -1.0)(0.0, x0)
    with pytest.raises(eqx.EquinoxRuntimeError, match=r"alpha\(t\) must be positive"):
        af.simulate(af.NGPT(kernel, lambda t: 1.0 - t), x0, jnp.array([0.0, 2.0]))


@pytest.mark.parametrize(
    "kind, field",
    [
        ("SA", lambda k: af.PostLN(k)),
        ("PreLN", af.PreLN),
        ("PeriLN", af.PeriLN),
        ("nGPT", lambda k: af.NGPT(k, lambda t: 1.0 + 0.2 * t)),
    ],
)
def test_equiangular_reductions_match_particles(kind, field):
    """The scalar ODEs for (rho, r) against the particle flow from equiangular tokens."""
    n, beta, rho0, r0 = 5, 2.0, 0.1, 0.7 if kind in ("PreLN", "PeriLN") else 1.0
    ts = np.linspace(0.0, 4.0, 5)
    x0 = r0 * jnp.asarray(equiangular(n, rho0))
    xs = af.simulate(field(af.Softmax(beta)), x0, ts, rtol=1e-12, atol=1e-13).xs
    radius = jnp.linalg.norm(xs, axis=-1)
    theta = xs / radius[..., None]
    rho, r = af.analysis.equiangular(ts, beta, n, rho0, kind, r0, alpha=lambda t: 1.0 + 0.2 * t)
    np.testing.assert_allclose(rho, jnp.einsum("td,td->t", theta[:, 0], theta[:, 3]), atol=1e-9)
    np.testing.assert_allclose(r, radius[:, 2], rtol=1e-9)
    assert rho[-1] > rho0 + 0.1  # they did move


def test_equiangular_late_time_rates():
    """`1 - rho ~ e^{-2t}` (Post-LN) and `~ t^{-2}` (Pre-LN, Peri-LN), from the reductions."""
    post = 1 - af.equiangular_rho(jnp.array([0.0, 8.0, 9.0]), 1.0, 8)
    np.testing.assert_allclose(np.log(post[2] / post[1]), -2.0, atol=1e-3)
    ts = jnp.array([0.0, 1e3, 2e3, 4e3])
    for kind in ("PreLN", "PeriLN"):
        gap = 1 - np.asarray(af.equiangular_rho(ts, 1.0, 8, kind=kind))
        np.testing.assert_allclose(np.diff(np.log(gap[1:])) / np.log(2), -2.0, atol=5e-3)
    with pytest.raises(ValueError, match="kind must be one of"):
        af.equiangular_rho(ts, 1.0, 8, kind="LayerNorm")
    with pytest.raises(ValueError, match="r0 must be positive"):
        af.equiangular_rho(ts, 1.0, 8, kind="PreLN", r0=0.0)


def test_every_scheme_runs_in_the_sweep_engine(getkey):
    """A sweep over beta for each scheme equals a plain loop of `simulate` (same tokens)."""
    x0 = af.sphere.uniform(getkey(), 5, 3)
    betas = jnp.array([0.5, 2.0, 4.0])
    ts = jnp.array([0.0, 1.0])
    schemes = (af.PostLN, af.PreLN, af.PeriLN, lambda k: af.NGPT(k, 1.5), af.NoNorm)
    for scheme in schemes:

        def final(index, scheme=scheme):
            return {"x": af.simulate(scheme(af.Softmax(betas[index])), x0, ts).xs[-1]}

        chunks = af.sweep.run(final, 3, bytes_per_item=10**4, memory=2 * 10**4, progress=False)
        swept = np.concatenate([r["x"] for _, _, r in chunks])
        loop = np.stack([af.simulate(scheme(af.Softmax(b)), x0, ts).xs[-1] for b in betas])
        np.testing.assert_allclose(swept, loop, rtol=1e-12, atol=1e-14)
