"""Figures (matplotlib, imported lazily so attnflow itself never needs it)."""

from ._animate import animate as animate
from ._concentration import plot_concentration as plot_concentration
from ._flows import plot_flow_comparison as plot_flow_comparison
from ._meanfield import (
    plot_meanfield as plot_meanfield,
    plot_sphere_density as plot_sphere_density,
)
from ._optimize import (
    plot_recovery as plot_recovery,
    plot_smallest_beta as plot_smallest_beta,
    plot_value_groups as plot_value_groups,
)
from ._pretrained import plot_pretrained_clusters as plot_pretrained_clusters
from ._stability import (
    plot_fixed_points as plot_fixed_points,
    plot_ftle as plot_ftle,
    plot_lyapunov as plot_lyapunov,
)
from ._studies import (
    plot_figure3 as plot_figure3,
    plot_metastability as plot_metastability,
    plot_phase_diagram as plot_phase_diagram,
)
from ._trajectory import plot_trajectory as plot_trajectory
from ._variants import (
    plot_long_context as plot_long_context,
    plot_normalization as plot_normalization,
)
