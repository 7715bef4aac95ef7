"""Analysis of configurations, of the equiangular reduction, and Wasserstein distances between
measures (docs/science.md sections 4-6)."""

from ._clusters import (
    close_pairs as close_pairs,
    cosine_histogram as cosine_histogram,
    count_clusters as count_clusters,
    order_parameter as order_parameter,
    pair_fraction as pair_fraction,
)
from ._equiangular import (
    check_equiangular as check_equiangular,
    crossing_time as crossing_time,
    equiangular as equiangular,
    equiangular_rho as equiangular_rho,
    equiangular_speed_over_gap as equiangular_speed_over_gap,
    mean_cosine_gap as mean_cosine_gap,
)
from ._hemisphere import (
    hemisphere as hemisphere,
    in_hemisphere as in_hemisphere,
    wendel_probability as wendel_probability,
)
from ._long_context import (
    long_context_attention as long_context_attention,
    long_context_cosine as long_context_cosine,
)
from ._wasserstein import (
    COSTS as COSTS,
    wasserstein as wasserstein,
    wasserstein_circle as wasserstein_circle,
    wasserstein_exact as wasserstein_exact,
)
