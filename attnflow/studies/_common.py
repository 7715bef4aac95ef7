"""What the studies share beyond the sweep harness (`attnflow.sweep`): the table of models by
name and the directions on which clustering is measured."""

from collections.abc import Callable

import diffrax
import jax.numpy as jnp

from .._deprecated import deprecated
from ..fields import MODELS as FIELD_MODELS, AbstractEuclideanField, AbstractField
from ..integrate import Layers, as_solver

# The discrete transformer of GLPR's experiments, layer step 0.1: the studies' default solver.
GLPR_LAYERS = Layers(0.1)


# Every model a study runs, by name: `MODELS[kind](beta, Q, K, V)` is its vector field (the
# factories of `attnflow.fields.MODELS`).
MODELS: dict[str, Callable] = {name: model.make for name, model in FIELD_MODELS.items()}


def model(kind) -> tuple[Callable, str, bool]:
    """`(factory, name, proved)` for `kind`, a name of `MODELS` or a callable
    `(beta, Q, K, V) -> field`. `proved`: the exact shortcuts of the studies (see
    `phase_diagram`) hold for the model: true for every model of the table, never assumed for a
    callable."""
    if isinstance(kind, str) and kind in MODELS:
        return MODELS[kind], kind, True
    if callable(kind):
        name = f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', repr(kind))}"
        return kind, name, False
    raise ValueError(
        f"kind must be one of {', '.join(MODELS)}, or a callable (beta, Q, K, V) -> field; "
        f"got {kind!r}"
    )


def make_field(factory, beta, Q, K, V) -> AbstractField:
    """`factory(beta, Q, K, V)`, checked to be an attnflow vector field."""
    field = factory(beta, Q, K, V)
    if not isinstance(field, AbstractField):
        raise ValueError(
            f"kind must return an attnflow vector field; got {type(field).__name__} "
            "from the callable"
        )
    return field


def directions(field, x):
    """The directions of the tokens for the schemes in `R^d` (Pre-LN, Peri-LN, no
    normalization), where clustering is measured on `x_i / |x_i|`; `x` itself on the sphere."""
    if isinstance(field, AbstractEuclideanField):
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x


def study_solver(solver, h=None):
    """The solver of a study: `Layers(h)` or a diffrax ODE solver (an instance, or by name).

    The old spelling, `solver="layers"` with the step in `h=`, gives `Layers(h)` with a
    `DeprecationWarning`; `h=` with an ODE solver was ignored, and still is."""
    if h is not None:
        deprecated("the study option h=", "solver=attnflow.Layers(h)")
    if isinstance(solver, Layers):
        return solver if h is None else Layers(h)
    if isinstance(solver, str | diffrax.AbstractSolver):  # "layers": deprecated, Layers(h)
        return as_solver(solver, GLPR_LAYERS.h if h is None else h)
    raise ValueError(
        f"solver must be attnflow.Layers(h) or a diffrax ODE solver (or its name); got {solver!r}"
    )
