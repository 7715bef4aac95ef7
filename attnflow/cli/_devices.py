"""Which devices a command computes on: every CPU core (`use_cpu_cores`) for the commands that
sweep, or, with --distributed, the devices of every process of a multi-process run."""

import os
import sys

from ._options import _release, config


def choose_devices(args, all_cores: bool) -> None:
    """Before JAX computes: join the other processes with --distributed (`_join`), otherwise,
    when `all_cores` (the `attnflow` script), give a command that sweeps every core."""
    if getattr(args, "distributed", False):
        _join(args)
    elif all_cores:
        _cpu_cores(args)


def _join(args) -> None:
    """--distributed: join the other processes (`attnflow.distributed.initialize`) and check
    that every process was given the same options. Each keeps JAX's own devices (one per
    process on a CPU, unless `XLA_FLAGS` says more; every local accelerator)."""
    from .. import distributed

    distributed.initialize()
    options = config(args) | {"command": args.command, "out": str(getattr(args, "out", ""))}
    distributed.same_everywhere(sorted(options.items()), "options")


def _cpu_cores(args) -> None:
    """A command that sweeps shards its items over every core: one JAX CPU device per core
    (`attnflow.sweep.use_cpu_cores`), unless `XLA_FLAGS` or `JAX_NUM_CPU_DEVICES` say how many,
    or JAX has computed already in this process."""
    import jax

    given = "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
    if not getattr(args, "_sweeps", False) or given or jax.config.jax_num_cpu_devices != -1:
        return
    from ..sweep import use_cpu_cores

    try:
        use_cpu_cores()
    except ValueError:  # JAX's devices are fixed already: the sweep uses them as they are
        pass


def end_if_distributed(args, status: int = 2) -> None:
    """After the message of a failure (or an interrupt): in a multi-process run, end this
    process now with `status`. JAX's own exit waits at a barrier for every process, which a
    lost process (`attnflow.distributed.ProcessLost`), or one that failed alone and is waited
    for elsewhere, never reaches: it would abort with a stack trace, minutes later. What the run
    wrote stays, for --resume."""
    if "jax" not in sys.modules or not getattr(args, "distributed", False):
        return
    import jax

    if not jax.distributed.is_initialized():
        return
    _release(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
