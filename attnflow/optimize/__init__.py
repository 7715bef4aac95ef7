"""Gradient-based parameter searches through the flow, with optax.

Differentiate any scalar of a `simulate` result (`jax.grad`, through every solver; see
`simulate`'s `adjoint`), minimize it with `search`, fit the idealized flow to recorded token
trajectories with `fit_trajectory`, and run the worked searches of the `attnflow search` CLI.
"""

from ..fields import energy as energy, log_energy as log_energy
from ._fit import (
    fit_trajectory as fit_trajectory,
    identifiable as identifiable,
    velocity_guess as velocity_guess,
)
from ._objectives import (
    soft_cluster_count as soft_cluster_count,
    soft_collapse_time as soft_collapse_time,
    trajectory_loss as trajectory_loss,
)
from ._search import (
    OPTIMIZERS as OPTIMIZERS,
    SearchResult as SearchResult,
    SearchWarning as SearchWarning,
    optimizer as optimizer,
    search as search,
)
from ._worked import (
    Recovery as Recovery,
    SmallestBeta as SmallestBeta,
    ValueForGroups as ValueForGroups,
    recover_parameters as recover_parameters,
    smallest_beta as smallest_beta,
    value_for_groups as value_for_groups,
)
