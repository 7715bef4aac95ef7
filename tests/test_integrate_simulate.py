"""simulate() against scipy, the equiangular ODE, invariants and a hand-written layer loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import attention_field, equiangular, off_diagonal, solve, solve_rho
from test_fields import random_weights

import attnflow as af
from attnflow import sphere

TIGHT = dict(solver="dopri8", rtol=1e-11, atol=1e-13)
EPS = np.finfo(np.float64).eps


@pytest.mark.parametrize("make, normalized", [(af.SA, True), (af.USA, False)])
def test_matches_scipy_with_random_nonsquare_weights(getkey, make, normalized):
    x0 = sphere.uniform(getkey(), 6, 4)
    Q, K, V = random_weights(getkey(), 3, 4)
    ts = np.linspace(0.0, 5.0, 11)
    traj = af.simulate(make(1.5, Q, K, V), x0, ts, **TIGHT)
    Qn, Kn, Vn = map(np.asarray, (Q, K, V))
    expected = solve(lambda x: attention_field(x, 1.5, Qn, Kn, Vn, normalized), np.asarray(x0), ts)
    assert traj.xs.shape == (11, 6, 4) and traj.ts.shape == (11,)
    np.testing.assert_allclose(traj.xs, expected, atol=1e-6)
    np.testing.assert_allclose(traj.ts, ts)


@pytest.mark.parametrize("solver", ["tsit5", "dopri5", "heun", "kvaerno5"])
def test_adaptive_solvers_agree(getkey, solver):
    x0 = sphere.uniform(getkey(), 5, 3)
    ts = jnp.linspace(0.0, 4.0, 5)
    reference = af.simulate(af.SA(2.0), x0, ts, **TIGHT).xs
    traj = af.simulate(af.SA(2.0), x0, ts, solver=solver, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(traj.xs, reference, atol=1e-5)


def test_euler_converges_at_first_order(getkey):
    x0 = sphere.uniform(getkey(), 5, 3)
    ts = jnp.array([0.0, 2.0])
    reference = af.simulate(af.SA(1.0), x0, ts, **TIGHT).xs[-1]
    errors = [
        jnp.abs(af.simulate(af.SA(1.0), x0, ts, solver="euler", dt0=h).xs[-1] - reference).max()
        for h in (0.02, 0.01)
    ]
    assert 1.8 < errors[0] / errors[1] < 2.2


def test_layers_converge_to_the_flow_at_first_order(getkey):
    x0 = sphere.uniform(getkey(), 6, 3)
    Q, K, V = random_weights(getkey(), 2, 3)
    ts = jnp.array([0.0, 2.0])
    flow = af.simulate(af.SA(1.0, Q, K, V), x0, ts, **TIGHT).xs[-1]
    errors = [
        jnp.abs(af.simulate(af.SA(1.0, Q, K, V), x0, ts, solver=af.Layers(h)).xs[-1] - flow).max()
        for h in (0.02, 0.01)
    ]
    assert 1.8 < errors[0] / errors[1] < 2.2


@pytest.mark.parametrize("make, normalized", [(af.SA, True), (af.USA, False)])
@pytest.mark.parametrize("beta, rho0", [(0.0, 0.0), (1.0, -0.1), (4.0, 0.3)])
def test_equiangular_reduction(getkey, make, normalized, beta, rho0):
    n = 5
    x0 = equiangular(n, rho0, sphere.random_rotation(getkey(), n))
    ts = np.linspace(0.0, 3.0, 7)
    xs = af.simulate(make(beta), jnp.asarray(x0), ts, **TIGHT).xs
    cosines = off_diagonal(np.asarray(jnp.einsum("tid,tjd->tij", xs, xs)))
    rho = solve_rho(beta, n, rho0, ts, kind="SA" if normalized else "USA")
    np.testing.assert_allclose(cosines, np.broadcast_to(rho[:, None], cosines.shape), atol=1e-8)


@pytest.mark.parametrize("make", [af.SA, af.USA])
def test_equiangular_closed_form_at_beta_zero(make):
    n, rho0 = 6, 0.1
    ts = np.linspace(0.0, 4.0, 9)
    xs = af.simulate(make(0.0), jnp.asarray(equiangular(n, rho0)), ts, **TIGHT).xs
    # d rho/dt = (2/n)(1 - rho)(1 + (n-1) rho)  =>  rho = (c e^{2t} - 1) / (c e^{2t} + n - 1).
    c = (1 + (n - 1) * rho0) / (1 - rho0)
    rho = (c * np.exp(2 * ts) - 1) / (c * np.exp(2 * ts) + n - 1)
    cosines = off_diagonal(np.asarray(jnp.einsum("tid,tjd->tij", xs, xs)))
    np.testing.assert_allclose(cosines, np.broadcast_to(rho[:, None], cosines.shape), atol=1e-9)


def test_regular_simplex_is_an_equilibrium():
    x0 = jnp.asarray(equiangular(4, -1 / 3))
    xs = af.simulate(af.SA(2.0), x0, jnp.array([0.0, 5.0]), **TIGHT).xs
    np.testing.assert_allclose(xs[-1], x0, atol=1e-12)


def test_norms_stay_one(getkey):
    """At the default tolerances the ODE solution is accurate (against scipy's DOP853) and is
    returned on the sphere to rounding; the layers renormalize at every step."""
    x0 = sphere.uniform(getkey(), 16, 3)
    ts = jnp.linspace(0.0, 30.0, 61)
    eye = np.eye(3)
    ode = af.simulate(af.SA(1.0), x0, ts).xs  # default tolerances
    expected = solve(lambda x: attention_field(x, 1.0, eye, eye, eye), np.asarray(x0), ts)
    np.testing.assert_allclose(ode, expected, rtol=0, atol=1e-5)
    assert np.abs(np.linalg.norm(ode, axis=-1) - 1).max() < 4 * EPS
    layers = af.simulate(af.SA(1.0), x0, ts, solver=af.Layers(0.1)).xs
    assert jnp.abs(jnp.linalg.norm(layers, axis=-1) - 1).max() < 1e-14

    # Repulsive values (<x, v> < 0): the sphere must not repel the numerical drift, which would
    # grow and change the weights e^{beta <x_i, x_j>} (the reference projects by |x|^2, exactly
    # tangent off the sphere too).
    def repulsive_field(x):
        v = np.exp(3.0 * x @ x.T) @ -x / len(x)
        return v - np.sum(x * v, axis=1, keepdims=True) / np.sum(x * x, axis=1)[:, None] * x

    repulsive = af.simulate(af.USA(3.0, V=-jnp.eye(3)), x0, ts, max_steps=2000).xs
    expected = solve(repulsive_field, np.asarray(x0), ts)
    np.testing.assert_allclose(repulsive, expected, rtol=0, atol=1e-5)
    assert np.abs(np.linalg.norm(repulsive, axis=-1) - 1).max() < 4 * EPS


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_its_own_output_is_a_valid_input(dtype):
    """Issue 22: after an adaptive solve at the default tolerances the tokens had drifted
    1.5e-6 off the sphere, and simulate, classify_fixed_point and fit_trajectory refused them
    (float64 checks within sqrt(eps) = 1.5e-8). They are on the sphere to rounding now."""
    x0 = sphere.uniform(jax.random.key(0), 32, 3, dtype)
    ts = jnp.linspace(0.0, 30.0, 4, dtype=dtype)
    xs = af.simulate(af.SA(1.0), x0, ts).xs
    norms = np.linalg.norm(np.asarray(xs, np.float64), axis=-1)
    assert np.abs(norms - 1).max() <= 4 * np.finfo(dtype).eps
    again = af.simulate(af.SA(1.0), xs[-1], ts[:2]).xs
    assert np.abs(np.linalg.norm(np.asarray(again, np.float64), axis=-1) - 1).max() <= (
        4 * np.finfo(dtype).eps
    )
    # one cluster at t = 30 (beta = 1, d = 3): a sink modulo rotations
    assert af.stability.classify_fixed_point(af.SA(1.0), xs[-1]).type == "sink"
    # fit_trajectory checks the recording (on the sphere) before anything else: reaching the
    # check of `kind` shows it accepted, without compiling a fit
    with pytest.raises(ValueError, match="kind must be one of"):
        af.optimize.fit_trajectory(ts, xs, kind="none", progress=False, key=jax.random.key(0))


def test_renormalized_states_of_a_failed_solve_stay_inf():
    """A failed solve fills the later save times with inf; renormalizing keeps them inf, with
    the states before the failure on the sphere."""
    x0 = sphere.uniform(jax.random.key(7), 8, 3)
    ts = jnp.linspace(0.0, 5.0, 6)
    run = af.simulate(af.SA(4.0), x0, ts, max_steps=4, throw=False)
    assert int(run.status) == 1 and not np.any(np.isnan(run.xs))
    finite = np.all(np.isfinite(run.xs), axis=(1, 2))
    assert finite[0] and not finite[-1] and np.all(np.isposinf(run.xs[~finite]))
    np.testing.assert_allclose(np.linalg.norm(run.xs[finite], axis=-1), 1, rtol=0, atol=4 * EPS)
    stat = af.simulate(
        af.SA(4.0), x0, ts, max_steps=4, throw=False, save=lambda t, x: jnp.sum(x * x, -1)
    )
    np.testing.assert_allclose(stat.xs[finite], 1, rtol=0, atol=4 * EPS)  # renormalized too
    assert np.all(np.isposinf(stat.xs[~finite]))


def test_a_solve_out_of_steps_says_why_and_what_to_try():
    """With throw=True a failed solve raises an error in the terms of the flow, not diffrax's
    generic one; the lyapunov Stepper raises the same."""
    import equinox as eqx

    x0 = sphere.uniform(jax.random.key(7), 8, 3)
    with pytest.raises(eqx.EquinoxRuntimeError) as error:
        af.simulate(af.SA(4.0), x0, jnp.linspace(0.0, 5.0, 6), max_steps=4)
    message = str(error.value)
    assert "the ODE solver reached its maximum number of solver steps (max_steps)" in message
    for remedy in ("a larger max_steps", "attnflow.Layers(h)", "float64", "throw=False"):
        assert remedy in message


def test_trajectory_permutation_and_rotation_equivariance(getkey):
    x0 = sphere.uniform(getkey(), 7, 3)
    ts = jnp.linspace(0.0, 3.0, 4)
    perm = jax.random.permutation(getkey(), 7)
    r = sphere.random_rotation(getkey(), 3)
    for field in (af.SA(2.0), af.USA(2.0)):
        xs = af.simulate(field, x0, ts, **TIGHT).xs
        np.testing.assert_allclose(
            af.simulate(field, x0[perm], ts, **TIGHT).xs, xs[:, perm], atol=1e-10
        )
        np.testing.assert_allclose(
            af.simulate(field, x0 @ r.T, ts, **TIGHT).xs, xs @ r.T, atol=1e-10
        )


def test_duplicated_tokens_follow_the_same_trajectory(getkey):
    x0 = sphere.uniform(getkey(), 4, 3)
    Q, K, V = random_weights(getkey(), 2, 3)
    ts = jnp.linspace(0.0, 3.0, 4)
    for field in (af.SA(1.0, Q, K, V), af.USA(1.0, Q, K, V)):
        xs = af.simulate(field, x0, ts, **TIGHT).xs
        doubled = af.simulate(field, jnp.concatenate([x0, x0]), ts, **TIGHT).xs
        np.testing.assert_allclose(doubled[:, 4:], xs, atol=1e-10)


def layers_loop(x0, steps, h, layer_weights, beta, mlp=None):
    """Hand-written post-LN transformer in NumPy: Euler step, then renormalize."""
    x, xs = np.asarray(x0), [np.asarray(x0)]
    for k in range(steps):
        Q, K, V = layer_weights(k)
        logits = beta * (x @ Q.T) @ (x @ K.T).T
        a = np.exp(logits - logits.max(axis=1, keepdims=True))
        a /= a.sum(axis=1, keepdims=True)
        x = x + h * a @ (x @ V.T)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        if mlp is not None:
            x = x + h * mlp(x)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        xs.append(x)
    return np.stack(xs)


def test_layers_equal_hand_written_loop(getkey):
    x0 = sphere.uniform(getkey(), 8, 4)
    Q, K, V = random_weights(getkey(), 3, 4)
    expected = layers_loop(x0, 50, 0.1, lambda k: tuple(map(np.asarray, (Q, K, V))), 2.0)
    ts = np.arange(51) * 0.1
    xs = af.simulate(af.SA(2.0, Q, K, V), x0, ts, solver=af.Layers(0.1)).xs
    np.testing.assert_allclose(xs, expected, rtol=0, atol=1e-13)
    # Uneven save times pick the same states.
    picks = [0, 3, 4, 10, 50]
    xs = af.simulate(af.SA(2.0, Q, K, V), x0, ts[picks], solver=af.Layers(0.1)).xs
    np.testing.assert_allclose(xs, expected[picks], rtol=0, atol=1e-13)
    # A start after 0 steps from there.
    xs = af.simulate(af.SA(2.0, Q, K, V), x0, np.array([2.0, 2.5]), solver=af.Layers(0.1)).xs
    np.testing.assert_allclose(xs, expected[[0, 5]], rtol=0, atol=1e-13)


def test_layers_with_per_layer_weights_and_feed_forward(getkey):
    x0 = sphere.uniform(getkey(), 6, 3)
    weights = [random_weights(getkey(), 2, 3) for _ in range(4)]
    w, a = jax.random.normal(getkey(), (3, 5)), jax.random.normal(getkey(), (5, 3))
    b = jax.random.normal(getkey(), (5,))
    field = af.PostLN(
        af.PerLayer([af.Softmax(1.5, *qkv) for qkv in weights], h=0.25), mlp=af.FeedForward(w, a, b)
    )
    expected = layers_loop(
        x0,
        6,
        0.25,
        lambda k: tuple(map(np.asarray, weights[min(k, 3)])),
        1.5,
        mlp=lambda x: np.maximum(x @ np.asarray(a).T + np.asarray(b), 0) @ np.asarray(w).T,
    )
    xs = af.simulate(field, x0, np.arange(7) * 0.25, solver=af.Layers(0.25)).xs
    np.testing.assert_allclose(xs, expected, rtol=0, atol=1e-13)


def test_per_layer_weights_in_continuous_time_match_scipy(getkey):
    x0 = sphere.uniform(getkey(), 5, 3)
    weights = [tuple(map(np.asarray, random_weights(getkey(), 2, 3))) for _ in range(3)]
    field = af.PostLN(af.PerLayer([af.Softmax(1.0, *qkv) for qkv in weights], h=1.0))
    ts = np.array([0.0, 1.0, 2.0, 3.0])
    xs = af.simulate(field, x0, ts, **TIGHT).xs
    expected = [np.asarray(x0)]
    for k in range(3):  # integrate each layer's constant field over [k, k + 1]
        expected.append(
            solve(
                lambda x, w=weights[k]: attention_field(x, 1.0, *w),
                expected[-1],
                np.array([k, k + 1.0]),
            )[-1]
        )
    np.testing.assert_allclose(xs, np.stack(expected), atol=1e-6)


def test_save_statistic_instead_of_states(getkey):
    x0 = sphere.uniform(getkey(), 6, 3)
    ts = jnp.linspace(0.0, 2.0, 5)
    gram = lambda t, x: x @ x.T  # noqa: E731
    for kwargs in (TIGHT, dict(solver=af.Layers(0.5))):
        full = af.simulate(af.SA(1.0), x0, ts, **kwargs).xs
        stats = af.simulate(af.SA(1.0), x0, ts, save=gram, **kwargs).xs
        assert stats.shape == (5, 6, 6)
        np.testing.assert_allclose(stats, jnp.einsum("tid,tjd->tij", full, full), atol=1e-12)


def test_vmap_over_initial_conditions_and_beta(getkey):
    x0s = sphere.uniform(getkey(), 3 * 5, 3).reshape(3, 5, 3)
    betas = jnp.array([0.0, 1.0, 4.0])
    ts = jnp.linspace(0.0, 2.0, 3)
    for kwargs in (dict(), dict(solver=af.Layers(0.1))):
        run = lambda x0, b, kw=kwargs: af.simulate(af.SA(b), x0, ts, **kw).xs  # noqa: E731
        batched = jax.vmap(run)(x0s, betas)
        for i in range(3):
            np.testing.assert_allclose(batched[i], run(x0s[i], betas[i]), atol=1e-12)
        over_beta = jax.vmap(run, in_axes=(None, 0))(x0s[0], betas)
        np.testing.assert_allclose(over_beta[2], run(x0s[0], betas[2]), atol=1e-12)


def test_differentiable_in_beta_and_x0(getkey):
    x0 = sphere.uniform(getkey(), 5, 3)
    ts = jnp.array([0.0, 1.0])

    def final_energy(beta, kwargs):
        return af.energy(af.simulate(af.SA(beta), x0, ts, **kwargs).xs[-1], 1.0)

    for kwargs in (dict(rtol=1e-10, atol=1e-12), dict(solver=af.Layers(0.1))):
        g = jax.grad(final_energy)(1.3, kwargs)
        eps = 1e-5
        fd = (final_energy(1.3 + eps, kwargs) - final_energy(1.3 - eps, kwargs)) / (2 * eps)
        np.testing.assert_allclose(g, fd, rtol=1e-5)
    grad_x0 = jax.grad(lambda x: af.simulate(af.SA(1.0), x, ts).xs[-1, 0, 0])(x0)
    assert grad_x0.shape == x0.shape and jnp.all(jnp.isfinite(grad_x0))


def test_float32_large_beta_and_single_token(getkey):
    x0 = sphere.uniform(getkey(), 6, 3, dtype=jnp.float32)
    ts = jnp.linspace(0.0, 1.0, 3)
    for field in (af.SA(1e3), af.SA(1.0), af.USA(1.0)):
        for kwargs in (dict(), dict(solver=af.Layers(0.1))):
            xs = af.simulate(field, x0, ts, **kwargs).xs
            assert xs.dtype == jnp.float32 and jnp.all(jnp.isfinite(xs))
    xs = af.simulate(af.SA(1e3), sphere.uniform(getkey(), 6, 3), ts).xs
    assert jnp.all(jnp.isfinite(xs))
    one = jnp.array([[0.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        af.simulate(af.SA(2.0), one, ts).xs, jnp.broadcast_to(one, (3, 1, 3))
    )


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (
            (jnp.ones(3), [0.0, 1.0]),
            {},
            r"x0 must have shape \(n, d\) with n, d >= 1; got shape \(3,\)",
        ),
        ((jnp.eye(3)[:, :2], [0.0, 1.0]), {}, r"x0 must lie on the unit sphere"),
        (
            (jnp.eye(3).at[0, 0].set(jnp.nan), [0.0, 1.0]),
            {},
            r"x0 must hold only finite numbers; got 1",
        ),
        (
            (2 * jnp.eye(3), [0.0, 1.0]),
            {},
            r"normalize; the farthest row is x0\[0\], of norm 2 \(off by 1\.0e\+00\)",
        ),
        (
            (jnp.eye(3), [0.0, 1.0]),
            dict(solver="rk4"),
            r"solver must be one of .*tsit5.*; got 'rk4'",
        ),
        ((jnp.eye(3), [1.0, 0.0]), {}, r"ts must be finite and strictly increasing; got \[1. 0.\]"),
        ((jnp.eye(3), [0.0]), {}, r"ts must be a 1-D array of at least two save times"),
        (
            (jnp.eye(3), [0.0, 1.0]),
            dict(solver="euler"),
            r"dt0 must be given for the fixed-step solver Euler",
        ),
        (
            (jnp.eye(3), [0.0, 1.0]),
            dict(solver=af.Layers(0.1), dt0=0.1),
            r"dt0 does not apply to Layers",
        ),
        (
            (jnp.eye(3), [0.0, 0.15]),
            dict(solver=af.Layers(0.1)),
            r"ts must be multiples of the layer step h = 0.1 of Layers; got ts\[1\] = 0.15",
        ),
        ((jnp.eye(3), [0.0, 1.0]), dict(rtol=-1.0), r"rtol must be a positive number"),
        ((jnp.eye(3), [0.0, 1.0]), dict(save="x"), r"save must be a callable"),
        (
            (jnp.eye(3), [0.0, 1.0]),
            dict(max_steps=2.5),
            r"max_steps must be an integer >= 1; got 2.5",
        ),
        (
            (jnp.eye(3), [0.0, 1.0]),
            dict(solver="euler", dt0=np.float32(-0.1)),
            r"dt0 must be a positive number \(the step size\); got np.float32\(-0.1\)",
        ),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        af.simulate(af.SA(1.0), *args, **kwargs)


def test_bad_input_against_the_weights():
    with pytest.raises(
        ValueError,
        match=r"x0 must have shape \(n, 4\) to match the attention weights; got shape \(3, 3\)",
    ):
        af.simulate(af.SA(1.0, Q=jnp.ones((2, 4)), K=jnp.ones((2, 4))), jnp.eye(3), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"Layers needs a field with a discrete layer map"):
        af.simulate(af.Circle(1.0), jnp.zeros(3), [0.0, 1.0], solver=af.Layers(0.1))
    with pytest.raises(ValueError, match=r"field must be an attnflow vector field"):
        af.simulate(lambda t, x, a: x, jnp.eye(3), [0.0, 1.0])


def test_off_sphere_under_vmap_is_caught():
    with pytest.raises(Exception, match="x0 must lie on the unit sphere"):
        jax.vmap(lambda x: af.simulate(af.SA(1.0), x, [0.0, 1.0]).xs)(2 * jnp.ones((2, 3, 3)))
