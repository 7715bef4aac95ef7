"""Figures (matplotlib, imported lazily so attnflow itself never needs it)."""

from ._studies import (
    plot_figure3 as plot_figure3,
    plot_metastability as plot_metastability,
    plot_phase_diagram as plot_phase_diagram,
)
from ._trajectory import plot_trajectory as plot_trajectory

__all__ = ["plot_figure3", "plot_metastability", "plot_phase_diagram", "plot_trajectory"]
