"""Geometry of the unit sphere `S^{d-1}` and of the circle: sampling, projections, distances."""

from ._sphere import (
    around_axes as around_axes,
    from_angles as from_angles,
    geodesic_distance as geodesic_distance,
    normalize as normalize,
    on_sphere as on_sphere,
    project as project,
    random_rotation as random_rotation,
    safe_norm as safe_norm,
    to_angles as to_angles,
    uniform as uniform,
)
