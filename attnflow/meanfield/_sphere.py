"""The mean-field limit on the sphere S^2: the continuity equation for the density of tokens.

Tokens `x` on the unit sphere of R^3 with `Q = K = V = I` (docs/science.md section 4). Their
empirical measure, as `n -> infinity`, has a density `rho(t, x)` (with respect to the area
measure, `int rho = 1`) solving

    d rho / dt + div(rho v[rho]) = (1 / kappa) Laplace-Beltrami(rho),

with the velocity of a token at `x` the tangent part of its attention average,

    USA:  v[rho](x) = int exp(beta <x, y>) P_x y rho(y) dy
    SA:   v[rho](x) = the same, divided by int exp(beta <x, y>) rho(y) dy.

Since the tangential gradient of `exp(beta <x, y>)` in `x` is `beta P_x y exp(beta <x, y>)`,
with `h * rho = int exp(beta <., y>) rho(y) dy` the velocity is a gradient,
`v = grad(h * rho) / beta` (USA) and `v = grad log(h * rho) / beta` (SA).

**Funk-Hecke.** A zonal kernel `f(<x, y>)` acts on each spherical harmonic of degree `l` by a
number: `int f(<x, y>) Y_lm(y) dy = lambda_l Y_lm(x)`, `lambda_l = 2 pi int_{-1}^{1} f(t)
P_l(t) dt` (`P_l` the Legendre polynomial). For `f(t) = exp(beta t)`, expanding
`exp(beta t) = sum_l (2 l + 1) i_l(beta) P_l(t)` (the plane-wave expansion with imaginary
argument; `i_l` the modified spherical Bessel function of the first kind,
`i_l(beta) = sqrt(pi / (2 beta)) I_{l + 1/2}(beta)`) and using
`int P_l P_k = 2 delta_lk / (2 l + 1)` gives `lambda_l = 4 pi i_l(beta)`. So
`(h * rho)_lm = 4 pi i_l(beta) rho_lm`: the convolution is a product on the coefficients.

**The scheme.** The density is kept on the McEwen-Wiaux grid of band limit `L` (degrees
`0..L-1`) and moved between the grid and its coefficients by `s2fft` (JAX). The gradient of a
function `f` is its spin-1 derivative `eth f = -(d_theta f + i d_phi f / sin theta)`, with
coefficients `sqrt(l (l + 1)) f_lm`; the divergence of a tangent field `w`, written as the spin-1
function `-(w_theta + i w_phi)`, is the real part of its spin-lowering derivative, with
coefficients `-sqrt(l (l + 1)) w_lm`. The flux `rho grad Phi` is formed on the grid and its
divergence taken on the coefficients, which has no degree 0: the mass is conserved to rounding,
and the uniform density (whose `Phi` is constant) is stationary.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jaxtyping import Array, Float

from .._checks import as_float_array, check_beta, check_times, positive_int, positive_number
from ..integrate import as_solver
from ._circle import _check_kind, linear_rate, solve_density


def _s2fft():
    try:
        import s2fft
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the mean-field PDE on the sphere needs s2fft (Python >= 3.11): "
            "pip install 'attnflow[sphere]'"
        ) from err
    return s2fft


def _scaled_spherical_bessel(ell, beta) -> np.ndarray:
    """`i_l(beta) e^{-beta}` in float64 (from SciPy's `ive`), `beta > 0`."""
    beta = np.asarray(beta, dtype=float)
    values = np.sqrt(np.pi / (2 * beta)) * scipy.special.ive(np.asarray(ell) + 0.5, beta)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"beta and the degree must be at most about 1e9 (the range of SciPy's Bessel "
            f"functions); got beta up to {np.max(beta):g}"
        )
    return values


def funk_hecke(l, beta) -> np.ndarray:  # noqa: E741 (l: the degree, as in the formulas)
    """`lambda_l = 2 pi int_{-1}^{1} exp(beta t) P_l(t) dt = 4 pi i_l(beta)`: the number by
    which the kernel `exp(beta <x, y>)` multiplies the spherical harmonics of degree `l` (see
    the module docstring for the derivation). `l`: integers `>= 0`; `beta`: finite, `>= 0`,
    below about 700 (float64's range of `e^beta`). Float64, NumPy."""
    l = np.asarray(as_float_array(l, "l"), dtype=float)  # noqa: E741
    if not np.all((l >= 0) & (l == np.round(l))):
        raise ValueError(f"l must hold integers >= 0 (degrees of spherical harmonics); got {l}")
    check_beta(beta, scalar=False)
    beta = np.asarray(beta, dtype=float)
    if np.any(beta > np.log(np.finfo(float).max)):
        raise ValueError(f"exp(beta) overflows float64 beyond beta about 709; got {beta}")
    safe = np.where(beta > 0, beta, 1.0)
    value = 4 * np.pi * _scaled_spherical_bessel(l, safe) * np.exp(safe)
    return np.where(beta > 0, value, np.where(l == 0, 4 * np.pi, 0.0))


def _ratios(beta: float, L: int) -> np.ndarray:
    """`i_l(beta) / i_0(beta)` for `l = 0..L-1` (float64)."""
    degrees = np.arange(L)
    if beta == 0:
        return (degrees == 0).astype(float)
    return _scaled_spherical_bessel(degrees, beta) / _scaled_spherical_bessel(0, beta)


def smallest_degree(beta, tol: float = 1e-13) -> int:
    """The smallest band limit `L >= 4` (degrees `0..L-1`) that resolves `exp(beta <x, y>)`:
    `i_{L-1}(beta) / i_0(beta) < tol`. `beta`: finite, `>= 0`; `tol` in `(0, 1)`."""
    beta = float(check_beta(beta))
    tol = positive_number(tol, "tol", "the ratio i_{L-1}(beta) / i_0(beta)")
    if not tol < 1:
        raise ValueError(f"tol must lie in (0, 1); got {tol!r}")
    L = 4
    while _ratios(beta, L + 1)[L - 1] >= tol:
        L += 1
    return L


def sphere_growth_rate(l, beta, kind: str = "SA", kappa=None):  # noqa: E741
    """The linear growth rate of the degree-`l` spherical harmonics of a perturbation of the
    uniform density `1 / (4 pi)` on S^2.

    Derivation: write `rho = 1/(4 pi) + eps Y_lm`. By Funk-Hecke, `h * rho = i_0(beta) +
    eps 4 pi i_l(beta) Y_lm`. SA: `Phi = log(h * rho) / beta = const + eps 4 pi i_l Y_lm /
    (beta i_0)` to first order; USA: `Phi = h * rho / beta`. To first order
    `div(rho grad Phi) = (1 / (4 pi)) Laplace(Phi)`, and `Laplace Y_lm = -l (l + 1) Y_lm`, so
    the perturbation grows like `e^{lambda_l t}` with

        SA:  lambda_l = l (l + 1) i_l(beta) / (beta i_0(beta)) - l (l + 1) / kappa,
        USA: lambda_l = l (l + 1) i_l(beta) / beta - l (l + 1) / kappa,

    (no noise term without `kappa`). At `beta = 0` both are `2/3` for `l = 1` (`i_1(beta) /
    beta -> 1/3`) and `0` (or the noise alone) otherwise. On the circle the same computation
    gives `k^2 I_k / (beta I_0)` (`growth_rate`).
    """
    _check_kind(kind)
    l = np.asarray(as_float_array(l, "l"), dtype=float)  # noqa: E741
    if not np.all((l >= 0) & (l == np.round(l))):
        raise ValueError(f"l must hold integers >= 0 (degrees of spherical harmonics); got {l}")
    laplacian = l * (l + 1)
    noise = "(1/kappa) Laplace(rho)"
    return linear_rate(_scaled_spherical_bessel, l, laplacian, 1 / 3, beta, kind, kappa, noise)


def sphere_grid(degree: int) -> tuple[np.ndarray, np.ndarray]:
    """The McEwen-Wiaux sampling of band limit `degree`: colatitudes `theta` (shape `(L,)`,
    `pi (2 t + 1) / (2 L - 1)`) and longitudes `phi` (shape `(2 L - 1,)`); a density on it has
    shape `(L, 2 L - 1)`, `rho[t, p]` at `(theta[t], phi[p])`."""
    L = positive_int(degree, "degree", minimum=2)
    samples = _s2fft().sampling.s2_samples
    return samples.thetas(L, sampling="mw"), samples.phis_equiang(L, sampling="mw")


class SphereDensity(eqx.Module):
    """The solution of `solve_sphere`: `theta` `(L,)`, `phi` `(2L - 1,)` (`sphere_grid`), the
    save times `ts` `(T,)`, `density` `(T, L, 2L - 1)` and `min_density` `(T,)`, the smallest
    value at each save time (a negative one is a resolution failure, warned about)."""

    theta: Float[Array, " L"]
    phi: Float[Array, " P"]
    ts: Float[Array, " T"]
    density: Float[Array, "T L P"]
    min_density: Float[Array, " T"]

    def coefficients(self) -> Array:
        """The spherical-harmonic coefficients `rho_lm` at each save time, `(T, L, 2L - 1)`
        (s2fft's layout: `[l, L - 1 + m]`)."""
        L = self.theta.shape[0]
        forward = jax.vmap(lambda f: _s2fft().forward_jax(f.astype(complex), L))
        return forward(self.density)

    def mass(self) -> Float[Array, " T"]:
        """`int rho dA` at each save time, `sqrt(4 pi) rho_00`: 1 to rounding."""
        L = self.theta.shape[0]
        return jnp.sqrt(4 * jnp.pi) * self.coefficients()[:, 0, L - 1].real

    def mean(self) -> Float[Array, "T 3"]:
        """The first moment `int x rho(x) dA`, a vector of R^3, at each save time (its length
        is 1 for a Dirac mass, 0 for the uniform density): exact quadrature of the degree-1
        coefficients."""
        L = self.theta.shape[0]
        c = self.coefficients()
        z = jnp.sqrt(4 * jnp.pi / 3) * c[:, 1, L - 1].real
        # Y_11 = -sqrt(3 / (8 pi)) sin(theta) e^{i phi}: int (x - i y) rho = -sqrt(8 pi / 3) rho_11
        w = -jnp.sqrt(8 * jnp.pi / 3) * c[:, 1, L]
        return jnp.stack([w.real, -w.imag, z], axis=-1)


class _SphereContinuity(eqx.Module):
    ratios: Array  # i_l / i_0, l = 0..L-1
    scale: Array  # 4 pi i_0(beta) / beta (USA) or 4 pi / beta (SA); 4 pi / 3 at beta = 0
    diffusion: Array
    L: int = eqx.field(static=True)
    kind: str = eqx.field(static=True)
    zero: bool = eqx.field(static=True)  # beta = 0: Phi = <x, m>, the limit of both kinds

    @classmethod
    def build(cls, L: int, beta: float, kind: str, diffusion: float = 0.0):
        """The right-hand side at band limit `L` (at `beta = 0`: `Phi = <x, m>`, as
        `i_1(beta) / beta -> 1/3`); `ValueError` where USA's velocity overflows."""
        if beta == 0:
            ratios, scale = (np.arange(L) == 1).astype(float), 4 * np.pi / 3
        else:
            ratios, scale = _ratios(beta, L), 4 * np.pi / beta
            if kind == "USA":
                i0 = _scaled_spherical_bessel(0, beta) * np.exp(beta)
                if not np.isfinite(i0):
                    raise ValueError(f"USA's velocity overflows at beta = {beta:g}; use kind='SA'")
                scale *= i0
        arrays = (jnp.asarray(a) for a in (ratios, scale, diffusion))
        return cls(*arrays, L, kind, beta == 0)

    def potential(self, rho_lm):
        """The coefficients of `Phi` (`v = grad Phi`) from those of `rho`."""
        s2fft = _s2fft()
        convolved = self.ratios[:, None] * rho_lm  # (h * rho)_lm / (4 pi i_0)
        if self.zero or self.kind == "USA":
            return self.scale * convolved
        g = s2fft.inverse_jax(convolved, self.L).real  # (h * rho) / (4 pi i_0), positive
        return (
            s2fft.forward_jax(jnp.log(g).astype(rho_lm.dtype), self.L) * self.scale / (4 * jnp.pi)
        )

    def eth_potential(self, rho_lm):
        """`eth Phi = -(v_theta + i v_phi)` on the grid, from the coefficients of `rho`."""
        return _s2fft().inverse_jax(self._lift() * self.potential(rho_lm), self.L, spin=1)

    def velocity(self, rho):
        """`(v_theta, v_phi)` on the grid."""
        eth = -self.eth_potential(_s2fft().forward_jax(rho.astype(complex), self.L))
        return eth.real, eth.imag

    def _degrees(self):
        return jnp.arange(self.L, dtype=self.ratios.dtype)[:, None]

    def _lift(self):
        return jnp.sqrt(self._degrees() * (self._degrees() + 1))

    def __call__(self, t, rho, args):
        s2fft = _s2fft()
        rho_lm = s2fft.forward_jax(rho.astype(complex), self.L)
        eth_phi = self.eth_potential(rho_lm)
        flux_lm = s2fft.forward_jax(rho * eth_phi, self.L, spin=1)  # -(rho grad Phi) as spin 1
        divergence_lm = -self._lift() * flux_lm  # div + i curl of rho grad Phi
        laplacian = -self._degrees() * (self._degrees() + 1)
        rhs_lm = -divergence_lm + self.diffusion * laplacian * rho_lm
        return s2fft.inverse_jax(rhs_lm, self.L).real  # the real part: the divergence's


def solve_sphere(
    rho0,
    ts,
    *,
    beta,
    kind: str = "SA",
    kappa=None,
    degree: int | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver="tsit5",
    max_steps: int = 1_000_000,
) -> SphereDensity:
    """Solve the continuity equation of the mean-field limit on S^2 (see the module docstring).

    Arguments:
        rho0: the initial density on the grid of band limit `degree` (`sphere_grid`, shape
            `(L, 2L - 1)`), or a function `rho0(theta, phi)` (colatitude, longitude) evaluated
            there. Non-negative, finite, integrating to 1 within `1e-6`; it is taken to its
            band-limited part (degrees below `L`).
        ts: the save times, strictly increasing.
        beta: the inverse temperature, `>= 0` (`beta = 0`: the limit, `v = P_x m` with `m`
            the first moment).
        kind: `"SA"` or `"USA"`.
        kappa: the noise, adding `(1 / kappa)` times the Laplace-Beltrami operator (None: none).
        degree: the band limit `L` when `rho0` is a function (default: `smallest_degree(beta)`,
            at least 16); it must resolve `exp(beta <x, y>)` (`smallest_degree`).
        rtol, atol, solver, max_steps: diffrax's (adaptive).

    Float64 (the spherical-harmonic transforms lose digits in float32: use x64). The density
    is not kept non-negative by construction: the smallest value at each save time is returned
    and a warning given below `-1e-6` (raise the degree).
    """
    _check_kind(kind)
    beta = float(check_beta(beta))
    if not jax.config.jax_enable_x64:
        raise ValueError(
            "solve_sphere needs float64: jax.config.update('jax_enable_x64', True) first"
        )
    needed = smallest_degree(beta)
    if callable(rho0):
        L = positive_int(max(16, needed) if degree is None else degree, "degree", minimum=4)
        theta, phi = sphere_grid(L)
        rho0 = rho0(*np.meshgrid(theta, phi, indexing="ij"))
    rho0 = np.asarray(as_float_array(rho0, "rho0"), dtype=np.float64)
    if rho0.ndim != 2 or rho0.shape[1] != 2 * rho0.shape[0] - 1 or rho0.shape[0] < 4:
        raise ValueError(
            f"rho0 must have the shape (L, 2L - 1) of sphere_grid(L), L >= 4; got {rho0.shape}"
        )
    L = rho0.shape[0]
    if degree is not None and positive_int(degree, "degree") != L:
        raise ValueError(f"degree must match rho0's band limit {L}; got {degree}")
    if L < needed:
        raise ValueError(
            f"degree {L} is too low to resolve exp(beta <x, y>) at beta = {beta:g} "
            f"(i_{L - 1}/i_0 = {_ratios(beta, L)[-1]:.1e}); use at least degree {needed}"
        )
    if not np.all(np.isfinite(rho0)) or rho0.min() < 0:
        raise ValueError(
            f"rho0 must be finite and non-negative; its smallest value is {rho0.min():.3g}"
        )
    s2fft = _s2fft()
    rho_lm = s2fft.forward_jax(jnp.asarray(rho0, complex), L)
    mass = float(np.sqrt(4 * np.pi) * rho_lm[0, L - 1].real)
    if abs(mass - 1) > 1e-6:
        raise ValueError(f"rho0 must integrate to 1 over the sphere; it integrates to {mass:.8g}")
    diffusion = 0.0
    if kappa is not None:
        diffusion = 1.0 / positive_number(kappa, "kappa", "the noise: (1/kappa) Laplace(rho)")
    term = _SphereContinuity.build(L, beta, kind, diffusion)
    ts = check_times(as_float_array(ts, "ts").astype(np.float64))
    solver = as_solver(solver)
    if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
        raise ValueError(f"solver must be an adaptive diffrax ODE solver; got {solver!r}")
    start = s2fft.inverse_jax(rho_lm, L).real  # the band-limited part
    args = (term, start, ts, solver, positive_number(rtol, "rtol"), atol, max_steps)
    density, minimum = solve_density(*args, f"degree {L}", "a higher degree")
    theta, phi = sphere_grid(L)
    return SphereDensity(jnp.asarray(theta), jnp.asarray(phi), ts, density, minimum)


def sphere_velocity(rho, *, beta, kind: str = "SA"):
    """The velocity `v[rho]` of the mean-field PDE on the grid of `rho` (`sphere_grid`), as
    `(v_theta, v_phi)` (components along the unit vectors of colatitude and longitude)."""
    _check_kind(kind)
    beta = float(check_beta(beta))
    rho = jnp.asarray(rho, jnp.float64)
    term = _SphereContinuity.build(rho.shape[0], beta, kind)
    return term.velocity(rho)
