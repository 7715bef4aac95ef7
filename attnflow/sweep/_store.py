"""`Store`: a folder of finished chunks and a manifest, written so that nothing is ever lost."""

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

_CHUNK = re.compile(r"^chunk-(\d{10})-(\d{10})\.npz$")
MANIFEST = "manifest.json"


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, flush it to disk, then rename.

    A crash (even `kill -9`) leaves either the old file or the new one, never a torn file.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _canonical(config: dict) -> dict:
    """The configuration as it reads back from JSON (tuples become lists, and so on)."""
    return json.loads(json.dumps(config, sort_keys=True))


class Store:
    """Results of a sweep over `count` items, one `.npz` file per finished chunk of items.

    `path/manifest.json` records the full configuration (including the seed and the package
    version) and `count`. Opening an existing store with a different configuration raises a
    `ValueError` naming what differs; a store is only ever extended, never overwritten.
    Chunk files are `chunk-<start>-<stop>.npz` holding the arrays of items `start:stop`.
    """

    def __init__(self, path, config: dict, count: int):
        self.path = Path(path)
        self.config = _canonical(config)
        self.count = int(count)
        manifest = self.path / MANIFEST
        if manifest.exists():
            stored = json.loads(manifest.read_text())
            if stored["count"] != self.count or stored["config"] != self.config:
                raise ValueError(
                    f"the sweep in {self.path} has a different configuration "
                    f"({_difference(stored, self.config, self.count)}); "
                    "resume it with the same options, or choose another output"
                )
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"config": self.config, "count": self.count}, indent=1)
            atomic_write(manifest, lambda file: file.write(text.encode()))
        for leftover in self.path.glob(".*.tmp"):  # from a run killed while writing
            leftover.unlink(missing_ok=True)

    def chunks(self) -> list[tuple[int, int]]:
        """The `(start, stop)` ranges already written, in order."""
        found = (_CHUNK.match(p.name) for p in self.path.iterdir())
        return sorted((int(m[1]), int(m[2])) for m in found if m)

    def missing(self) -> list[tuple[int, int]]:
        """The ranges of items not yet written, in order."""
        gaps, position = [], 0
        for start, stop in self.chunks():
            if start > position:
                gaps.append((position, start))
            position = max(position, stop)
        if position < self.count:
            gaps.append((position, self.count))
        return gaps

    def _file(self, start: int, stop: int) -> Path:
        return self.path / f"chunk-{start:010d}-{stop:010d}.npz"

    def write(self, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        """Write the results of items `start:stop` atomically."""
        atomic_write(self._file(start, stop), lambda file: np.savez(file, **arrays))

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        with np.load(self._file(start, stop)) as data:
            return dict(data)

    def done(self) -> int:
        """How many items are written."""
        return sum(stop - start for start, stop in self.chunks())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.chunks())


def _difference(stored: dict, config: dict, count: int) -> str:
    old, new = stored["config"], config
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not keys:
        return f"{stored['count']} items there, {count} now"
    return "; ".join(f"{k}: {_short(old.get(k))} there, {_short(new.get(k))} now" for k in keys)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
