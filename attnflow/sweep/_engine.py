"""`run`: evaluate a per-item function over many items, chunked, sharded, stored, with progress."""

import math
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ._store import Store

DEFAULT_MEMORY = 2 * 2**30  # 2 GiB
_AXIS = "items"


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
    count: int, bytes_per_item: int, memory: int, devices: int, largest: int | None = None
) -> int:
    """The largest multiple of `devices` whose items fit in `memory`, and no more than needed
    (`count`, or `largest` items per device).

    At least one item per device; `ValueError` if even that does not fit.
    """
    if not memory > 0:
        raise ValueError(f"memory must be a positive number of bytes; got {memory}")
    per_device = memory // (bytes_per_item * devices)
    if per_device < 1:
        raise ValueError(
            f"memory = {memory} bytes cannot hold one item per device "
            f"({bytes_per_item} bytes per item, {devices} devices); raise the budget"
        )
    per_device = min(per_device, math.ceil(count / devices))
    if largest is not None:
        per_device = min(per_device, largest)
    return devices * per_device


def run(
    fn: Callable[[jax.Array], dict[str, jax.Array]],
    count: int,
    *,
    bytes_per_item: int,
    memory: int = DEFAULT_MEMORY,
    largest: int | None = None,
    devices: int | Sequence | None = None,
    store: Store | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Evaluate `fn(i)` for `i` in `range(count)`; yield `(start, stop, results)` in order.

    `fn` maps an item index (an int32 scalar) to a dict of arrays; it must derive everything
    it needs (its parameters, its random key) from the index, so that an item's result never
    depends on which chunk or device computed it. The engine:
    - compiles `jax.vmap(fn)` once, for one chunk shape (the last chunk is padded);
    - sizes chunks so that `chunk * bytes_per_item <= memory` (the caller's estimate of an
      item's peak working memory, in bytes), with at most `largest` items per device (small
      chunks let early exits in `fn` pay off: a vmapped loop runs until its last item is done);
      then checks XLA's memory analysis of the compiled chunk against `memory`, and shrinks
      the chunk (compiling again) in the rare case the estimate was too low;
    - shards each chunk over `devices` with `jax.shard_map` on a one-axis mesh, so each device
      runs its own share (and its own early exits) with no communication;
    - with a `store`, skips the items already written and writes each chunk as it finishes;
      the items already written are read back and yielded too, so the caller sees every item;
    - shows a tqdm progress bar (items per second, ETA) unless `progress=False`.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
    devices = select_devices(devices)
    size = chunk_size(count, bytes_per_item, int(memory), len(devices), largest)
    mesh = jax.sharding.Mesh(np.asarray(devices), (_AXIS,))
    sharding = NamedSharding(mesh, PartitionSpec(_AXIS))
    batched = jax.jit(
        jax.shard_map(
            jax.vmap(fn),
            mesh=mesh,
            in_specs=PartitionSpec(_AXIS),
            out_specs=PartitionSpec(_AXIS),
            check_vma=False,  # equinox's runtime checks (eqx.error_if) are not vma-typed
        )
    )
    size, compiled = _compile_within(batched, size, int(memory), sharding, len(devices))
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
    from tqdm.auto import tqdm

    done = sum(stop - start for start, stop in written)
    with tqdm(
        total=count, initial=done, desc=desc, unit="item", disable=not progress, smoothing=0.1
    ) as bar:
        for start, stop, stored in plan:
            if stored:
                yield start, stop, store.read(start, stop)
                continue
            indices = np.minimum(np.arange(start, start + size), stop - 1).astype(np.int32)
            local = jax.make_array_from_callback((size,), sharding, indices.__getitem__)
            results = compiled(local)
            if jax.process_count() > 1:  # several hosts: every process gets every result
                from jax.experimental import multihost_utils

                results = multihost_utils.process_allgather(results, tiled=True)
            results = {k: np.asarray(v)[: stop - start] for k, v in results.items()}
            if store is not None and jax.process_index() == 0:
                store.write(start, stop, results)
            bar.update(stop - start)
            yield start, stop, results


def _compile_within(batched, size: int, memory: int, sharding, devices: int):
    """Compile for chunks of `size` items; if XLA's own memory analysis of the program (per
    device, times the devices) exceeds `memory`, shrink the chunk in proportion and compile
    again. The estimate `bytes_per_item` is meant to make that rare: one compilation."""
    while True:
        shape = jax.ShapeDtypeStruct((size,), jnp.int32, sharding=sharding)
        compiled = batched.lower(shape).compile()
        analysis = compiled.memory_analysis()
        if analysis is None or size == devices:  # the backend does not say, or cannot shrink
            return size, compiled
        used = devices * (
            analysis.temp_size_in_bytes
            + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes
        )
        if used <= memory:
            return size, compiled
        size = max(devices, int(size * memory / used) // devices * devices)


def item_key(key: jax.Array, index) -> jax.Array:
    """The random key of item `index`: `jax.random.fold_in(key, index)`."""
    return jax.random.fold_in(key, jnp.asarray(index, jnp.uint32))
