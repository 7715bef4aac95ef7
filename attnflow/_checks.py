"""Input validation shared by every public entry point: shapes and static options are checked
at trace time with a `ValueError`, values (finite, non-negative, on the sphere) by `check_value`,
at once if concrete and, if traced (under `jax.jit` or `jax.vmap`), when the compiled code runs."""

import math
import numbers
import operator
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x) -> bool:
    """Whether any leaf of `x` is a tracer (its value is unknown at trace time)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def as_float_array(x, name: str) -> jax.Array:
    """`x` as a floating-point JAX array (integers are promoted to the default float)."""
    try:
        if isinstance(x, str | bytes):  # numpy would parse a string as a dtype
            raise TypeError
        a = jnp.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be an array of real numbers; got {type(x).__name__}"
        ) from err
    if jnp.issubdtype(a.dtype, jnp.complexfloating) or not jnp.issubdtype(a.dtype, jnp.number):
        raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}")
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(float)
    return a


def check_value(x, bad, message: str, detail: Callable[[], str] | None = None):
    """Return `x`, having checked that the boolean `bad` is false.

    Concrete `bad`: raise `ValueError(message + detail())` now. Traced `bad`: attach
    `eqx.error_if`, which raises with `message` when the compiled code runs.
    """
    if is_traced(bad) or is_traced(x):
        return eqx.error_if(x, bad, message)
    if bool(np.asarray(bad)):
        raise ValueError(message + (detail() if detail is not None else ""))
    return x


def check_finite(x, name: str = "x0", xp=jnp):
    """`x`, checked to hold only finite numbers (`ValueError` naming `name`, with the count).
    `xp`: `jax.numpy`, or NumPy for concrete arrays (which compiles nothing)."""
    bad = ~xp.isfinite(x)
    return check_value(
        x,
        xp.any(bad),
        f"{name} must hold only finite numbers",
        lambda: f"; got {int(bad.sum())} non-finite entries",
    )


SOLVED_ATOL = 1e-3
"""How far from 1 the norms of solved states may be and still count as on the sphere: far above
the drift of an adaptive solve (about `rtol` per unit time), far below what an unnormalized
state is off by."""


def check_on_sphere(
    x, name: str, hint: str = "use attnflow.sphere.normalize", atol: float | None = None
):
    """`x`, checked finite with every row (last axis) of norm 1 within `atol`, at least (and by
    default) `sqrt(eps)` of its dtype (`ValueError` naming `name`, ending with `hint`, then the
    row farthest from the sphere, its norm and how far off it is). Statistics of solved states
    pass `atol=SOLVED_ATOL`."""
    x = check_finite(x, name)
    atol = max(float(jnp.finfo(x.dtype).eps) ** 0.5, atol or 0.0)
    norms = jnp.linalg.norm(x, axis=-1)
    off = jnp.abs(norms - 1)

    def farthest() -> str:
        row = np.unravel_index(int(jnp.argmax(off)), off.shape)
        where = ", ".join(str(int(i)) for i in row)
        return (
            f"; the farthest row is {name}[{where}], of norm {float(norms[row]):.17g} "
            f"(off by {float(off[row]):.1e})"
        )

    return check_value(
        x,
        ~jnp.all(off <= atol),
        f"{name} must lie on the unit sphere (every row of norm 1 within {atol:.1e}); {hint}",
        farthest,
    )


def positive_number(value, name: str, what: str | None = None) -> float:
    """`value` as a float: a finite real number `> 0` (not a bool), else `ValueError`; for
    static options (step sizes, tolerances, layer durations), `what` saying what it is."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and value > 0 and math.isfinite(value)):
        about = f" ({what})" if what else ""
        note = " (not finite)" if real and not math.isfinite(value) else ""
        raise ValueError(f"{name} must be a positive number{about}; got {value!r}{note}")
    return float(value)


def check_beta(beta, name: str = "beta", scalar: bool = True) -> jax.Array:
    """`beta` as a float array (0-d if `scalar`), every entry checked finite and non-negative."""
    beta = as_float_array(beta, name)
    if scalar and beta.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {beta.shape}")
    return check_value(
        beta,
        jnp.any(~jnp.isfinite(beta) | (beta < 0)),
        f"{name} must be finite and >= 0",
        lambda: f"; got {np.asarray(beta)}",
    )


def check_matrix(a, name: str, shape: tuple[int | None, int | None]) -> jax.Array | None:
    """`a` as a finite float matrix whose shape matches `shape` (None: any size); None passes."""
    if a is None:
        return None
    a = as_float_array(a, name)
    check_shape(a, name, shape)
    return check_finite(a, name)


def check_shape(a, name: str, shape: tuple[int | None, ...]) -> None:
    """Raise unless `a` has `len(shape)` axes whose sizes match `shape` (None: any size)."""
    expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
    sizes = zip(shape, a.shape, strict=False)
    if a.ndim != len(shape) or any(s is not None and s != g for s, g in sizes):
        raise ValueError(f"{name} must have shape {expected}; got shape {a.shape}")


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return value


def positive_int(value, name: str, minimum: int = 1) -> int:
    """`value` as an int `>= minimum` (Python or NumPy integer, not a bool), else `ValueError`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError as err:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}") from err
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def check_ode_options(solver, dt0, rtol, atol, max_steps) -> tuple:
    """`(dt0, rtol, atol, max_steps)` checked for the diffrax `solver`: positive tolerances, a
    positive `dt0` (required by a fixed-step solver), an integer `max_steps >= 1`."""
    rtol = positive_number(rtol, "rtol", "relative tolerance")
    atol = positive_number(atol, "atol", "absolute tolerance")
    if dt0 is not None:
        dt0 = positive_number(dt0, "dt0", "the step size")
    elif not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            f"dt0 must be given for the fixed-step solver {type(solver).__name__}; got None"
        )
    return dt0, rtol, atol, positive_int(max_steps, "max_steps")


def check_times(ts) -> jax.Array:
    """`ts` (a float array) checked to be a 1-D array of at least two finite, strictly
    increasing save times; concrete values now, traced ones when the compiled code runs."""
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least two save times; got shape {ts.shape}")
    return check_value(
        ts,
        ~jnp.all(jnp.isfinite(ts)) | jnp.any(jnp.diff(ts) <= 0),
        "ts must be finite and strictly increasing",
        lambda: f"; got {np.asarray(ts)}",
    )


def float_dtype(dtype=None) -> np.dtype:
    """`dtype` as a floating NumPy dtype; None gives JAX's default float (float64 with x64
    on, float32 otherwise)."""
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    return dtype


def check_delta(delta):
    """`delta`, the cluster radius (`<x_i, x_j> >= 1 - delta`), checked to be a scalar in
    `[0, 2]` (when the compiled code runs, if traced as sweeps pass it)."""
    delta = as_float_array(delta, "delta")
    if delta.ndim != 0:
        raise ValueError(f"delta must be a scalar; got shape {delta.shape}")
    return check_value(
        delta, ~((delta >= 0) & (delta <= 2)), "delta must lie in [0, 2]", lambda: f"; got {delta}"
    )


def grid_tolerance(dtype) -> float:
    """Tolerance on a grid density's mass, negative values and grid spacing: `1e-6` (as
    `solve_circle`), or `sqrt(eps)` where larger (float32: `3.5e-4`)."""
    return max(1e-6, float(jnp.finfo(dtype).eps) ** 0.5)


def check_grid(theta, density, names: tuple[str, str], xp):
    """`(theta, density)`, 1-D of the same length `M`, checked to be a density on a uniform
    grid: `theta` finite cell centers `theta_0 + 2 pi k / M`, `density` finite and
    non-negative (entries down to `-tol`, `grid_tolerance`, are rounding and read as 0); `names`
    name them in the errors. `xp`: NumPy for concrete arrays, `jax.numpy` under tracing."""
    M = theta.shape[0]
    h = 2 * math.pi / M
    tol = grid_tolerance(theta.dtype)
    k = xp.arange(M, dtype=theta.dtype)
    theta = check_value(
        theta,
        xp.any(~xp.isfinite(theta)) | xp.any(xp.abs(theta - theta[0] - k * h) > tol * h),
        f"{names[0]} must be a uniform grid of M = {M} cell centers theta_0 + 2 pi k / M",
        lambda: (
            f"; got spacings from {np.min(np.diff(theta)):.6g} to "
            f"{np.max(np.diff(theta)):.6g}, expected {h:.6g}"
        ),
    )
    density = check_finite(density, names[1], xp)
    density = check_value(
        density,
        xp.min(density) < -tol,
        f"{names[1]} must be non-negative (entries down to -{tol:g} are read as 0)",
        lambda: f"; got a smallest entry {float(np.min(density)):.3g}",
    )
    return theta, density
