"""Several processes, one computation, on JAX's multi-controller runtime: `initialize()` joins
the processes of a run (one per host or accelerator), after which the sweep engine, and so every
study, splits its items over the devices of every process, and `attnflow.fields.Sharded` splits
one system's tokens over them. Guide: docs/guide/distributed.md."""

from ._runtime import (
    ProcessLost as ProcessLost,
    agree as agree,
    allgather as allgather,
    initialize as initialize,
    is_main as is_main,
    same_everywhere as same_everywhere,
    several as several,
)
