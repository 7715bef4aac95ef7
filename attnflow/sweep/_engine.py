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
    """All JAX devices (`None`), the first `k` of them (an int), or the given list.

    In a multi-process run (`attnflow.distributed`) the devices of every process, process by
    process (so each process computes a contiguous share of a chunk): `k` must then be a
    multiple of the number of processes `P` and takes `k / P` devices of each, and a list must
    hold devices of every process."""
    processes = jax.process_count()
    available = sorted(jax.devices(), key=lambda device: (device.process_index, device.id))
    if devices is None:
        return available
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(available):
            raise ValueError(
                f"devices must be between 1 and the {len(available)} available "
                f"({available[0].platform}); got {devices}"
            )
        if processes == 1:
            return available[:devices]
        if devices % processes:
            raise ValueError(
                f"devices must be a multiple of the {processes} processes (the same number on "
                f"each); got {devices}"
            )
        each = devices // processes
        mine = [[d for d in available if d.process_index == p][:each] for p in range(processes)]
        short = [p for p, share in enumerate(mine) if len(share) < each]
        if short:
            raise ValueError(
                f"devices = {devices} takes {each} devices of each of the {processes} "
                f"processes, but process {short[0]} has {len(mine[short[0]])}"
            )
        return [device for share in mine for device in share]
    devices = list(devices)
    if not devices:
        raise ValueError("devices must not be empty")
    absent = sorted(set(range(processes)) - {device.process_index for device in devices})
    if absent:
        raise ValueError(
            f"devices must include devices of every process of the run; none of process "
            f"{absent[0]} is among them"
        )
    return sorted(devices, key=lambda device: (device.process_index, device.id))


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
    - shows a tqdm progress bar (items per second, ETA) unless `progress=False`;
    - in a multi-process run (`attnflow.distributed`), shards each chunk over the devices of
      every process: each process computes its share, every process yields every result, and
      each writes to the store (which must be on a file system they share) only the items it
      computed. The processes must be given the same arguments; their plans (the store's
      missing items) are checked to agree. Only process 0 shows progress.

    Every argument is checked, and the code compiled, before this returns: a bad argument
    raises here, before any item runs.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
    batch = positive_int(batch, "batch")
    from ..distributed import agree, allgather, same_everywhere  # one process: agree is the action

    processes = jax.process_count()
    if processes > 1:  # before anything that could fail on some processes only
        options = (devices, memory, batch, largest, bytes_per_item)
        same_everywhere(
            _description(fn, args, count, options), "arguments (the study's configuration)"
        )
    if count < processes:
        raise ValueError(
            f"a sweep of {count} item(s) cannot be split over {processes} processes; run it "
            "with fewer processes (or more items)"
        )

    def prepare():
        chosen = select_devices(devices)
        size = chunk_size(count, bytes_per_item, int(memory), len(chosen), largest, batch)
        mesh = jax.sharding.Mesh(np.asarray(chosen), (_AXIS,))
        replicated = _replicated(args, NamedSharding(mesh, PartitionSpec()))
        return (mesh, replicated, *_compiled(fn, replicated, size, batch, int(memory), mesh))

    mesh, args, size, compiled = agree(prepare)
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    own = _own_rows(sharding, size)
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
    if processes > 1:
        same_everywhere(
            (plan, size, [device.id for device in mesh.devices.flat]),
            "plans of work (the store's chunks look different from each process: is the "
            "store on a file system that every process shares?)",
        )
        progress = progress and jax.process_index() == 0

    def chunks():
        from tqdm.auto import tqdm

        with tqdm(
            total=count, initial=done, desc=desc, unit="item", disable=not progress, smoothing=0.1
        ) as bar:
            for start, stop, stored in plan:
                if stored:
                    yield start, stop, agree(lambda start=start, stop=stop: store.read(start, stop))
                    continue
                indices = np.minimum(np.arange(start, start + size), stop - 1).astype(np.int32)
                local = jax.make_array_from_callback((size,), sharding, indices.__getitem__)
                results = compiled(local, args)
                if processes > 1:  # every process gets every result
                    # a failure in this process's share is reported to all, not taken for
                    # a lost process by the gather
                    agree(lambda results=results: jax.block_until_ready(results))
                    results = allgather(results, tiled=True)
                results = {k: np.asarray(v)[: stop - start] for k, v in results.items()}
                if store is not None:  # each process its own rows; all learn of a failure
                    agree(
                        lambda start=start, stop=stop, results=results: _write_own(
                            store, start, stop, own, results
                        )
                    )
                bar.update(stop - start)
                yield start, stop, results

    return chunks()


def _replicated(args, sharding: NamedSharding):
    """`args` on every device of the mesh. With several processes each puts its own copy (the
    same values on every process) on its own devices (`jax.device_put` of a host value to
    devices of other processes is not possible); a weakly typed leaf (a Python number) is
    refused there, since the copy would be strongly typed and could change the results."""
    if jax.process_count() == 1:
        return jax.device_put(args, sharding)

    def put(leaf):
        if getattr(jnp.asarray(leaf), "weak_type", False):
            raise ValueError(
                f"in a multi-process run the sweep's args must be arrays with a dtype, not "
                f"Python numbers (weakly typed): got {leaf!r}; pass jnp.asarray(value, dtype)"
            )
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(leaf))
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(put(data), impl=impl)
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(put, args)


def _description(fn, args, count: int, options: tuple) -> tuple:
    """What must be the same on every process of a run: the item function (its type, and its
    static fields as text, a function by its qualified name, never by its address), the values
    of `args` (a digest of their bytes), the number of items and the engine's `options`."""
    import dataclasses
    import functools
    import hashlib

    def text(value) -> str:
        if isinstance(value, functools.partial):
            return f"partial({text(value.func)}, {value.args!r}, {value.keywords!r})"
        if isinstance(value, jax.Device):
            return f"device {value.process_index}:{value.id}"
        if isinstance(value, list | tuple):
            return f"[{', '.join(map(text, value))}]"
        if callable(value) and hasattr(value, "__qualname__"):
            return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
        return repr(value)

    fields = (
        [(f.name, text(getattr(fn, f.name))) for f in dataclasses.fields(fn)]
        if dataclasses.is_dataclass(fn)
        else []
    )
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(args):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        digest.update(np.asarray(_local(leaf)).tobytes())
    name = text(type(fn)) if dataclasses.is_dataclass(fn) else text(fn)
    return name, fields, digest.hexdigest(), count, text(options)


def _local(leaf):
    """The value of a leaf replicated over the devices of every process: one local copy."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return leaf.addressable_data(0)
    return leaf


def _own_rows(sharding: NamedSharding, size: int) -> list[tuple[int, int]]:
    """The rows of a chunk of `size` items that this process's devices compute, as contiguous
    `(low, high)` ranges (the whole chunk in a single-process run)."""
    rows = sorted(
        (index[0].start or 0, size if index[0].stop is None else index[0].stop)
        for index in sharding.addressable_devices_indices_map((size,)).values()
    )
    ranges: list[tuple[int, int]] = []
    for low, high in rows:
        if ranges and ranges[-1][1] == low:
            ranges[-1] = (ranges[-1][0], high)
        else:
            ranges.append((low, high))
    return ranges


def _write_own(store: Store, start: int, stop: int, own, results: dict) -> None:
    """Write to the store the items `start:stop` that this process computed (`own`, its rows
    of the chunk; a padding-only share writes nothing)."""
    for low, high in own:
        first, last = start + low, min(start + high, stop)
        if first < last:
            store.write(first, last, {k: v[low : last - start] for k, v in results.items()})


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
