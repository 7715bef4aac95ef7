"""What every study built on the sweep engine shares: its checks, its recorded configuration,
its traced arguments, its store, and the report of the items that failed."""

import abc
import contextlib
import json
import numbers
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_float_array, float_dtype, positive_int
from .._version import __version__
from ..integrate import STATUS
from ._store import Store


def key_data(key) -> list[int]:
    """The raw data of a JAX random key, as recorded in a study's configuration."""
    if isinstance(key, numbers.Integral):
        raise ValueError("key must be a JAX random key, e.g. jax.random.key(0); got an int")
    if not hasattr(key, "dtype"):
        raise ValueError(f"key must be a JAX random key, e.g. jax.random.key(0); got {key!r}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).ravel().tolist()


def check_study(n, d, samples, delta, dtype, betas, positive: bool):
    """Validate the options every study shares; returns `n, d, samples, dtype, betas`, with
    `betas` a NumPy array of `dtype` of finite values `>= 0` (`> 0` if `positive`)."""
    n = positive_int(n, "n", 2)
    d = positive_int(d, "d", 2)
    samples = positive_int(samples, "samples")
    # a static number, checked in Python (no JAX operation to compile before the sweep)
    if isinstance(delta, bool) or not (isinstance(delta, numbers.Real) and 0 <= delta <= 2):
        raise ValueError(f"delta must lie in [0, 2]; got {delta!r}")
    dtype = float_dtype(dtype)
    betas = np.asarray(as_float_array(betas, "betas"), dtype=dtype)
    low, bound = (betas > 0, "> 0") if positive else (betas >= 0, ">= 0")
    if betas.ndim != 1 or betas.size < 1 or not np.all(np.isfinite(betas) & low):
        raise ValueError(
            f"betas must be a non-empty 1-D array of finite values {bound}; got {betas}"
        )
    return n, d, samples, dtype, betas


def study_config(study, key, n, d, betas, ts, samples, delta, kind: str, dtype) -> dict:
    """The configuration a study records (JSON-ready), with its seed and the package version;
    `kind` is the model's name."""
    return {
        "study": study,
        "key": key_data(key),
        "n": n,
        "d": d,
        "betas": betas.tolist(),
        "ts": ts.tolist(),
        "samples": samples,
        "delta": None if delta is None else float(delta),
        "kind": kind,
        "dtype": np.dtype(dtype).name,
        "version": __version__,
    }


def study_args(key, betas, dtype, delta=None, ts=None) -> dict:
    """The traced values of a study's items (`betas`, `key`, and `delta`, `ts` if given):
    arrays, so new values reuse the compiled items."""
    args = {"betas": jnp.asarray(betas), "key": key}
    if delta is not None:
        args["delta"] = jnp.asarray(delta, dtype)
    if ts is not None:
        args["ts"] = jnp.asarray(ts)
    return args


def failure_counts(codes: np.ndarray, what: str, names=STATUS) -> str:
    """`"3 of 12 <what> (2 <name>, 1 <name>)"` for the nonzero status `codes` (indices into
    `names`), or `""` when there are none."""
    bad = codes != 0
    if not bad.any():
        return ""
    kinds = ", ".join(f"{int((codes == c).sum())} {names[c]}" for c in np.unique(codes[bad]))
    return f"{int(bad.sum())} of {codes.size} {what} ({kinds})"


def failures(status: np.ndarray, betas: np.ndarray) -> str | None:
    """One line describing the failed items of a `(betas, samples)` status array, or None."""
    counts = failure_counts(status, "items failed")
    if not counts:
        return None
    rows = np.unique(np.nonzero(status != 0)[0])
    where = ", ".join(f"{betas[b]:g}" for b in rows[:8]) + ("..." if rows.size > 8 else "")
    return f"{counts} at beta = {where}; they are left out of the averages (see .status)"


class SweepFailureWarning(RuntimeWarning):
    """Some items of a study failed; they are recorded in its `status` and left out."""


def report(status: np.ndarray, betas: np.ndarray) -> None:
    """Warn (`SweepFailureWarning`) when some items of a study failed."""
    line = failures(status, betas)
    if line is not None:
        warnings.warn(line, SweepFailureWarning, stacklevel=3)


def study_times(ts, dtype) -> np.ndarray:
    """`ts` as a NumPy array of `dtype`, checked to be a strictly increasing 1-D array of at
    least two finite times."""
    ts = np.asarray(as_float_array(ts, "ts"), dtype=dtype)
    if ts.ndim != 1 or ts.size < 2 or not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) > 0):
        raise ValueError(f"ts must be a strictly increasing 1-D array of >= 2 times; got {ts}")
    return ts


def collect(chunks, **arrays: np.ndarray) -> None:
    """Copy the results of each chunk `(start, stop, results)` of `run` into rows `start:stop`
    of the array of the same name."""
    for start, stop, results in chunks:
        for name, array in arrays.items():
            array[start:stop] = results[name]


def open_store(store, config: dict, count: int):
    """The `Store` at `store` (a context manager that holds its lock), or none.

    In a multi-process run (`attnflow.distributed`), every process must have the same
    configuration; process 0 opens the store first (takes the lock, checks the chunks, writes
    the manifest), then the others open it as members: a failure on any process is raised on
    every process."""
    if store is None:
        return contextlib.nullcontext()
    from ..distributed import agree, is_main, same_everywhere  # one process: no-op, the action

    same_everywhere(sorted(config.items()), "arguments (the study's configuration)")
    first = agree(lambda: Store(store, config, count) if is_main() else None)
    try:
        member = agree(lambda: None if is_main() else Store(store, config, count, member=True))
    except ValueError:
        if first is not None:
            first.close()
        raise
    return first if is_main() else member


class AbstractStudyItem(eqx.Module):
    """Item `index` of a study over `(beta, realization)` pairs, `(index, args) -> results`:
    `beta = args["betas"][index // samples]` (`beta(index, args)`) and realization
    `index % samples` (`sample(index)`), drawn from `args["key"]` by the study's sampler,
    which takes `(key, sample, *, n, d, ..., dtype)` like `phase_diagram_sample`.

    The fields are the static configuration, hashable, so the sweep engine compiles an item
    once and reuses the executable; `args` holds the traced values (`betas`, `key`, ...)."""

    n: int = eqx.field(static=True)
    d: int = eqx.field(static=True)
    samples: int = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def sample(self, index):
        """The realization of item `index`."""
        return index % self.samples

    def beta(self, index, args):
        """The inverse temperature of item `index`."""
        return args["betas"][index // self.samples]

    @abc.abstractmethod
    def __call__(self, index, args) -> dict:
        """The item's results: a dict of arrays, with an int `"status"` (0 = ok)."""


def labelled(result, study: str, variables: dict):
    """A study's result as an `xarray.Dataset`: `variables` maps each name to `(dims, array)`,
    beside the result's `status` over `(beta, sample)`, with the coordinates `beta`
    (`result.betas`), `t` (`result.ts`) and `sample` (`0, 1, ...`); the attributes hold the
    study's name, its whole configuration (JSON, as `result.config`) and attnflow's version,
    so a file written from it (`to_netcdf`) says what made it. Complex arrays are split into
    `_real`/`_imag` parts and booleans stored as int8 (netCDF has neither type)."""
    try:
        import xarray
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "labelled results need xarray: pip install 'attnflow[xarray]'"
        ) from err
    data = {}
    variables = variables | {"status": (("beta", "sample"), result.status)}
    for name, (dims, array) in variables.items():
        array = np.asarray(array)
        if np.iscomplexobj(array):
            data[f"{name}_real"], data[f"{name}_imag"] = (dims, array.real), (dims, array.imag)
        else:
            data[name] = (dims, array.astype(np.int8) if array.dtype == bool else array)
    coords = {"beta": result.betas, "t": result.ts, "sample": np.arange(result.status.shape[1])}
    attrs = {"study": study, "config": json.dumps(result.config, sort_keys=True)}
    attrs["attnflow_version"] = __version__
    return xarray.Dataset(data, coords={k: np.asarray(v) for k, v in coords.items()}, attrs=attrs)
