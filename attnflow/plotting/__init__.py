"""Figures (matplotlib, imported lazily so attnflow itself never needs it)."""

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

__all__ = [
    "plot_figure3",
    "plot_long_context",
    "plot_metastability",
    "plot_normalization",
    "plot_phase_diagram",
    "plot_trajectory",
]
