"""Stability: Lyapunov spectra, fixed points and their linear stability.

Jacobians come from `jax.jacfwd`/`jax.jvp`; on the product of spheres everything is restricted
to the tangent bundle (`tangent_basis`): the normal directions, neutral because sphere fields
conserve each `|x_i|`, are excluded. Finite-time exponents over a `(t, beta)` grid are
`attnflow.studies.ftle_diagram`.
"""

from ._fixed_points import (
    FixedPoints as FixedPoints,
    FixedPointType as FixedPointType,
    classify_fixed_point as classify_fixed_point,
    find_fixed_points as find_fixed_points,
    fixed_point_guesses as fixed_point_guesses,
    rotation_modes as rotation_modes,
)
from ._known import (
    KnownResult as KnownResult,
    cluster as cluster,
    known_results as known_results,
    simplex as simplex,
    simplex_rate as simplex_rate,
)
from ._lyapunov import LyapunovSpectrum as LyapunovSpectrum, lyapunov_spectrum as lyapunov_spectrum
from ._tangent import (
    jacobian as jacobian,
    tangent_basis as tangent_basis,
    tangent_jacobian as tangent_jacobian,
)
