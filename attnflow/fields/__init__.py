"""Attention vector fields: kernels, normalization schemes, the circle form, energies."""

from ._attention import (
    AbstractAttention as AbstractAttention,
    AbstractDotProductAttention as AbstractDotProductAttention,
    Hardmax as Hardmax,
    MultiHead as MultiHead,
    PerLayer as PerLayer,
    Projected as Projected,
    Sinkhorn as Sinkhorn,
    Softmax as Softmax,
    Unnormalized as Unnormalized,
)
from ._blockwise import (
    BLOCK as BLOCK,
    THRESHOLD as THRESHOLD,
    blockwise_attention as blockwise_attention,
)
from ._circle import Circle as Circle
from ._energy import energy as energy, log_energy as log_energy
from ._feedforward import FeedForward as FeedForward
from ._field import (
    SA as SA,
    USA as USA,
    AbstractField as AbstractField,
    AbstractLayerField as AbstractLayerField,
    AbstractSphereField as AbstractSphereField,
    PostLN as PostLN,
)
from ._models import KINDS as KINDS, MODELS as MODELS, Model as Model
from ._normalization import (
    NGPT as NGPT,
    AbstractEuclideanField as AbstractEuclideanField,
    NoNorm as NoNorm,
    PeriLN as PeriLN,
    PreLN as PreLN,
)
from ._sharded import Sharded as Sharded
