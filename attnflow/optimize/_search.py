"""`search`: an optax loop over the parameters of a loss, compiled once, resumable."""

import functools
import hashlib
import json
import numbers
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree
from tqdm.auto import tqdm

from .._checks import check_bool, positive_int
from .._files import atomic_write

# Optimizers by name, with the learning rate used when none is given.
OPTIMIZERS = {
    "adam": 1e-2,
    "adamw": 1e-2,
    "adabelief": 1e-2,
    "lion": 1e-3,
    "rmsprop": 1e-2,
    "sgd": 1e-2,
    "lbfgs": None,  # a line search chooses the step
}
_FORMAT = "attnflow-search/1"


class SearchWarning(UserWarning):
    """A search stopped early: its loss or gradient was not finite, or a check inside the loss
    failed at run time."""


class SearchResult(eqx.Module):
    """The outcome of `search`.

    `params`: the parameters with the lowest loss seen (the initial ones included), of the
    structure of the initial `params`. `loss`: that loss. `history`: the loss of the
    parameters after each step, `history[k] = loss(params_k)` for `k = 0..K` (`params_0` the
    initial ones, `K` the number of steps taken; `K + 1` entries, or fewer when a failure
    stopped the search before its last parameters were evaluated). `best`: the index `k` of
    `params` in it.
    """

    params: PyTree
    loss: Float[Array, ""]
    history: Float[Array, " K"]
    best: Int[Array, ""]


def optimizer(name: str, learning_rate: float | None = None) -> optax.GradientTransformation:
    """The optax optimizer `name` (see `OPTIMIZERS`) with `learning_rate` (a default if None).

    Cached: the same name and rate give the same object, so a second search with it reuses
    the compiled step. `"lbfgs"` takes no learning rate (its line search sets the step).
    """
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be an optax GradientTransformation or one of "
            f"{', '.join(map(repr, OPTIMIZERS))}; got {name!r:.80}"
        )
    if name == "lbfgs":
        if learning_rate is not None:
            raise ValueError("the 'lbfgs' optimizer takes no learning rate (a line search sets it)")
        return _named(name, None)
    rate = OPTIMIZERS[name] if learning_rate is None else learning_rate
    real = isinstance(rate, numbers.Real) and not isinstance(rate, bool)
    if not (real and 0 < rate < np.inf):
        raise ValueError(f"learning_rate must be a positive number; got {learning_rate!r:.80}")
    return _named(name, float(rate))


@functools.cache
def _named(name: str, rate: float | None) -> optax.GradientTransformation:
    return optax.lbfgs() if rate is None else getattr(optax, name)(rate)


def _as_optimizer(opt) -> optax.GradientTransformation:
    return opt if isinstance(opt, optax.GradientTransformation) else optimizer(opt)


def _as_params(params) -> PyTree:
    """`params` with float leaves (Python floats, NumPy arrays) as JAX arrays, checked finite."""

    def convert(leaf):
        if isinstance(leaf, float) or (
            isinstance(leaf, np.ndarray | np.floating) and np.issubdtype(leaf.dtype, np.floating)
        ):
            return jnp.asarray(leaf)
        return leaf

    params = jax.tree.map(convert, params)
    leaves = jax.tree_util.tree_leaves_with_path(eqx.filter(params, eqx.is_inexact_array))
    if not leaves:
        raise ValueError(
            "params must hold at least one floating-point array (the leaves to optimize); "
            f"got {params!r:.100}"
        )
    for path, leaf in leaves:
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(
                f"params must be finite; params{jax.tree_util.keystr(path)} holds "
                f"{int((~jnp.isfinite(leaf)).sum())} non-finite entries"
            )
    return params


def _check_loss(loss, params) -> None:
    if not callable(loss):
        raise ValueError(f"loss must be a callable loss(params) -> scalar; got {loss!r:.80}")
    out = eqx.filter_eval_shape(loss, params)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == ()):
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"loss must return a scalar; got {shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"loss must return a real floating-point scalar; got dtype {out.dtype}")


def _message(err: Exception) -> str:
    """The message of an `equinox.EquinoxRuntimeError`, without its stack and advice."""
    lines = [line for line in str(err).splitlines() if "EquinoxRuntimeError:" in line]
    return lines[0].split("EquinoxRuntimeError:", 1)[1].strip() if lines else str(err)[:200]


def _array(values, dtype) -> Array:
    """A list of floats as a JAX array, with no compilation for a new length."""
    return jax.device_put(np.asarray(values, dtype))


@eqx.filter_jit
def _step(loss, opt, params, state):
    """One optimizer step from `params`: `(new params, new state, loss(params), finite)`, with
    `finite` telling whether the loss and its gradient are finite. The only compiled function
    of a search (the loss of the last parameters is the value of one more step)."""
    trainable, static = eqx.partition(params, eqx.is_inexact_array)

    def value_fn(trainable):
        return loss(eqx.combine(trainable, static))

    value, grads = jax.value_and_grad(value_fn)(trainable)
    update = optax.with_extra_args_support(opt).update  # the loss, for those that need it
    updates, new_state = update(grads, state, trainable, value=value, grad=grads, value_fn=value_fn)
    finite = jnp.isfinite(value) & jnp.all(
        jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
    )
    return eqx.apply_updates(params, updates), new_state, value, finite


class _State(eqx.Module):
    """What a checkpoint holds: enough to continue exactly where the search stopped."""

    params: PyTree
    opt_state: PyTree
    best_params: PyTree
    history: Array


def _fingerprint(params, loss0, first) -> str:
    """Identifies a search by its initial parameters, their loss (the loss function and its
    data) and the parameters after its first step (the optimizer and its hyperparameters), so
    that a checkpoint is never resumed by a different search. Only array values, their
    shapes and their paths in the tree enter: it is the same in every process."""
    digest = hashlib.sha256()
    for tree in (params, loss0, first):
        leaves, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array))
        for path, leaf in leaves:
            leaf = np.asarray(leaf)
            digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape}".encode())
            digest.update(leaf.tobytes())
    return digest.hexdigest()


def _checkpoint(checkpoint) -> Path | None:
    """`checkpoint` as a `Path` (or None), checked before any step."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, str | os.PathLike):
        raise ValueError(f"checkpoint must be a file path or None; got {checkpoint!r:.80}")
    path = Path(checkpoint)
    if path.exists() and not path.is_file():
        raise ValueError(f"checkpoint must be a file path; {path} is not a file")
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(
            f"checkpoint {path}: its folder {folder} does not exist; create it or choose "
            "another path"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"checkpoint {path}: its folder {folder} is not writable; choose another path"
        )
    return path


def _save(path: Path, header: dict, state: _State) -> None:
    """Write the checkpoint whole (`atomic_write`: a temporary file of its own, renamed)."""

    def write(f):
        f.write((json.dumps(header) + "\n").encode())
        eqx.tree_serialise_leaves(f, state)

    atomic_write(path, write)


def _load(path: Path, fingerprint: str, like: _State) -> tuple[dict, _State] | None:
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            header = json.loads(f.readline())
            if header.get("format") != _FORMAT:
                raise ValueError("not an attnflow search checkpoint")
            foreign = header["fingerprint"] != fingerprint
            if not foreign:
                history = _array(np.zeros(header["evaluated"]), like.history.dtype)
                state = eqx.tree_deserialise_leaves(
                    f, eqx.tree_at(lambda s: s.history, like, history)
                )
    except (ValueError, OSError, KeyError, RuntimeError) as err:  # JSONDecodeError included
        raise ValueError(f"checkpoint {path} is damaged or not a search checkpoint: {err}") from err
    if foreign:
        raise ValueError(
            f"checkpoint {path} belongs to another search (different initial params, loss or "
            "data); delete it or choose another path"
        )
    return header, state


def search(
    loss: Callable[[PyTree], Float[Array, ""]],
    params: PyTree,
    optimizer: optax.GradientTransformation | str,
    *,
    steps: int,
    checkpoint: str | os.PathLike | None = None,
    patience: int | None = None,
    progress: bool = True,
    checkpoint_every: int = 10,
) -> SearchResult:
    """Minimize `loss(params)` with an optax optimizer: `steps` gradient steps, compiled once.

    Arguments:
        loss: a function of `params` returning a real scalar; differentiable in its
            floating-point array leaves (typically through `attnflow.simulate`).
        params: the initial parameters, any pytree (an array, a tuple, a field such as
            `attnflow.SA(beta, Q, K, V)`); its floating-point array leaves are optimized,
            everything else is held fixed. Checked finite.
        optimizer: an `optax.GradientTransformation` (e.g. `optax.adam(1e-2)`), or a name
            from `OPTIMIZERS` with its default learning rate (see `optimizer`). Optimizers
            that need the loss itself (`optax.lbfgs`, line searches) get it.
        steps: the number of optimizer steps (at most; see `patience`).
        checkpoint: a file path. Every `checkpoint_every` steps, when the search stops, and on
            Ctrl-C, the state (parameters, optimizer state, history) is written there
            atomically with `equinox` serialization; a later call (in any process) with the
            same `loss`, initial `params` and `optimizer` resumes from it to the same result,
            bit for bit, as an uninterrupted search, and a finished one returns its result
            without stepping. A checkpoint of another search is refused: it is matched by a
            fingerprint of the initial parameters, their loss, and the parameters after the
            first step (which tell the optimizer and its learning rate apart). `steps` may
            grow on resume, not shrink below the steps already taken; `patience` applies anew.
            Its folder must exist and be writable (checked before the first step). Two
            searches on one checkpoint at once both run to their own result, and the file
            always holds a complete checkpoint of one of them, the last written (each write
            goes to a temporary file of its own, then renamed over the checkpoint).
        patience: stop once the best loss has not improved for this many steps (None: never).
        progress: show a tqdm bar with the current and best loss.

    Returns:
        A `SearchResult` with the best parameters seen, their loss, and the loss history.

    The step (`value_and_grad` of `loss`, then the optimizer update) is one `equinox.filter_jit`
    function of `loss` and `optimizer` (static) and the parameters (traced), the only function
    a search compiles: a second search with the same loss and optimizer objects (named
    optimizers are cached) compiles nothing. If the loss or its gradient becomes non-finite,
    or a runtime check inside it fails (a line search trying `beta < 0`), the search stops
    there with a `SearchWarning` and returns the best parameters before it; a non-finite loss
    at the initial parameters is a `ValueError`.
    """
    steps = positive_int(steps, "steps")
    if patience is not None:
        patience = positive_int(patience, "patience")
    checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    check_bool(progress, "progress")
    path = _checkpoint(checkpoint)
    opt = _as_optimizer(optimizer)
    params = _as_params(params)
    _check_loss(loss, params)
    opt_state = opt.init(eqx.filter(params, eqx.is_inexact_array))
    first = _step(loss, opt, params, opt_state)
    loss0 = first[2]
    if not bool(jnp.isfinite(loss0)):
        raise ValueError(f"loss must be finite at the initial params; got {float(loss0)}")
    if not bool(first[3]):
        raise ValueError("the gradient of the loss must be finite at the initial params")
    dtype = loss0.dtype
    header = {"format": _FORMAT, "fingerprint": _fingerprint(params, loss0, first[0])}
    history, best, best_params, failed = [float(loss0)], 0, params, False
    current = (params, opt_state, 0)  # assigned at once: a Ctrl-C never splits it
    if path is not None:
        like = _State(params, opt_state, params, _array(history, dtype))
        loaded = _load(path, header["fingerprint"], like)
        if loaded is not None:
            header, state = loaded
            if header["taken"] > steps:
                raise ValueError(
                    f"checkpoint {path} holds a search of {header['taken']} steps, more than "
                    f"steps={steps}; pass steps >= {header['taken']} to continue it"
                )
            current = (state.params, state.opt_state, header["taken"])
            best, best_params, failed = header["best"], state.best_params, header["failed"]
            history = [float(v) for v in np.asarray(state.history)]
    pending = first if current[2] == 0 else None  # the first step is already computed

    def write():
        if path is not None:
            params, opt_state, taken = current
            header.update(taken=taken, best=best, failed=failed, evaluated=len(history))
            _save(path, header, _State(params, opt_state, best_params, _array(history, dtype)))

    def record(index: int, value: float, at) -> None:
        """`value = loss(params_index)`; `at` those params."""
        nonlocal best, best_params
        del history[index:]
        history.append(value)
        if best >= index:  # re-evaluated after a resume: this very entry
            best = -1
        if np.isfinite(value) and (best < 0 or value < history[best]):
            best, best_params = index, at

    def stop(reason: str) -> None:
        nonlocal failed
        failed = True
        warnings.warn(
            f"{reason} at step {current[2]}; the search stopped there and returns the best "
            "params before it",
            SearchWarning,
            stacklevel=3,
        )

    bar = tqdm(total=steps, initial=current[2], desc="search", disable=not progress, leave=False)
    try:
        while not failed:
            params, opt_state, taken = current
            stalled = patience is not None and taken - best >= patience
            if stalled or (taken == steps and len(history) > taken):
                break  # done: the last params are evaluated
            try:
                step = pending if pending is not None else _step(loss, opt, params, opt_state)
            except eqx.EquinoxRuntimeError as err:  # a check inside the loss (e.g. beta < 0)
                stop(f"the loss raised ({_message(err)})")
                break
            pending = None
            new_params, new_state, value, finite = step
            record(taken, float(value), params)
            if not bool(finite):
                stop(f"the loss or its gradient is not finite (loss {float(value)})")
                break
            if taken == steps:
                break  # the last params evaluated; no step beyond `steps`
            current = (new_params, new_state, taken + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{float(value):.4g}", best=f"{history[best]:.4g}", refresh=False)
            if (taken + 1) % checkpoint_every == 0:
                write()
        write()
    except KeyboardInterrupt:
        write()
        raise
    finally:
        bar.close()
    history = np.asarray(history, dtype)  # NumPy, then device_put: no compilation
    return SearchResult(best_params, *jax.device_put((history[best], history, np.asarray(best))))
