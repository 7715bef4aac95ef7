"""`run`: evaluate a per-item function over many items, chunked, sharded, stored, with progress."""

import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from .._checks import positive_int
from ._store import Store

DEFAULT_MEMORY = 2 * 2**30  # 2 GiB
BATCH = 16  # items vmapped together; a fixed number, so results never depend on the chunk size
_AXIS = "items"
_COMPILED: dict = {}  # (fn, chunk, batch, devices, args signature, memory) -> (chunk, executable)
_CACHE_LIMIT = 64


def use_cpu_cores(count: int | None = None) -> int:
    """Present the CPU to JAX as `count` devices (default: the cores this process may use), so
    that a sweep on the CPU shards its items over every core; returns the number of CPU devices.

    XLA runs one device's program on one core: on a 2-core machine a sweep computes about twice
    as fast on 2 CPU devices as on 1, with the same results to the last bit (the engine's batches
    do not depend on the number of devices). JAX fixes its devices at its first computation, so
    call this before it, right after `import jax`. The `attnflow` commands that sweep call it
    themselves, unless `XLA_FLAGS` (`--xla_force_host_platform_device_count`) or
    `JAX_NUM_CPU_DEVICES` already say how many. On a GPU or TPU the sweeps use the accelerators,
    and the CPU's devices change nothing. One exception on the CPU: with several CPU devices the
    exact assignment (`attnflow.analysis.assignment`, used by `concentration`) runs the
    compiled Hungarian algorithm instead of SciPy in a host callback (which can hang there), and
    its distances move by rounding (1e-16); `attnflow concentration` keeps one device.
    """
    import os

    if count is None:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = positive_int(count, "count")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has computed already: its devices are fixed
        current = len(jax.devices("cpu"))
        if current != count:
            raise ValueError(
                f"JAX has run a computation already, with {current} CPU device(s): call "
                f"use_cpu_cores before the first one to get {count}"
            ) from None
    return count


def select_devices(devices=None) -> list:
    """All JAX devices (`None`), the first `k` of them (an int), or the given list."""
    available = jax.devices()
    if devices is None:
        return available
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must be between 1 and the {len(available)} available "
                f"({available[0].platform}); got {devices}"
            )
        return available[:devices]
    devices = list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    return devices


def chunk_size(
    count: int,
    bytes_per_item: int,
    memory: int,
    devices: int,
    largest: int | None = None,
    batch: int = 1,
) -> int:
    """The largest multiple of `devices * batch` whose items fit in `memory`, and no more than
    needed (`count`, or `largest` items per device, both rounded up to whole batches).

    At least one batch per device; `ValueError` if not even one item per device fits.
    """
    if not memory > 0:
        raise ValueError(f"memory must be a positive number of bytes; got {memory}")
    per_device = memory // (bytes_per_item * devices)
    if per_device < 1:
        raise ValueError(
            f"memory = {memory} bytes cannot hold one item per device "
            f"({bytes_per_item} bytes per item, {devices} devices); raise the budget"
        )
    needed = math.ceil(count / devices)
    if largest is not None:
        needed = min(needed, largest)
    return devices * batch * min(max(1, per_device // batch), math.ceil(needed / batch))


def run(
    fn: Callable[..., dict[str, jax.Array]],
    count: int,
    *,
    args=None,
    bytes_per_item: int,
    memory: int = DEFAULT_MEMORY,
    largest: int | None = None,
    batch: int = BATCH,
    devices: int | Sequence | None = None,
    store: Store | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Evaluate `fn(i)` (or `fn(i, args)`) for `i` in `range(count)`; return an iterator of
    `(start, stop, results)` in order.

    `fn` maps an item index (an int32 scalar), and `args` when given, to a dict of arrays; it
    must derive everything it needs (its parameters, its random key) from the index and `args`,
    so that an item's result never depends on which chunk or device computed it. `args` is a
    pytree of arrays (temperatures, a random key, tolerances): traced, so new values reuse the
    compiled code. The engine:

    - compiles once per `(fn, chunk shape, batch, devices, shapes and dtypes of args)` and keeps
      the executable for later calls: pass a module-level function or a hashable static
      configuration (an `eqx.Module` of static fields) as `fn`, not a fresh closure, and a
      second identical sweep compiles nothing;
    - runs `jax.vmap(fn)` on `batch` items at a time, and a chunk as a `lax.map` over its
      batches, so every item is computed by the same code whatever the chunk size: results do
      not depend on the memory budget or the number of devices, to the last bit, in float32 as
      in float64 (XLA picks its matrix kernels by shape, and their rounding differs);
    - sizes chunks so that `chunk * bytes_per_item <= memory` (the caller's estimate of an
      item's peak working memory, in bytes), with at most `largest` items per device, then
      checks XLA's memory analysis of the compiled chunk against `memory`, and shrinks the
      chunk (compiling again) in the rare case the estimate was too low;
    - shards each chunk over `devices` with `jax.shard_map` on a one-axis mesh, so each device
      runs its own share (and its own early exits) with no communication;
    - with a `store`, skips the items already written and writes each chunk as it finishes;
      the items already written are read back and yielded too, so the caller sees every item;
    - shows a tqdm progress bar (items per second, ETA) unless `progress=False`.

    Every argument is checked, and the code compiled, before this returns: a bad argument
    raises here, before any item runs.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
    batch = positive_int(batch, "batch")
    devices = select_devices(devices)
    size = chunk_size(count, bytes_per_item, int(memory), len(devices), largest, batch)
    mesh = jax.sharding.Mesh(np.asarray(devices), (_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    args = jax.device_put(args, NamedSharding(mesh, PartitionSpec()))
    size, compiled = _compiled(fn, args, size, batch, int(memory), mesh)
    todo = [(0, count)] if store is None else store.missing()
    written = [] if store is None else store.chunks()
    plan = sorted(
        [(start, stop, True) for start, stop in written]
        + [
            (start, min(start + size, stop), False)
            for first, stop in todo
            for start in range(first, stop, size)
        ]
    )
    done = sum(stop - start for start, stop in written)

    def chunks():
        from tqdm.auto import tqdm

        with tqdm(
            total=count, initial=done, desc=desc, unit="item", disable=not progress, smoothing=0.1
        ) as bar:
            for start, stop, stored in plan:
                if stored:
                    yield start, stop, store.read(start, stop)
                    continue
                indices = np.minimum(np.arange(start, start + size), stop - 1).astype(np.int32)
                local = jax.make_array_from_callback((size,), sharding, indices.__getitem__)
                results = compiled(local, args)
                if jax.process_count() > 1:  # several hosts: every process gets every result
                    from jax.experimental import multihost_utils

                    results = multihost_utils.process_allgather(results, tiled=True)
                results = {k: np.asarray(v)[: stop - start] for k, v in results.items()}
                if store is not None and jax.process_index() == 0:
                    store.write(start, stop, results)
                bar.update(stop - start)
                yield start, stop, results

    return chunks()


def clear_cache() -> None:
    """Forget the executables `run` keeps for later calls (with `jax.clear_caches()`, this
    releases their memory)."""
    _COMPILED.clear()


def _batched(fn, batch: int):
    """A chunk of indices (one device's share) -> stacked results: `jax.vmap(fn)` over
    `batch` items at a time, `lax.map` over the batches."""

    def chunk(indices, args):
        one_batch = jax.vmap(lambda i: fn(i) if args is None else fn(i, args))
        out = jax.lax.map(one_batch, indices.reshape(-1, batch))
        return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), out)

    return chunk


def _compiled(fn, args, size: int, batch: int, memory: int, mesh):
    """The executable for chunks of `size` items, from the cache when the same function,
    shapes and devices were compiled before (see `_compile_within`)."""
    signature = tuple((leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(args))
    key = (fn, size, batch, tuple(mesh.devices.flat), jax.tree.structure(args), signature, memory)
    try:
        hit = _COMPILED.get(key)
    except TypeError:  # an unhashable fn: compile, do not cache
        return _compile_within(fn, args, size, batch, memory, mesh)
    if hit is None:
        hit = _compile_within(fn, args, size, batch, memory, mesh)
        if len(_COMPILED) >= _CACHE_LIMIT:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = hit
    return hit


def _compile_within(fn, args, size: int, batch: int, memory: int, mesh):
    """Compile for chunks of `size` items; if XLA's own memory analysis of the program (per
    device, times the devices) exceeds `memory`, shrink the chunk in proportion and compile
    again. The estimate `bytes_per_item` is meant to make that rare: one compilation."""
    devices = mesh.devices.size
    program = jax.jit(
        jax.shard_map(
            _batched(fn, batch),
            mesh=mesh,
            in_specs=(PartitionSpec(_AXIS), PartitionSpec()),
            out_specs=PartitionSpec(_AXIS),
            check_vma=False,  # equinox's runtime checks (eqx.error_if) are not vma-typed
        )
    )
    step = devices * batch
    while True:
        sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
        shape = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=sharding)
        compiled = program.lower(shape, args).compile()
        analysis = compiled.memory_analysis()
        if analysis is None or size == step:  # the backend does not say, or cannot shrink
            return size, compiled
        used = devices * (
            analysis.temp_size_in_bytes
            + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
        )
        if used <= memory:
            return size, compiled
        size = max(step, int(size * memory / used) // step * step)


def item_key(key: jax.Array, index) -> jax.Array:
    """The random key of item `index`: `jax.random.fold_in(key, index)`."""
    return jax.random.fold_in(key, jnp.asarray(index, jnp.uint32))
