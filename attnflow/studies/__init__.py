"""Batched studies built on the sweep engine: phase diagrams, metastability (GLPR Figs. 3-5)
and finite-time Lyapunov exponents, for every model of `MODELS` or any field."""

from ..sweep import SweepFailureWarning as SweepFailureWarning
from ._common import MODELS as MODELS
from ._ftle import FTLEDiagram as FTLEDiagram, ftle_diagram as ftle_diagram
from ._metastability import Metastability as Metastability, metastability as metastability
from ._phase_diagram import (
    WEIGHTS as WEIGHTS,
    PhaseDiagram as PhaseDiagram,
    close_pair_count as close_pair_count,
    phase_diagram as phase_diagram,
    phase_diagram_sample as phase_diagram_sample,
    random_weights as random_weights,
    span_coordinates as span_coordinates,
)
