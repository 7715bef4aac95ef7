"""float32 end to end: every public function of attnflow in float32 (JAX's default dtype) and
float64, with tolerances derived from the dtype, against independent references.

Each test takes the `dtype` fixture (float32 and float64), builds its inputs in that dtype,
and checks that the results come back in that dtype, finite, and correct against a reference
that is not attnflow: the same model written in NumPy and solved in float64 by scipy's DOP853
from the very inputs the dtype run saw (cast up exactly), a closed form, or an invariant.
Tolerances are multiples of `tol(dtype) = sqrt(eps)` (conftest.py): `3.5e-4` in float32,
`1.5e-8` in float64. ODE solves in the tests use `rtol = atol = ode_tol(dtype) = eps^(3/4)`
(float32 `6.4e-6`, float64 `1.8e-12`), so the solver's error stays below `tol(dtype)` and
the comparison measures the dtype, not the solver; the library's defaults are exercised too
(`simulate`'s `rtol = 1e-6, atol = 1e-8` in float32, the command line, and a run with x64 off).

Inputs are drawn in the dtype under test (`af.sphere.uniform(key, n, d, dtype=dtype)`), so
float32 and float64 runs see different random tokens; the reference always starts from the
dtype run's own inputs.
"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clitools import run_cli
from conftest import ode_tol, tol
from scipy.integrate import quad, solve_ivp
from scipy.sparse.csgraph import connected_components

import attnflow as af

N, D = 5, 3  # tokens and dimension of the model runs: small, every token interacting

# --- NumPy references (float64, written from docs/science.md section 2) -------------------------


# float64 runs of the public API are the subject of every other test file; here float64 is the
# comparison run, kept out of the default (CI) pass to keep the suite within 10 minutes.
@pytest.fixture(
    params=[jnp.float32, pytest.param(jnp.float64, marks=pytest.mark.slow)],
    ids=["float32", "float64"],
)
def dtype(request):
    """float32 (JAX's default) in the default run; float64 with `-m slow`."""
    return request.param


def np_softmax(logits):
    """Row softmax, max-shifted by the real part (so it also takes complex steps)."""
    w = np.exp(logits - logits.real.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def np_sinkhorn(logits):
    """`n P` for the entropic plan `P_ij = e^{logits_ij + f_i + g_j}` with all row and column
    sums `1 / n`: alternate scalings in the log domain until the sums are exact to 1e-15."""
    n = logits.shape[0]
    f, g = np.zeros(n), np.zeros(n)
    for _ in range(10_000):
        f = -np.log(n) - np.logaddexp.reduce(logits + g[None, :], axis=1)
        g = -np.log(n) - np.logaddexp.reduce(logits + f[:, None], axis=0)
        plan = np.exp(logits + f[:, None] + g[None, :])
        if np.abs(plan.sum(axis=1) * n - 1).max() < 1e-15:
            return n * plan
    raise AssertionError("the reference Sinkhorn did not converge")


def np_attention(x, beta, weights="softmax", Q=None, K=None, V=None):
    """`sum_j A_ij V x_j` with logits `beta <Q x_i, K x_j>` (identity for None)."""
    n, d = x.shape
    eye = np.eye(d)
    Q, K, V = (eye if m is None else np.asarray(m, np.float64) for m in (Q, K, V))
    logits = beta * (x @ Q.T) @ (x @ K.T).T
    if weights == "softmax":
        a = np_softmax(logits)
    elif weights == "unnormalized":
        a = np.exp(logits) / n
    elif weights == "hardmax":
        best = logits == logits.max(axis=-1, keepdims=True)
        a = best / best.sum(axis=-1, keepdims=True)
    else:
        a = np_sinkhorn(logits)
    return a @ (x @ V.T)


def np_project(x, v):
    return v - np.sum(x * v, axis=-1, keepdims=True) / np.sum(x * x, axis=-1, keepdims=True) * x


def np_normalize(x):
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True))


def np_direction(a):
    return a / np.sqrt(np.sum(a * a, axis=-1, keepdims=True))


def weights(d, seed):
    """`(Q, K, V)`: fixed near-identity matrices, the same for both dtypes up to rounding."""
    rng = np.random.default_rng(seed)
    return tuple(np.eye(d) + 0.4 * rng.normal(size=(d, d)) for _ in range(3))


BETA, BETA2, ALPHA, SWITCH = 1.5, 3.0, 0.7, 0.5  # SWITCH: PerLayer's layer duration
QKV = weights(D, 0)
HARD = (np.eye(D), np.array([[0.2, 1.0, 0.0], [-1.0, 0.3, 0.5], [0.4, -0.6, 0.9]]), QKV[2])


class Model:
    """A model of the library next to its NumPy reference.

    `make(dtype)`: the attnflow field, parameters in `dtype`. `velocity(t, x)`: the NumPy
    velocity; `layer(t, x, h)`: the NumPy discrete layer (None: no layers); `sphere`: whether
    the state lives on the product of spheres; `switch`: times where the field jumps."""

    def __init__(self, make, velocity, layer=None, sphere=True, switch=()):
        self.make, self.velocity, self.layer = make, velocity, layer
        self.sphere, self.switch = sphere, switch


def cast(dtype, *arrays):
    return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)


def up(dtype, *arrays):
    """The arrays as the dtype run sees them, cast up exactly to float64 for the reference."""
    return tuple(np.asarray(jnp.asarray(a, dtype), np.float64) for a in arrays)


def post_ln(attention):
    """Post-LN: velocity `P_x A`, layer `normalize(x + h A)`, with `A = attention(t, x)`."""
    return dict(
        velocity=lambda t, x: np_project(x, attention(t, x)),
        layer=lambda t, x, h: np_normalize(x + h * attention(t, x)),
    )


def euclidean(velocity):
    """Schemes in `R^d`: a layer is an Euler step."""
    return dict(velocity=velocity, layer=lambda t, x, h: x + h * velocity(t, x), sphere=False)


def per_layer_attention(t, x):
    """Layer `k` acts on `[k SWITCH, (k + 1) SWITCH)`: identity weights, then `V`."""
    if t < SWITCH:
        return np_attention(x, BETA)
    return np_attention(x, BETA2, V=QKV[2])


def models():
    q, k, v = QKV

    def qkv(dtype):
        return cast(dtype, q, k, v)

    return {
        "SA": Model(  # identity weights: `attnflow simulate` below reuses its compilation
            lambda dt: af.SA(jnp.asarray(BETA, dt)),
            **post_ln(lambda t, x: np_attention(x, BETA)),
        ),
        "USA": Model(
            lambda dt: af.USA(jnp.asarray(BETA, dt)),
            **post_ln(lambda t, x: np_attention(x, BETA, "unnormalized")),
        ),
        "PreLN": Model(
            lambda dt: af.PreLN(af.Softmax(jnp.asarray(BETA, dt))),
            **euclidean(lambda t, x: np_attention(np_normalize(x), BETA)),
        ),
        "PeriLN": Model(
            lambda dt: af.PeriLN(af.Softmax(jnp.asarray(BETA, dt))),
            **euclidean(lambda t, x: np_direction(np_attention(np_normalize(x), BETA))),
        ),
        "NGPT": Model(
            lambda dt: af.NGPT(af.Softmax(jnp.asarray(BETA, dt)), ALPHA),
            velocity=lambda t, x: ALPHA * np_project(x, np_direction(np_attention(x, BETA))),
            layer=lambda t, x, h: np_normalize(x + h * ALPHA * np_direction(np_attention(x, BETA))),
        ),
        "NoNorm": Model(
            lambda dt: af.NoNorm(af.Softmax(jnp.asarray(BETA, dt))),
            **euclidean(lambda t, x: np_attention(x, BETA)),
        ),
        "MultiHead": Model(
            lambda dt: af.PostLN(
                af.MultiHead(
                    [
                        af.Softmax(jnp.asarray(BETA, dt), *qkv(dt)),
                        af.Softmax(jnp.asarray(BETA2, dt)),
                    ]
                )
            ),
            **post_ln(
                lambda t, x: np_attention(x, BETA, "softmax", q, k, v) + np_attention(x, BETA2)
            ),
        ),
        "PerLayer": Model(
            lambda dt: af.PostLN(
                af.PerLayer(
                    [
                        af.Softmax(jnp.asarray(BETA, dt), V=jnp.eye(D, dtype=dt)),
                        af.Softmax(jnp.asarray(BETA2, dt), V=jnp.asarray(v, dt)),
                    ],
                    SWITCH,
                )
            ),
            **post_ln(per_layer_attention),
            switch=(SWITCH,),
        ),
        "Hardmax": Model(
            lambda dt: af.PostLN(af.Hardmax(*cast(dt, *HARD))),
            **post_ln(lambda t, x: np_attention(x, 1.0, "hardmax", *HARD)),
        ),
        "Sinkhorn": Model(
            lambda dt: af.PostLN(af.Sinkhorn(jnp.asarray(BETA, dt))),
            **post_ln(lambda t, x: np_attention(x, BETA, "sinkhorn")),
        ),
    }


MODELS = models()


def np_circle(theta, beta):
    diff = theta[:, None] - theta[None, :]
    return -np.sum(np_softmax(beta * np.cos(diff)) * np.sin(diff), axis=-1)


def np_solve(velocity, x0, ts, switch=()):
    """`dx/dt = velocity(t, x)` by scipy's DOP853 at rtol = atol = 1e-12 in float64, restarted
    at each time in `switch` (where the field jumps); states at `ts`."""
    x0 = np.asarray(x0, np.float64)
    shape, ts = x0.shape, np.asarray(ts, np.float64)
    edges = [ts[0], *[s for s in switch if ts[0] < s < ts[-1]], ts[-1]]
    out, y = [], x0.ravel()
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        inside = ts[(ts >= a) & ((ts < b) if b < ts[-1] else (ts <= b))]
        sol = solve_ivp(
            lambda t, y: velocity(t, y.reshape(shape)).ravel(),
            (a, b),
            y,
            method="DOP853",
            t_eval=np.union1d(inside, [b]),
            rtol=1e-12,
            atol=1e-12,
        )
        assert sol.success
        keep = np.isin(sol.t, inside)
        out.append(sol.y.T[keep])
        y = sol.y[:, -1]
    return np.concatenate(out).reshape(len(ts), *shape)


def np_layers(layer, x0, h, steps):
    """The states after `0, 1, ..., steps` layers `x <- layer(k h, x, h)`."""
    xs = [np.asarray(x0, np.float64)]
    for k in range(steps):
        xs.append(layer(k * h, xs[-1], h))
    return np.stack(xs)


def check_array(a, dtype, shape=None):
    """`a` has `dtype`, is finite, and (if given) has `shape`; returned as float64 NumPy."""
    assert a.dtype == jnp.dtype(dtype), (a.dtype, dtype)
    assert np.all(np.isfinite(np.asarray(a)))
    if shape is not None:
        assert a.shape == shape
    return np.asarray(a, np.float64)


# --- simulate: every model, ODE and layers ---------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("solver", ["tsit5", "layers"])
def test_simulate_every_model(dtype, name, solver):
    """The trajectory in `dtype` against the NumPy model solved in float64 from the same x0;
    on the sphere, every norm is 1 to `tol(dtype)` (the flow conserves it)."""
    model = MODELS[name]
    x0 = af.sphere.uniform(jax.random.key(1), N, D, dtype=dtype)
    field = model.make(dtype)
    h = 0.1
    ts = jnp.arange(0, 21, 4, dtype=dtype) * h  # t in [0, 2], 20 layers
    if solver == "layers":
        trajectory = af.simulate(field, x0, ts, solver=af.Layers(h))
        expected = np_layers(model.layer, up(dtype, x0)[0], h, 20)[::4]
    else:
        # failures as data (throw=False: about 15% less to compile) and checked below; SA with
        # the default, which `attnflow simulate` in test_cli_simulate_... then reuses
        rtol = atol = ode_tol(dtype)
        throw = name == "SA"
        trajectory = af.simulate(field, x0, ts, rtol=rtol, atol=atol, throw=throw)
        expected = np_solve(model.velocity, up(dtype, x0)[0], ts, model.switch)
    assert trajectory.status == 0
    xs = check_array(trajectory.xs, dtype, (len(ts), N, D))
    assert np.abs(expected[-1] - expected[0]).max() > 0.05  # the tokens moved
    # layers: 20 exact maps, rounding only (float32 errors about 1e-6); ODE: the solver's
    # error at eps^(3/4) over t = 2, which grows across PerLayer's jump (float32 about 1e-3,
    # float64 about 1e-10: an embedded error estimate underrates a step across a jump)
    atol = tol(dtype) if solver == "layers" else 10 * tol(dtype)
    np.testing.assert_allclose(xs, expected, rtol=0, atol=atol)
    if model.sphere:
        np.testing.assert_allclose(np.linalg.norm(xs, axis=-1), 1, rtol=0, atol=tol(dtype))


def test_simulate_circle(dtype):
    """`Circle` (SA in angles) against its NumPy form solved by scipy."""
    theta0 = jnp.linspace(-2.5, 2.0, 7, dtype=dtype) ** 3 / 4
    ts = jnp.linspace(0, 3, 7, dtype=dtype)
    field = af.Circle(jnp.asarray(BETA, dtype))
    trajectory = af.simulate(field, theta0, ts, rtol=ode_tol(dtype), atol=ode_tol(dtype))
    xs = check_array(trajectory.xs, dtype, (7, 7))
    expected = np_solve(lambda t, th: np_circle(th, BETA), up(dtype, theta0)[0], ts)
    assert np.abs(expected[-1] - expected[0]).max() > 0.05
    np.testing.assert_allclose(xs, expected, rtol=0, atol=tol(dtype))


def test_energy_never_decreases_along_usa(dtype):
    """USA with `Q = K = V = I` is the gradient ascent of `E_beta` (docs/science.md section 3): the
    energy at the save times never decreases, up to its rounding (a few `eps E`), and
    `af.energy` in `dtype` is the NumPy energy of the same tokens."""
    x0 = af.sphere.uniform(jax.random.key(7), N, D, dtype=dtype)
    ts = jnp.linspace(0, 5, 6, dtype=dtype)  # the shapes of test_simulate_every_model: cached
    beta = jnp.asarray(BETA, dtype)
    trajectory = af.simulate(
        af.USA(beta), x0, ts, rtol=ode_tol(dtype), atol=ode_tol(dtype), throw=False
    )
    assert trajectory.status == 0
    xs = trajectory.xs
    energies = jax.jit(jax.vmap(lambda x: af.energy(x, beta)))(xs)
    energies = check_array(energies, dtype, (6,))
    # a Python float beta keeps the dtype (traced only: nothing to compile)
    assert jax.eval_shape(lambda x: af.energy(x, BETA), x0).dtype == jnp.dtype(dtype)
    eps = tol(dtype) ** 2
    assert np.all(np.diff(energies) >= -10 * eps * energies[1:])
    assert energies[-1] - energies[0] > 0.01 * energies[0]  # it did climb
    up_xs = np.asarray(xs, np.float64)
    gram = np.einsum("tid,tjd->tij", up_xs, up_xs)
    expected = np.exp(BETA * gram).sum(axis=(1, 2)) / (2 * BETA * N**2)
    np.testing.assert_allclose(energies, expected, rtol=30 * eps)


def test_simulate_sde_is_brownian_motion_on_the_sphere(dtype):
    """One token feels no drift (its attention output is itself, projected away), so it is
    Brownian motion on `S^{d-1}` with generator `(1/kappa) Laplacian`, and
    `E <x_t, x_0> = exp(-(d - 1) t / kappa)` (a degree-1 spherical harmonic). 4096 paths:
    each estimate within 4 standard errors (plus Heun's weak error, O(dt0)); every token on
    the sphere to a few `eps`."""
    kappa, dt0, paths = 2.0, 0.01, 4096
    x0 = af.sphere.uniform(jax.random.key(0), 1, D, dtype=dtype)
    ts = jnp.asarray([0.0, 0.25, 0.5], dtype)

    def one(key):
        def save(t, x):
            return jnp.stack([jnp.sum(x[0] * x0[0]), jnp.linalg.norm(x[0])])

        return af.simulate_sde(af.SA(0.0), x0, ts, kappa=kappa, key=key, dt0=dt0, save=save).xs

    stats = jax.vmap(one)(jax.random.split(jax.random.key(1), paths))
    stats = check_array(stats, dtype, (paths, 3, 2))
    np.testing.assert_allclose(stats[..., 1], 1, rtol=0, atol=10 * tol(dtype) ** 2)
    cosine = stats[..., 0]
    expected = np.exp(-(D - 1) * np.asarray(ts, np.float64) / kappa)
    error = cosine.std(axis=0) / np.sqrt(paths)
    assert np.all(np.abs(cosine.mean(axis=0) - expected) <= 4 * error + dt0)
    assert cosine[:, -1].std() > 0.1  # the noise is there


# --- the equiangular reduction and long context -------------------------------------------


def np_crossing_time(beta, n, delta, kind):
    """`int_0^{1 - delta} d rho / (d rho/dt)`, the rate of docs/science.md section 5 (scipy quad)."""
    beta = float(beta)  # a float32 beta would make the whole integrand float32
    rate = lambda r: equiangular_rate(r, beta, n, kind)  # noqa: E731
    return quad(lambda r: 1 / rate(r), 0.0, 1 - delta, epsabs=0, epsrel=1e-12, limit=200)[0]


def equiangular_rate(rho, beta, n, kind):
    growth = np.exp(beta * rho) * (1 - rho) * (1 + (n - 1) * rho)
    if kind == "SA":
        return 2 * growth / (np.exp(beta) + (n - 1) * np.exp(beta * rho))
    return 2 * growth / n


def equiangular_tokens(n, rho0):
    """`n` unit vectors of `R^n` with all pairwise cosines `rho0`."""
    simplex = np.eye(n) - 1 / n
    simplex /= np.linalg.norm(simplex, axis=1, keepdims=True)
    a2 = ((n - 1) * rho0 + 1) / n
    return np.sqrt(a2) * np.ones((n, n)) / np.sqrt(n) + np.sqrt(1 - a2) * simplex


def test_equiangular_rho_and_crossing_time(dtype):
    """`rho(t)` (SA) against scipy's solution of the scalar ODE, and the crossing times (SA)
    against the integral of `1 / rate`, from `dtype` inputs, to `tol(dtype)`."""
    n, ts = 6, jnp.linspace(0, 4, 9, dtype=dtype)
    betas = jnp.asarray([0.5, 2.0, 5.0], dtype)
    rho = check_array(af.equiangular_rho(ts, betas, n, rho0=0.1), dtype, (3, 9))
    for b, beta in enumerate(up(dtype, betas)[0]):
        sol = solve_ivp(
            lambda t, r, beta=beta: equiangular_rate(r, beta, n, "SA"),
            (0.0, 4.0),
            [up(dtype, 0.1)[0]],
            method="DOP853",
            t_eval=up(dtype, ts)[0],
            rtol=1e-13,
            atol=1e-14,
        )
        np.testing.assert_allclose(rho[b], sol.y[0], rtol=0, atol=tol(dtype))
    # the compilation that PhaseDiagram.gamma() reuses in test_phase_diagram_and_gamma
    times = check_array(af.crossing_time(betas, n, 0.05), dtype, (3,))
    expected = [np_crossing_time(b, n, up(dtype, 0.05)[0], "SA") for b in up(dtype, betas)[0]]
    np.testing.assert_allclose(times, expected, rtol=tol(dtype))


def test_equiangular_radius_against_particles(dtype):
    """`af.analysis.equiangular` for Peri-LN (the radius moves, at unit speed) against `n`
    equiangular particles of the NumPy Peri-LN field solved by scipy: their common cosine and
    radius."""
    n, rho0 = 4, 0.2
    ts = jnp.linspace(0, 3, 7, dtype=dtype)
    rho, r = af.analysis.equiangular(ts, jnp.asarray(BETA, dtype), n, rho0=rho0, kind="PeriLN")
    rho, r = check_array(rho, dtype, (7,)), check_array(r, dtype, (7,))
    velocity = MODELS["PeriLN"].velocity
    xs = np_solve(velocity, equiangular_tokens(n, up(dtype, rho0)[0]), up(dtype, ts)[0])
    radius = np.linalg.norm(xs, axis=-1)
    cosine = np.einsum("td,td->t", xs[:, 0], xs[:, 1]) / (radius[:, 0] * radius[:, 1])
    assert cosine[-1] - cosine[0] > 0.1
    np.testing.assert_allclose(rho, cosine, rtol=0, atol=tol(dtype))
    np.testing.assert_allclose(r, radius[:, 0], rtol=tol(dtype))


def test_long_context_against_the_matrices(dtype):
    """`long_context_cosine` and `long_context_attention` against the `n x n` layer on `n`
    equiangular tokens, in float64 NumPy, with `beta = gamma log n`."""
    n = 40
    rho = jnp.asarray([0.2, 0.5, 0.9], dtype)[:, None]
    gamma = jnp.asarray([0.0, 0.5, 2.0, 5.0, 20.0], dtype)[None, :]
    # under jit: one compilation instead of one per operation
    cosine, (diagonal, other) = jax.jit(
        lambda rho, gamma: (
            af.long_context_cosine(n, rho, gamma),
            af.analysis.long_context_attention(n, rho, gamma),
        )
    )(rho, gamma)
    cosine = check_array(cosine, dtype, (3, 5))
    diagonal, other = check_array(diagonal, dtype, (3, 5)), check_array(other, dtype, (3, 5))
    # rounding of beta (1 - rho), up to 74 here, is amplified by exp: 1000 eps of the dtype,
    # and 1e-11 for the float64 reference's own (beta times the rounding of x x^T)
    rtol = max(1000 * tol(dtype) ** 2, 1e-11)
    for i, c in enumerate(up(dtype, rho)[0][:, 0]):
        x = equiangular_tokens(n, c)
        for j, g in enumerate(up(dtype, gamma)[0][0]):
            weights = np_softmax(g * np.log(n) * x @ x.T)
            y = np_normalize(weights @ x)
            np.testing.assert_allclose(cosine[i, j], y[0] @ y[1], rtol=rtol)
            np.testing.assert_allclose(diagonal[i, j], weights[0, 0], rtol=rtol)
            np.testing.assert_allclose(other[i, j], weights[0, 1], rtol=rtol)


# --- analysis and sphere ---------------------------------------------------------------------


def grouped_tokens(dtype, groups=3, size=4, spread=5e-3, seed=0):
    """`groups` groups of `size` tokens within about `spread` radians of their centre."""
    rng = np.random.default_rng(seed)
    centres = np_normalize(rng.normal(size=(groups, D)))
    x = np.repeat(centres, size, axis=0) + spread * rng.normal(size=(groups * size, D)) / 2
    return jnp.asarray(np_normalize(x), dtype)


def test_clustering_statistics(dtype):
    """`pair_fraction`, `close_pairs`, `count_clusters` against NumPy and scipy's connected
    components, on grouped tokens (every cosine far from the threshold) and on uniform ones
    (bracketed: pairs within `tol(dtype)` of the threshold may go either way)."""
    delta = 1e-3
    x = grouped_tokens(dtype)
    gram = np.asarray(x, np.float64) @ np.asarray(x, np.float64).T
    off = gram[~np.eye(12, dtype=bool)]
    assert np.all((off > 1 - delta / 3) | (off < 0.9))  # no cosine near the threshold
    fraction = af.analysis.pair_fraction(x, delta)
    check_array(fraction, dtype, ())
    assert float(fraction) == pytest.approx(3 * 4 * 3 / (12 * 11), rel=tol(dtype) ** 2)
    np.testing.assert_array_equal(af.analysis.close_pairs(x, delta), gram >= 1 - delta)
    assert int(af.analysis.count_clusters(x, delta)) == 3
    # uniform tokens with a large delta: a real graph, compared with scipy
    x = af.sphere.uniform(jax.random.key(3), 12, D, dtype=dtype)
    gram = np.asarray(x, np.float64) @ np.asarray(x, np.float64).T
    band = tol(dtype)
    for delta in (0.1, 0.2):
        count = int(af.analysis.count_clusters(x, delta))
        fewest = connected_components(gram >= 1 - delta - band, directed=False)[0]
        most = connected_components(gram >= 1 - delta + band, directed=False)[0]
        assert fewest <= count <= most and 1 < count < 12
        pairs = float(af.analysis.pair_fraction(x, delta)) * 12 * 11
        assert np.sum(off_diagonal(gram) >= 1 - delta + band) <= round(pairs)
        assert round(pairs) <= np.sum(off_diagonal(gram) >= 1 - delta - band)


def off_diagonal(gram):
    return gram[~np.eye(len(gram), dtype=bool)]


def test_histogram_and_order_parameter(dtype):
    """`cosine_histogram` (jitted: one compilation instead of one per operation) against
    `numpy.histogram` of the float64 cosines, none of which lies near a bin edge; the order
    parameter against `abs(mean(exp(i theta)))`."""
    x = af.sphere.uniform(jax.random.key(4), 16, D, dtype=dtype)
    density, edges = jax.jit(af.analysis.cosine_histogram, static_argnames="bins")(x, bins=10)
    density, edges = check_array(density, dtype, (10,)), check_array(edges, dtype, (11,))
    xu = up(dtype, x)[0]
    cosines = (xu @ xu.T)[np.triu_indices(16, 1)]
    expected, expected_edges = np.histogram(cosines, bins=10, range=(-1, 1), density=True)
    assert np.abs(cosines[:, None] - expected_edges[None, :]).min() > 1e-4  # none on an edge
    np.testing.assert_allclose(edges, expected_edges, rtol=0, atol=30 * tol(dtype) ** 2)
    np.testing.assert_allclose(density, expected, rtol=30 * tol(dtype) ** 2)
    theta = jnp.linspace(-3.0, 1.0, 9, dtype=dtype) ** 2
    r = check_array(af.analysis.order_parameter(theta), dtype, ())
    expected = np.abs(np.mean(np.exp(1j * up(dtype, theta)[0])))
    np.testing.assert_allclose(r, expected, rtol=30 * tol(dtype) ** 2)


def test_hemisphere(dtype):
    """A certificate `w` with `<x_i, w> > 0` for tokens in an open hemisphere (the upper one
    here, by construction), and None when the hull holds 0 (an antipodal pair, exactly so in
    every dtype). `hemisphere` solves its linear program on the host in float64."""
    x = af.sphere.uniform(jax.random.key(5), 20, D, dtype=dtype)
    upper = x.at[:, 2].set(jnp.abs(x[:, 2]) + 0.01)
    upper = upper / jnp.linalg.norm(upper, axis=-1, keepdims=True)
    w = af.analysis.hemisphere(upper)
    assert w is not None and np.all(np.asarray(upper, np.float64) @ w > 0)
    assert af.analysis.in_hemisphere(upper)
    pair = jnp.concatenate([x[:1], -x[:1], upper])
    assert af.analysis.hemisphere(pair) is None and not af.analysis.in_hemisphere(pair)


def test_sphere_functions(dtype):
    """`attnflow.sphere` in `dtype` (under one `jit`: one compilation), to a few `eps`; the
    geodesic distance to full relative accuracy near 0 and pi, where `arccos` loses digits."""
    eps = tol(dtype) ** 2
    angles = jnp.asarray([1e-3, 0.3, 2.0, np.pi - 1e-3], dtype)
    theta = jnp.asarray(np.linspace(-3.1, 3.1, 7), dtype)

    @jax.jit
    def compute(key):
        keys = jax.random.split(key, 3)
        x = af.sphere.uniform(keys[0], 64, D, dtype=dtype)
        g = jax.random.normal(keys[1], (64, D), dtype)
        a = jnp.zeros((4, D), dtype).at[:, 0].set(1)
        b = jnp.zeros((4, D), dtype).at[:, :2].set(af.sphere.from_angles(angles))
        return dict(
            x=x,
            g=g,
            normalized=af.sphere.normalize(3 * g),
            projected=af.sphere.project(x, g),
            on=af.sphere.on_sphere(x),
            off=af.sphere.on_sphere(x * (1 + 2 * tol(dtype))),
            b=b,
            distance=af.sphere.geodesic_distance(a, b),
            back=af.sphere.to_angles(af.sphere.from_angles(theta)),
            rotation=af.sphere.random_rotation(keys[2], 4, dtype),
        )

    out = compute(jax.random.key(6))
    x = check_array(out["x"], dtype, (64, D))
    np.testing.assert_allclose(np.linalg.norm(x, axis=-1), 1, rtol=0, atol=4 * eps)
    assert np.abs(x.mean(axis=0)).max() < 0.3  # not all in one place
    y = check_array(out["normalized"], dtype, (64, D))
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 1, rtol=0, atol=4 * eps)
    p = check_array(out["projected"], dtype, (64, D))
    assert np.abs(np.sum(p * x, axis=-1)).max() <= 10 * eps * np.abs(np.asarray(out["g"])).max()
    assert out["on"].all() and not out["off"].any()
    distance = check_array(out["distance"], dtype, (4,))
    b = up(dtype, out["b"])[0]
    np.testing.assert_allclose(distance, np.arctan2(b[:, 1], b[:, 0]), rtol=10 * eps)
    back = check_array(out["back"], dtype, (7,))
    np.testing.assert_allclose(back, up(dtype, theta)[0], rtol=10 * eps)
    rotation = check_array(out["rotation"], dtype, (4, 4))
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(4), rtol=0, atol=20 * eps)
    np.testing.assert_allclose(np.linalg.det(rotation), 1, rtol=0, atol=20 * eps)


# --- studies: phase diagram, Gamma, metastability, FTLE ------------------------------------
# The sizes match the command-line tests below, so those reuse these compilations.

PD = dict(n=6, d=3, samples=4)  # as `attnflow phase-diagram --n 6 --d 3 --samples 4 ...`
PD_BETAS = np.linspace(0.1, 9.0, 3)
PD_TS = np.array([0, 5, 10, 15, 20]) * 0.1  # --t1 2 --saves 5, h = 0.1


def sa_layer(beta):
    return lambda t, x, h: np_normalize(x + h * np_attention(x, beta))


def bracket(gram, delta, band):
    """`(fewest, most)` close ordered pairs `i != j` when every cosine may be off by `band`."""
    off = off_diagonal(gram)
    return np.sum(off >= 1 - delta + band), np.sum(off >= 1 - delta - band)


def test_phase_diagram_and_gamma(dtype):
    """`prob` against the NumPy layers run in float64 from each realization's tokens (drawn in
    `dtype`), cell by cell. A pair whose cosine is within `band = tol(dtype)` of `1 - delta`
    may be counted either way: the dtype run's cosines are within that of float64's (the
    layers agree to about 1e-6 in float32, 1e-15 in float64, see test_simulate_every_model,
    and a cosine moves by at most twice a token's error), so the dtype's count of close pairs
    must lie between the float64 counts at `delta -+ band`. In float32 a few pairs out of the
    120 of a cell may sit in that band of width 7e-4 and differ; in float64 (band 3e-8), none
    in practice. `gamma()` against the integral of `1 / rate` (scipy quad)."""
    key, delta = jax.random.key(2), 0.05
    diagram = af.phase_diagram(
        key=key, **PD, betas=PD_BETAS, ts=PD_TS, delta=delta, dtype=dtype, progress=False
    )
    check_array(diagram.ts, dtype, (5,))
    betas = check_array(diagram.betas, dtype, (3,))
    assert np.all(diagram.status == 0)
    prob = np.asarray(diagram.prob)  # a mean of integer counts, computed on the host
    assert prob.shape == (3, 5) and np.all(np.isfinite(prob))
    band, pairs = tol(dtype), PD["n"] * (PD["n"] - 1)
    low, high = np.zeros((3, 5)), np.zeros((3, 5))
    for b, beta in enumerate(betas):
        for s in range(PD["samples"]):
            x0 = af.studies.phase_diagram_sample(key, s, n=6, d=3, dtype=dtype)[0]
            xs = np_layers(sa_layer(beta), up(dtype, x0)[0], 0.1, 20)[::5]
            for k, x in enumerate(xs):
                fewest, most = bracket(x @ x.T, up(dtype, delta)[0], band)
                low[b, k] += fewest / pairs
                high[b, k] += most / pairs
    samples = PD["samples"]
    assert np.all(low / samples - 1e-12 <= prob) and np.all(prob <= high / samples + 1e-12)
    assert 0 < prob.min() < prob.max() < 1  # some pairs close, not all
    gamma = check_array(np.asarray(diagram.gamma()), dtype, (3,))
    expected = [np_crossing_time(beta, 6, delta, "SA") for beta in betas]
    np.testing.assert_allclose(gamma, expected, rtol=tol(dtype))


def test_metastability(dtype):
    """Cluster counts bracketed by the float64 NumPy counts at `delta -+ tol(dtype)` (connected
    components, scipy; see test_phase_diagram_and_gamma), energies and realization 0's
    trajectory within `tol(dtype)` of the NumPy layers'."""
    key, delta, n = jax.random.key(3), 0.02, 6
    ts = np.arange(0, 21, 4) * 0.1
    study = af.studies.metastability(
        key=key, n=n, betas=(4.0, 9.0), ts=ts, samples=3, delta=delta, dtype=dtype, progress=False
    )
    check_array(study.ts, dtype, (6,))
    betas = check_array(study.betas, dtype, (2,))
    energy = check_array(study.energy, dtype, (2, 3, 6))
    xs = check_array(study.xs, dtype, (2, 6, n, 2))
    assert study.clusters.shape == (2, 3, 6) and np.all(study.status == 0)
    band = tol(dtype)
    for b, beta in enumerate(betas):
        for s in range(3):
            x0 = af.studies.phase_diagram_sample(key, s, n=n, d=2, dtype=dtype)[0]
            run = np_layers(sa_layer(beta), up(dtype, x0)[0], 0.1, 20)[::4]
            if s == 0:
                np.testing.assert_allclose(xs[b], run, rtol=0, atol=band)
            for k, x in enumerate(run):
                gram = x @ x.T
                most = connected_components(gram >= 1 - delta + band, directed=False)[0]
                fewest = connected_components(gram >= 1 - delta - band, directed=False)[0]
                assert fewest <= study.clusters[b, s, k] <= most
                e = np.exp(beta * gram).sum() / (2 * beta * n**2)
                np.testing.assert_allclose(energy[b, s, k], e, rtol=band)
    assert study.clusters[:, :, -1].min() < n  # some tokens did cluster


def np_layer_ftle(layer, x0, w0, h, per, intervals, complex_step=True):
    """The largest finite-time exponent of the layer map by Benettin's method with one tangent
    vector: `w <- D layer(x) w` by complex steps (exact to rounding; central differences, to
    about 1e-10, for maps that take no complex numbers), projected onto the tangent space and
    renormalized every `per` layers; the running estimate after each interval."""
    x, w, growth = np.asarray(x0, np.float64), np.asarray(w0, np.float64), []
    w = np_project(x, w)
    w /= np.linalg.norm(w)
    for j in range(intervals):
        for i in range(per):
            t = (j * per + i) * h
            if complex_step:
                w = layer(t, x + 1e-30j * w, h).imag / 1e-30
            else:
                w = (layer(t, x + 1e-6 * w, h) - layer(t, x - 1e-6 * w, h)) / 2e-6
            x = layer(t, x, h)
        w = np_project(x, w)
        size = np.linalg.norm(w)
        growth.append(np.log(size))
        w /= size
    return np.cumsum(growth) / (h * per * np.arange(1, intervals + 1))


def test_ftle_diagram(dtype):
    """`ftle` against Benettin's method on the NumPy layer map in float64 from the same tokens
    and the same first tangent vector (lyapunov_spectrum's default key, 1980)."""
    key, n = jax.random.key(4), 4
    betas = np.array([0.5, 9.0])  # as `attnflow ftle --n 4 --d 2 --num-betas 2 ...`
    diagram = af.studies.ftle_diagram(
        key=key, n=n, d=2, betas=betas, t1=2.0, every=0.5, samples=3, dtype=dtype, progress=False
    )
    ftle = check_array(diagram.ftle, dtype, (2, 3, 4))
    assert np.all(np.isfinite(diagram.local)) and np.all(diagram.status == 0)
    w0 = jax.random.normal(jax.random.PRNGKey(1980), (n, 2), dtype)
    for b, beta in enumerate(up(dtype, diagram.betas)[0]):
        for s in range(3):
            x0 = af.studies.phase_diagram_sample(key, s, n=n, d=2, dtype=dtype)[0]
            expected = np_layer_ftle(sa_layer(beta), *up(dtype, x0, w0), 0.1, 5, 4)
            np.testing.assert_allclose(ftle[b, s], expected, rtol=0, atol=tol(dtype))


def test_ftle_local_exponents_keep_the_dtype():
    """The configuration of test_ftle_diagram in float32 (compiled there already)."""
    diagram = af.studies.ftle_diagram(
        key=jax.random.key(4),
        n=4,
        d=2,
        betas=np.array([0.5, 9.0]),
        t1=2.0,
        every=0.5,
        samples=3,
        dtype=jnp.float32,
        progress=False,
    )
    assert diagram.ftle.dtype == np.float32
    assert diagram.local.dtype == np.float32


# --- stability -------------------------------------------------------------------------------


def np_lyapunov(velocity, x0, w0, t1, every):
    """All the exponents by Benettin's method on the NumPy field: the state and its tangent
    vectors (`J w` by complex steps) solved together by scipy's DOP853 at 1e-12, projected
    onto the tangent space and re-orthonormalized (QR) every `every`; the final estimates."""
    n, d = x0.shape
    k = len(w0)

    def rhs(t, y):
        x, w = y[: n * d].reshape(n, d), y[n * d :].reshape(k, n, d)
        jw = [velocity(t, x + 1e-30j * v).imag / 1e-30 for v in w]
        return np.concatenate([velocity(t, x).ravel(), np.ravel(jw)])

    x, w = np.asarray(x0, np.float64), np_project(x0, np.asarray(w0, np.float64))
    q, _ = np.linalg.qr(w.reshape(k, -1).T)
    w, sums = q.T.reshape(k, n, d), np.zeros(k)
    for j in range(round(t1 / every)):
        y = np.concatenate([x.ravel(), w.ravel()])
        sol = solve_ivp(rhs, (j * every, (j + 1) * every), y, "DOP853", rtol=1e-12, atol=1e-12)
        x, w = sol.y[: n * d, -1].reshape(n, d), sol.y[n * d :, -1].reshape(k, n, d)
        q, r = np.linalg.qr(np_project(x, w).reshape(k, -1).T)
        w, sums = q.T.reshape(k, n, d), sums + np.log(np.abs(np.diag(r)))
    return np.sort(sums / t1)[::-1]


LY = dict(n=4, d=3, t1=2.0)  # as `attnflow lyapunov --n 4 --d 3 --t1 2`


def test_lyapunov_spectrum(dtype):
    """All `n (d - 1) = 8` exponents of SA on the tangent bundle against Benettin's method on
    the NumPy field (scipy, float64) from the same tokens and tangent vectors."""
    n, d, t1 = LY["n"], LY["d"], LY["t1"]
    x0 = af.sphere.uniform(jax.random.key(5), n, d, dtype=dtype)
    field = af.SA(jnp.asarray(1.0, dtype))
    key = jax.random.key(11)  # a typed key, as the command line passes
    spectrum = af.stability.lyapunov_spectrum(
        field, x0, t1, rtol=ode_tol(dtype), atol=ode_tol(dtype), key=key
    )
    exponents = check_array(spectrum.exponents, dtype, (8,))
    check_array(spectrum.history, dtype, (2, 8))
    w0 = jax.random.normal(key, (8, n, d), dtype)
    expected = np_lyapunov(
        lambda t, x: np_project(x, np_attention(x, 1.0)), *up(dtype, x0, w0), t1, 1.0
    )
    np.testing.assert_allclose(exponents, expected, rtol=0, atol=tol(dtype))


def np_tangent_eigenvalues(theta, beta):
    """The eigenvalues of SA's Jacobian at tokens `(cos theta_i, sin theta_i)`, on the tangent
    space of `(S^1)^n` (basis `(-sin theta_i, cos theta_i)`), by complex steps in float64."""
    x = np.stack([np.cos(theta), np.sin(theta)], -1)
    n = len(theta)
    basis = np.zeros((n, n, 2))
    basis[np.arange(n), np.arange(n)] = np.stack([-np.sin(theta), np.cos(theta)], -1)
    columns = [
        np_project(x + 1e-30j * b, np_attention(x + 1e-30j * b, beta)).imag / 1e-30 for b in basis
    ]
    matrix = np.array([[np.sum(bi * c) for c in columns] for bi in basis])
    return np.sort(np.linalg.eigvals(matrix).real)[::-1]


def test_fixed_points_and_their_types(dtype):
    """SA on the circle, `n = 3`: the three equilibria (cluster, a pair opposite one token,
    the triangle) found from perturbed and random guesses, deduplicated modulo rotations and
    relabelings; each classified from eigenvalues that match the NumPy Jacobian's (one zero,
    the rotation, excluded)."""
    beta = 1.0
    field = af.SA(jnp.asarray(beta, dtype))
    known = {  # angles, kind, unstable directions
        "cluster": (np.zeros(3), "sink", 0),
        "pair": (np.array([0.0, 0.0, np.pi]), "saddle", 1),
        "triangle": (np.array([0.0, 2, 4]) * np.pi / 3, "source", 2),
    }
    rng = np.random.default_rng(0)
    guesses = [th + 0.05 * rng.normal(size=3) + rng.uniform(0, 6) for th, _, _ in known.values()]
    guesses = np.stack([np.stack([np.cos(g), np.sin(g)], -1) for g in guesses])
    found = af.stability.find_fixed_points(
        field, jnp.asarray(guesses, dtype), modulo="rotations+permutations"
    )
    points = check_array(found.points, dtype)
    assert len(found) == 3 and found.failed == 0
    assert np.all(found.residuals <= tol(dtype))
    for theta, kind, unstable in known.values():
        x = np.stack([np.cos(theta), np.sin(theta)], -1)
        signature = np.sort(off_diagonal(x @ x.T))
        match = [
            p for p in points if np.abs(np.sort(off_diagonal(p @ p.T)) - signature).max() < 0.01
        ]
        assert len(match) == 1
        np.testing.assert_allclose(
            np.sort(off_diagonal(match[0] @ match[0].T)), signature, atol=tol(dtype)
        )
        result = af.stability.classify_fixed_point(field, jnp.asarray(match[0], dtype))
        assert (result.type, result.unstable_dim, result.symmetry_dim) == (kind, unstable, 1)
        expected = np_tangent_eigenvalues(theta, beta)
        zero = np.argmin(np.abs(expected))
        expected = np.delete(expected, zero)
        np.testing.assert_allclose(
            np.sort(result.eigenvalues.real)[::-1], expected, rtol=0, atol=tol(dtype)
        )


# --- the command line with --dtype float32 -------------------------------------------------


def finite_data(path, float32=()):
    """The arrays of an npz, each float one finite; those named in `float32` in float32."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "config"}
        config = json.loads(str(data["config"]))
    for name, a in arrays.items():
        if a.dtype.kind == "f":
            assert np.all(np.isfinite(a)), name
    for name in float32:
        assert arrays[name].dtype == np.float32, (name, arrays[name].dtype)
    return arrays, config


SWEEP = [
    *("--samples", "4", "--t1", "2", "--saves", "5", "--n", "6"),
    *("--dtype", "float32", "--no-plot"),
]


def test_cli_phase_diagram_and_figure3_in_float32(tmp_path, capsys):
    status, io = run_cli(
        ["phase-diagram", *SWEEP, "--d", "3", "--num-betas", "3", "--out", str(tmp_path / "p.npz")],
        capsys,
    )
    assert status == 0, io.err
    arrays, config = finite_data(tmp_path / "p.npz", ("betas", "ts", "gamma"))
    assert config["dtype"] == "float32" and arrays["prob"].shape == (3, 5)
    assert np.all(arrays["status"] == 0)
    np.testing.assert_allclose(
        arrays["gamma"], [np_crossing_time(b, 6, 1e-3, "SA") for b in arrays["betas"]], rtol=1e-4
    )
    status, io = run_cli(
        [
            "figure3",
            *SWEEP,
            "--dims",
            "2",
            "3",
            "--num-betas",
            "3",
            "--out",
            str(tmp_path / "f.npz"),
        ],
        capsys,
    )
    assert status == 0, io.err
    arrays, config = finite_data(tmp_path / "f.npz", ("ts", "gamma"))
    assert arrays["prob"].shape == (2, 3, 5) and np.all(arrays["status"] == 0)


def test_cli_simulate_ftle_and_lyapunov_in_float32(tmp_path, capsys):
    out = str(tmp_path / "s.npz")
    argv = ["simulate", "--dtype", "float32", "--n", "5", "--t1", "2", "--saves", "6"]
    argv += ["--out", out]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    arrays, _ = finite_data(out, ("ts", "xs", "x0", "energy"))
    # simulate's default tolerances (rtol 1e-6, atol 1e-8) in float32
    expected = np_solve(
        lambda t, x: np_project(x, np_attention(x, 1.0)), arrays["x0"], arrays["ts"]
    )
    np.testing.assert_allclose(arrays["xs"], expected, rtol=0, atol=tol(np.float32))
    np.testing.assert_allclose(np.linalg.norm(arrays["xs"], axis=-1), 1, atol=tol(np.float32))
    status, io = run_cli(
        ["ftle", "--dtype", "float32", "--n", "4", "--d", "2", "--num-betas", "2", "--samples", "3"]
        + ["--t1", "2", "--every", "0.5", "--no-plot", "--out", str(tmp_path / "t.npz")],
        capsys,
    )
    assert status == 0, io.err
    arrays, _ = finite_data(tmp_path / "t.npz", ("betas", "ts", "ftle"))
    assert arrays["ftle"].shape == (2, 3, 4) and np.all(arrays["status"] == 0)
    status, io = run_cli(
        ["lyapunov", "--dtype", "float32", "--n", "4", "--d", "3", "--t1", "2", "--no-plot"]
        + ["--out", str(tmp_path / "l.npz")],
        capsys,
    )
    assert status == 0, io.err
    arrays, _ = finite_data(tmp_path / "l.npz", ("exponents", "history", "ts", "x0"))
    # the command's tangent vectors: the second half of its seed's key (lyapunov_spectrum's
    # default tolerances, rtol 1e-6 and atol 1e-8, in float32)
    w0 = jax.random.normal(jax.random.split(jax.random.key(0))[1], (8, 4, 3), jnp.float32)
    expected = np_lyapunov(
        lambda t, x: np_project(x, np_attention(x, 1.0)), *up(jnp.float32, arrays["x0"], w0), 2, 1
    )
    np.testing.assert_allclose(arrays["exponents"], expected, rtol=0, atol=tol(np.float32))


# --- JAX's true default: x64 off -------------------------------------------------------------

X64_OFF = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    assert not jax.config.jax_enable_x64
    out = {}

    def record(name, a):
        a = np.asarray(a)
        out[name] = [a.dtype.name, bool(np.all(np.isfinite(a)))]

    key = jax.random.key(0)
    x0 = af.sphere.uniform(key, 32, 3)  # the README's first example, default dtypes
    record("x0", x0)
    traj = af.simulate(af.SA(1.0), x0, jnp.linspace(0.0, 15.0, 151))
    record("simulate", traj.xs)
    record("energy", af.energy(traj.xs[-1], 1.0))
    diagram = af.phase_diagram(
        key=key, n=6, d=3, betas=jnp.array([0.5, 4.0]), ts=jnp.arange(5) * 0.5, samples=2,
        progress=False,
    )
    record("phase_diagram.ts", diagram.ts)
    record("phase_diagram.gamma", diagram.gamma())
    out["phase_diagram.prob"] = [bool(np.all(np.isfinite(diagram.prob)))]
    record("crossing_time", af.crossing_time(jnp.array([2.0, 9.0]), 6))  # gamma's compilation
    record("equiangular_rho", af.equiangular_rho(jnp.linspace(0.0, 30.0, 31), 9.0, 32))
    record("lyapunov_spectrum", af.stability.lyapunov_spectrum(af.SA(1.0), x0[:4], 10.0, key=jax.random.PRNGKey(1980)).exponents)
    # attnflow.optimize: a gradient search through simulate, and a fit (native float32 LM)
    from attnflow import optimize as opt
    ts = jnp.linspace(0.0, 2.0, 6)
    def loss(beta):
        xs = af.simulate(af.SA(beta), x0[:6], ts).xs
        return (opt.soft_collapse_time(ts, xs, 0.5, 0.1) - 1.0) ** 2
    record("search", opt.search(loss, 1.0, "adam", steps=3, progress=False).history)
    recording = af.simulate(af.SA(1.0, V=jnp.eye(3)), x0[:5], ts).xs
    fit = opt.fit_trajectory(ts, recording, steps=3, progress=False, key=jax.random.key(0))
    record("fit_trajectory", opt.identifiable(fit.params)[0])
    print(json.dumps(out))
    """
)


def test_defaults_with_x64_off():
    """A fresh interpreter with JAX's default (x64 off): the main public functions with their
    default dtypes and tolerances return finite float32 results (no `max_steps` failure from
    float64-only tolerances)."""
    env = {**os.environ, "JAX_ENABLE_X64": "0"}
    result = subprocess.run(
        [sys.executable, "-c", X64_OFF], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out.pop("phase_diagram.prob") == [True]  # integer counts averaged on the host
    assert out == {name: ["float32", True] for name in out} and len(out) == 10


def test_sinkhorn_stability_in_float32():
    """The largest exponent of the Sinkhorn layers (k = 1, the jacrev path of
    `value_and_jvps`) against Benettin's method on the NumPy Sinkhorn layer in float64."""
    x0 = af.sphere.uniform(jax.random.key(1), N, D, dtype=jnp.float32)
    field = af.PostLN(af.Sinkhorn(jnp.float32(BETA)))
    spectrum = af.stability.lyapunov_spectrum(
        field, x0, 1.0, k=1, every=0.5, solver=af.Layers(0.1), key=jax.random.key(2)
    )
    w0 = jax.random.normal(jax.random.key(2), (N, D), jnp.float32)
    layer = MODELS["Sinkhorn"].layer
    expected = np_layer_ftle(layer, *up(jnp.float32, x0, w0), 0.1, 5, 2, complex_step=False)
    history = check_array(spectrum.history[:, 0], jnp.float32, (2,))
    np.testing.assert_allclose(history, expected, rtol=0, atol=tol(jnp.float32))


@pytest.mark.xfail(
    strict=True,
    raises=ValueError,
    reason="a limitation of optimistix 0.1.0 in stability/_fixed_points.py: "
    "find_fixed_points(solver='levenberg_marquardt') on float32 guesses with x64 on (this "
    "test session, a notebook that enabled x64, or main(['fixed-points', '--dtype', 'float32', "
    "'--solver', 'levenberg_marquardt']) in such a process) raises "
    "'Vector and operator structures do not match': the damping lm_param = 1 / step_size is "
    "float64 (the trust region's Python-float step size), so the damped operator "
    "[J; sqrt(lambda) I] outputs float64 next to float32; with x64 off it works",
)
def test_levenberg_marquardt_fixed_points_in_float32():
    """The three equilibria of test_fixed_points_and_their_types, by Levenberg-Marquardt."""
    rng = np.random.default_rng(0)
    angles = [np.zeros(3), np.array([0.0, 0.0, np.pi]), np.array([0.0, 2, 4]) * np.pi / 3]
    guesses = [th + 0.05 * rng.normal(size=3) + rng.uniform(0, 6) for th in angles]
    guesses = np.stack([np.stack([np.cos(g), np.sin(g)], -1) for g in guesses])
    found = af.stability.find_fixed_points(
        af.SA(jnp.float32(1.0)),
        jnp.asarray(guesses, jnp.float32),
        solver="levenberg_marquardt",
        modulo="rotations+permutations",
    )
    assert len(found) == 3 and found.points.dtype == np.float32
    assert np.all(found.residuals <= tol(jnp.float32))
