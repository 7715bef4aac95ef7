"""Low-temperature concentration (Alcalde, Bungert, Riedl, Roith 2026): the zero-temperature
flow in `R^d`, its limit map and push-forward, and the Wasserstein distance of the finite-beta
flow to that push-forward over `(beta, t)`."""

from ._limit import (
    LIMIT_STATUS as LIMIT_STATUS,
    Limit as Limit,
    LimitNotReached as LimitNotReached,
    Pushforward as Pushforward,
    attention_flow as attention_flow,
    hardmax_flow as hardmax_flow,
    hardmax_limit as hardmax_limit,
    limit_map as limit_map,
    pushforward as pushforward,
)
from ._study import (
    INITS as INITS,
    Concentration as Concentration,
    concentration as concentration,
    eigenvectors as eigenvectors,
    initial_tokens as initial_tokens,
    rate as rate,
)
