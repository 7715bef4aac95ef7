"""What the studies share: the table of models by name, the realizations, argument checks, the
recorded configuration, and the per-item status of a sweep."""

import contextlib
import numbers
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_float_array, positive_int
from .._simulate import STATUS
from ..fields import (
    NGPT,
    SA,
    USA,
    AbstractEuclideanField,
    AbstractField,
    Hardmax,
    MultiHead,
    PeriLN,
    PostLN,
    PreLN,
    Sinkhorn,
    Softmax,
)
from ..sweep import Store


def _multi_head(beta, Q=None, K=None, V=None):
    return PostLN(MultiHead([Softmax(beta, Q, K, V), Softmax(beta, K, Q, V)]))


# Every model a study runs, by name: `MODELS[kind](beta, Q, K, V)` is its vector field.
MODELS: dict[str, Callable] = {
    "SA": SA,  # Post-LN softmax attention on the sphere
    "USA": USA,  # unnormalized: Z_i replaced by n
    "PreLN": lambda beta, Q=None, K=None, V=None: PreLN(Softmax(beta, Q, K, V)),
    "PeriLN": lambda beta, Q=None, K=None, V=None: PeriLN(Softmax(beta, Q, K, V)),
    "nGPT": lambda beta, Q=None, K=None, V=None: NGPT(Softmax(beta, Q, K, V), 1.0),
    # not converged within max_iter: NaN weights, a failed item (see STATUS), not a crash
    "Sinkhorn": lambda beta, Q=None, K=None, V=None: PostLN(Sinkhorn(beta, Q, K, V, throw=False)),
    "CausalSA": lambda beta, Q=None, K=None, V=None: PostLN(Softmax(beta, Q, K, V, causal=True)),
    "Hardmax": lambda beta, Q=None, K=None, V=None: PostLN(Hardmax(Q, K, V)),  # beta unused
    # two heads sharing V, the second with the transposed interaction (K, Q); with Q = K the
    # heads agree and the velocity is twice SA's
    "MultiHead": _multi_head,
}


def model(kind) -> tuple[Callable, str, bool]:
    """`(factory, name, proved)` for `kind`, a name of `MODELS` or a callable
    `(beta, Q, K, V) -> field`. `proved`: the exact shortcuts of the studies (span coordinates,
    stopping once every pair has clustered) are proved for the model with `Q = K = V = I`:
    true for every model of the table (each layer maps a token to a nonnegative combination of
    the tokens, or of their directions, with weights that depend only on inner products), and
    never assumed for a callable."""
    if isinstance(kind, str):
        if kind not in MODELS:
            raise ValueError(
                f"kind must be one of {', '.join(MODELS)}, or a callable "
                f"(beta, Q, K, V) -> field; got {kind!r}"
            )
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


def key_data(key) -> list[int]:
    """The raw data of a JAX random key, as recorded in a study's configuration."""
    if isinstance(key, numbers.Integral):
        raise ValueError("key must be a JAX random key, e.g. jax.random.key(0); got an int")
    if not hasattr(key, "dtype"):
        raise ValueError(f"key must be a JAX random key, e.g. jax.random.key(0); got {key!r}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).ravel().tolist()


def check_study(n, d, samples, kind, delta, dtype, betas, positive: bool):
    """Validate the options every study shares; returns `n, d, samples, dtype, betas`, with
    `betas` a NumPy array of `dtype` of finite values `>= 0` (`> 0` if `positive`)."""
    n = positive_int(n, "n", 2)
    d = positive_int(d, "d", 2)
    samples = positive_int(samples, "samples")
    model(kind)
    if not (isinstance(delta, numbers.Real) and 0 <= delta <= 2):
        raise ValueError(f"delta must lie in [0, 2]; got {delta!r}")
    dtype = jnp.dtype(dtype or jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype; got {dtype}")
    betas = np.asarray(as_float_array(betas, "betas"), dtype=dtype)
    low, bound = (betas > 0, "> 0") if positive else (betas >= 0, ">= 0")
    if betas.ndim != 1 or betas.size < 1 or not np.all(np.isfinite(betas) & low):
        raise ValueError(
            f"betas must be a non-empty 1-D array of finite values {bound}; got {betas}"
        )
    return n, d, samples, dtype, betas


def study_config(study, key, n, d, betas, ts, samples, delta, kind, dtype) -> dict:
    """The configuration a study records (JSON-ready), with its seed and the package version."""
    from .. import __version__

    return {
        "study": study,
        "key": key_data(key),
        "n": n,
        "d": d,
        "betas": betas.tolist(),
        "ts": ts.tolist(),
        "samples": samples,
        "delta": None if delta is None else float(delta),
        "kind": model(kind)[1],
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


def failures(status: np.ndarray, betas: np.ndarray) -> str | None:
    """One line describing the failed items of a `(betas, samples)` status array, or None."""
    failed = status != 0
    if not failed.any():
        return None
    kinds = ", ".join(
        f"{int((status == code).sum())} {STATUS[code]}" for code in np.unique(status[failed])
    )
    where = ", ".join(f"{betas[b]:g}" for b in np.unique(np.nonzero(failed)[0])[:8])
    more = "..." if np.unique(np.nonzero(failed)[0]).size > 8 else ""
    return (
        f"{int(failed.sum())} of {status.size} items failed ({kinds}) at beta = {where}{more}; "
        "they are left out of the averages (see .status)"
    )


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


def open_store(store, config: dict, count: int):
    """The `Store` at `store` (a context manager that holds its lock), or none."""
    return contextlib.nullcontext() if store is None else Store(store, config, count)
