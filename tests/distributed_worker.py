"""The jobs of the multi-process tests (`test_distributed.py`), and one process of such a run:

    python distributed_worker.py JOB PROCESSES PROCESS_ID PORT DEVICES OUT

runs JOB (a function below) in a process with DEVICES virtual CPU devices, joined to the others
through `attnflow.distributed.initialize` when PROCESSES > 1, and saves what it computed to
OUT (an `.npz`) on process 0. The tests also call the jobs in their own process (one device), for
the reference. `ATTNFLOW_TEST_DIE_AFTER=k` makes process 1 die (`os._exit`) after writing its
share of k chunks, as a killed process would (`ATTNFLOW_TEST_DIE_PROCESS`: another process;
`ATTNFLOW_TEST_FAIL=1`: raise instead, as a failed write would); `ATTNFLOW_TEST_SEED` sets the
studies' seed and `ATTNFLOW_TEST_SAMPLES` the phase diagram's samples per beta.
"""

import os
import sys

import numpy as np


def phase(out=None) -> dict:
    """A small phase diagram, stored in `OUT.store/` (resumed if it is there)."""
    import jax

    import attnflow as af

    die = int(os.environ.get("ATTNFLOW_TEST_DIE_AFTER", 0))
    victim = int(os.environ.get("ATTNFLOW_TEST_DIE_PROCESS", 1))
    if die and jax.process_index() == victim:
        write, written = af.sweep.Store.write, []

        def dying(self, *args, **kwargs):
            write(self, *args, **kwargs)
            written.append(1)
            if len(written) >= die:
                if os.environ.get("ATTNFLOW_TEST_FAIL"):
                    raise OSError("the disk is full (a failure of this process alone)")
                os._exit(1)

        af.sweep.Store.write = dying
    diagram = af.studies.phase_diagram(
        key=jax.random.key(int(os.environ.get("ATTNFLOW_TEST_SEED", 0))),
        n=6,
        d=3,
        betas=np.linspace(0.5, 4.0, 3),
        ts=np.linspace(0.0, 6.0, 4),
        samples=int(os.environ.get("ATTNFLOW_TEST_SAMPLES", 40)),
        memory=2**15,  # chunks of 32 items: several chunks
        store=None if out is None else f"{out}.store",
        progress=False,
    )
    return {"prob": diagram.prob, "status": diagram.status}


def studies(out=None) -> dict:
    """The other studies built on the sweep engine, small: every array of their results."""
    import jax

    import attnflow as af

    key = jax.random.key(int(os.environ.get("ATTNFLOW_TEST_SEED", 3)))
    common = dict(key=key, n=6, samples=8, progress=False)
    results = {
        "metastability": af.studies.metastability(
            **common, d=2, betas=(4.0,), ts=np.linspace(0.0, 3.0, 4)
        ),
        "ftle": af.studies.ftle_diagram(**common, d=3, betas=(1.0, 4.0), t1=2.0, every=1.0),
        "concentration": af.concentration.concentration(
            **common, d=2, betas=(10.0, 100.0), ts=np.array([0.0, 0.5, 2.0])
        ),
    }
    return {
        f"{name}.{field}": value
        for name, result in results.items()
        for field, value in vars(result).items()
        if isinstance(value, np.ndarray) and value.dtype != object
    }


def sharded(out=None) -> dict:
    """`simulate` of one system with its tokens split over every device of every process."""
    import jax
    from jax.experimental import multihost_utils

    import attnflow as af

    x0 = af.sphere.uniform(jax.random.key(1), 16, 3)
    attention = af.fields.Sharded(af.fields.Softmax(2.0), block=4)
    field = af.PostLN(attention)
    ts = np.linspace(0.0, 1.0, 3)
    trajectory = af.simulate(field, attention.put(x0), ts, rtol=1e-10, atol=1e-10)
    xs = multihost_utils.process_allgather(trajectory.xs, tiled=True)
    reference = af.simulate(af.SA(2.0), x0, ts, rtol=1e-10, atol=1e-10).xs
    return {"xs": np.asarray(xs), "reference": np.asarray(reference)}


if __name__ == "__main__":
    job, processes, process_id, port, devices, out = sys.argv[1:7]
    processes, process_id = int(processes), int(process_id)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

    import jax

    jax.config.update("jax_enable_x64", True)
    from attnflow import distributed

    if processes > 1:
        distributed.initialize(f"localhost:{port}", processes, process_id, heartbeat_timeout=5)
    results = {"phase": phase, "studies": studies, "sharded": sharded}[job](out)
    if jax.process_index() == 0:
        np.savez(out, **results)
    print(f"process {jax.process_index()}: done", flush=True)
