"""attnflow: transformers as interacting particle systems on the sphere, in JAX.

Tokens are particles, depth is time, self-attention is the interaction. See the README and
`../shared/SCIENCE.md` for the models.
"""

import importlib.metadata

from . import analysis as analysis
from . import sphere as sphere
from ._simulate import Trajectory as Trajectory
from ._simulate import ode_solvers as ode_solvers
from ._simulate import simulate as simulate
from .analysis import crossing_time as crossing_time
from .analysis import equiangular_rho as equiangular_rho
from .fields import (
    SA as SA,
)
from .fields import (
    USA as USA,
)
from .fields import (
    AbstractAttention as AbstractAttention,
)
from .fields import (
    AbstractDotProductAttention as AbstractDotProductAttention,
)
from .fields import (
    AbstractField as AbstractField,
)
from .fields import (
    AbstractSphereField as AbstractSphereField,
)
from .fields import (
    Circle as Circle,
)
from .fields import (
    FeedForward as FeedForward,
)
from .fields import (
    MultiHead as MultiHead,
)
from .fields import (
    PerLayer as PerLayer,
)
from .fields import (
    PostLN as PostLN,
)
from .fields import (
    Softmax as Softmax,
)
from .fields import (
    Unnormalized as Unnormalized,
)
from .fields import (
    energy as energy,
)
from .fields import (
    log_energy as log_energy,
)

try:
    __version__ = importlib.metadata.version("attnflow")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
