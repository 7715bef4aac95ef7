"""Equilibria of a vector field (`find_fixed_points`, optimistix) and their linear stability
(`classify_fixed_point`, eigenvalues of the tangent Jacobian modulo symmetry modes)."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from .._checks import as_float_array, positive_int, positive_number
from .._deprecated import deprecated
from ..fields import AbstractSphereField
from ..integrate import simulate
from ..sphere import normalize, uniform
from ._tangent import check_state, jacobian, tangent_jacobian

SOLVERS = ("newton", "levenberg_marquardt")
MODULO = (None, "rotations", "rotations+permutations")


class FixedPoints(eqx.Module):
    """Distinct equilibria found from a batch of guesses.

    `points`: shape `(m, *state)`, the equilibria (on the sphere for sphere fields).
    `residuals`: shape `(m,)`, `max |field(t, x)|` at each.
    `counts`: shape `(m,)`, how many guesses converged to each (up to `tol`, `modulo`).
    `failed`: how many guesses did not converge (residual above `residual_tol`).
    """

    points: np.ndarray
    residuals: np.ndarray
    counts: np.ndarray
    failed: int = eqx.field(static=True)

    def __len__(self) -> int:
        return len(self.points)


class FixedPointType(eqx.Module):
    """The linear stability of one equilibrium, modulo its symmetry modes.

    `unstable_dim`, `stable_dim`, `center_dim`: how many eigenvalues have real part `> tol S`,
    `< -tol S`, within `tol S` of 0 (`unstable_dim` is the dimension of the unstable manifold);
    `S = max(1, |J|)`, `|J|` the spectral norm of the (tangent) Jacobian (`classify_fixed_point`).
    `type`: `"sink"` (all stable), `"source"` (all unstable), `"saddle"` (at least one of each;
    centers allowed) or `"degenerate"` (a center and no saddle: the linearization does not decide).
    `symmetry_dim`: how many zero modes were excluded because they are symmetry directions
    (rotations of the whole configuration, for a rotation-invariant field).
    `eigenvalues`: shape `(m,)`, complex, by decreasing real part, symmetry modes excluded.
    `eigenvectors`: shape `(m, *state)`, complex, tangent to the sphere for sphere fields, each
    of unit norm (the eigenvector of `eigenvalues[j]` is `eigenvectors[j]`).
    `residual`: `max |field(t, x)|` at the point.
    """

    type: str = eqx.field(static=True)
    unstable_dim: int = eqx.field(static=True)
    stable_dim: int = eqx.field(static=True)
    center_dim: int = eqx.field(static=True)
    symmetry_dim: int = eqx.field(static=True)
    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    residual: float

    @property
    def kind(self) -> str:
        """The deprecated name of `type`."""
        deprecated("FixedPointType.kind", "FixedPointType.type")
        return self.type


def _log_max(dtype) -> float:
    """`log` of the largest finite number of `dtype`: where `e^beta` overflows."""
    return float(np.log(jnp.finfo(dtype).max))


@eqx.filter_jit
def _solve(field, guesses, t, args, solver, max_steps, sphere):
    def residual(y, _):
        if not sphere:
            return field(t, y, args)
        x = normalize(y)  # the residual of find_fixed_points' docstring
        radius = jnp.linalg.norm(y, axis=-1, keepdims=True)
        return field(t, x, args) + (radius - 1) * x

    def one(y0):
        root = isinstance(solver, optx.AbstractRootFinder)
        search = optx.root_find if root else optx.least_squares
        solution = search(residual, solver, y0, max_steps=max_steps, throw=False)
        x = normalize(solution.value) if sphere else solution.value
        return x, jnp.max(jnp.abs(field(t, x, args)))

    return jax.vmap(one)(guesses)


def _signature(x: np.ndarray, modulo) -> np.ndarray:
    """What two equilibria are compared by: the state, its Gram matrix (invariant under
    rotations), or the sorted pairwise inner products with the sorted Gram spectrum
    (invariant under rotations and permutations of the tokens)."""
    if modulo is None:
        return x.reshape(-1)
    gram = x @ x.T
    if modulo == "rotations":
        return gram.reshape(-1)
    return np.concatenate([np.sort(gram[np.triu_indices(len(x), 1)]), np.linalg.eigvalsh(gram)])


def find_fixed_points(
    field,
    guesses,
    *,
    t: float = 0.0,
    args=None,
    solver: str = "newton",
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = 256,
    residual_tol: float | None = None,
    tol: float = 1e-6,
    modulo: str | None = None,
) -> FixedPoints:
    """Equilibria `field(t, x) = 0` from a batch of initial guesses, deduplicated.

    Each guess is refined by optimistix, all guesses at once (`jax.vmap`): `solver="newton"`
    (`optx.Newton` with a least-squares linear solve, since equilibria of symmetric fields come
    in families where the Jacobian is singular) or `"levenberg_marquardt"` (`optx.least_squares`),
    or any optimistix root finder or least-squares solver instance. For sphere fields the search
    runs on the product of spheres: it solves `field(normalize(y)) + (|y_i| - 1) y_i / |y_i| = 0`,
    whose two terms are orthogonal, so its zeros are the equilibria on the sphere, and the radial
    directions are regular.

    Arguments:
        field: a vector field `field(t, x, args)`.
        guesses: shape `(G, *state)`; for sphere fields, `(G, n, d)` (rows need not be unit).
        t, args: where the field is evaluated.
        solver: as above.
        rtol, atol: the solver's tolerances (default: about `eps^(3/4)` of the dtype).
        max_steps: the solver's step cap per guess.
        residual_tol: a guess has converged when `max |field(t, x)| <= residual_tol` (default
            `sqrt(eps)`); the others are counted in `.failed`.
        tol: two equilibria are the same when their signatures differ by at most `tol` (max norm).
        modulo: `None` compares the states; `"rotations"` their Gram matrices `x x^T` (for
            rotation-invariant fields, `Q = K = V = I`, whose equilibria come in rotation
            families); `"rotations+permutations"` also identifies relabelings of the tokens, by
            comparing the sorted pairwise inner products and the Gram spectrum (invariants: two
            different configurations sharing both would be merged).

    Returns:
        `FixedPoints` with `.points`, `.residuals`, `.counts` (most visited first) and `.failed`.
    """
    if not callable(field):
        raise ValueError(f"field must be a callable field(t, x, args); got {field!r:.80}")
    guesses = as_float_array(guesses, "guesses")
    sphere = isinstance(field, AbstractSphereField)
    if sphere and guesses.ndim != 3:
        raise ValueError(
            f"guesses must have shape (G, n, d) for a sphere field; got shape {guesses.shape}"
        )
    if guesses.ndim < 2 or guesses.shape[0] < 1:
        raise ValueError(
            f"guesses must have shape (G, *state) with G >= 1 guesses; got shape {guesses.shape}"
        )
    if not bool(jnp.all(jnp.isfinite(guesses))):
        raise ValueError("guesses must hold only finite numbers")
    if sphere:
        if bool(jnp.any(jnp.linalg.norm(guesses, axis=-1) == 0)):
            raise ValueError("guesses must have nonzero rows (tokens are normalized onto S^{d-1})")
        guesses = normalize(guesses)
    check_state(field, guesses[0], "guesses[0]", t, args)
    if modulo not in MODULO:
        raise ValueError(f"modulo must be one of {MODULO}; got {modulo!r}")
    if modulo is not None and not sphere:
        raise ValueError(f"modulo={modulo!r} needs a sphere field (tokens of shape (n, d))")
    eps = float(jnp.finfo(guesses.dtype).eps)
    rtol = 10 * eps**0.75 if rtol is None else positive_number(rtol, "rtol")
    atol = 10 * eps**0.75 if atol is None else positive_number(atol, "atol")
    residual_tol = (
        eps**0.5 if residual_tol is None else positive_number(residual_tol, "residual_tol")
    )
    tol = positive_number(tol, "tol", "the distance of two equilibria counted as one")
    expected = f"solver must be one of {', '.join(SOLVERS)}, or an optimistix solver"
    if isinstance(solver, str):
        if solver not in SOLVERS:
            raise ValueError(f"{expected}; got {solver!r}")
        if solver == "newton":
            linear_solver = lx.AutoLinearSolver(well_posed=False)
            solver = optx.Newton(rtol=rtol, atol=atol, linear_solver=linear_solver)
        else:
            solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol)
    elif not isinstance(solver, optx.AbstractRootFinder | optx.AbstractLeastSquaresSolver):
        raise ValueError(expected)
    max_steps = positive_int(max_steps, "max_steps")
    xs, residuals = _solve(field, guesses, t, args, solver, max_steps, sphere)
    xs, residuals = np.asarray(xs), np.asarray(residuals)
    good = np.isfinite(residuals) & (residuals <= residual_tol)
    kept, signatures, counts = [], [], []
    for i in np.flatnonzero(good)[np.argsort(residuals[good], kind="stable")]:
        signature = _signature(xs[i], modulo)
        for j, other in enumerate(signatures):
            if np.max(np.abs(signature - other)) <= tol:
                counts[j] += 1
                break
        else:
            kept.append(i)
            signatures.append(signature)
            counts.append(1)
    order = np.argsort(-np.asarray(counts, dtype=int), kind="stable")
    kept = np.asarray(kept, dtype=int)[order]
    return FixedPoints(
        points=xs[kept].reshape(len(kept), *xs.shape[1:]),
        residuals=residuals[kept],
        counts=np.asarray(counts, dtype=int)[order],
        failed=int((~good).sum()),
    )


def fixed_point_guesses(
    field,
    n: int,
    d: int,
    *,
    key,
    samples: int = 64,
    times=(1.0, 3.0, 10.0),
    dtype=None,
) -> jax.Array:
    """Initial guesses for `find_fixed_points`: random configurations and where the flow takes
    them.

    `samples` configurations of `n` tokens drawn uniformly on `S^{d-1}` (`sphere.uniform`, one
    draw of `samples * n` tokens), then the state of each under the flow of `field` (`simulate`
    with its default solver, from the configuration at `t = 0`) at each of `times`. The flow
    visits the saddles and ends at the sinks, whose basins of attraction under Newton's method
    are small, so the flowed states find equilibria that random configurations alone miss.
    Each guess is given once, so `FixedPoints.counts` counts distinct guesses.

    Arguments:
        field: a sphere field `field(t, x, args)` on `(n, d)` tokens.
        n, d: the number of tokens and their dimension.
        key: a JAX PRNG key (keyword-only, required).
        samples: the number of random configurations, `>= 1`.
        times: the flow's save times, `> 0` and strictly increasing.
        dtype: a floating dtype (default: JAX's default float).

    Returns:
        The guesses, shape `(samples * (1 + len(times)), n, d)`: the configurations, then the
        states at `times` of the first configuration, of the second, and so on.
    """
    samples = positive_int(samples, "samples")
    n, d = positive_int(n, "n"), positive_int(d, "d")
    starts = uniform(key, samples * n, d, dtype).reshape(samples, n, d)
    ts = jnp.concatenate([jnp.zeros(1), jnp.asarray(times, float)]).astype(starts.dtype)
    flowed = jax.vmap(lambda x0: simulate(field, x0, ts).xs[1:])(starts)
    return jnp.concatenate([starts, flowed.reshape(-1, n, d)])


def rotation_modes(x: jax.Array) -> jax.Array:
    """The infinitesimal rotations of the configuration `x` (shape `(n, d)`): `E x_i` for the
    `d (d - 1) / 2` generators `E = e_a e_b^T - e_b e_a^T` of `so(d)`, shape
    `(d (d - 1) / 2, n, d)`. For a rotation-invariant field they span the tangent space of the
    family of equilibria obtained by rotating an equilibrium."""
    modes = [
        jnp.zeros_like(x).at[:, a].set(x[:, b]).at[:, b].set(-x[:, a])
        for a, b in itertools.combinations(range(x.shape[1]), 2)
    ]
    if not modes:
        return jnp.zeros((0, *x.shape), x.dtype)
    return jnp.stack(modes)


def _orthonormal_columns(a: np.ndarray, rtol: float) -> np.ndarray:
    """An orthonormal basis of the column span of `a`, dropping the directions whose singular
    value is at most `rtol` times the largest (a relative rank, whatever the scale of `a`)."""
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, s > rtol * s.max(initial=0.0)]


def classify_fixed_point(
    field,
    x,
    *,
    t: float = 0.0,
    args=None,
    symmetries="rotations",
    tol: float | None = None,
    residual_tol: float | None = None,
) -> FixedPointType:
    """The linear stability of the equilibrium `x` of `field`, modulo symmetry modes.

    The Jacobian is taken by `jax.linearize` (see `value_and_jvps`) and restricted to the
    tangent space of `(S^{d-1})^n` for sphere fields (`tangent_jacobian`: the normal
    directions, neutral because the flow conserves each `|x_i|`, are excluded). Symmetry modes
    are then removed: among the candidate directions (`symmetries`: for sphere fields, by
    default the infinitesimal rotations `rotation_modes(x)`), those the Jacobian maps to zero
    span a subspace `S` of its kernel, which is invariant, so the eigenvalues of the map induced
    on the quotient, `C^T J C` with `C` an orthonormal basis of `S^perp`, are the remaining
    eigenvalues. A single cluster of `Q = K = V = I` attention is thus a sink modulo its `d - 1`
    rotations (eigenvalue `-1` for SA, `-e^beta` for USA), and the rotations that fix the
    configuration are not counted.

    Every threshold is relative to the scale `S = max(1, |J|)` (`|J|` the spectral norm of the
    tangent Jacobian; 1, that of unit tokens with order-one attention outputs, is a floor for
    fields whose Jacobian is small only because large terms cancel, such as attention at the
    regular simplex), the scale of the rounding errors of `J`: a matrix known to relative
    accuracy `eps` has eigenvalues known to about `eps S` (Bauer-Fike), so an eigenvalue with
    `|Re| <= tol S` has no reliable sign and is a center, and a unit candidate direction `v`
    with `|J v| <= tol S` is a symmetry mode. Thresholds that do not grow with `|J|` fail both
    ways: at `beta = 100` USA's cluster has eigenvalues `-e^100` and symmetry modes computed as
    about `1e27` (rounding errors of size `eps e^100`), far from 0 in absolute terms yet
    clearly `-S` and `0` relative to `S`. Per-eigenvalue relative thresholds would give those
    rounding errors a sign.
    A field or Jacobian that is not representable in `x`'s dtype at `x` (non-finite entries,
    e.g. USA's `e^beta` for `beta` above about 709 in float64, 88 in float32) raises
    `ValueError` rather than returning an arbitrary classification.

    Arguments:
        field: a vector field `field(t, x, args)`.
        x: the equilibrium (tokens `(n, d)` on the sphere for sphere fields).
        t, args: where the field is evaluated.
        symmetries: `"rotations"`, `None` (exclude nothing), or an array of candidate directions
            of shape `(s, *x.shape)` (e.g. `jnp.ones((1, n))` for the phase shift of `Circle`).
        tol: relative, in `[0, 1)`, as above (candidates are first reduced to an orthonormal
            basis of their span, dropping directions below `tol` times the largest); default
            `sqrt(eps)` of `x`'s dtype (`1.5e-8` in float64, `3.5e-4` in float32).
        residual_tol: `ValueError` unless `max |field(t, x)| <= residual_tol S` (default
            `eps^(1/3)`, loose enough for equilibria found in float32; relative to `S` since a
            field of scale `S`, such as USA's `e^beta`, rounds to about `eps S` at an
            equilibrium).

    Returns a `FixedPointType`.
    """
    if not callable(field):
        raise ValueError(f"field must be a callable field(t, x, args); got {field!r:.80}")
    x = check_state(field, x, "x", t, args)
    sphere = isinstance(field, AbstractSphereField)
    eps = float(jnp.finfo(x.dtype).eps)
    tol = eps**0.5 if tol is None else float(tol)
    if not 0 <= tol < 1:
        raise ValueError(f"tol must lie in [0, 1) (it is relative to max(1, |J|)); got {tol}")
    residual_tol = (
        eps ** (1 / 3) if residual_tol is None else positive_number(residual_tol, "residual_tol")
    )
    residual = float(jnp.max(jnp.abs(field(t, x, args))))
    if not np.isfinite(residual):
        raise ValueError(
            f"field(t, x) is not representable in {x.dtype} at x (max |field| = {residual}): "
            f"no linear stability can be computed there (USA's e^beta, for example, overflows "
            f"for beta above about {_log_max(x.dtype):.0f} in {x.dtype})"
        )
    if sphere:
        matrix, basis = _tangent_jacobian(field, x, t, args)
    else:
        matrix = _jacobian(field, x, t, args)
        basis = jnp.eye(x.size, dtype=x.dtype)
    matrix, basis = np.asarray(matrix, dtype=float), np.asarray(basis, dtype=float)
    norm = float(np.linalg.norm(matrix, 2)) if np.all(np.isfinite(matrix)) else np.inf
    if not norm <= float(jnp.finfo(x.dtype).max):
        raise ValueError(
            f"the Jacobian of field at x is not representable in {x.dtype} (non-finite entries "
            f"or norm): its eigenvalues, and the stability of x, cannot be computed in this "
            f"dtype (USA's Jacobian at a cluster, -e^beta, overflows for beta above about "
            f"{_log_max(x.dtype):.0f} in {x.dtype})"
        )
    scale = max(1.0, norm)
    if not residual <= residual_tol * scale:
        raise ValueError(
            f"x must be an equilibrium (max |field| <= residual_tol max(1, |J|) = "
            f"{residual_tol * scale:.1e}); got max |field| = {residual:.3e}; refine it with "
            f"find_fixed_points"
        )
    if isinstance(symmetries, str) and symmetries == "rotations":
        candidates = rotation_modes(x) if sphere else jnp.zeros((0, *x.shape), x.dtype)
    elif symmetries is None:
        candidates = jnp.zeros((0, *x.shape), x.dtype)
    else:
        candidates = as_float_array(symmetries, "symmetries")
        if candidates.ndim != x.ndim + 1 or candidates.shape[1:] != x.shape:
            raise ValueError(
                f"symmetries must be 'rotations', None or an array of shape (s, *{x.shape}); "
                f"got shape {candidates.shape}"
            )
    span = _orthonormal_columns(
        basis.T @ np.asarray(candidates, dtype=float).reshape(len(candidates), x.size).T, tol
    )
    _, s, vt = np.linalg.svd(matrix @ span)
    modes = span @ vt[s <= tol * scale].T
    complement = np.linalg.svd(np.eye(len(matrix)) - modes @ modes.T)[0][
        :, : len(matrix) - modes.shape[1]
    ]
    values, vectors = np.linalg.eig(complement.T @ matrix @ complement)
    order = np.argsort(-values.real, kind="stable")
    values = values[order]
    vectors = (basis @ complement @ vectors[:, order]).T.reshape(len(values), *x.shape)
    unstable = int((values.real > tol * scale).sum())
    stable = int((values.real < -tol * scale).sum())
    center = len(values) - unstable - stable
    if unstable and stable:
        type_ = "saddle"
    elif center:
        type_ = "degenerate"
    elif unstable:
        type_ = "source"
    else:
        type_ = "sink"
    return FixedPointType(
        type=type_,
        unstable_dim=unstable,
        stable_dim=stable,
        center_dim=center,
        symmetry_dim=int(modes.shape[1]),
        eigenvalues=values,
        eigenvectors=vectors,
        residual=residual,
    )


_tangent_jacobian = eqx.filter_jit(tangent_jacobian)
_jacobian = eqx.filter_jit(jacobian)
