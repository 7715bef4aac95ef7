"""Analysis of configurations and of the equiangular reduction (SCIENCE.md sections 5-6)."""

from ._clusters import (
    close_pairs as close_pairs,
)
from ._clusters import (
    cosine_histogram as cosine_histogram,
)
from ._clusters import (
    count_clusters as count_clusters,
)
from ._clusters import (
    order_parameter as order_parameter,
)
from ._clusters import (
    pair_fraction as pair_fraction,
)
from ._equiangular import crossing_time as crossing_time
from ._equiangular import equiangular_rho as equiangular_rho
