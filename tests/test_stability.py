"""attnflow.stability against published values, linear algebra, analytic linearizations and an
independent (NumPy) Kuramoto Jacobian."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import attention_field, equiangular_rate, solve

import attnflow as af
from attnflow.stability import (
    classify_fixed_point,
    find_fixed_points,
    jacobian,
    lyapunov_spectrum,
    tangent_basis,
    tangent_jacobian,
)

SIGMA, RHO, B = 10.0, 28.0, 8.0 / 3.0


def lorenz(t, y, args):
    x, v, z = y
    return jnp.stack([SIGMA * (v - x), x * (RHO - z) - v, x * v - B * z])


def test_lorenz_published_spectrum_and_divergence():
    # Sprott, "Chaos and Time-Series Analysis" (2003): (0.9056, 0, -14.5723)
    spectrum = lyapunov_spectrum(
        lorenz,
        jnp.ones(3),
        3020.0,
        transient=20.0,
        rtol=1e-8,
        atol=1e-8,
        key=jax.random.PRNGKey(1980),
    )
    l1, l2, l3 = np.asarray(spectrum.exponents)
    assert abs(l1 - 0.9056) < 0.02 * 0.9056
    assert abs(l2) < 0.02 * 0.9056
    assert abs(l3 + 14.5723) < 0.02 * 14.5723
    # Liouville: the volume of three tangent vectors grows like exp(integral of div f), and the
    # divergence of Lorenz is the constant -(sigma + 1 + b)
    np.testing.assert_allclose(spectrum.exponents.sum(), -(SIGMA + 1 + B), rtol=1e-7)
    assert spectrum.history.shape == (3000, 3) and spectrum.ts[-1] == 3020.0
    assert np.all(np.diff(np.asarray(spectrum.history), axis=1) <= 0)  # largest first


def test_largest_exponent_alone_matches_the_spectrum():
    top = lyapunov_spectrum(
        lorenz, jnp.ones(3), 1020.0, k=1, transient=20.0, rtol=1e-8, key=jax.random.PRNGKey(1980)
    )
    full = lyapunov_spectrum(
        lorenz, jnp.ones(3), 1020.0, transient=20.0, rtol=1e-8, key=jax.random.PRNGKey(1980)
    )
    assert top.exponents.shape == (1,)
    np.testing.assert_allclose(top.exponents[0], full.exponents[0], atol=0.02)


@pytest.mark.parametrize("normal", [True, False])
def test_linear_system_exponents_are_real_parts_of_eigenvalues(getkey, normal):
    if normal:  # a rotation block -1 +- 2i, and 0.5
        a = np.array([[-1.0, 2.0, 0.0], [-2.0, -1.0, 0.0], [0.0, 0.0, 0.5]])
    else:  # non-normal, with eigenvalues 0.3, -0.2 +- 1.5i, -1.1
        rng = np.random.default_rng(0)
        s = rng.normal(size=(4, 4))
        core = np.array([[0.3, 0, 0, 0], [0, -0.2, 1.5, 0], [0, -1.5, -0.2, 0], [0, 0, 0, -1.1]])
        a = s @ core @ np.linalg.inv(s)
    expected = np.sort(np.linalg.eigvals(a).real)[::-1]
    matrix = jnp.asarray(a)
    spectrum = lyapunov_spectrum(
        lambda t, y, args: matrix @ y,
        jnp.ones(len(a)),
        220.0,
        transient=20.0,
        rtol=1e-10,
        atol=1e-12,
        key=getkey(),
    )
    np.testing.assert_allclose(spectrum.exponents, expected, atol=1e-6 if normal else 2e-2)


def test_jacobian_equals_finite_differences(getkey):
    n, d = 5, 3
    q, k, v = (jax.random.normal(getkey(), (d, d)) for _ in range(3))
    field = af.SA(1.5, q, k, v)
    x = af.sphere.uniform(getkey(), n, d)
    j = np.asarray(jacobian(field, x))
    velocity = jax.jit(lambda y: field(0.0, y))
    eps = 1e-6
    fd = np.zeros((n * d, n * d))
    for c in range(n * d):
        e = np.zeros(n * d)
        e[c] = eps
        plus = velocity(x + e.reshape(n, d))
        minus = velocity(x - e.reshape(n, d))
        fd[:, c] = np.asarray(plus - minus).ravel() / (2 * eps)
    np.testing.assert_allclose(j, fd, atol=1e-8)
    restricted, basis = tangent_jacobian(field, x)
    np.testing.assert_allclose(restricted, basis.T @ j @ basis, atol=1e-12)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_tangent_basis_is_orthonormal_and_tangent(getkey, d):
    x = af.sphere.uniform(getkey(), 4, d).at[0].set(jnp.eye(d)[0]).at[1].set(-jnp.eye(d)[0])
    basis = np.asarray(tangent_basis(x))
    assert basis.shape == (4 * d, 4 * (d - 1))
    np.testing.assert_allclose(basis.T @ basis, np.eye(4 * (d - 1)), atol=1e-14)
    normals = np.zeros((4, 4 * d))
    for i in range(4):
        normals[i, i * d : (i + 1) * d] = x[i]
    np.testing.assert_allclose(normals @ basis, 0, atol=1e-14)


def _near_cluster(key, n, d, spread=0.05):
    return af.sphere.normalize(
        jnp.zeros((n, d)).at[:, -1].set(1) + spread * jax.random.normal(key, (n, d))
    )


@pytest.mark.parametrize(("kind", "beta"), [("SA", 2.0), ("USA", 0.5)])
def test_sphere_spectrum_converges_to_the_linearized_cluster(getkey, kind, beta):
    # at the cluster, dv_i/dt = c (mean_j v_j - v_i): c = 1 (SA), e^beta (USA); the d - 1
    # rotations are neutral; the n normal directions are excluded
    n, d = 4, 3
    field = {"SA": af.SA, "USA": af.USA}[kind](beta)
    spectrum = lyapunov_spectrum(
        field,
        _near_cluster(getkey(), n, d),
        60.0,
        transient=30.0,
        every=0.5,
        key=jax.random.PRNGKey(1980),
    )
    c = 1.0 if kind == "SA" else math.exp(beta)
    expected = np.array([0.0] * (d - 1) + [-c] * ((n - 1) * (d - 1)))
    assert spectrum.dimension == n * (d - 1) and spectrum.exponents.shape == (n * (d - 1),)
    np.testing.assert_allclose(spectrum.exponents, expected, atol=2e-3 * c)


def test_layers_spectrum_at_the_cluster_is_log_of_the_layer_map():
    # one layer near the cluster: v_i <- (v_i + h mean v) / (1 + h), so the exponent per unit
    # time of the mean-zero directions is -log(1 + h) / h
    h, n, d = 0.1, 3, 2
    spectrum = lyapunov_spectrum(
        af.SA(1.0),
        _near_cluster(jax.random.key(0), n, d),
        40.0,
        transient=20.0,
        solver=af.Layers(h),
        key=jax.random.PRNGKey(1980),
    )
    expected = [0.0] + [-math.log1p(h) / h] * (n - 1)
    np.testing.assert_allclose(spectrum.exponents, expected, atol=1e-4)


def test_vmap_over_initial_conditions_and_beta(getkey):
    n, d = 4, 3
    x0s = jnp.stack([af.sphere.uniform(getkey(), n, d) for _ in range(3)])
    betas = jnp.array([0.5, 1.0, 4.0])

    def top(x0, beta):
        return lyapunov_spectrum(af.SA(beta), x0, 10.0, k=2, key=jax.random.PRNGKey(1980)).exponents

    batched = jax.jit(jax.vmap(top))(x0s, betas)
    for i in range(3):
        np.testing.assert_allclose(batched[i], top(x0s[i], betas[i]), rtol=1e-10, atol=1e-12)


def test_lyapunov_bad_input_is_refused(getkey):
    x0 = af.sphere.uniform(getkey(), 4, 3)
    with pytest.raises(ValueError, match="y0's shape"):
        lyapunov_spectrum(lambda t, y, a: y[:2], x0, 1.0, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="finite"):
        lyapunov_spectrum(lorenz, jnp.array([1.0, jnp.nan, 0.0]), 1.0, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="unit sphere"):
        lyapunov_spectrum(af.SA(1.0), 2 * x0, 1.0, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match=r"k must be at most the dimension 8 \(n \(d - 1\)"):
        lyapunov_spectrum(af.SA(1.0), x0, 1.0, k=9, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        lyapunov_spectrum(lorenz, jnp.ones(3), 1.0, k=0, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="t1 must be greater than t0"):
        lyapunov_spectrum(lorenz, jnp.ones(3), 0.0, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="transient must be shorter"):
        lyapunov_spectrum(lorenz, jnp.ones(3), 5.0, transient=5.0, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="tangent=True needs tokens"):
        lyapunov_spectrum(lorenz, jnp.ones(3), 1.0, tangent=True, key=jax.random.PRNGKey(1980))
    with pytest.raises(ValueError, match="solver must be one of"):
        lyapunov_spectrum(lorenz, jnp.ones(3), 1.0, solver="rk99", key=jax.random.PRNGKey(1980))
    with pytest.raises(eqx.EquinoxRuntimeError, match="finite"):
        eqx.filter_jit(
            lambda y: lyapunov_spectrum(lorenz, y, 1.0, key=jax.random.PRNGKey(1980)).exponents
        )(jnp.array([1.0, jnp.inf, 0]))


@pytest.mark.parametrize(("kind", "d"), [("SA", 2), ("SA", 4), ("USA", 3)])
def test_single_cluster_is_a_sink_modulo_rotations(kind, d):
    beta, n = 1.5, 5
    field = {"SA": af.SA, "USA": af.USA}[kind](beta)
    result = classify_fixed_point(field, af.stability.cluster(n, d))
    assert result.type == "sink" and result.unstable_dim == 0
    assert result.symmetry_dim == d - 1  # the rotations that move the cluster's point
    assert len(result.eigenvalues) == (n - 1) * (d - 1)
    c = 1.0 if kind == "SA" else math.exp(beta)
    np.testing.assert_allclose(result.eigenvalues, -c, atol=1e-10)
    unfiltered = classify_fixed_point(field, af.stability.cluster(n, d), symmetries=None)
    assert unfiltered.type == "degenerate" and unfiltered.center_dim == d - 1


def _kuramoto_jacobian(theta):
    """d/dtheta of dtheta_i/dt = (1/n) sum_j sin(theta_j - theta_i) (SA at beta = 0 on the
    circle), in closed form."""
    n = len(theta)
    c = np.cos(theta[None, :] - theta[:, None]) / n
    return c - np.diag(c.sum(axis=1))


@pytest.mark.parametrize("n", [3, 4, 5])
def test_beta_zero_critical_points_are_strict_saddles(n):
    # GLPR Lemma A.2: at beta = 0 every equilibrium but the cluster has an unstable direction
    field = af.SA(0.0)
    guesses = af.sphere.uniform(jax.random.key(n), 48 * n, 2).reshape(48, n, 2)
    found = find_fixed_points(field, guesses, modulo="rotations+permutations")
    assert found.failed == 0 and found.counts.sum() == 48 and len(found) >= 2
    assert np.all(found.residuals < 1e-12)
    clusters = 0
    for x in found.points:
        result = classify_fixed_point(field, x)
        assert result.symmetry_dim == 1
        # the same eigenvalues as the closed-form Kuramoto Jacobian, less its phase-shift zero
        theta = np.arctan2(x[:, 1], x[:, 0])
        expected = np.sort(np.linalg.eigvalsh(_kuramoto_jacobian(theta)))
        drop = np.argmin(np.abs(expected))
        np.testing.assert_allclose(
            np.sort(result.eigenvalues.real), np.delete(expected, drop), atol=1e-9
        )
        if float((x @ x.T).min()) > 1 - 1e-9:
            clusters += 1
            assert result.type == "sink"
        else:
            assert result.unstable_dim >= 1
    assert clusters == 1


@pytest.mark.parametrize(
    ("kind", "beta", "n", "d"), [("SA", 0.5, 3, 3), ("SA", 2.0, 4, 5), ("USA", 1.0, 4, 4)]
)
def test_simplex_matches_the_equiangular_linearization(kind, beta, n, d):
    field = {"SA": af.SA, "USA": af.USA}[kind](beta)
    x = af.stability.simplex(n, d)
    np.testing.assert_allclose(np.asarray(x @ x.T), (n * np.eye(n) - 1) / (n - 1), atol=1e-14)
    rho, eps = -1 / (n - 1), 1e-6
    slope = (
        equiangular_rate(rho + eps, beta, n, kind) - equiangular_rate(rho - eps, beta, n, kind)
    ) / (2 * eps)
    result = classify_fixed_point(field, x)
    assert result.residual < 1e-14
    assert np.min(np.abs(result.eigenvalues - slope / 2)) < 1e-8
    assert result.unstable_dim >= 1  # the simplex repels (for V = I)
    assert af.stability.simplex_rate(beta, n, kind) == pytest.approx(slope / 2, rel=1e-8)


@pytest.mark.parametrize("kind", ["SA", "USA"])
def test_known_results_hold(kind):
    results = af.stability.known_results(
        beta=2.0, n=3, d=3, kind=kind, guesses=16, key=jax.random.PRNGKey(0)
    )
    assert [r.name for r in results] == [
        "single cluster",
        "regular simplex",
        "beta = 0, d = 2 (Lemma A.2)",
    ]
    assert all(r.holds for r in results), results


def test_find_fixed_points_modulo_rotations_and_solvers(getkey):
    field = af.SA(3.0)
    x = af.stability.cluster(4, 3)
    rotations = jnp.stack([x @ af.sphere.random_rotation(getkey(), 3).T for _ in range(5)])
    noisy = rotations + 1e-3 * jax.random.normal(getkey(), rotations.shape)
    assert len(find_fixed_points(field, noisy)) == 5
    for solver in ["newton", "levenberg_marquardt"]:
        found = find_fixed_points(field, noisy, modulo="rotations", solver=solver)
        assert len(found) == 1 and found.counts.tolist() == [5]
        np.testing.assert_allclose(found.points[0] @ found.points[0].T, 1, atol=1e-9)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_fixed_point_guesses_are_uniform_tokens_and_their_flow(getkey, dtype):
    """The configurations are `sphere.uniform`'s draw, then their states at `times`, which agree
    with scipy's DOP853 on the SA field written in NumPy; the key is required."""
    key, n, d, beta, samples, times = getkey(), 3, 2, 1.0, 2, (1.0, 3.0)
    field = af.SA(jnp.asarray(beta, dtype))
    guesses = af.stability.fixed_point_guesses(
        field, n, d, key=key, samples=samples, times=times, dtype=dtype
    )
    assert guesses.shape == (samples * (1 + len(times)), n, d) and guesses.dtype == dtype
    starts = af.sphere.uniform(key, samples * n, d, dtype).reshape(samples, n, d)
    np.testing.assert_array_equal(guesses[:samples], starts)
    eye = np.eye(d)
    flowed = np.asarray(guesses[samples:]).reshape(samples, len(times), n, d)
    for x0, states in zip(np.asarray(starts, float), flowed, strict=True):
        ref = solve(lambda x: attention_field(x, beta, eye, eye, eye), x0, np.array([0, *times]))
        np.testing.assert_allclose(
            states, ref[1:], rtol=0, atol=1e-5 if dtype == jnp.float32 else 1e-6
        )
    with pytest.raises(TypeError, match="key"):
        af.stability.fixed_point_guesses(field, n, d)


def test_circle_and_euclidean_fields_classify_with_given_symmetries():
    n = 4
    theta = jnp.array([0.0, 0.0, math.pi, math.pi])  # two antipodal pairs, at beta = 0
    circle = af.Circle(0.0)
    result = classify_fixed_point(circle, theta, symmetries=jnp.ones((1, n)))
    expected = np.sort(np.linalg.eigvalsh(_kuramoto_jacobian(np.asarray(theta))))[::-1]
    assert result.symmetry_dim == 1
    np.testing.assert_allclose(
        result.eigenvalues.real, np.delete(expected, np.argmin(np.abs(expected))), atol=1e-12
    )
    a = jnp.array([[1.0, 0.0], [0.0, -2.0]])
    saddle = classify_fixed_point(lambda t, y, args: a @ y, jnp.zeros(2))
    assert (saddle.type, saddle.unstable_dim, saddle.stable_dim) == ("saddle", 1, 1)
    np.testing.assert_allclose(saddle.eigenvalues.real, [1.0, -2.0])
    assert abs(saddle.eigenvectors[0] @ np.array([1.0, 0.0])) == pytest.approx(1.0)


def test_fixed_point_bad_input_is_refused(getkey):
    field = af.SA(1.0)
    with pytest.raises(ValueError, match="must be an equilibrium"):
        classify_fixed_point(field, af.sphere.uniform(getkey(), 4, 3))
    with pytest.raises(ValueError, match="unit sphere"):
        classify_fixed_point(field, 2 * af.stability.cluster(3, 3))
    with pytest.raises(ValueError, match=r"guesses must have shape \(G, n, d\)"):
        find_fixed_points(field, af.stability.cluster(3, 3))
    with pytest.raises(ValueError, match="solver must be one of newton"):
        find_fixed_points(field, af.stability.cluster(3, 3)[None], solver="bisection")
    with pytest.raises(ValueError, match="modulo must be one of"):
        find_fixed_points(field, af.stability.cluster(3, 3)[None], modulo="reflections")
    with pytest.raises(ValueError, match="needs a sphere field"):
        find_fixed_points(lorenz, jnp.ones((2, 3)), modulo="rotations")
    with pytest.raises(ValueError, match="nonzero rows"):
        find_fixed_points(field, jnp.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="n <= d"):
        af.stability.simplex(5, 3)
    with pytest.raises(ValueError, match="symmetries must be"):
        classify_fixed_point(field, af.stability.cluster(3, 3), symmetries=jnp.ones((2, 3)))


def test_ftle_diagram_equals_single_runs_and_resumes(tmp_path):
    key = jax.random.key(3)
    kwargs = dict(n=6, d=3, betas=[0.5, 6.0], t1=6.0, every=0.5, samples=3, progress=False)
    diagram = af.studies.ftle_diagram(key=key, store=tmp_path / "store", memory=2**20, **kwargs)
    assert diagram.ftle.shape == diagram.local.shape == (2, 3, 12)
    for b, beta in enumerate([0.5, 6.0]):
        for s in range(3):
            x0, *_ = af.studies.phase_diagram_sample(key, s, n=6, d=3)
            single = lyapunov_spectrum(
                af.SA(beta),
                x0,
                6.0,
                k=1,
                every=0.5,
                solver=af.Layers(0.1),
                key=jax.random.PRNGKey(1980),
            )
            np.testing.assert_allclose(
                diagram.ftle[b, s], single.history[:, 0], rtol=1e-10, atol=1e-12
            )
    # the local exponents add up to the running one
    np.testing.assert_allclose(
        np.cumsum(diagram.local * 0.5, axis=-1) / diagram.ts, diagram.ftle, atol=1e-12
    )
    again = af.studies.ftle_diagram(key=key, store=tmp_path / "store", **kwargs)
    np.testing.assert_array_equal(again.ftle, diagram.ftle)
    with pytest.raises(ValueError, match="whole number of intervals"):
        af.studies.ftle_diagram(key=key, **{**kwargs, "every": 0.7})


def test_sphere_spectrum_sum_is_the_mean_tangential_divergence(getkey):
    # Liouville on the product of spheres: the full tangent-bundle spectrum sums to the time
    # average of div_M f = tr(P J), P = blockdiag(I - x_i x_i^T), computed here with NumPy:
    # scipy's trajectory of the reference field and a finite-difference Jacobian
    n, d, beta, t1 = 4, 3, 1.0, 10.0
    q, k, v = (np.asarray(jax.random.normal(getkey(), (d, d))) / math.sqrt(d) for _ in range(3))
    x0 = af.sphere.uniform(getkey(), n, d)
    spectrum = lyapunov_spectrum(
        af.SA(beta, q, k, v),
        x0,
        t1,
        rtol=1e-10,
        atol=1e-12,
        every=0.5,
        key=jax.random.PRNGKey(1980),
    )

    def velocity(x):
        return attention_field(x, beta, q, k, v)

    ts = np.linspace(0.0, t1, 401)
    xs = solve(velocity, np.asarray(x0), ts)
    divergence = []
    for x in xs:
        jac = np.zeros((n * d, n * d))
        for c in range(n * d):
            e = np.zeros(n * d)
            e[c] = 1e-6
            jac[:, c] = (
                velocity(x + e.reshape(n, d)) - velocity(x - e.reshape(n, d))
            ).ravel() / 2e-6
        projector = np.kron(np.eye(n), np.eye(d))
        for i in range(n):
            block = slice(i * d, (i + 1) * d)
            projector[block, block] -= np.outer(x[i], x[i])
        divergence.append(np.trace(projector @ jac))
    mean = np.trapezoid(divergence, ts) / t1
    np.testing.assert_allclose(spectrum.exponents.sum(), mean, rtol=1e-6, atol=1e-8)


def test_ftle_maps_metastability_on_the_circle():
    # at beta = 9 tokens on the circle sit in several clusters (saddles with weak unstable
    # directions) for long times: the exponent over t in [20, 30] is positive for most
    # realizations; at beta = 1 they have reached the single cluster, whose top exponent is that
    # of its rotation, 0
    diagram = af.studies.ftle_diagram(
        key=jax.random.key(0), n=16, d=2, betas=[1.0, 9.0], t1=30.0, samples=8, progress=False
    )
    growth = diagram.ftle * diagram.ts
    late = (growth[..., -1] - growth[..., 19]) / 10  # over [20, 30]
    np.testing.assert_allclose(late[0], 0, atol=1e-6)
    assert np.median(late[1]) > 1e-4


def test_sinkhorn_has_only_a_reverse_rule_and_still_linearizes(getkey):
    # ott-jax differentiates Sinkhorn implicitly (custom_vjp, no forward mode): the Jacobian
    # falls back to jacrev; at the cluster the plan is uniform, so the spectrum is SA's, -1
    field = af.PostLN(af.Sinkhorn(1.0))
    x = af.sphere.uniform(getkey(), 3, 3)
    velocity = jax.jit(lambda y: field(0.0, y))
    eps, fd = 1e-6, np.zeros((9, 9))
    for c in range(9):
        e = np.zeros(9)
        e[c] = eps
        fd[:, c] = np.asarray(velocity(x + e.reshape(3, 3)) - velocity(x - e.reshape(3, 3))).ravel()
    np.testing.assert_allclose(jacobian(field, x), fd / (2 * eps), atol=1e-6)
    result = classify_fixed_point(field, af.stability.cluster(3, 3))
    assert result.type == "sink" and result.symmetry_dim == 2
    np.testing.assert_allclose(result.eigenvalues, -1.0, atol=1e-8)
    spectrum = lyapunov_spectrum(field, x, 2.0, k=2, key=jax.random.PRNGKey(1980))
    assert np.all(np.isfinite(spectrum.exponents))


@pytest.mark.parametrize("solver", ["tsit5", "layers"])
def test_exponents_are_differentiable_in_beta(getkey, solver):
    # reverse mode through the QR intervals (diffrax's checkpointed adjoint, or the layer scan),
    # against central differences: a search over beta with optax can use the gradient
    x0 = af.sphere.uniform(getkey(), 5, 3)

    def total(beta):
        spectrum = lyapunov_spectrum(
            af.SA(beta),
            x0,
            3.0,
            k=2,
            rtol=1e-10,
            atol=1e-12,
            solver=af.Layers(0.1) if solver == "layers" else solver,
            key=jax.random.PRNGKey(1980),
        )
        return spectrum.exponents.sum()

    eps = 1e-5
    np.testing.assert_allclose(
        jax.grad(total)(2.0), (total(2.0 + eps) - total(2.0 - eps)) / (2 * eps), rtol=1e-6
    )


@pytest.mark.parametrize("function", [jacobian, tangent_jacobian])
@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (lambda x: x.at[0, 0].set(jnp.nan), "x: x0 must hold only finite numbers"),
        (lambda x: 2 * x, "x: x0 must lie on the unit sphere"),
    ],
)
def test_jacobians_refuse_states_that_make_them_meaningless(dtype, function, bad, match):
    x = bad(af.stability.cluster(3, 3, dtype))
    with pytest.raises(ValueError, match=match):
        function(af.SA(1.0), x)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: af.stability.simplex_rate(np.nan, 4), "beta must be finite and >= 0; got nan"),
        (lambda: af.stability.simplex_rate(-1.0, 4), "beta must be finite and >= 0; got -1"),
        (lambda: af.stability.cluster(0, 3), "n must be an integer >= 1; got 0"),
        (lambda: af.stability.cluster(3, 0), "d must be an integer >= 1; got 0"),
        (
            lambda: find_fixed_points(af.SA(1.0), af.stability.cluster(3, 3)[None], tol=np.nan),
            "tol must be a positive number",
        ),
        (
            lambda: find_fixed_points(
                af.SA(1.0), af.stability.cluster(3, 3)[None], residual_tol=-1.0
            ),
            "residual_tol must be a positive number",
        ),
        (
            lambda: classify_fixed_point(af.SA(1.0), af.stability.cluster(3, 3), residual_tol=0.0),
            "residual_tol must be a positive number",
        ),
    ],
)
def test_stability_options_that_make_the_answer_meaningless(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fixed_point_type_and_the_deprecated_kind():
    result = classify_fixed_point(af.SA(1.0), af.stability.cluster(3, 3))
    assert result.type == "sink"
    with pytest.warns(DeprecationWarning, match=r"FixedPointType\.type"):
        assert result.kind == "sink"
    assert jax.tree.leaves(result)[0].shape == result.eigenvalues.shape  # a pytree


def test_a_missing_key_is_deprecated_not_silent():
    x0 = af.sphere.uniform(jax.random.key(0), 3, 3)
    with pytest.warns(DeprecationWarning, match=r"lyapunov_spectrum without key="):
        old = lyapunov_spectrum(af.SA(1.0), x0, 1.0, k=1)
    new = lyapunov_spectrum(af.SA(1.0), x0, 1.0, k=1, key=jax.random.PRNGKey(1980))
    np.testing.assert_array_equal(old.exponents, new.exponents)
