"""`metastability`: clusters that live long before merging, on the circle (GLPR Fig. 4)."""

from collections.abc import Callable

import equinox as eqx
import numpy as np

from .._checks import as_float_array
from .._deprecated import keyword_key
from ..analysis import count_clusters
from ..fields import energy
from ..integrate import Layers, integrate, layer_indices, solver_config, span_reduction
from ..sweep import (
    DEFAULT_MEMORY,
    AbstractStudyItem,
    check_study,
    collect,
    labelled,
    report,
    run,
    study_args,
    study_config,
)
from ._common import GLPR_LAYERS, directions, make_field, model, study_solver
from ._phase_diagram import phase_diagram_sample


class Metastability(eqx.Module):
    """Cluster counts and energies along discrete-layer runs at a few temperatures.

    `clusters[b, s, k]`: the number of clusters (`count_clusters` with `delta`) of realization
    `s` at `beta = betas[b]` and time `ts[k]`; `energy[b, s, k]`: its `E_beta`; `xs[b]`: the
    whole trajectory of realization 0, shape `(T, n, d)` (for pictures). `status[b, s]`: 0 when
    the run ended with finite tokens (see `attnflow.STATUS`); failed items are reported by a
    `RuntimeWarning`, and their rows should not be read as data.
    """

    betas: np.ndarray
    ts: np.ndarray
    clusters: np.ndarray
    energy: np.ndarray
    xs: np.ndarray
    config: dict = eqx.field(static=True)
    status: np.ndarray

    def to_xarray(self):
        """The study as an `xarray.Dataset` (needs xarray): `clusters` and `energy` over
        `(beta, sample, t)`, `xs` (realization 0) over `(beta, t, token, d)`, `status` over
        `(beta, sample)`; its attributes hold `config` and attnflow's version."""
        runs = ("beta", "sample", "t")
        variables = {"clusters": (runs, self.clusters), "energy": (runs, self.energy)}
        variables["xs"] = (("beta", "t", "token", "d"), self.xs)
        return labelled(self, "metastability", variables)

    def summary(self) -> list[str]:
        """One line per beta: the share of realizations with each number of clusters at the
        last save time."""
        lines = []
        for b, beta in enumerate(self.betas):
            values, counts = np.unique(self.clusters[b, :, -1], return_counts=True)
            share = ", ".join(
                f"{v}: {c / self.clusters.shape[1]:.0%}"
                for v, c in zip(values, counts, strict=True)
            )
            lines.append(f"  beta = {beta:g}: clusters at t = {self.ts[-1]:g}: {share}")
        return lines


class MetastabilityItem(AbstractStudyItem):
    """One item of `metastability`: the static configuration, hashable (compiled once); the
    traced values `betas`, `key`, `delta`, `ts` come in `args`."""

    kind: Callable = eqx.field(static=True)
    steps: tuple[int, ...] = eqx.field(static=True)
    solver: Layers = eqx.field(static=True)

    def tokens(self, key, sample):
        """Realization `sample`: the tokens of `phase_diagram_sample` with identity weights."""
        return phase_diagram_sample(key, sample, n=self.n, d=self.d, dtype=self.dtype)[0]

    def trajectory(self, beta, x0, ts, save):
        field = make_field(self.kind, beta, None, None, None)
        lift = None
        reduced = span_reduction(field, x0)
        if reduced is not None:  # d > n: the same flow in the span of x0, n coordinates
            field, x0, lift = reduced

        def statistic(t, x):
            return save(t, directions(field, x if lift is None else lift(x)))

        return integrate(field, x0, ts, self.solver, save=statistic, steps=self.steps, throw=False)

    def __call__(self, index, args):
        beta = self.beta(index, args)
        x0 = self.tokens(args["key"], self.sample(index))

        def save(t, x):
            return {"clusters": count_clusters(x, args["delta"]), "energy": energy(x, beta)}

        trajectory = self.trajectory(beta, x0, args["ts"], save)
        return {**trajectory.xs, "status": trajectory.status}


@keyword_key
def metastability(
    *,
    key,
    n: int = 32,
    d: int = 2,
    betas=(4.0, 9.0),
    ts=None,
    samples: int = 256,
    delta: float = 1e-3,
    solver: Layers = GLPR_LAYERS,
    h: float | None = None,
    kind="SA",
    dtype=None,
    memory: int = DEFAULT_MEMORY,
    devices=None,
    progress: bool = True,
) -> Metastability:
    """Runs of `n` uniform tokens on `S^{d-1}` (the circle by default), `Q = K = V = I`,
    discrete layers `solver = Layers(h)` (`h = 0.1` by default; `h=` is its deprecated
    spelling), at each `beta > 0`, with the number of clusters and the energy
    at each save time (`ts`, default `0, 0.1, ..., 30`). Realization `s` starts from the tokens
    of `phase_diagram_sample(key, s, n=n, d=d)`: the same realizations as `phase_diagram` and
    `ftle_diagram` with the same key, for every beta.

    `kind`: any model of `attnflow.studies.MODELS` or a callable `(beta, Q, K, V) -> field`
    (clusters and energies of the schemes in `R^d` are measured on the directions).

    At large beta the cluster count sits on plateaus while the energy climbs a staircase: the
    tokens gather fast into a few clusters that then merge slowly, one at a time.
    """
    factory, name, _ = model(kind)
    n, d, samples, dtype, betas = check_study(n, d, samples, delta, dtype, betas, True)
    solver = study_solver(solver, h)
    if not isinstance(solver, Layers):
        raise ValueError(
            "metastability runs the discrete layers: solver must be attnflow.Layers(h); "
            f"got {solver!r}"
        )
    h = solver.h
    ts = np.asarray(np.arange(301) * h if ts is None else as_float_array(ts, "ts"), dtype)
    static = dict(n=n, d=d, samples=samples, dtype=dtype.name)
    item = MetastabilityItem(**static, kind=factory, steps=layer_indices(ts, h), solver=solver)
    args = study_args(key, betas, dtype, delta, ts)
    config = study_config("metastability", key, n, d, betas, ts, samples, delta, name, dtype)
    config |= solver_config(solver)
    count = betas.size * samples
    clusters = np.zeros((count, ts.size), np.int32)
    energies = np.zeros((count, ts.size), dtype)
    status = np.zeros(count, np.int8)
    chunks = run(
        item,
        count,
        args=args,
        bytes_per_item=dtype.itemsize * (12 * n * d + 10 * n * n + 2 * ts.size),
        memory=memory,
        devices=devices,
        progress=progress,
        desc="metastability",
    )
    collect(chunks, clusters=clusters, energy=energies, status=status)
    x0 = item.tokens(key, 0)
    xs = np.stack(
        [np.asarray(item.trajectory(beta, x0, args["ts"], lambda t, x: x).xs) for beta in betas]
    )
    shape = (betas.size, samples, ts.size)
    status = status.reshape(betas.size, samples)
    report(status, betas)
    return Metastability(
        betas=betas,
        ts=ts,
        clusters=clusters.reshape(shape),
        energy=energies.reshape(shape),
        xs=xs,
        config=config,
        status=status,
    )
