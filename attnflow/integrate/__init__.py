"""The integration core: every run of a field from initial tokens goes through `integrate`,
with a solver object (a diffrax solver, or `Layers(h)`, the discrete transformer);
`simulate` is its checked entry point, `simulate_sde` the noisy flow."""

from ._core import (
    STATUS as STATUS,
    Layers as Layers,
    Rejectable as Rejectable,
    Stepper as Stepper,
    Trajectory as Trajectory,
    as_solver as as_solver,
    controller as controller,
    integrate as integrate,
    layer_indices as layer_indices,
    ode_solvers as ode_solvers,
    onto_sphere as onto_sphere,
    solve_checked as solve_checked,
    solver_config as solver_config,
    state_status as state_status,
)
from ._sde import simulate_sde as simulate_sde
from ._simulate import simulate as simulate, span_reduction as span_reduction
