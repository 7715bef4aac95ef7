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
