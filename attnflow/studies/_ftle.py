"""`ftle_diagram`: finite-time Lyapunov exponents over `(t, beta)`, to map where the dynamics
is transiently unstable (metastability) on the phase diagram."""

from pathlib import Path

import diffrax
import equinox as eqx
import jax
import numpy as np

from .._checks import positive_int, positive_number
from .._deprecated import keyword_key
from ..integrate import Layers, solver_config, state_status
from ..stability import lyapunov_spectrum
from ..sweep import (
    DEFAULT_MEMORY,
    check_study,
    collect,
    labelled,
    open_store,
    report,
    run,
    study_args,
    study_config,
)
from ._common import GLPR_LAYERS, model, study_solver
from ._phase_diagram import WEIGHTS, AbstractRealizationItem


class FTLEDiagram(eqx.Module):
    """The largest finite-time Lyapunov exponent over time and temperature.

    `ftle[b, s, k]`: realization `s` at `beta = betas[b]`, the largest exponent over
    `[0, ts[k]]` (`(1/t) log` of the growth of the most expanding tangent direction).
    `local[b, s, k]`: the same over the last interval `[ts[k-1], ts[k]]` only (`ts[-1] = 0`):
    positive while the tokens pass a saddle, e.g. a metastable configuration of several
    clusters, and 0 once they rest on the single cluster, whose rotations are neutral.
    `status[b, s]`: 0 when the item's exponents are finite (see `attnflow.STATUS`); a failed
    item's rows are NaN, never read as data, and reported by a `RuntimeWarning`.
    `config` holds every option, as written to disk.
    """

    betas: np.ndarray
    ts: np.ndarray
    ftle: np.ndarray
    local: np.ndarray
    config: dict = eqx.field(static=True)
    status: np.ndarray

    def to_xarray(self):
        """The diagram as an `xarray.Dataset` (needs xarray): `ftle` and `local` over
        `(beta, sample, t)`, `status` over `(beta, sample)`; its attributes hold `config` and
        attnflow's version."""
        runs = ("beta", "sample", "t")
        return labelled(self, "ftle", {"ftle": (runs, self.ftle), "local": (runs, self.local)})


# The seed of the initial tangent vector of every item: one fixed frame (as before `key` was
# required by `lyapunov_spectrum`), so that a diagram does not depend on how it was chunked.
_TANGENTS = 1980


class FTLEItem(AbstractRealizationItem):
    """One item of `ftle_diagram`: `{"ftle": (T,), "status": ()}`, the running estimates of
    the largest exponent; `args` holds `betas` and `key`."""

    t1: float = eqx.field(static=True)
    every: float = eqx.field(static=True)
    solver: Layers | diffrax.AbstractSolver = eqx.field(static=True)

    def __call__(self, index, args):
        field, x0 = self.realization(index, args)
        spectrum = lyapunov_spectrum(
            field,
            x0,
            self.t1,
            k=1,
            every=self.every,
            solver=self.solver,
            throw=False,
            key=jax.random.PRNGKey(_TANGENTS),
        )
        ftle = spectrum.history[:, 0]
        return {"ftle": ftle, "status": state_status(ftle)}


@keyword_key
def ftle_diagram(
    *,
    key,
    n: int = 32,
    d: int = 2,
    betas,
    t1: float = 30.0,
    every: float = 1.0,
    samples: int = 64,
    weights: str = "identity",
    solver=GLPR_LAYERS,
    h: float | None = None,
    kind="SA",
    dtype=None,
    memory: int = DEFAULT_MEMORY,
    devices=None,
    store: str | Path | None = None,
    progress: bool = True,
) -> FTLEDiagram:
    """The largest finite-time Lyapunov exponent of each realization at each `beta`, over time.

    Realization `s` is `phase_diagram_sample(key, s, ...)`, exactly the tokens (and weights)
    of `phase_diagram` with the same key, so the two diagrams can be overlaid. Each item runs
    `stability.lyapunov_spectrum(field, x0, t1, k=1, every=every, ...)` on the tangent bundle
    of `(S^{d-1})^n`, through the sweep engine (chunked, sharded, resumable with `store`).
    The arguments not listed below are those of `phase_diagram` (`solver`: `Layers(0.1)` by
    default).

    Arguments:
        t1: the final time; the estimates are at `ts = every, 2 every, ..., t1`.
        every: the re-orthonormalization (and save) interval; with `Layers` a whole number
            of layers that divides `t1`.

    Returns:
        `FTLEDiagram` with `.ftle` and `.local` of shape `(B, samples, T)`.
    """
    factory, name, _ = model(kind)
    n, d, samples, dtype, betas = check_study(n, d, samples, 0.0, dtype, betas, False)
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    t1 = positive_number(t1, "t1", "the final time")
    every = positive_number(every, "every", "the re-orthonormalization interval")
    solver = study_solver(solver, h)
    intervals = positive_int(round(t1 / every), "t1 / every")
    if abs(intervals * every - t1) > 1e-9 * t1:
        raise ValueError(f"t1 must be a whole number of intervals every = {every}; got t1 = {t1}")
    ts = np.linspace(every, t1, intervals).astype(dtype)
    static = dict(n=n, d=d, samples=samples, dtype=dtype.name)
    item = FTLEItem(**static, weights=weights, kind=factory, t1=t1, every=every, solver=solver)
    config = study_config("ftle", key, n, d, betas, ts, samples, None, name, dtype)
    config |= {"t1": t1, "every": every, "weights": weights, **solver_config(solver)}
    count = betas.size * samples
    ftle = np.zeros((count, ts.size), dtype)
    status = np.zeros(count, np.int8)
    with open_store(store, config, count) as opened:
        chunks = run(
            item,
            count,
            args=study_args(key, betas, dtype),
            bytes_per_item=dtype.itemsize * (24 * n * d + 10 * n * n + 4 * d * d + 2 * ts.size),
            memory=memory,
            devices=devices,
            store=opened,
            progress=progress,
            desc=f"FTLE d={d}",
        )
        collect(chunks, ftle=ftle, status=status)
    status = status.reshape(betas.size, samples)
    ftle = np.where((status == 0)[..., None], ftle.reshape(betas.size, samples, ts.size), np.nan)
    growth = ftle * ts  # log growth over [0, t]
    zero = np.zeros((), dtype)  # an int 0 would promote float32 to float64
    local = np.diff(growth, axis=-1, prepend=zero) / np.diff(ts, prepend=zero)
    report(status, betas)
    return FTLEDiagram(betas=betas, ts=ts, ftle=ftle, local=local, config=config, status=status)
