"""The names of `attnflow`, as type checkers see them; `__init__.py` loads each on first use."""

from . import (
    analysis as analysis,
    concentration as concentration,
    distributed as distributed,
    fields as fields,
    integrate as integrate,
    meanfield as meanfield,
    optimize as optimize,
    sphere as sphere,
    stability as stability,
    studies as studies,
    sweep as sweep,
)
from ._version import __version__ as __version__
from .analysis import (
    crossing_time as crossing_time,
    equiangular_rho as equiangular_rho,
    long_context_cosine as long_context_cosine,
)
from .fields import (
    NGPT as NGPT,
    SA as SA,
    USA as USA,
    AbstractAttention as AbstractAttention,
    AbstractDotProductAttention as AbstractDotProductAttention,
    AbstractEuclideanField as AbstractEuclideanField,
    AbstractField as AbstractField,
    AbstractLayerField as AbstractLayerField,
    AbstractSphereField as AbstractSphereField,
    Circle as Circle,
    FeedForward as FeedForward,
    Hardmax as Hardmax,
    MultiHead as MultiHead,
    NoNorm as NoNorm,
    PeriLN as PeriLN,
    PerLayer as PerLayer,
    PostLN as PostLN,
    PreLN as PreLN,
    Sinkhorn as Sinkhorn,
    Softmax as Softmax,
    Unnormalized as Unnormalized,
    energy as energy,
    log_energy as log_energy,
)
from .integrate import (
    STATUS as STATUS,
    Layers as Layers,
    Trajectory as Trajectory,
    ode_solvers as ode_solvers,
    simulate as simulate,
    simulate_sde as simulate_sde,
    span_reduction as span_reduction,
)
from .studies import PhaseDiagram as PhaseDiagram, phase_diagram as phase_diagram
