"""`MODELS`: every named dynamics, with what is known of it in closed form.

The one table that the studies, the equiangular reduction, the mean-field PDE, the stability
results, the fits and the command line read, instead of lists of names of their own.
"""

from collections.abc import Callable

import equinox as eqx

from ._attention import Hardmax, MultiHead, Sinkhorn, Softmax
from ._field import SA, USA, PostLN
from ._normalization import NGPT, PeriLN, PreLN


class Model(eqx.Module):
    """One named dynamics: `model(beta, Q=None, K=None, V=None)` is its vector field.

    `equiangular`: its equiangular configurations (`n` tokens of common cosine `rho`) stay
    equiangular, with `rho` obeying one ODE (`attnflow.analysis.equiangular`).
    `closed_form`: post-LN dot-product attention with a closed-form kernel in `<x_i, x_j>`
    alone (SA, USA): the crossing time of `rho` (`crossing_time`), the circle's mean-field PDE
    (`attnflow.meanfield`), the linear stability results (`stability.known_results`) and the
    fits of `optimize.fit_trajectory` are written for it.
    """

    name: str = eqx.field(static=True)
    make: Callable = eqx.field(static=True)
    equiangular: bool = eqx.field(static=True, default=False)
    closed_form: bool = eqx.field(static=True, default=False)

    def __call__(self, beta, Q=None, K=None, V=None):
        return self.make(beta, Q, K, V)


def _pre_ln(beta, Q=None, K=None, V=None):
    return PreLN(Softmax(beta, Q, K, V))


def _peri_ln(beta, Q=None, K=None, V=None):
    return PeriLN(Softmax(beta, Q, K, V))


def _ngpt(beta, Q=None, K=None, V=None):
    return NGPT(Softmax(beta, Q, K, V), 1.0)


def _sinkhorn(beta, Q=None, K=None, V=None):
    # not converged within max_iter: NaN weights, a failed item (see STATUS), not a crash
    return PostLN(Sinkhorn(beta, Q, K, V, throw=False))


def _causal_sa(beta, Q=None, K=None, V=None):
    return PostLN(Softmax(beta, Q, K, V, causal=True))


def _hardmax(beta, Q=None, K=None, V=None):
    return PostLN(Hardmax(Q, K, V))  # beta unused


def _multi_head(beta, Q=None, K=None, V=None):
    # two heads sharing V, the second with the transposed interaction (K, Q); with Q = K the
    # heads agree and the velocity is twice SA's
    return PostLN(MultiHead([Softmax(beta, Q, K, V), Softmax(beta, K, Q, V)]))


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model("SA", SA, equiangular=True, closed_form=True),  # Post-LN softmax attention
        Model("USA", USA, equiangular=True, closed_form=True),  # unnormalized: Z_i -> n
        Model("PreLN", _pre_ln, equiangular=True),
        Model("PeriLN", _peri_ln, equiangular=True),
        Model("nGPT", _ngpt, equiangular=True),
        Model("Sinkhorn", _sinkhorn),
        Model("CausalSA", _causal_sa),
        Model("Hardmax", _hardmax),
        Model("MultiHead", _multi_head),
    )
}

# The post-LN dynamics with a closed-form kernel by name: `KINDS[kind](beta, Q, K, V)`.
KINDS: dict[str, Callable] = {name: m.make for name, m in MODELS.items() if m.closed_form}
