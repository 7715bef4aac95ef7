"""The mean-field limit (docs/science.md section 4): densities instead of tokens, on the circle
and on the sphere S^2."""

from ._circle import (
    SCHEMES as SCHEMES,
    CircleDensity as CircleDensity,
    growth_rate as growth_rate,
    predicted_clusters as predicted_clusters,
    smallest_grid as smallest_grid,
    solve_circle as solve_circle,
    two_bump_density as two_bump_density,
)
from ._particles import (
    ParticlesVersusPDE as ParticlesVersusPDE,
    particles_versus_pde as particles_versus_pde,
    sample_density as sample_density,
)
from ._sphere import (
    SphereDensity as SphereDensity,
    funk_hecke as funk_hecke,
    smallest_degree as smallest_degree,
    solve_sphere as solve_sphere,
    sphere_grid as sphere_grid,
    sphere_growth_rate as sphere_growth_rate,
    sphere_velocity as sphere_velocity,
)


def __getattr__(name: str):
    """The Wasserstein distances moved to `attnflow.analysis`; the old spelling works for a
    release, with a `DeprecationWarning`."""
    from .._deprecated import deprecated
    from ..analysis import COSTS, wasserstein, wasserstein_circle, wasserstein_exact

    moved = {
        "COSTS": COSTS,
        "wasserstein": wasserstein,
        "wasserstein_circle": wasserstein_circle,
        "wasserstein_exact": wasserstein_exact,
    }
    if name in moved:
        deprecated(f"attnflow.meanfield.{name}", f"attnflow.analysis.{name}")
        return moved[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
