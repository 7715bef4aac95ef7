"""`metastability`: clusters that live long before merging, on the circle (GLPR Fig. 4)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .. import sphere
from .._checks import as_float_array
from .._simulate import LAYERS, _layer_indices, _simulate_layers
from ..analysis import count_clusters
from ..fields import energy
from ..sweep import DEFAULT_MEMORY, item_key, run
from ._phase_diagram import KINDS, check_study, study_config


@dataclasses.dataclass(frozen=True)
class Metastability:
    """Cluster counts and energies along discrete-layer runs at a few temperatures.

    `clusters[b, s, k]`: the number of clusters (`count_clusters` with `delta`) of realization
    `s` at `beta = betas[b]` and time `ts[k]`; `energy[b, s, k]`: its `E_beta`; `xs[b]`: the
    whole trajectory of realization 0, shape `(T, n, 2)` on the circle (for pictures).
    """

    betas: np.ndarray
    ts: np.ndarray
    clusters: np.ndarray
    energy: np.ndarray
    xs: np.ndarray
    config: dict


def metastability(
    key: jax.Array,
    *,
    n: int = 32,
    d: int = 2,
    betas=(4.0, 9.0),
    ts=None,
    samples: int = 256,
    delta: float = 1e-3,
    h: float = 0.1,
    kind: str = "SA",
    dtype=None,
    memory: int = DEFAULT_MEMORY,
    devices=None,
    progress: bool = True,
) -> Metastability:
    """Runs of `n` uniform tokens on `S^{d-1}` (the circle by default), `Q = K = V = I`,
    discrete layers of step `h`, at each `beta > 0`, with the number of clusters and the energy
    at each save time (`ts`, default `0, 0.1, ..., 30`). Realization `s` starts from
    `sphere.uniform(jax.random.fold_in(key, s), n, d)`, the same for every beta.

    At large beta the cluster count sits on plateaus while the energy climbs a staircase: the
    tokens gather fast into a few clusters that then merge slowly, one at a time.
    """
    n, d, samples, dtype, betas = check_study(n, d, samples, kind, delta, dtype, betas, True)
    if not h > 0:
        raise ValueError(f"h must be positive; got {h}")
    ts = np.arange(301) * h if ts is None else np.asarray(as_float_array(ts, "ts"), dtype=dtype)
    steps = _layer_indices(ts, h)
    field_of = KINDS[kind]
    grid = jnp.asarray(betas)

    def trajectory(beta, x0, save):
        return _simulate_layers(field_of(beta), x0, jnp.asarray(ts), steps, h, save).xs

    def item(index):
        beta = grid[index // samples]
        x0 = sphere.uniform(item_key(key, index % samples), n, d, dtype)
        return trajectory(
            beta, x0, lambda t, x: {"clusters": count_clusters(x, delta), "energy": energy(x, beta)}
        )

    count = betas.size * samples
    clusters = np.zeros((count, ts.size), np.int32)
    energies = np.zeros((count, ts.size), dtype)
    itemsize = np.dtype(dtype).itemsize
    chunks = run(
        item,
        count,
        bytes_per_item=itemsize * (12 * n * d + 10 * n * n + 2 * ts.size),
        memory=memory,
        devices=devices,
        progress=progress,
        desc="metastability",
    )
    for start, stop, results in chunks:
        clusters[start:stop] = results["clusters"]
        energies[start:stop] = results["energy"]
    x0 = sphere.uniform(item_key(key, 0), n, d, dtype)
    xs = np.stack([np.asarray(trajectory(beta, x0, None)) for beta in grid])
    config = study_config("metastability", key, n, d, betas, ts, samples, delta, kind, dtype)
    config |= {"solver": LAYERS, "h": float(h)}
    shape = (betas.size, samples, ts.size)
    return Metastability(
        betas=betas,
        ts=ts,
        clusters=clusters.reshape(shape),
        energy=energies.reshape(shape),
        xs=xs,
        config=config,
    )
