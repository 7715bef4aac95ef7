"""The mean-field limit (docs/science.md section 4): densities instead of tokens, on the circle."""

from ._circle import (
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
from ._wasserstein import (
    COSTS as COSTS,
    wasserstein as wasserstein,
    wasserstein_circle as wasserstein_circle,
    wasserstein_exact as wasserstein_exact,
)
