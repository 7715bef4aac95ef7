"""Particles against the PDE: `n` tokens sampled from the initial density, their empirical
measure against the mean-field density over time, in the exact circle Wasserstein distance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from tqdm.auto import tqdm

from .._checks import as_float_array, check_grid, check_value, is_traced, positive_int
from .._deprecated import keyword_key
from ..analysis import wasserstein_circle
from ..fields import Circle
from ..integrate import simulate
from ._circle import CircleDensity, _check_kind, solve_circle


class ParticlesVersusPDE(eqx.Module):
    """The outcome of `particles_versus_pde`.

    `pde`: the density (`CircleDensity`). `particles`: the numbers of tokens `n`, shape `(N,)`.
    `distance`: `W_p(mu_n(t), rho(t))` for each `n`, sample and save time, shape
    `(N, samples, T)`. `slope`: the fitted exponent `a` of `mean W_p ~ n^a` at each save time,
    shape `(T,)` (about `-1/2` when the sampling error of the initial measure dominates, the
    `n^{-1/2}` law of empirical measures on the circle). `angles`: the first sample of the
    largest `n` at every save time, shape `(T, n)` (for histograms against the density).
    """

    pde: CircleDensity
    particles: Array
    distance: Float[Array, "N samples T"]
    slope: Float[Array, " T"]
    angles: Float[Array, "T n"]

    def mean(self) -> Float[Array, "N T"]:
        """The distance averaged over samples."""
        return jnp.mean(self.distance, axis=1)


def sample_density(key, theta, density, n: int) -> Array:
    """`n` angles from a density that is constant on the cells of the uniform grid `theta`:
    a cell by its mass, then a uniform point in it (exact sampling, as the finite volumes and
    `wasserstein_circle` read the density).

    `theta` and `density`: 1-D arrays of the same length `M`, `theta` the cell centers
    `theta_0 + 2 pi k / M`; `density` finite, non-negative (entries down to -1e-6, -3.5e-4 in
    float32, the rounding of a solved density, are read as 0) and of positive total mass (any
    mass: it is normalized); `n >= 1`. `ValueError` naming the argument otherwise.
    """
    theta = as_float_array(theta, "theta")
    density = as_float_array(density, "density")
    if theta.ndim != 1 or theta.shape[0] < 1 or density.shape != theta.shape:
        raise ValueError(
            f"theta and density must be 1-D arrays of the same length M >= 1 (grid cell centers "
            f"and values); got shapes {theta.shape} and {density.shape}"
        )
    n = positive_int(n, "n")
    xp = jnp if is_traced((theta, density)) else np
    theta, density = check_grid(theta, density, ("theta", "density"), xp)
    total = xp.sum(xp.maximum(density, 0))
    density = check_value(
        density,
        ~(total > 0),
        "density must have a positive total mass",
        lambda: f"; got sum(density) = {float(total):.3g}",
    )
    h = 2 * jnp.pi / theta.shape[0]
    cell_key, offset_key = jax.random.split(key)
    mass = jnp.clip(density, 0, None) * h
    cells = jax.random.choice(cell_key, theta.shape[0], (n,), p=mass / jnp.sum(mass))
    offsets = jax.random.uniform(offset_key, (n,), density.dtype, -h / 2, h / 2)
    return theta[cells] + offsets


@keyword_key(positional=2)
def particles_versus_pde(
    rho0,
    ts,
    *,
    key: jax.Array,
    beta,
    kind: str = "SA",
    particles=(256, 1024, 4096),
    samples: int = 4,
    grid: int | None = None,
    p: int = 1,
    progress: bool = False,
) -> ParticlesVersusPDE:
    """`W_p` between `n` particles and the mean-field density over time, for several `n`.

    The density solves `solve_circle(rho0, ts, beta=beta, kind=kind, grid=grid)`; for each
    `n`, `samples` independent sets of `n` angles are drawn from `rho0` (`sample_density`),
    moved by the particle dynamics on the circle (`attnflow.Circle`, the same model), and
    compared with the density at every save time by the exact `wasserstein_circle`. At `t = 0`
    the distance is the sampling error of an empirical measure, of order `n^{-1/2}`; the
    stability estimate `W_1(mu_n(t), rho(t)) <= e^{Ct} W_1(mu_n(0), rho(0))` ([R], docs/science.md
    section 4) carries that rate to every fixed `t`. The fitted `slope` checks it, over the
    sizes `particles`: at least two, all different (a repeated size would count twice in the
    fit, and one size fits no slope), in any order (they are sorted).
    `progress` shows a tqdm bar over the sizes (the largest takes most of the time).
    """
    _check_kind(kind)
    counts = tuple(sorted(positive_int(n, "particles") for n in np.atleast_1d(particles)))
    if len(counts) < 2 or len(set(counts)) < len(counts):
        raise ValueError(
            f"particles must hold at least two sizes, all different, to fit a slope; got {counts}"
        )
    samples = positive_int(samples, "samples")
    pde = solve_circle(rho0, ts, beta=beta, kind=kind, grid=grid)
    field = Circle(beta, normalized=kind == "SA")
    distances = []
    sizes = zip(counts, jax.random.split(key, len(counts)), strict=True)
    for n, n_key in tqdm(sizes, total=len(counts), desc="particles", disable=not progress):
        keys = jax.random.split(n_key, samples)
        starts = jax.vmap(sample_density, in_axes=(0, None, None, None))(
            keys, pde.theta, pde.density[0], n
        )
        paths = jax.vmap(lambda a: simulate(field, a, pde.ts).xs)(starts)  # (samples, T, n)

        def along(path):
            return jax.vmap(lambda a, r: wasserstein_circle(a, (pde.theta, r), p=p))(
                path, pde.density
            )

        distances.append(jnp.stack([along(path) for path in paths]))
    distance = jnp.stack(distances)
    logs = np.log(np.asarray(jnp.mean(distance, axis=1)))  # (N, T)
    x = np.log(np.asarray(counts, dtype=float))
    slope = np.polyfit(x, logs, 1)[0]
    angles = jnp.mod(paths[0], 2 * jnp.pi)  # the largest n (the last), first sample
    return ParticlesVersusPDE(pde, jnp.asarray(counts), distance, jnp.asarray(slope), angles)
