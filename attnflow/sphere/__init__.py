"""Geometry of the unit sphere `S^{d-1}` and of the circle: sampling, projections, distances."""

from ._sphere import (
    from_angles as from_angles,
)
from ._sphere import (
    geodesic_distance as geodesic_distance,
)
from ._sphere import (
    normalize as normalize,
)
from ._sphere import (
    on_sphere as on_sphere,
)
from ._sphere import (
    project as project,
)
from ._sphere import (
    random_rotation as random_rotation,
)
from ._sphere import (
    to_angles as to_angles,
)
from ._sphere import (
    uniform as uniform,
)

__all__ = [
    "from_angles",
    "geodesic_distance",
    "normalize",
    "on_sphere",
    "project",
    "random_rotation",
    "to_angles",
    "uniform",
]
