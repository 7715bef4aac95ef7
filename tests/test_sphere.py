import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from attnflow import sphere


def test_uniform_is_on_sphere_and_uniform(getkey):
    x = sphere.uniform(getkey(), 20_000, 3)
    assert x.shape == (20_000, 3) and x.dtype == jnp.float64
    assert jnp.all(sphere.on_sphere(x, atol=1e-12))
    # Archimedes: on S^2 each coordinate is uniform on [-1, 1].
    for k in range(3):
        assert stats.kstest(np.asarray(x[:, k]), "uniform", args=(-1, 2)).pvalue > 1e-3


def test_uniform_is_deterministic_and_rejects_bad_sizes(getkey):
    key = getkey()
    assert jnp.array_equal(sphere.uniform(key, 4, 3), sphere.uniform(key, 4, 3))
    with pytest.raises(ValueError, match="n must be an integer >= 1; got 0"):
        sphere.uniform(key, 0, 3)
    with pytest.raises(ValueError, match="d must be an integer >= 1; got 2.5"):
        sphere.uniform(key, 3, 2.5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_around_axes_groups_at_the_ends_of_orthonormal_axes(getkey, dtype):
    """Without noise, the points are the centers: cosine 1 within a group, -1 between the two
    ends of an axis (groups 2k, 2k + 1), 0 otherwise; with noise, each point is nearest its
    own center."""
    key, n, d, groups = getkey(), 12, 3, 5
    x, labels = sphere.around_axes(key, n, d, groups, spread=0.0, dtype=dtype)
    assert x.shape == (n, d) and x.dtype == dtype
    np.testing.assert_array_equal(labels, np.arange(n) % groups)
    g = np.asarray(labels)
    same_axis = g[:, None] // 2 == g[None, :] // 2
    expected = np.where(g[:, None] == g[None, :], 1.0, np.where(same_axis, -1.0, 0.0))
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(x @ x.T, expected, rtol=0, atol=20 * eps)
    noisy, same = sphere.around_axes(key, n, d, groups, spread=0.1, dtype=dtype)
    np.testing.assert_array_equal(same, labels)
    assert jnp.all(sphere.on_sphere(noisy))
    nearest = np.argmax(np.asarray(noisy @ x.T), axis=1)
    np.testing.assert_array_equal(g[nearest], g)
    with pytest.raises(ValueError, match=r"groups must be at most 2 d = 6 .* and n = 12; got 7"):
        sphere.around_axes(key, n, d, 7)
    with pytest.raises(ValueError, match="spread must be finite and >= 0; got -0.1"):
        sphere.around_axes(key, n, d, 2, spread=-0.1)


def test_project_is_tangent_and_idempotent(getkey):
    x = sphere.uniform(getkey(), 10, 5)
    v = jax.random.normal(getkey(), (10, 5))
    p = sphere.project(x, v)
    np.testing.assert_allclose(jnp.sum(p * x, axis=-1), 0, atol=1e-14)
    np.testing.assert_allclose(sphere.project(x, p), p, atol=1e-14)


def test_geodesic_distance_accurate_near_zero_and_pi():
    e1, e2 = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    for angle in [1e-12, 1e-6, 0.3, 1.0, np.pi / 2, 2.5, np.pi - 1e-9]:
        y = jnp.cos(angle) * e1 + jnp.sin(angle) * e2
        np.testing.assert_allclose(sphere.geodesic_distance(e1, y), angle, rtol=1e-9)
    np.testing.assert_allclose(sphere.geodesic_distance(e1, -e1), np.pi, rtol=1e-15)
    grad = jax.grad(lambda y: sphere.geodesic_distance(e1, y))(e1)
    assert jnp.all(jnp.isfinite(grad))


def test_random_rotation_is_haar_rotation(getkey):
    r = sphere.random_rotation(getkey(), 5)
    np.testing.assert_allclose(r.T @ r, np.eye(5), atol=1e-13)
    np.testing.assert_allclose(jnp.linalg.det(r), 1.0, rtol=1e-12)
    keys = jax.random.split(getkey(), 4000)
    first_columns = jax.vmap(lambda k: sphere.random_rotation(k, 3)[:, 0])(keys)
    assert stats.kstest(np.asarray(first_columns[:, 2]), "uniform", args=(-1, 2)).pvalue > 1e-3
    assert jnp.all(jax.vmap(lambda k: jnp.linalg.det(sphere.random_rotation(k, 4)))(keys) > 0)


def test_on_sphere_tolerance():
    x = jnp.array([[1.0, 0.0], [0.0, 1.0 + 1e-6]])
    assert sphere.on_sphere(x).tolist() == [True, False]
    assert sphere.on_sphere(x, atol=1e-5).tolist() == [True, True]
    assert sphere.on_sphere(x.astype(jnp.float32)).tolist() == [True, True]
    for atol in (-1.0, np.nan, np.inf):  # all False, or all True, whatever x
        with pytest.raises(ValueError, match="atol must be finite and >= 0"):
            sphere.on_sphere(x, atol)


def test_angles_round_trip():
    theta = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(sphere.to_angles(sphere.from_angles(theta)), theta, atol=1e-15)


def test_to_angles_needs_points_of_the_plane(getkey):
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\) .*; got \(4, 3\)"):
        sphere.to_angles(sphere.uniform(getkey(), 4, 3))  # read the first two coordinates
