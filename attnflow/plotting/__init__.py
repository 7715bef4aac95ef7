"""Figures (matplotlib, imported lazily so attnflow itself never needs it)."""

from ._trajectory import plot_trajectory as plot_trajectory

__all__ = ["plot_trajectory"]
