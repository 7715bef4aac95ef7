"""`Store`: a folder of finished chunks and a manifest, written so that nothing is ever lost
and nothing foreign, damaged or doubled is ever used."""

import contextlib
import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .._files import atomic_write, flock

_CHUNK = re.compile(r"^chunk-([0-9]{10})-([0-9]{10})\.npz$")
MANIFEST = "manifest.json"
LOCK = "lock"
_HEADER = ("_start", "_stop", "_fingerprint")  # inside every chunk, beside its results


def _fingerprint(config: dict, count: int) -> str:
    """sha256 of the canonical JSON of the (canonical) configuration and the item count."""
    text = json.dumps({"config": config, "count": count}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class _Damaged(Exception):
    """Why a chunk file cannot be used (it is then recomputed)."""


class Store:
    """Results of a sweep over `count` items, one `.npz` file per finished chunk of items,
    that cannot be corrupted silently.

    The folder `path` holds:

    - `manifest.json`: the full configuration (including the seed and the package version),
      `count`, and their `fingerprint` (sha256 of the canonical JSON of both);
    - `chunk-<start>-<stop>.npz`: the arrays of items `start:stop` (each with `stop - start`
      rows) and `_start`, `_stop`, `_fingerprint`: which items and which configuration they are;
    - `lock`: the pid of the process writing.

    Guarantees (every refusal is a one-line `ValueError` naming the file and what to do):

    - One writer: opening takes an exclusive non-blocking `fcntl.flock` on `lock`, held until
      `close()` (or the end of a `with` block, or the store's garbage collection, or the death
      of the process, even by `kill -9`). A second `Store` on the folder, in this process or
      another, is refused, naming the holder's pid. (Without `fcntl`, on Windows, there is no
      lock; the checks below still refuse what two writers leave.)
    - Atomic files: every file is written to a temporary file in the folder, flushed to disk
      and renamed (`atomic_write`), so a crash leaves the old file or the new one, never a torn
      one; the `.*.tmp` leftovers of a killed writer are deleted on opening (under the lock, so
      never another writer's). No chunk is ever overwritten: a store is only extended.
    - Only this configuration: an existing manifest must be valid and record exactly `config`
      and `count` (the refusal names what differs); a folder with chunk files but no manifest
      is refused, and so is any chunk whose fingerprint is not this configuration's (foreign).
      An empty folder, or a new one, is a fresh start.
    - Only sound chunks: opening checks each chunk file once, from its headers, without its data:
      a readable archive whose recorded range is the one in its name, within
      `0 <= start < stop <= count`, whose arrays all have `stop - start` rows, with the same
      names, dtypes and trailing shapes as (most of) the other chunks. A chunk that fails is
      reported on stderr ("attnflow: <file> is damaged (<why>); recomputing it"), renamed to
      `<file>.damaged` and counted `missing()`, so it is recomputed, never used. `read` loads
      the data (the archive checks its CRC) and checks it all again; damage found there renames
      the file the same way and raises, asking to run again.
    - Never summed twice: overlapping chunks (as two writers with different chunk sizes leave)
      are refused, naming both files; `write` refuses a range outside `0:count` or overlapping a
      stored chunk, arrays of the wrong length, and arrays unlike the stored chunks'.
    - Folders and files in the wrong places (the store path is a file; `manifest.json`,
      `lock` or a chunk name is a folder) and unwritable outputs are refused by name.

    Several processes of one run (`attnflow.distributed`) share one store on a shared file
    system: process 0 opens it as above, then the others open it with `member=True`. A member
    takes no lock (process 0's keeps other runs out), deletes and renames nothing, and refuses
    a folder that does not look as process 0 left it (no manifest, a damaged chunk: a file
    system the processes do not share). Each process writes the chunks of the items it
    computed, and the checks above still refuse any overlap between them.
    """

    def __init__(self, path, config: dict, count: int, *, member: bool = False):
        self.path = Path(path)
        self.config = json.loads(json.dumps(config, sort_keys=True))  # as it reads back
        self.count = int(count)
        self.fingerprint = _fingerprint(self.config, self.count)
        self._lock = None
        self._open = False
        self._chunks: dict[tuple[int, int], tuple] = {}  # checked chunks and their signature
        self._signature: tuple | None = None  # (name, dtype, trailing shape) of every array
        self.member = bool(member)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(
                f"{self.path} is a file, not a folder of sweep chunks; choose another output"
            )
        _writing(self.path, lambda: self.path.mkdir(parents=True, exist_ok=True))
        try:
            if self.member:
                self._open = True
            else:
                self._take_lock()
            self._check_folder()
        except BaseException:
            self.close()
            raise

    def _take_lock(self) -> None:
        lock = self.path / LOCK
        _not_a_folder(lock, "the lock file", self.path)
        descriptor = _writing(lock, lambda: os.open(lock, os.O_RDWR | os.O_CREAT, 0o644))
        self._lock = os.fdopen(descriptor, "r+b")
        self._open = True
        if not flock(self._lock.fileno(), lock):
            holder = self._lock.read().decode(errors="replace").strip() or "unknown"
            if holder == str(os.getpid()):
                holder += (  # say, held by the traceback of an interrupted sweep in a notebook
                    ", this process: an earlier Store on it is still open, perhaps kept by a "
                    "traceback; close it, or use `with Store(...)`"
                )
            raise ValueError(
                f"another attnflow run is writing to {self.path} (pid {holder}); "
                "wait for it to finish or choose another output"
            ) from None

        def stamp():  # who holds the lock, for the message above
            self._lock.truncate(0)
            self._lock.write(b"%d\n" % os.getpid())
            self._lock.flush()

        _writing(lock, stamp)

    def _check_folder(self) -> None:
        for leftover in [] if self.member else self.path.glob(".*.tmp"):  # of a killed run
            _writing(leftover, lambda file=leftover: file.unlink(missing_ok=True))
        files = sorted(p for p in self.path.iterdir() if _CHUNK.match(p.name))
        manifest = self.path / MANIFEST
        if manifest.exists() or manifest.is_symlink():
            self._check_manifest(manifest)
        elif self.member:
            raise ValueError(
                f"{self.path} has no manifest.json, which process 0 wrote: is it on a file "
                "system that every process of the run shares?"
            )
        elif files:
            raise ValueError(
                f"{self.path} holds chunk files but no valid manifest.json, so they cannot be "
                "checked against this configuration; delete the folder to start over"
            )
        else:
            text = json.dumps(
                {"config": self.config, "count": self.count, "fingerprint": self.fingerprint},
                indent=1,
            )
            _writing(manifest, lambda: atomic_write(manifest, lambda f: f.write(text.encode())))
        signatures = {}
        for file in files:
            _not_a_folder(file, "a chunk file", file.parent)
            start, stop = (int(group) for group in _CHUNK.match(file.name).groups())
            try:
                signatures[start, stop] = self._inspect(file, start, stop, _headers(file))
            except _Damaged as why:
                self._recompute(start, stop, str(why))
        tally = Counter(signatures.values()).most_common(2)
        if tally and (len(tally) == 1 or tally[0][1] > tally[1][1]):
            self._signature = tally[0][0]
        for (start, stop), signature in signatures.items():
            if signature == self._signature:
                self._chunks[start, stop] = signature
            else:
                why = f"its arrays ({_describe(signature)}) differ from the other chunks' "
                why += (
                    f"({_describe(self._signature)})"
                    if self._signature
                    else "(which disagree among themselves)"
                )
                self._recompute(start, stop, why)
        reach = None  # the chunk reaching furthest so far
        for start, stop in sorted(self._chunks):
            if reach is not None and start < reach[1]:
                raise ValueError(
                    f"{self._file(*reach)} and {self._file(start, stop)} hold overlapping items "
                    f"({start}:{min(stop, reach[1])}), as two runs writing at once leave; delete "
                    f"{self.path} to start over (or the extra file)"
                )
            if reach is None or stop > reach[1]:
                reach = (start, stop)

    def _check_manifest(self, manifest: Path) -> None:
        _not_a_folder(manifest, "the manifest file", self.path)
        try:
            stored = json.loads(manifest.read_bytes())
            why = _manifest_problem(stored)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            why = f"not JSON: {error}"
        except OSError as error:
            raise ValueError(
                f"cannot read {manifest} ({error.strerror}); choose a readable output"
            ) from None
        if why:
            raise ValueError(
                f"{manifest} is not a valid attnflow manifest ({why}); "
                f"delete {self.path} to start over"
            )
        if stored["count"] != self.count or stored["config"] != self.config:
            raise ValueError(
                f"the sweep in {self.path} has a different configuration "
                f"({_difference(stored, self.config, self.count)}); "
                "resume it with the same options, or choose another output"
            )

    def _inspect(self, file: Path, start: int, stop: int, found) -> tuple:
        """Check a chunk's header and array shapes `found = (fingerprint, first, last, shapes)`
        against its name and the plan; returns its signature, or raises `_Damaged` (or
        `ValueError` for another configuration's chunk)."""
        fingerprint, first, last, shapes = found
        if fingerprint != self.fingerprint:
            raise ValueError(
                f"{file} was written for another configuration (fingerprint {fingerprint[:12]}, "
                f"this one's {self.fingerprint[:12]}); it does not belong to this sweep: delete "
                f"it, or delete {self.path} to start over"
            )
        if (first, last) != (start, stop):
            raise _Damaged(f"it holds items {first}:{last}, its name says {start}:{stop}")
        if not 0 <= start < stop <= self.count:
            raise _Damaged(f"items {start}:{stop} lie outside the sweep's {self.count} items")
        for name, (shape, _) in shapes.items():
            if shape[:1] != (stop - start,):
                rows = shape[0] if shape else "no"
                raise _Damaged(f"{name} has {rows} rows, not {stop - start}")
        return _signature(shapes)

    def _set_aside(self, start: int, stop: int) -> Path:
        """Rename a damaged chunk to `<name>.damaged` (kept to look at, never used again)."""
        file = self._file(start, stop)
        aside = file.with_name(file.name + ".damaged")
        _writing(aside, lambda: os.replace(file, aside))
        self._chunks.pop((start, stop), None)
        return aside

    def _recompute(self, start: int, stop: int, why: str) -> None:
        file = self._file(start, stop)
        if self.member:  # process 0 set every damaged chunk aside before this process opened
            raise ValueError(
                f"{file} is damaged ({why}) here but not where process 0 read it: is "
                f"{self.path} on a file system that every process of the run shares?"
            )
        self._set_aside(start, stop)
        print(f"attnflow: {file} is damaged ({why}); recomputing it", file=sys.stderr, flush=True)

    def _file(self, start: int, stop: int) -> Path:
        return self.path / f"chunk-{start:010d}-{stop:010d}.npz"

    def chunks(self) -> list[tuple[int, int]]:
        """The `(start, stop)` ranges already written and checked, in order."""
        return sorted(self._chunks)

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

    def write(self, start: int, stop: int, arrays: dict[str, np.ndarray]) -> None:
        """Write the results of items `start:stop` atomically (arrays of `stop - start` rows)."""
        if not self._open:
            raise ValueError(f"the store {self.path} is closed; open it again to write")
        start, stop = int(start), int(stop)
        if not 0 <= start < stop <= self.count:
            raise ValueError(
                f"start and stop must satisfy 0 <= start < stop <= {self.count}; "
                f"got {start}, {stop}"
            )
        for first, last in self._chunks:
            if first < stop and start < last:
                raise ValueError(
                    f"items {start}:{stop} overlap the stored chunk {self._file(first, last)}; "
                    "write only the missing() ranges"
                )
        arrays = {name: np.asarray(value) for name, value in arrays.items()}
        reserved = [name for name in arrays if name.startswith("_")]
        if reserved:
            raise ValueError(f"array names starting with _ are reserved; got {reserved}")
        for name, value in arrays.items():
            if value.shape[:1] != (stop - start,) or value.dtype.hasobject:
                raise ValueError(
                    f"arrays must be numeric with stop - start = {stop - start} rows; "
                    f"got {name} of shape {value.shape} and dtype {value.dtype}"
                )
        signature = _signature({name: (v.shape, v.dtype) for name, v in arrays.items()})
        if self._signature is not None and signature != self._signature:
            raise ValueError(
                f"the arrays of items {start}:{stop} ({_describe(signature)}) differ from those "
                f"already stored in {self.path} ({_describe(self._signature)}); "
                f"delete {self.path} to start over"
            )
        values = (np.int64(start), np.int64(stop), np.array(self.fingerprint))
        header = dict(zip(_HEADER, values, strict=True))
        file = self._file(start, stop)
        _writing(file, lambda: atomic_write(file, lambda f: np.savez(f, **arrays, **header)))
        self._chunks[start, stop] = self._signature = signature

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The results of the stored chunk `start:stop`, checked again with their data."""
        if (start, stop) not in self._chunks:
            raise ValueError(f"items {start}:{stop} are not a stored chunk of {self.path}")
        file = self._file(start, stop)
        try:
            with _reading(), np.load(file) as data:
                arrays = dict(data)
            if self._inspect(file, start, stop, _header_of(arrays)) != self._chunks[start, stop]:
                raise _Damaged("its arrays changed since the store was opened")
        except _Damaged as why:
            if self.member:  # process 0 sets damaged chunks aside, never two processes at once
                raise ValueError(f"{file} is damaged ({why}); run again to recompute it") from None
            aside = self._set_aside(start, stop)
            raise ValueError(
                f"{file} is damaged ({why}); it was moved to {aside.name}: "
                "run again to recompute it"
            ) from None
        return {name: value for name, value in arrays.items() if name not in _HEADER}

    def done(self) -> int:
        """How many items are written."""
        return sum(stop - start for start, stop in self.chunks())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.chunks())

    def close(self) -> None:
        """Release the lock (closing twice is harmless); the store can no longer be written."""
        self._open = False
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self.close()


def _writing(target: Path, action):
    """`action()`, with an `OSError` (a read-only folder, a file where a folder should be)
    turned into a one-line `ValueError` naming `target`."""
    try:
        return action()
    except OSError as error:
        raise ValueError(
            f"cannot write to {target} ({error.strerror or error}); choose a writable output"
        ) from None


def _not_a_folder(path: Path, what: str, store: Path) -> None:
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder where {what} is expected; delete {store} to start over"
        )


def _headers(file: Path):
    """`(fingerprint, start, stop, {name: (shape, dtype)})` of a chunk file, reading the
    small header arrays and only the `.npy` headers of the results; raises `_Damaged`."""
    try:
        with open(file, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise _Damaged(f"unreadable: {error.strerror}") from None
    if magic != b"PK\x03\x04":
        raise _Damaged("empty file" if not magic else "not an npz archive")
    with _reading(), np.load(file) as data:
        small = {name: data[name] for name in _HEADER if name in data.files}
        shapes = {
            name: _npy_header(data.zip, name + ".npy") for name in data.files if name not in _HEADER
        }
    return _header_of({**small, **shapes})


def _npy_header(archive, member: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of one `.npy` member, and that its size agrees with them."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        if version not in readers:
            raise _Damaged(f"{member} has an unknown .npy version {version}")
        shape, _, dtype = readers[version](handle)
        size = handle.tell() + dtype.itemsize * math.prod(shape)
    if dtype.hasobject or archive.getinfo(member).file_size != size:
        raise _Damaged(f"{member} does not hold the {dtype} array of shape {shape} it announces")
    return shape, dtype


def _header_of(arrays: dict):
    """Split a chunk's contents (arrays, or `(shape, dtype)` pairs for the results) into
    `(fingerprint, start, stop, {name: (shape, dtype)})`; raises `_Damaged`."""
    missing = [name for name in _HEADER if name not in arrays]
    if missing:
        raise _Damaged(f"no {', '.join(missing)}: not a chunk of this attnflow")
    start, stop, fingerprint = (arrays[name] for name in _HEADER)
    for value in (start, stop):
        if value.shape != () or value.dtype.kind not in "iu":
            raise _Damaged(f"its item range is not a pair of integers: {value!r}")
    if fingerprint.shape != () or fingerprint.dtype.kind != "U":
        raise _Damaged(f"its fingerprint is not a string: {fingerprint!r}")
    shapes = {
        name: value if isinstance(value, tuple) else (value.shape, value.dtype)
        for name, value in arrays.items()
        if name not in _HEADER
    }
    return str(fingerprint[()]), int(start), int(stop), shapes


def _signature(shapes: dict) -> tuple:
    """What every chunk of one sweep shares: its array names, dtypes and trailing shapes."""
    return tuple(sorted((name, dtype.str, shape[1:]) for name, (shape, dtype) in shapes.items()))


def _describe(signature: tuple) -> str:
    arrays = [
        f"{name} {np.dtype(dtype)} (n, {', '.join(map(str, rest))})".replace(", )", ")")
        for name, dtype, rest in signature
    ]
    return ", ".join(arrays) or "no arrays"


@contextlib.contextmanager
def _reading():
    """Raise what a damaged archive raises (`BadZipFile`, `EOFError`, `ValueError`, `OSError`,
    ...) as `_Damaged`."""
    try:
        yield
    except _Damaged:
        raise
    except Exception as error:
        why = f"not a readable npz archive: {type(error).__name__}: {error}"
        raise _Damaged(why.splitlines()[0]) from None


def _manifest_problem(stored) -> str | None:
    """Why `stored` (a parsed manifest) is not a valid one, or None."""
    if not isinstance(stored, dict):
        return "not a JSON object"
    missing = [key for key in ("config", "count", "fingerprint") if key not in stored]
    if missing:
        return f"no {', '.join(map(repr, missing))}"
    count = stored["count"]
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        return f"'count' is not a positive integer: {count!r}"
    if not isinstance(stored["config"], dict):
        return "'config' is not a JSON object"
    if stored["fingerprint"] != _fingerprint(stored["config"], count):
        return "its fingerprint does not match its configuration: it was edited"
    return None


def _difference(stored: dict, config: dict, count: int) -> str:
    old, new = stored["config"], config
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not keys:
        return f"{stored['count']} items there, {count} now"
    return "; ".join(f"{k}: {_short(old.get(k))} there, {_short(new.get(k))} now" for k in keys)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
