"""Several processes on this machine (localhost, JAX's CPU collectives): a sweep and a sharded
system split over the devices of two processes give the results of one process, bit for bit;
a killed process stops the other with a clear error, and the run resumes."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import attnflow as af
from attnflow import distributed

sys.path.insert(0, str(Path(__file__).parent))
import distributed_worker  # noqa: E402

WORKER = Path(__file__).with_name("distributed_worker.py")
TIMEOUT = 120  # seconds: every process started here is killed after this (no hang)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def start(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    """Exit status and stderr of `process`, killed after `TIMEOUT` seconds."""
    try:
        _, err = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"a process did not finish within {TIMEOUT} s:\n{err[-2000:]}")
    return process.returncode, err


def workers(job: str, out, processes: int, devices: int, env=None) -> list[tuple[int, str]]:
    """Run `distributed_worker.py JOB` as `processes` processes of `devices` CPU devices each,
    with the environment `env` added (a dict, or a function of the process index)."""
    port = str(free_port())
    argv = [sys.executable, str(WORKER), job, str(processes)]
    started = [
        start([*argv, str(p), port, str(devices), str(out)], env(p) if callable(env) else env)
        for p in range(processes)
    ]
    return [finish(process) for process in started]


def succeeded(finished: list[tuple[int, str]]) -> bool:
    """Whether every process ended with status 0 (else its stderr's end is shown)."""
    for code, err in finished:
        assert code == 0, err[-3000:]
    return True


def test_a_phase_diagram_over_two_processes_is_the_one_process_one_bit_for_bit(tmp_path):
    """2 processes x 2 devices, 1 process x 4 devices and 1 device (here): the same diagram;
    each process wrote the chunks of the items it computed, and only those."""
    two = tmp_path / "two"
    assert succeeded(workers("phase", two, 2, 2))
    four = tmp_path / "four"
    [(code, err)] = workers("phase", four, 1, 4)
    assert code == 0, err[-2000:]
    here = distributed_worker.phase()
    assert 0 < here["prob"].sum() < here["prob"].size  # some pairs clustered, not all
    for out in (two, four):
        data = np.load(f"{out}.npz")
        assert set(data.files) == set(here)
        for name in here:
            np.testing.assert_array_equal(data[name], here[name])
    # chunks of 64 items (4 devices x batches of 16): 32 rows from each process
    chunks = sorted(p.name for p in Path(f"{two}.store").glob("chunk-*.npz"))
    assert chunks == [
        "chunk-0000000000-0000000032.npz",
        "chunk-0000000032-0000000064.npz",
        "chunk-0000000064-0000000096.npz",
        "chunk-0000000096-0000000120.npz",
    ]


def test_a_killed_process_stops_the_other_and_the_run_resumes_on_one(tmp_path):
    """Process 1 dies after writing its first share: process 0 stops with a clear error within
    the time limit (no hang), the store keeps what both wrote, and one process resumes it to
    the uninterrupted result."""
    out = tmp_path / "killed"
    (code0, err0), (code1, _) = workers("phase", out, 2, 2, env={"ATTNFLOW_TEST_DIE_AFTER": "1"})
    assert code0 != 0 and code1 != 0
    assert "another process of the run stopped" in err0, err0[-2000:]
    written = sorted(p.name for p in Path(f"{out}.store").glob("chunk-*.npz"))
    assert "chunk-0000000032-0000000064.npz" in written  # process 1's share, before it died
    assert not Path(f"{out}.npz").exists()
    resumed, reference = distributed_worker.phase(out), distributed_worker.phase()
    for name in reference:
        np.testing.assert_array_equal(resumed[name], reference[name])


def test_a_killed_coordinator_stops_the_other_process(tmp_path):
    """Process 0 (the coordinator) dies after its first share: process 1 stops, with the
    message, within the time limit."""
    out = tmp_path / "coordinator"
    env = {"ATTNFLOW_TEST_DIE_AFTER": "1", "ATTNFLOW_TEST_DIE_PROCESS": "0"}
    (code0, _), (code1, err1) = workers("phase", out, 2, 2, env=env)
    assert code0 != 0 and code1 != 0
    assert "another process of the run stopped" in err1, err1[-2000:]


def test_a_failure_on_one_process_stops_every_process_with_its_message(tmp_path):
    out = tmp_path / "failed"
    env = {"ATTNFLOW_TEST_DIE_AFTER": "1", "ATTNFLOW_TEST_FAIL": "1"}
    (code0, err0), (code1, err1) = workers("phase", out, 2, 2, env=env)
    assert code0 != 0 and code1 != 0
    assert "OSError: the disk is full" in err1, err1[-2000:]
    assert "ValueError: process 1: the disk is full" in err0, err0[-2000:]


def test_a_last_chunk_that_one_process_holds_no_item_of(tmp_path):
    """75 items in chunks of 64 over 2 processes x 2 devices: process 1's share of the last
    chunk is padding only; it writes nothing there, and the result is the one-device one."""
    out = tmp_path / "padded"
    assert succeeded(workers("phase", out, 2, 2, env={"ATTNFLOW_TEST_SAMPLES": "25"}))
    chunks = sorted(p.name for p in Path(f"{out}.store").glob("chunk-*.npz"))
    assert chunks[-1] == "chunk-0000000064-0000000075.npz" and len(chunks) == 3
    os.environ["ATTNFLOW_TEST_SAMPLES"] = "25"
    try:
        here = distributed_worker.phase()
    finally:
        del os.environ["ATTNFLOW_TEST_SAMPLES"]
    np.testing.assert_array_equal(np.load(f"{out}.npz")["prob"], here["prob"])


def test_a_member_store_takes_no_lock_renames_nothing_and_refuses_what_it_cannot_check(
    tmp_path,
):
    config, folder = {"study": "test"}, tmp_path / "store"
    with pytest.raises(ValueError, match="no manifest.json, which process 0 wrote"):
        af.sweep.Store(folder, config, 4, member=True)
    with af.sweep.Store(folder, config, 4) as first:  # process 0 holds the lock
        first.write(0, 2, {"x": np.arange(2.0)})
        member = af.sweep.Store(folder, config, 4, member=True)  # no lock: not refused
        assert member.missing() == [(2, 4)]
        member.write(2, 4, {"x": np.arange(2.0)})
        with pytest.raises(ValueError, match="overlap"):
            member.write(2, 4, {"x": np.arange(2.0)})
        (folder / "chunk-0000000000-0000000002.npz").write_bytes(b"PK\x03\x04 torn")
        with pytest.raises(ValueError, match="damaged .* not where process 0 read it"):
            af.sweep.Store(folder, config, 4, member=True)
        assert (folder / "chunk-0000000000-0000000002.npz").exists()  # not renamed


def test_the_other_studies_over_two_processes_are_the_one_process_ones_bit_for_bit(tmp_path):
    """metastability, ftle_diagram and concentration: 2 processes x 1 device against 1."""
    out = tmp_path / "studies"
    assert succeeded(workers("studies", out, 2, 1))
    data, here = np.load(f"{out}.npz"), distributed_worker.studies()
    assert set(data.files) == set(here) and len(here) >= 6, sorted(here)
    for name, value in here.items():
        np.testing.assert_array_equal(data[name], value, err_msg=name)


def test_one_system_sharded_over_two_processes_is_the_single_device_one(tmp_path):
    out = tmp_path / "sharded"
    assert succeeded(workers("sharded", out, 2, 2))
    data = np.load(f"{out}.npz")
    assert data["xs"].shape == (3, 16, 3)
    np.testing.assert_allclose(data["xs"], data["reference"], rtol=0, atol=1e-12)


def cli(argv, process: int, port: int, extra_env=None) -> subprocess.Popen:
    env = {
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(process),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        **(extra_env or {}),
    }
    return start([sys.executable, "-m", "attnflow", *argv], env)


PHASE = ["phase-diagram", "--n", "6", "--d", "3", "--num-betas", "3", "--samples", "20"]
PHASE += ["--t1", "3", "--saves", "4", "--no-plot", "--quiet"]


def test_the_cli_splits_a_sweep_over_two_processes_and_process_0_writes(tmp_path):
    port = free_port()
    out = tmp_path / "two.npz"
    started = [cli([*PHASE, "--distributed", "--out", str(out)], p, port) for p in (0, 1)]
    (code0, err0), (code1, err1) = (finish(p) for p in started)
    assert code0 == code1 == 0, err0[-2000:] + err1[-2000:]
    from attnflow.cli import main

    assert main([*PHASE, "--out", str(tmp_path / "one.npz")]) == 0
    two, one = np.load(out), np.load(tmp_path / "one.npz")
    assert set(two.files) == set(one.files)
    for name in two.files:
        assert np.array_equal(two[name], one[name]), name  # the configuration included
    assert not (tmp_path / "two.npz.partial").exists()


def test_processes_given_different_options_all_refuse_and_write_nothing(tmp_path):
    port = free_port()
    out = tmp_path / "bad.npz"
    started = [
        cli([*PHASE, "--distributed", "--out", str(out), "--seed", str(p)], p, port) for p in (0, 1)
    ]
    for code, err in (finish(p) for p in started):
        assert code == 2
        assert "were given different options" in err, err[-2000:]
    assert not out.exists() and not (tmp_path / "bad.npz.partial").exists()


@pytest.mark.parametrize("job", ["phase", "studies"])  # with a store, and without
def test_processes_given_different_keys_all_refuse_and_write_nothing(tmp_path, job):
    """The library call, not only the command line: a seed that differs on one process."""
    out = tmp_path / "keys"
    finished = workers(job, out, 2, 1, env=lambda p: {"ATTNFLOW_TEST_SEED": str(p)})
    for code, err in finished:
        assert code != 0
        assert "were given different arguments" in err, err[-2000:]
    assert not Path(f"{out}.store").exists() and not Path(f"{out}.npz").exists()


def test_initialize_after_a_computation_is_refused():
    jax.devices()  # JAX's backend has started in this process
    with pytest.raises(ValueError, match="before JAX's first computation"):
        distributed.initialize("localhost:1", 1, 0)


def test_an_unreachable_coordinator_is_a_clear_error_in_bounded_time():
    port = free_port()  # nothing listens there
    with pytest.raises(RuntimeError, match=f"could not reach the coordinator localhost:{port}"):
        distributed.initialize(f"localhost:{port}", 2, 1, timeout=1)


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES .* must be an integer"),
        ({"JAX_NUM_PROCESSES": "0"}, "JAX_NUM_PROCESSES .* must be an integer >= 1"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "process_id must be below"),
        ({"JAX_COORDINATOR_ADDRESS": "nowhere", "JAX_PROCESS_ID": "1"}, "must be host:port"),
    ],
)
def test_initialize_refuses_a_bad_environment(monkeypatch, env, match):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        distributed.initialize()


def test_a_sweep_refuses_more_processes_than_items(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(distributed, "same_everywhere", lambda *args: None)  # one process here
    with pytest.raises(ValueError, match="2 item.* cannot be split over 3 processes"):
        af.sweep.run(lambda i: {"i": i}, 2, bytes_per_item=8)


def test_devices_are_taken_from_every_process_in_process_order(monkeypatch):
    class Device:
        def __init__(self, process_index, id):
            self.process_index, self.id, self.platform = process_index, id, "cpu"

        def __repr__(self):
            return f"Device({self.process_index}, {self.id})"

    devices = [Device(p, 2 * p + k) for p in (1, 0) for k in (1, 0)]
    monkeypatch.setattr(jax, "devices", lambda: devices)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    order = [(d.process_index, d.id) for d in af.sweep.select_devices()]
    assert order == [(0, 0), (0, 1), (1, 2), (1, 3)]
    two = [(d.process_index, d.id) for d in af.sweep.select_devices(2)]
    assert two == [(0, 0), (1, 2)]
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        af.sweep.select_devices(3)
    with pytest.raises(ValueError, match="none of process 1"):
        af.sweep.select_devices(devices[2:])
