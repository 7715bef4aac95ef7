"""The multi-process path against one process: a phase diagram on 2 processes x 1 device and on
1 process x 2 devices, the same work on the same cores.

Both runs compute the same items with the same per-device program; what differs is how results
reach the host: one process gathers its devices' shards in memory, two processes exchange theirs
through JAX's CPU collectives (gloo over localhost) and each writes its own share of the store.
The script starts every run as new processes (`python benchmarks/distributed.py --worker ...`,
so it is also a working recipe for two processes on one machine), times each from the start of
its sweep to its end on process 0 (compilation included, process start-up and JAX's import
not), checks that the diagrams are identical to the last bit, and prints the ratio. It then
estimates the full GLPR Fig. 3 (552,960 items) on 8 and 64 devices from the measured cost per
item per device.

    python benchmarks/distributed.py [--samples 512] [--num-betas 16] [--d 32] [--repeats 2]
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIGURE3_ITEMS = 6 * 90 * 1024


def worker(args) -> None:
    """One process: the sweep, its time, and the diagram (process 0 writes them)."""
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    import attnflow as af

    if args.processes > 1:
        af.distributed.initialize(f"localhost:{args.port}", args.processes, args.process)
    start = time.perf_counter()
    diagram = af.studies.phase_diagram(
        key=jax.random.key(0),
        n=32,
        d=args.d,
        betas=np.linspace(0.1, 9.0, args.num_betas),
        ts=np.linspace(0.0, 30.0, 151),
        samples=args.samples,
        store=args.out / "store",
        progress=False,
    )
    seconds = time.perf_counter() - start
    if af.distributed.is_main():
        np.save(args.out / "prob.npy", diagram.prob)
        (args.out / "seconds.json").write_text(json.dumps(seconds))


def launch(args, processes: int, devices: int) -> tuple[float, "object"]:
    """Run the sweep as `processes` processes of `devices` CPU devices; (seconds, prob)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            port = probe.getsockname()[1]
        common = [sys.executable, __file__, "--worker", "--out", str(out), "--port", str(port)]
        common += ["--processes", str(processes), "--devices", str(devices)]
        common += ["--samples", str(args.samples), "--num-betas", str(args.num_betas)]
        common += ["--d", str(args.d)]
        started = [
            subprocess.Popen([*common, "--process", str(p)], stderr=subprocess.PIPE, text=True)
            for p in range(processes)
        ]
        for process in started:
            _, err = process.communicate(timeout=1800)
            if process.returncode:
                raise SystemExit(f"a process failed:\n{err[-3000:]}")
        return json.loads((out / "seconds.json").read_text()), np.load(out / "prob.npy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--num-betas", type=int, default=16)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--process", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    import numpy as np

    items = args.samples * args.num_betas
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; phase diagram "
        f"n = 32, d = {args.d}, {args.num_betas} betas x {args.samples} samples = {items} "
        "items, t in [0, 30], h = 0.1, float64"
    )
    runs = {"1 process x 2 devices": (1, 2), "2 processes x 1 device": (2, 1)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    probs = {}
    for _ in range(args.repeats):  # alternated, so that a slow spell hits both
        for name, (processes, devices) in runs.items():
            seconds, probs[name] = launch(args, processes, devices)
            times[name].append(seconds)
    one, two = (min(times[name]) for name in runs)
    same = np.array_equal(*probs.values(), equal_nan=True)
    for name in runs:
        each = ", ".join(f"{t:.2f} s" for t in times[name])
        print(f"  {name}: {each} (best {min(times[name]):.2f} s)")
    print(f"  2 processes / 1 process: {two / one:.3f}x; diagrams identical: {same}")
    per_item = one * 2 / items  # device-seconds per item, compilation included
    print(f"  cost per item on one device: {per_item * 1e3:.2f} ms")
    for devices in (8, 64):
        print(
            f"  full Fig. 3 ({FIGURE3_ITEMS} items) on {devices} such devices: "
            f"{FIGURE3_ITEMS * per_item / devices / 60:.1f} min"
        )


if __name__ == "__main__":
    main()
