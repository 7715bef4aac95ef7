"""Points on the unit sphere `S^{d-1}`, stored as the last axis of an array."""

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._checks import is_traced, positive_int
from .._types import Angles, Points


def safe_norm(v: Float[Array, "... d"]) -> Float[Array, "..."]:
    """Euclidean norm over the last axis, with gradient 0 (not NaN) at the origin."""
    sq = jnp.sum(v * v, axis=-1)
    nonzero = sq > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1)), 0)


def uniform(key: PRNGKeyArray, n: int, d: int, dtype=None) -> Points:
    """`n` independent points drawn uniformly on `S^{d-1}`, as an `(n, d)` array.

    Normalized standard Gaussian vectors (rotation invariance makes them uniform).
    `dtype` defaults to JAX's default float (float64 when `jax_enable_x64` is on).
    """
    n, d = positive_int(n, "n"), positive_int(d, "d")
    return normalize(jax.random.normal(key, (n, d), dtype=dtype or float))


def around_axes(
    key: PRNGKeyArray, n: int, d: int, groups: int, spread: float = 0.3, dtype=None
) -> tuple[Points, Int[Array, " n"]]:
    """`n` points of `S^{d-1}` in `groups` groups, each around one end of an axis of a random
    orthonormal basis.

    The centers are `+e_1, -e_1, +e_2, -e_2, ...` (the first `groups` of them), `e_k` the rows
    of the orthogonal factor of the QR decomposition of a `d x d` standard Gaussian matrix;
    point `i` belongs to group `i mod groups` and is its center plus a Gaussian vector of
    standard deviation `spread` in each coordinate, normalized. With `spread = 0` the points
    are the centers: cosine 1 within a group, -1 between the two ends of an axis, 0 otherwise.
    The tokens of `attnflow search value-groups` (`attnflow.optimize.value_for_groups`).

    Arguments:
        key: a JAX PRNG key (split in two: the basis, the noise).
        n, d: the number of points and the dimension, `n, d >= 1`.
        groups: the number of groups, `1 <= groups <= min(2 d, n)`.
        spread: the standard deviation of the noise, `>= 0`.
        dtype: a floating dtype (default: JAX's default float).

    Returns:
        `(x, labels)`: the points, shape `(n, d)`, and the group of each, `arange(n) % groups`.
    """
    n, d = positive_int(n, "n"), positive_int(d, "d")
    groups = positive_int(groups, "groups")
    if groups > min(2 * d, n):
        raise ValueError(
            f"groups must be at most 2 d = {2 * d} (two ends of each axis) and n = {n}; "
            f"got {groups}"
        )
    if not 0 <= spread < math.inf:
        raise ValueError(f"spread must be finite and >= 0; got {spread}")
    dtype = dtype or float
    basis, noise = jax.random.split(key)
    q = jnp.linalg.qr(jax.random.normal(basis, (d, d), dtype))[0].T
    centers = jnp.stack([sign * row for row in q for sign in (1, -1)])[:groups]
    labels = jnp.arange(n) % groups
    return normalize(centers[labels] + spread * jax.random.normal(noise, (n, d), dtype)), labels


def normalize(x: Float[Array, "... d"]) -> Float[Array, "... d"]:
    """Each point scaled to unit norm (the retraction onto the sphere)."""
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def project(x: Float[Array, "... d"], v: Float[Array, "... d"]) -> Float[Array, "... d"]:
    """Tangent projection `P_x v = v - <x, v> x / |x|^2`: `v` with its component along `x` removed.

    On the sphere this is `v - <x, v> x` (docs/science.md section 1). Dividing by `|x|^2` makes
    `<x, P_x v> = 0` hold off the sphere too, so `|x|` is an exact first integral of any
    projected flow `dx/dt = P_x v(x)`: the sphere stays neutrally stable under numerical drift,
    whatever `v` (with `v - <x, v> x`, it repels when `<x, v> < 0`, e.g. for `V = -I`).
    """
    return v - (jnp.sum(x * v, axis=-1, keepdims=True) / jnp.sum(x * x, axis=-1, keepdims=True)) * x


def geodesic_distance(x: Float[Array, "... d"], y: Float[Array, "... d"]) -> Float[Array, "..."]:
    """Great-circle distance `arccos <x, y>` between unit vectors, in `[0, pi]`.

    Computed as `2 atan2(|x - y|, |x + y|)`, which keeps full relative accuracy near 0 and
    near pi (where `arccos` loses half the digits) and has finite gradients everywhere.
    """
    return 2 * jnp.arctan2(safe_norm(x - y), safe_norm(x + y))


def random_rotation(key: PRNGKeyArray, d: int, dtype=None) -> Float[Array, "d d"]:
    """A Haar-distributed rotation of `R^d` (orthogonal, determinant +1).

    QR of a Gaussian matrix with the signs of `diag(R)` moved into `Q` (Mezzadri 2007), then
    one column flipped if the determinant is -1.
    """
    d = positive_int(d, "d")
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d), dtype=dtype or float))
    q = q * jnp.where(jnp.diagonal(r) < 0, -1, 1)
    return q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))


def on_sphere(x: Float[Array, "... d"], atol: float | None = None) -> Bool[Array, "..."]:
    """Whether each point has unit norm within `atol` (default: `sqrt(eps)` of its dtype; else
    finite and `>= 0`)."""
    x = jnp.asarray(x)
    if atol is None:
        atol = float(jnp.finfo(x.dtype).eps) ** 0.5
    elif not is_traced(atol) and not 0 <= float(atol) < math.inf:
        raise ValueError(f"atol must be finite and >= 0; got {atol}")
    return jnp.abs(jnp.linalg.norm(x, axis=-1) - 1) <= atol


def from_angles(theta: Angles) -> Float[Array, "n 2"]:
    """Points `(cos theta, sin theta)` on the circle `S^1`."""
    return jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)


def to_angles(x: Float[Array, "n 2"]) -> Angles:
    """Angles in `(-pi, pi]` of points of the plane (shape `(..., 2)`)."""
    if jnp.shape(x)[-1:] != (2,):
        raise ValueError(f"x must have shape (..., 2) (points of the plane); got {jnp.shape(x)}")
    return jnp.arctan2(x[..., 1], x[..., 0])
