"""The mean-field limit on the circle: the continuity equation for the density of angles.

Tokens `x = (cos theta, sin theta)` with `Q = K = V = I` (docs/science.md sections 2 and 4). Their
empirical measure, as `n -> infinity`, has a density `rho(t, theta)` on `[0, 2 pi)` solving

    d rho / dt + d (rho v[rho]) / d theta = (1 / kappa) d^2 rho / d theta^2,

with the velocity of a token at angle `theta` among the density `rho`

    USA:  v[rho](theta) = -int exp(beta cos(theta - phi)) sin(theta - phi) rho(phi) dphi
    SA:   v[rho](theta) = the same, divided by int exp(beta cos(theta - phi)) rho(phi) dphi

and the noise term present only when `kappa` is given. Since
`d/dtheta exp(beta cos theta) = -beta sin(theta) exp(beta cos theta)`, with `h = exp(beta cos)`
and `*` the convolution on the circle, `v = (1/beta) d(h * rho)/dtheta` (USA) and
`v = (1/beta) d log(h * rho)/dtheta` (SA). The Fourier coefficients of `h` are
`int h(u) e^{-iku} du = 2 pi I_k(beta)` (modified Bessel functions), so on the Fourier side
`(h * rho)^_k = 2 pi I_k(beta) rho^_k`: the convolutions are products after an FFT.
"""

import warnings

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.special
from jaxtyping import Array, Float

from .._checks import (
    as_float_array,
    check_beta,
    check_times,
    float_dtype,
    positive_int,
    positive_number,
)
from ..fields import KINDS as FIELD_KINDS
from ..integrate import as_solver, controller, solve_checked

KINDS = tuple(FIELD_KINDS)  # the post-LN dynamics with a closed-form kernel: "SA", "USA"
SCHEMES = ("weno5", "finite-volume", "spectral")  # of `solve_circle`, the default first


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, KINDS))}; got {kind!r}")


class CircleDensity(eqx.Module):
    """The solution of `solve_circle`.

    `theta`: the grid, `2 pi k / M`, shape `(M,)`. `ts`: the save times `(T,)`. `density`:
    `rho(t, theta)` at the save times, shape `(T, M)`, integrating to 1 (rectangle rule, exact
    for the trigonometric interpolant). `min_density`: the smallest value at each save time;
    the exact solution stays positive, so a negative value is a resolution failure (reported
    by `solve_circle` with a warning).
    """

    theta: Float[Array, " M"]
    ts: Float[Array, " T"]
    density: Float[Array, "T M"]
    min_density: Float[Array, " T"]

    def mass(self) -> Float[Array, " T"]:
        """`int rho dtheta` at each save time: 1 to rounding (the scheme conserves it)."""
        return jnp.sum(self.density, axis=-1) * (2 * jnp.pi / self.theta.shape[0])

    def order_parameter(self) -> Float[Array, " T"]:
        """`r(t) = |int e^{i theta} rho(t, theta) dtheta|` (1 for a Dirac, 0 for uniform)."""
        dtheta = 2 * jnp.pi / self.theta.shape[0]
        c = jnp.sum(self.density * jnp.cos(self.theta), -1) * dtheta
        s = jnp.sum(self.density * jnp.sin(self.theta), -1) * dtheta
        return jnp.hypot(c, s)


def _scaled_bessel(k, beta) -> np.ndarray:
    """`I_k(beta) e^{-beta}` (SciPy's `ive`, float64), `ValueError` where SciPy gives NaN: its
    Bessel functions stop at orders and arguments of about `2^30` (1.07e9)."""
    values = scipy.special.ive(k, beta)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"beta and the mode k must be at most about 1e9 (the range of SciPy's Bessel "
            f"functions I_k(beta)); got beta up to {np.max(beta):g}, k up to {np.max(k):g}"
        )
    return values


def _bessel_ratios(beta: float, M: int) -> np.ndarray:
    """`I_k(beta) / I_0(beta)` for the FFT's wavenumbers `k` (float64, NumPy)."""
    k = np.abs(np.fft.fftfreq(M, 1.0 / M))
    return _scaled_bessel(k, beta) / _scaled_bessel(0, beta)


def smallest_grid(beta: float, tol: float = 1e-13) -> int:
    """The smallest power of two `M >= 8` whose Nyquist mode resolves `exp(beta cos theta)`:
    `I_{M/2}(beta) / I_0(beta) < tol`.

    `beta`: finite and `>= 0` (up to about 1e9, the range of SciPy's Bessel functions).
    `tol`: in `[2.2e-308, 1)`. The ratio is computed in float64, which cannot tell a ratio below
    its smallest normal number (2.2e-308) from 0, and every grid meets a `tol >= 1`. A `tol`
    below the rounding of the density's dtype (`1e-16` in float64) is allowed: it only asks for
    a finer grid than that dtype can use. `ValueError` naming the argument otherwise.
    """
    beta = float(check_beta(beta))
    tol = positive_number(tol, "tol", "the Nyquist coefficient I_{M/2}(beta) / I_0(beta)")
    smallest = float(np.finfo(np.float64).tiny)
    if not smallest <= tol < 1:
        raise ValueError(
            f"tol must lie in [{smallest:.3g}, 1) (float64 reaches no smaller ratio, and every "
            f"grid meets tol >= 1); got {tol!r}"
        )
    M = 8
    while _scaled_bessel(M // 2, beta) / _scaled_bessel(0, beta) >= tol:
        M *= 2
    return M


def growth_rate(k, beta, kind: str = "SA", kappa=None):
    """The linear growth rate of the Fourier mode `k` of a perturbation of the uniform density.

    Derivation: write `rho = 1/(2 pi) + eps e^{ik theta}`. The convolution of `h = exp(beta cos)`
    with `e^{ik theta}` is `2 pi I_k(beta) e^{ik theta}`, and with the uniform density `I_0`.

    - USA: `v = (1/beta) d(h * rho)/dtheta = (eps / beta) 2 pi I_k(beta) i k e^{ik theta}`.
    - SA: `v = (1/beta) d log(h * rho)/dtheta = (eps / beta) 2 pi (I_k / I_0) i k e^{ik theta}`
      to first order.

    To first order in `eps`, `d rho/dt = -(1/(2 pi)) dv/dtheta - (k^2/kappa) eps e^{ik theta}`, so
    the mode grows like `e^{lambda_k t}` with

        USA: lambda_k = k^2 I_k(beta) / beta - k^2 / kappa,
        SA:  lambda_k = k^2 I_k(beta) / (beta I_0(beta)) - k^2 / kappa,

    (no noise term without `kappa`). At `beta = 0` both are `1/2 - 1/kappa` for `k = +-1` (the
    Kuramoto model with `K = 1`) and `-k^2/kappa` otherwise. Every mode `k != 0` grows without
    noise: the uniform density is unstable for every `beta > 0`.

    `k`: integers, any shape (`e^{ik theta}` is a density on the circle only for integer `k`;
    `-k` grows as `k`); `beta`: finite, `>= 0`, broadcasting with `k`. `ValueError` naming the
    argument otherwise, and beyond the range of SciPy's Bessel functions (about 1e9).
    """
    _check_kind(kind)
    k = np.asarray(as_float_array(k, "k"), dtype=float)
    if not np.all(np.isfinite(k) & (k == np.round(k))):
        raise ValueError(
            f"k must hold integers (the Fourier modes e^{{ik theta}} of the circle); got {k}"
        )
    k = np.abs(k)
    return linear_rate(_scaled_bessel, k, k**2, 0.5, beta, kind, kappa, "(1/kappa) rho''")


def linear_rate(scaled_bessel, mode, eigenvalue, first, beta, kind, kappa, noise: str):
    """The growth rate of an eigenmode of the Laplacian (eigenvalue `-eigenvalue`) about the
    uniform density, shared by the circle (`growth_rate`: Fourier mode `k`, `I_k`) and the
    sphere (`sphere_growth_rate`: degree `l`, `i_l`): `eigenvalue c(mode, beta) / beta` over
    `c(0, beta)` (SA) or not (USA), with `c(mode, beta) e^{-beta} = scaled_bessel(mode, beta)`,
    at `beta = 0` its limit `eigenvalue * first` for mode 1 and 0 for the others, minus
    `eigenvalue / kappa` with noise (`noise`: how the noise term reads, for its error)."""
    check_beta(beta, scalar=False)
    beta = np.asarray(beta, dtype=float)
    safe = np.where(beta > 0, beta, 1.0)
    scaled = scaled_bessel(mode, safe) / safe  # c(mode, beta) e^{-beta} / beta
    if kind == "SA":
        ratio = scaled / scaled_bessel(0, safe)
    else:
        if np.any(safe > np.log(np.finfo(float).max)):
            raise ValueError(f"USA's growth rate overflows beyond beta about 709; got {beta}")
        ratio = scaled * np.exp(safe)
    ratio = np.where(beta > 0, ratio, np.where(mode == 1, first, 0.0))
    rate = eigenvalue * ratio
    if kappa is not None:
        rate = rate - eigenvalue / positive_number(kappa, "kappa", f"the noise: {noise}")
    return rate


def predicted_clusters(beta, kind: str = "SA", kmax: int = 200) -> int:
    """The fastest-growing mode `argmax_k growth_rate(k, beta)` (`k >= 1`): the number of
    clusters the linear instability of the uniform density predicts."""
    kmax = positive_int(kmax, "kmax", minimum=2)
    beta = float(check_beta(beta))
    k = np.arange(1, kmax + 1)
    best = int(k[np.argmax(growth_rate(k, beta, kind))])
    if best == kmax:
        raise ValueError(
            f"the fastest-growing mode at beta = {beta:g} is beyond kmax = {kmax} (it is near "
            f"sqrt(2 beta) = {np.sqrt(2 * beta):.0f}); pass a larger kmax"
        )
    return best


def _velocity(rho, ratios, q, kind):
    """The velocity `v[rho]` on the grid; `ratios = I_k / I_0` and `q = 2 pi I_k / (beta I_0)`
    (SA) or `2 pi I_k / beta` (USA), per FFT wavenumber."""
    M = rho.shape[-1]
    k = jnp.fft.fftfreq(M, 1.0 / M).astype(rho.dtype)
    rho_hat = jnp.fft.fft(rho)
    numerator = jnp.fft.ifft(1j * k * q * rho_hat).real
    if kind == "USA":
        return numerator
    convolution = jnp.fft.ifft(2 * jnp.pi * ratios * rho_hat).real  # (h * rho) / I_0
    return numerator / convolution


SMOOTH = 5.0  # `"weno5"`: the linear 5th-order flux where the density varies by less than this

# WENO5's three 3-point stencils at a face, their ideal weights (together: the 5th-order
# upwind flux), their values there and smoothness indicators (Jiang and Shu 1996)
_IDEAL = (0.1, 0.6, 0.3)


def _upwind5(a, b, c, d, e, smooth):
    """The flux at the face between `c` and `d` reconstructed from the 5 values `a..e` upwind
    of it: the linear 5th-order flux where `smooth`, otherwise WENO-Z's (Borges et al. 2008),
    whose nonlinear weights take the 3-point stencils that do not cross a steep front."""
    values = (
        (2 * a - 7 * b + 11 * c) / 6,
        (-b + 5 * c + 2 * d) / 6,
        (2 * c + 5 * d - e) / 6,
    )
    beta = (
        13 / 12 * (a - 2 * b + c) ** 2 + 1 / 4 * (a - 4 * b + 3 * c) ** 2,
        13 / 12 * (b - 2 * c + d) ** 2 + 1 / 4 * (b - d) ** 2,
        13 / 12 * (c - 2 * d + e) ** 2 + 1 / 4 * (3 * c - 4 * d + e) ** 2,
    )
    tiny = jnp.finfo(c.dtype).tiny
    tau = jnp.abs(beta[0] - beta[2])
    alpha = [w * (1 + (tau / (b_k + tiny)) ** 2) for w, b_k in zip(_IDEAL, beta, strict=True)]
    weno = sum(a_k * q for a_k, q in zip(alpha, values, strict=True)) / sum(alpha)
    linear = sum(w * q for w, q in zip(_IDEAL, values, strict=True))
    return jnp.where(smooth, linear, weno)


def _weno5_flux(rho, velocity):
    """The flux `rho v` at the faces `theta_m + h/2`: Lax-Friedrichs splitting
    `f^{+-} = (rho v +- a rho) / 2` with `a = max |v|`, each part reconstructed upwind
    (`_upwind5`), linearly where the density varies by less than a factor `SMOOTH` over the
    6 points around the face."""
    f = rho * velocity
    a = jnp.max(jnp.abs(velocity))
    plus, minus = (f + a * rho) / 2, (f - a * rho) / 2

    def at(values, shift):  # values[m + shift] at index m
        return jnp.roll(values, -shift)

    window = jnp.stack([at(rho, shift) for shift in range(-2, 4)])
    smooth = jnp.max(window, 0) <= SMOOTH * jnp.min(window, 0)
    right = _upwind5(*(at(plus, s) for s in (-2, -1, 0, 1, 2)), smooth)
    left = _upwind5(*(at(minus, s) for s in (3, 2, 1, 0, -1)), smooth)
    return right + left


def _minmod(a, b):
    return jnp.where(a * b > 0, jnp.sign(a) * jnp.minimum(jnp.abs(a), jnp.abs(b)), 0.0)


class _Continuity(eqx.Module):
    ratios: Array
    q: Array
    diffusion: Array
    kind: str = eqx.field(static=True)
    scheme: str = eqx.field(static=True)

    def __call__(self, t, rho, args):
        M = rho.shape[-1]
        k = jnp.fft.fftfreq(M, 1.0 / M).astype(rho.dtype)
        k = jnp.where(jnp.abs(k) == M // 2, 0.0, k)  # no derivative of the Nyquist mode
        if self.scheme == "spectral":
            flux = rho * _velocity(rho, self.ratios, self.q, self.kind)
            rhs_hat = -1j * k * jnp.fft.fft(flux) - self.diffusion * k**2 * jnp.fft.fft(rho)
            return jnp.fft.ifft(rhs_hat).real
        if self.scheme == "weno5":  # point values; the noise by a 4th-order centered flux
            h = 2 * jnp.pi / M
            flux = _weno5_flux(rho, _velocity(rho, self.ratios, self.q, self.kind))
            gradient = (jnp.roll(rho, 1) - 15 * rho + 15 * jnp.roll(rho, -1)) - jnp.roll(rho, -2)
            flux = flux - self.diffusion * gradient / (12 * h)
            return -(flux - jnp.roll(flux, 1)) / h
        # Finite volumes: the velocity (a convolution of rho with a smooth kernel, so smooth
        # however sharp rho is) at the faces theta_m + h/2 by a spectral shift; the density
        # there by minmod-limited linear reconstruction, taken upwind.
        h = 2 * jnp.pi / M
        velocity = _velocity(rho, self.ratios, self.q, self.kind)
        faces = jnp.fft.ifft(jnp.fft.fft(velocity) * jnp.exp(0.5j * k * h)).real
        up, down = jnp.roll(rho, -1), jnp.roll(rho, 1)
        slope = _minmod(rho - down, up - rho)
        left = rho + slope / 2  # at face m + 1/2, from cell m
        right = up - jnp.roll(slope, -1) / 2  # at face m + 1/2, from cell m + 1
        flux = jnp.where(faces > 0, faces * left, faces * right)
        flux = flux - self.diffusion * (up - rho) / h
        return -(flux - jnp.roll(flux, 1)) / h


def two_bump_density(grid: int = 512, dtype=None) -> Float[Array, " M"]:
    """A smooth initial density on the circle with two bumps of different heights.

    `rho0(theta) = exp(cos(theta - 0.3) + 0.8 cos(2 theta - 1)) / Z` at the grid points
    `theta_m = 2 pi m / M` (those of `solve_circle`), `Z` making the rectangle rule give mass 1
    (the rule is spectrally accurate here: `Z` is `int exp(...) dtheta` to rounding). The
    initial density of `attnflow meanfield`, ready for `solve_circle` and
    `particles_versus_pde` (pass the same `grid` there).

    Arguments:
        grid: the number of grid points `M`, `>= 8`.
        dtype: a floating dtype (default: JAX's default float); computed in float64, then cast.

    Returns:
        The values `rho0(theta_m)`, shape `(M,)`.
    """
    M = positive_int(grid, "grid", minimum=8)
    theta = 2 * np.pi * np.arange(M) / M
    rho = np.exp(np.cos(theta - 0.3) + 0.8 * np.cos(2 * theta - 1.0))
    return jnp.asarray((rho / (rho.sum() * 2 * np.pi / M)).astype(float_dtype(dtype)))


def solve_circle(
    rho0,
    ts,
    *,
    beta,
    kind: str = "SA",
    kappa=None,
    grid: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    solver="tsit5",
    max_steps: int = 1_000_000,
    scheme: str = "weno5",
) -> CircleDensity:
    """Solve the continuity equation of the circle's mean-field limit (see the module docstring).

    Arguments:
        rho0: the initial density, values at the grid `theta_m = 2 pi m / M` (shape `(M,)`), or
            a function `rho0(theta)` evaluated there. Non-negative, finite, integrating to 1
            (rectangle rule) within `1e-6`.
        ts: the save times, strictly increasing.
        beta: the inverse temperature, `>= 0`.
        kind: `"SA"` (attention normalized by `int exp(beta cos) rho`) or `"USA"`.
        kappa: the noise, adding `(1/kappa) rho''` (None: none; must be `> 0`).
        grid: the number of grid points `M` when `rho0` is a function (default 512).
        rtol, atol, solver, max_steps: diffrax's (the method of lines is stiff with noise on
            fine grids: `solver="kvaerno5"` then). Default tolerances 1e-8, 1e-10 in float64,
            1e-5, 1e-7 in float32 (the dtype of `rho0`; float32 unless x64 is on).
        scheme: `"weno5"` (the default), `"finite-volume"` or `"spectral"`, below.

    The schemes, all conservative (the mass is conserved to rounding) and with the uniform
    density stationary to rounding (its velocity is zero); the velocity `v[rho]`, a
    convolution of `rho` with a smooth kernel, is computed by FFT in all; time is adaptive
    (diffrax). Measured orders and errors: docs/guide/meanfield.md.

    - `"weno5"`: point values, the flux `v rho` at the faces by Lax-Friedrichs splitting and
      upwind reconstruction of 5th order: the linear 5th-order flux where the density varies by
      less than a factor 5 over the 6 points around a face, WENO-Z's nonlinear weights where it
      varies more (a cluster's flank), which keep the density non-negative to rounding through
      the concentration into clusters (tested). The noise is a 4th-order centered flux. The
      Ott-Antonsen order parameter to 7e-11 on 256 points over `t` in `[0, 5]`.
    - `"finite-volume"`: cell averages, fluxes `v rho` at the cell faces with `rho`
      reconstructed by minmod-limited slopes and taken upwind, the noise as a centered flux.
      Second order where `rho` is smooth, first order at its extrema (2e-4 on the same
      Ott-Antonsen test); non-negative up to the time integrator's tolerance (tested: -1e-10
      at the peak's 1e2) through the concentration into clusters (the mean-field dynamics forms
      Dirac masses), where a spectral method breaks down.
    - `"spectral"`: the flux derivative by FFT too. Spectrally accurate for smooth solutions
      (the Ott-Antonsen test to 2e-12 on 256 points), but it oscillates and fails once the
      density is too sharp for the grid.
    None enforces positivity exactly: the smallest density at each save time is returned
    (`min_density`), and a warning is given when it falls below `-1e-6` (refine the grid). A grid
    too coarse to resolve `exp(beta cos theta)` (the Fourier coefficient of the Nyquist mode
    above `1e-13` of the mean) is a ValueError naming the smallest grid that does.
    """
    _check_kind(kind)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(map(repr, SCHEMES))}; got {scheme!r}")
    beta = float(check_beta(beta))
    if callable(rho0):
        M = positive_int(512 if grid is None else grid, "grid", minimum=8)
        rho0 = rho0(2 * np.pi * np.arange(M) / M)
    rho0 = as_float_array(rho0, "rho0")
    if rho0.ndim != 1 or rho0.shape[0] < 8:
        raise ValueError(f"rho0 must be a 1-D array of at least 8 grid values; got {rho0.shape}")
    M = rho0.shape[0]
    if grid is not None and positive_int(grid, "grid") != M:
        raise ValueError(f"grid must match rho0's length {M}; got {grid}")
    values = np.asarray(rho0, dtype=float)
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError(
            f"rho0 must be finite and non-negative; its smallest value is {values.min():.3g}"
        )
    mass = values.sum() * 2 * np.pi / M
    if abs(mass - 1) > max(1e-6, float(np.finfo(rho0.dtype).eps) ** 0.5):
        raise ValueError(f"rho0 must integrate to 1 (rectangle rule); it integrates to {mass:.8g}")
    needed = smallest_grid(beta)
    if M < needed:
        raise ValueError(
            f"grid of {M} points too coarse to resolve exp(beta cos theta) at beta = {beta:g} "
            f"(its Fourier coefficient I_{M // 2}/I_0 = {_bessel_ratios(beta, M).min():.1e}); "
            f"use at least {needed} points"
        )
    diffusion = 0.0
    if kappa is not None:
        diffusion = 1.0 / positive_number(kappa, "kappa", "the noise: (1/kappa) rho''")
    dtype = rho0.dtype
    double = dtype == np.float64
    rtol = (1e-8 if double else 1e-5) if rtol is None else positive_number(rtol, "rtol")
    atol = (1e-10 if double else 1e-7) if atol is None else positive_number(atol, "atol")
    ratios = _bessel_ratios(beta, M)
    if beta > 0:
        q = 2 * np.pi * ratios / beta  # (2 pi I_k / beta) / I_0: SA's numerator, scaled
        if kind == "USA":
            scale = scipy.special.ive(0, beta) * np.exp(beta)  # I_0(beta)
            if not np.isfinite(scale) or np.max(q) * scale > np.finfo(rho0.dtype).max / M:
                raise ValueError(f"USA's velocity overflows at beta = {beta:g}; use kind='SA'")
            q = q * scale
    else:  # 2 pi I_k(beta) / beta -> pi at k = +-1
        q = np.where(np.abs(np.fft.fftfreq(M, 1.0 / M)) == 1, np.pi, 0.0)
    ts = check_times(as_float_array(ts, "ts").astype(dtype))
    term = _Continuity(*(jnp.asarray(a, dtype) for a in (ratios, q, diffusion)), kind, scheme)
    solver = as_solver(solver)
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(
            f"solver must be an adaptive diffrax ODE solver (the PDE's steps are controlled by "
            f"rtol, atol); got {solver!r}"
        )
    args = (term, rho0, ts, solver, rtol, atol, max_steps)
    density, minimum = solve_density(*args, f"the grid of {M} points", "a finer grid")
    theta = jnp.asarray(2 * np.pi * np.arange(M) / M, dtype)
    return CircleDensity(theta, ts, density, minimum)


def solve_density(term, rho0, ts, solver, rtol, atol, max_steps, mesh: str, finer: str):
    """The method of lines of a density, `term(t, rho, args)`, solved by diffrax over `ts`:
    `(density at the save times, its smallest value at each)`. A failed solve raises in the
    density's terms; a density below `-1e-6` (the exact one stays positive) is a warning that
    `mesh` (e.g. "the grid of 512 points") does not resolve it, suggesting `finer`."""
    density = _solve(term, rho0, ts, solver, rtol, atol, max_steps, finer)
    minimum = jnp.min(density.reshape(density.shape[0], -1), axis=-1)
    if float(jnp.min(minimum)) < -1e-6:
        warnings.warn(
            f"the density became negative (down to {float(jnp.min(minimum)):.2g}): {mesh} "
            f"does not resolve it; use {finer}",
            stacklevel=3,
        )
    return density, minimum


@eqx.filter_jit
def _solve(term, rho0, ts, solver, rtol, atol, max_steps, finer: str):
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(term),
        solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=rho0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller(solver, rtol, atol),
        max_steps=max_steps,
        throw=False,
    )
    remedy = (
        "the density is too steep for its resolution or the tolerances (large beta, long "
        f"times); pass a larger max_steps, {finer} or looser tolerances, or a shorter time span"
    )
    return solve_checked(solution, True, remedy).ys
