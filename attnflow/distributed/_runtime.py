"""`initialize`, and the helpers that keep the processes of a multi-process run in step.

JAX runs one program in one process per host (or per accelerator): `initialize()` connects the
processes, after which `jax.devices()` lists the devices of every process, and the sweep engine
(`attnflow.sweep.run`, so `phase_diagram`, `metastability`, `ftle_diagram`, `concentration`)
splits its items over all of them, and `Sharded` splits one system's tokens over them. Every
process runs the same script with the same arguments; each computes its share, and every
process receives every result. Guide: docs/guide/distributed.md.

The helpers below keep the processes in step where they act on their own: `agree` runs a step
that may fail on some process (opening an output, checking options) and raises the same error
on every process when it failed on any, instead of leaving the others to wait for it;
`same_everywhere` refuses a run whose processes were given different options.
"""

import contextlib
import hashlib
import os
from collections.abc import Callable

import jax
import numpy as np

from .._checks import positive_int

TIMEOUT = 60  # seconds to wait for every process to connect
HEARTBEAT = 20  # seconds of silence after which a process counts as dead
_MESSAGE = 1024  # bytes of an error message sent to the other processes

# what each process reads when the arguments are not given: JAX's variable for the coordinator,
# and these two for the rest (SLURM, Cloud TPU, Open MPI and Kubernetes need none of them:
# JAX detects those environments itself)
ADDRESS, PROCESSES, PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = TIMEOUT,
    heartbeat_timeout: int = HEARTBEAT,
) -> int:
    """Connect this process to the others of a multi-process run (`jax.distributed.initialize`);
    returns this process's index (0 for the coordinator). Call it first, before JAX computes.

    Arguments left out are read from the environment: `JAX_COORDINATOR_ADDRESS` (`host:port` of
    process 0), `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`; where those are unset, JAX detects a
    SLURM allocation, a Cloud TPU pod slice, Open MPI or Kubernetes and reads its variables.
    On the CPU, the processes exchange results through JAX's CPU collectives (gloo, JAX's
    default).

    `timeout`: seconds to wait for every process to connect; then a `RuntimeError` that names
    the coordinator (unreachable, or fewer processes started than announced).
    `heartbeat_timeout`: a process silent for this many seconds counts as dead, and JAX ends
    the others with its own fatal message instead of letting them wait. A process that dies
    outright breaks the others' next exchange sooner: they raise `ProcessLost` at once. A
    sweep writing to a store resumes with `--resume` (or the same `store=`).

    Calling it again in the same process with the same settings does nothing.
    """
    timeout = positive_int(timeout, "timeout")
    heartbeat_timeout = positive_int(heartbeat_timeout, "heartbeat_timeout")
    coordinator_address = coordinator_address or os.environ.get(ADDRESS) or None
    num_processes = _count(num_processes, PROCESSES, "num_processes", 1)
    process_id = _count(process_id, PROCESS_ID, "process_id", 0)
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(
            f"process_id must be below num_processes = {num_processes}; got {process_id}"
        )
    if jax.distributed.is_initialized():
        return jax.process_index()
    if coordinator_address and process_id:  # JAX would abort the process: say why instead
        _wait_for(coordinator_address, timeout)
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=timeout,
            heartbeat_timeout_seconds=heartbeat_timeout,
        )
    except RuntimeError as err:
        if "before" in str(err) and "backend" in str(err).lower():
            raise ValueError(
                "attnflow.distributed.initialize must run before JAX's first computation"
            ) from None
        raise RuntimeError(
            f"could not connect to the coordinator {coordinator_address or '(auto-detected)'} "
            f"within {timeout} s with {num_processes or 'the detected'} processes: is process 0 "
            f"running and reachable, and were all processes started? ({_first_line(err)})"
        ) from None
    except ValueError as err:  # JAX found no address or count in the environment
        raise ValueError(
            f"{_first_line(err).rstrip('.')}: pass coordinator_address, num_processes and "
            f"process_id, or set {ADDRESS}, {PROCESSES} and {PROCESS_ID} (SLURM, Cloud TPU, "
            "Open MPI and Kubernetes set theirs)"
        ) from None
    return jax.process_index()


def _wait_for(address: str, timeout: int) -> None:
    """Wait until the coordinator `host:port` accepts connections, for up to `timeout` seconds;
    a `RuntimeError` naming it if it never does (JAX itself ends the process then)."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"the coordinator address must be host:port; got {address!r}")
    host = host.strip("[]")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"could not reach the coordinator {address} within {timeout} s "
                    f"({err.strerror or err}): start process 0 there, or check the address"
                ) from None
            time.sleep(0.2)


def _count(value, variable: str, name: str, low: int) -> int | None:
    """`value`, or the integer in the environment `variable`, checked to be `>= low`."""
    source = name
    if value is None:
        text = os.environ.get(variable, "").strip()
        if not text:
            return None
        source = f"{variable} (from the environment)"
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{source} must be an integer; got {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{source} must be an integer >= {low}; got {value!r}")
    return int(value)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def is_main() -> bool:
    """Whether this is process 0, the one that prints progress and writes figures and data
    files (always true in a single-process run)."""
    return jax.process_index() == 0


def several() -> bool:
    """Whether this run has several processes."""
    return jax.process_count() > 1


class ProcessLost(RuntimeError):
    """Another process of the run stopped (killed, crashed, its host lost): this one cannot go
    on. What was written to a store stays; the same run resumes it."""


def allgather(tree, tiled: bool = False):
    """`jax.experimental.multihost_utils.process_allgather(tree, tiled)`: every process's
    arrays (or their shards), on every process, as NumPy arrays. A process that stopped makes
    the collective fail on the others at once (the connection closes); that failure is raised
    here as `ProcessLost`, a `RuntimeError` that says what happened and how to go on."""
    from jax.experimental import multihost_utils

    try:
        with _stdout_to_stderr():  # gloo prints its connections ("[Gloo] Rank 0 is ...")
            return multihost_utils.process_allgather(tree, tiled=tiled)
    except (RuntimeError, ValueError) as err:  # JAX raises the lost connection as either
        raise ProcessLost(
            f"process {jax.process_index()} of {jax.process_count()} cannot reach the others "
            f"({_first_line(err)}): another process of the run stopped; start the run again, "
            "with --resume (or the same store=) to keep what was written"
        ) from None


@contextlib.contextmanager
def _stdout_to_stderr():
    """File descriptor 1 pointed at 2 for the duration: what the C++ libraries print on the
    standard output goes to the standard error, and the output (a command's report) stays
    clean."""
    import sys

    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no standard output to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _gather_bytes(data: bytes) -> list[bytes]:
    """`data` of every process, in process order (each at most `_MESSAGE` bytes)."""
    buffer = np.zeros(_MESSAGE + 4, np.uint8)
    data = data[:_MESSAGE]
    buffer[:4] = np.frombuffer(np.uint32(len(data)).tobytes(), np.uint8)
    buffer[4 : 4 + len(data)] = np.frombuffer(data, np.uint8)
    gathered = np.asarray(allgather(buffer))
    return [bytes(row[4 : 4 + int(row[:4].view(np.uint32)[0])]) for row in gathered]


def agree(action: Callable[[], object]):
    """`action()` on this process, and its result, once every process has run its own. If it
    raised on any process, every process raises: the failing process its own exception, the
    others a `ValueError` with the first failing process's message. So no process is left
    waiting for another in a later step. In a single-process run, `action()` itself."""
    if not several():
        return action()
    error = None
    try:
        result, failure = action(), b""
    except Exception as err:  # any failure: the others must hear of it
        result, error, failure = None, err, _first_line(err).encode()
    messages = _gather_bytes(failure)
    if error is not None:
        raise error
    for index, message in enumerate(messages):
        if message:
            raise ValueError(f"process {index}: " + message.decode(errors="replace"))
    return result


def same_everywhere(value, what: str) -> None:
    """Refuse (`ValueError`, on every process) a `value` that differs between the processes:
    the options of a run, its plan of work. `value` is anything with a stable `repr` (a dict of
    options, a list of ranges)."""
    if not several():
        return
    digest = hashlib.sha256(repr(value).encode()).hexdigest().encode()
    digests = _gather_bytes(digest)
    differ = [index for index, other in enumerate(digests) if other != digests[0]]
    if differ:
        raise ValueError(
            f"the processes of this run were given different {what} (process {differ[0]} "
            "differs from process 0); start every process with the same arguments"
        )
