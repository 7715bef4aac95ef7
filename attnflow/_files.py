"""Files written so that nothing is torn or lost, shared by the sweep store, the search
checkpoints and the command line: atomic writes and exclusive locks."""

import os
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the callers' checks on opening still refuse overlaps
    fcntl = None


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, flush it to disk, then rename.

    A crash (even `kill -9`) leaves either the old file or the new one, never a torn file, and
    writers running at once never share a temporary file: the last rename wins, whole. The
    file gets the mode of any newly created file, `0o666 & ~umask` (`mkstemp` alone would
    leave it 0o600).
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read without changing it where the system can (Linux: from
    /proc/self/status), else by setting and restoring it (briefly process-global)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def flock(descriptor: int, target: Path) -> bool:
    """Take an exclusive `fcntl.flock` on the open `descriptor` without waiting: True when
    taken (or where there is no `fcntl`), False when another open file holds it (another
    process, or another open of the same file in this one). The lock lasts until the
    descriptor is closed, or the process dies, even by `kill -9`. A file system that cannot
    lock is a `ValueError` naming `target`."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        raise ValueError(
            f"cannot lock {target} ({error.strerror}); choose an output on a local disk"
        ) from None
    return True


class FolderLock:
    """An exclusive lock on the folder `path` itself (`flock` on a descriptor of the folder,
    so that nothing is written in it), held until `close()`, the lock's garbage collection or
    the death of the process.

    A second `FolderLock` on the folder, in this process or another, is a `ValueError` that
    says another attnflow run is writing there. Files inside the folder can still be locked
    on their own (the `Store` in it takes its `lock` file). Without `fcntl` (Windows) it locks
    nothing.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._descriptor = None
        if fcntl is None:
            return
        self._descriptor = os.open(self.path, os.O_RDONLY)
        if not flock(self._descriptor, self.path):
            self.close()
            raise ValueError(
                f"another attnflow run is writing to {self.path}; wait for it to finish or "
                "choose another output"
            )

    def close(self) -> None:
        """Release the lock (closing twice is harmless)."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __del__(self) -> None:
        if getattr(self, "_descriptor", None) is not None:
            self.close()
