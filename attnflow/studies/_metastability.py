"""`metastability`: clusters that live long before merging, on the circle (GLPR Fig. 4)."""

import dataclasses
import math
from collections.abc import Callable

import equinox as eqx
import numpy as np

from .._checks import as_float_array
from .._simulate import LAYERS, _layer_indices, _simulate_layers, span_reduction
from ..analysis import count_clusters
from ..fields import energy
from ..sweep import DEFAULT_MEMORY, run
from ._common import (
    check_study,
    directions,
    make_field,
    model,
    report,
    study_args,
    study_config,
)
from ._phase_diagram import phase_diagram_sample


@dataclasses.dataclass(frozen=True)
class Metastability:
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
    config: dict
    status: np.ndarray


class MetastabilityItem(eqx.Module):
    """One item of `metastability`: the static configuration, hashable (compiled once); the
    traced values `betas`, `key`, `delta`, `ts` come in `args`."""

    n: int = eqx.field(static=True)
    d: int = eqx.field(static=True)
    samples: int = eqx.field(static=True)
    kind: Callable = eqx.field(static=True)
    steps: tuple[int, ...] = eqx.field(static=True)
    h: float = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

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

        return _simulate_layers(field, x0, ts, self.steps, self.h, statistic)

    def __call__(self, index, args):
        beta = args["betas"][index // self.samples]
        x0 = self.tokens(args["key"], index % self.samples)

        def save(t, x):
            return {"clusters": count_clusters(x, args["delta"]), "energy": energy(x, beta)}

        trajectory = self.trajectory(beta, x0, args["ts"], save)
        return {**trajectory.xs, "status": trajectory.status}


def metastability(
    key,
    *,
    n: int = 32,
    d: int = 2,
    betas=(4.0, 9.0),
    ts=None,
    samples: int = 256,
    delta: float = 1e-3,
    h: float = 0.1,
    kind="SA",
    dtype=None,
    memory: int = DEFAULT_MEMORY,
    devices=None,
    progress: bool = True,
) -> Metastability:
    """Runs of `n` uniform tokens on `S^{d-1}` (the circle by default), `Q = K = V = I`,
    discrete layers of step `h`, at each `beta > 0`, with the number of clusters and the energy
    at each save time (`ts`, default `0, 0.1, ..., 30`). Realization `s` starts from the tokens
    of `phase_diagram_sample(key, s, n=n, d=d)`: the same realizations as `phase_diagram` and
    `ftle_diagram` with the same key, for every beta.

    `kind`: any model of `attnflow.studies.MODELS` or a callable `(beta, Q, K, V) -> field`
    (clusters and energies of the schemes in `R^d` are measured on the directions).

    At large beta the cluster count sits on plateaus while the energy climbs a staircase: the
    tokens gather fast into a few clusters that then merge slowly, one at a time.
    """
    n, d, samples, dtype, betas = check_study(n, d, samples, kind, delta, dtype, betas, True)
    if not (isinstance(h, float | int) and math.isfinite(h) and h > 0):
        raise ValueError(f"h must be a finite positive number; got {h!r}")
    ts = np.arange(301) * h if ts is None else np.asarray(as_float_array(ts, "ts"), dtype=dtype)
    ts = ts.astype(dtype)
    item = MetastabilityItem(
        n=n,
        d=d,
        samples=samples,
        kind=model(kind)[0],
        steps=_layer_indices(ts, h),
        h=float(h),
        dtype=dtype.name,
    )
    args = study_args(key, betas, dtype, delta, ts)
    config = study_config("metastability", key, n, d, betas, ts, samples, delta, kind, dtype)
    config |= {"solver": LAYERS, "h": float(h)}
    count = betas.size * samples
    clusters = np.zeros((count, ts.size), np.int32)
    energies = np.zeros((count, ts.size), dtype)
    status = np.zeros(count, np.int8)
    itemsize = np.dtype(dtype).itemsize
    chunks = run(
        item,
        count,
        args=args,
        bytes_per_item=itemsize * (12 * n * d + 10 * n * n + 2 * ts.size),
        memory=memory,
        devices=devices,
        progress=progress,
        desc="metastability",
    )
    for start, stop, results in chunks:
        clusters[start:stop] = results["clusters"]
        energies[start:stop] = results["energy"]
        status[start:stop] = results["status"]
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
