"""Attention vector fields: kernels, normalization schemes, the circle form, energies."""

from ._attention import (
    AbstractAttention as AbstractAttention,
)
from ._attention import (
    AbstractDotProductAttention as AbstractDotProductAttention,
)
from ._attention import (
    MultiHead as MultiHead,
)
from ._attention import (
    PerLayer as PerLayer,
)
from ._attention import (
    Softmax as Softmax,
)
from ._attention import (
    Unnormalized as Unnormalized,
)
from ._circle import Circle as Circle
from ._energy import energy as energy
from ._energy import log_energy as log_energy
from ._feedforward import FeedForward as FeedForward
from ._field import (
    SA as SA,
)
from ._field import (
    USA as USA,
)
from ._field import (
    AbstractField as AbstractField,
)
from ._field import (
    AbstractSphereField as AbstractSphereField,
)
from ._field import (
    PostLN as PostLN,
)
