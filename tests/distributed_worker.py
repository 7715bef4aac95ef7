"""One process of a multi-process test run (`test_distributed.py` starts it):

    python distributed_worker.py JOB PROCESSES PROCESS_ID PORT DEVICES OUT

runs JOB (a function below) in a process with DEVICES virtual CPU devices, joined to the others
through `attnflow.distributed.initialize` when PROCESSES > 1, and saves what it computed to
OUT (an `.npz`) on process 0. `ATTNFLOW_TEST_DIE_AFTER=k` makes process 1 die (`os._exit`)
after writing its share of k chunks, as a killed process would.
"""

import os
import sys

job, processes, process_id, port, devices, out = sys.argv[1:7]
processes, process_id, devices = int(processes), int(process_id), int(devices)
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import attnflow as af  # noqa: E402
from attnflow import distributed  # noqa: E402

if processes > 1:
    distributed.initialize(f"localhost:{port}", processes, process_id, heartbeat_timeout=5)


def phase():
    """A small phase diagram, stored in `OUT.store/` (resumed if it is there)."""
    die = int(os.environ.get("ATTNFLOW_TEST_DIE_AFTER", 0))
    if die and jax.process_index() == 1:
        write, written = af.sweep.Store.write, []

        def dying(self, *args, **kwargs):
            write(self, *args, **kwargs)
            written.append(1)
            if len(written) >= die:
                os._exit(1)

        af.sweep.Store.write = dying
    diagram = af.studies.phase_diagram(
        key=jax.random.key(int(os.environ.get("ATTNFLOW_TEST_SEED", 0))),
        n=6,
        d=3,
        betas=np.linspace(0.5, 4.0, 3),
        ts=np.linspace(0.0, 6.0, 4),
        samples=40,
        memory=2**15,  # chunks of 32 items: several chunks
        store=out + ".store",
        progress=False,
    )
    return {"prob": diagram.prob, "status": diagram.status}


def sharded():
    """`simulate` of one system with its tokens split over every device of every process."""
    x0 = af.sphere.uniform(jax.random.key(1), 16, 3)
    attention = af.fields.Sharded(af.fields.Softmax(2.0), block=4)
    field = af.PostLN(attention)
    ts = np.linspace(0.0, 1.0, 3)
    trajectory = af.simulate(field, attention.put(x0), ts, rtol=1e-10, atol=1e-10)
    from jax.experimental import multihost_utils

    xs = multihost_utils.process_allgather(trajectory.xs, tiled=True)
    reference = af.simulate(af.SA(2.0), x0, ts, rtol=1e-10, atol=1e-10).xs
    return {"xs": np.asarray(xs), "reference": np.asarray(reference)}


results = {"phase": phase, "sharded": sharded}[job]()
if jax.process_index() == 0:
    np.savez(out, **results)
print(f"process {jax.process_index()}: done", flush=True)
