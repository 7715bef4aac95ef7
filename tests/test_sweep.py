"""The sweep engine and its store: chunking, devices, resuming, refusing, surviving kill -9."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnflow as af
from attnflow.sweep import Store, chunk_size, run

# A small phase diagram with several chunks (about 4.4 kB per item, so 20 kB holds 4 items,
# rounded up to one batch of 16: five chunks of 72 items).
SMALL = dict(n=6, d=3, betas=[0.5, 3.0, 8.0], ts=[0.0, 1.0, 2.0, 4.0, 8.0, 12.0], samples=24)


def toy(index):
    return {"square": index**2, "vector": jnp.arange(3) * index}


def test_run_yields_every_item_in_order_in_chunks_of_the_budget():
    chunks = list(run(toy, 10, batch=1, bytes_per_item=100, memory=300, progress=False))
    assert [(start, stop) for start, stop, _ in chunks] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    squares = np.concatenate([r["square"] for _, _, r in chunks])
    np.testing.assert_array_equal(squares, np.arange(10) ** 2)
    np.testing.assert_array_equal(chunks[-1][2]["vector"], [[0, 9, 18]])


def test_an_underestimated_item_is_caught_by_xla_memory_analysis():
    """Each item outputs 8000 bytes but claims 1: chunks still fit 100 kB (12 items)."""
    big = lambda i: {"big": jnp.ones(1000) * i}  # noqa: E731
    chunks = list(run(big, 100, batch=1, bytes_per_item=1, memory=100_000, progress=False))
    assert max(stop - start for start, stop, _ in chunks) == 12
    np.testing.assert_array_equal(np.concatenate([r["big"][:, 0] for *_, r in chunks]), range(100))


def test_chunk_size_respects_budget_devices_and_count():
    assert chunk_size(1000, 100, 1000, 1) == 10
    assert chunk_size(1000, 100, 1000, 4) == 8  # a multiple of the devices, within the budget
    assert chunk_size(5, 100, 10**9, 4) == 8  # no more than needed (rounded up to the devices)
    assert chunk_size(10**6, 100, 10**9, 1, largest=64) == 64
    with pytest.raises(ValueError, match="cannot hold one item"):
        chunk_size(10, 100, 99, 1)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="count must be a positive integer"):
        list(run(toy, 0, bytes_per_item=1, progress=False))
    with pytest.raises(ValueError, match="devices must be between 1 and"):
        list(run(toy, 3, bytes_per_item=1, devices=len(jax.devices()) + 1, progress=False))
    with pytest.raises(ValueError, match="cannot hold one item"):
        af.phase_diagram(key=jax.random.key(0), **SMALL, memory=1000, progress=False)
    with pytest.raises(ValueError, match="weights must be one of"):
        af.phase_diagram(key=jax.random.key(0), **SMALL, weights="wishart", progress=False)
    with pytest.raises(ValueError, match="multiples of the layer step"):
        af.phase_diagram(key=jax.random.key(0), **{**SMALL, "ts": [0.0, 0.15]}, progress=False)
    with pytest.raises(ValueError, match="betas must be"):
        af.phase_diagram(key=jax.random.key(0), **{**SMALL, "betas": [-1.0]}, progress=False)
    with pytest.raises(ValueError, match="key must be a JAX random key"):
        af.phase_diagram(key=0, **SMALL, progress=False)


def test_chunk_size_does_not_change_results():
    key = jax.random.key(1)
    whole = af.phase_diagram(key=key, **SMALL, progress=False)
    pieces = af.phase_diagram(key=key, **SMALL, memory=20_000, progress=False)
    np.testing.assert_array_equal(whole.prob, pieces.prob)
    assert 0 < whole.prob.mean() < 1  # neither trivial nor empty


def test_device_count_does_not_change_results(tmp_path):
    """Four CPU devices (XLA_FLAGS) against one: the same probabilities, to the last bit."""
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import attnflow as af
        assert len(jax.devices()) == 4
        small = {SMALL!r}
        key = jax.random.key(1)
        for devices in (4, 1):
            for memory in (20_000, 2**31):
                p = af.phase_diagram(key=key, **small, devices=devices, memory=memory, progress=False)
                np.save("{tmp_path}/prob-%d-%d.npy" % (devices, memory), p.prob)
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    reference = af.phase_diagram(key=jax.random.key(1), **SMALL, progress=False).prob
    files = sorted(tmp_path.glob("prob-*.npy"))
    assert len(files) == 4
    for file in files:
        np.testing.assert_array_equal(np.load(file), reference, err_msg=file.name)


def fresh_python(script: str, env_drop=("XLA_FLAGS", "JAX_NUM_CPU_DEVICES"), **env):
    """Run `script` in a new Python process (JAX not yet started), with `env` added to the
    environment and `env_drop` removed; return its stdout's last line as JSON."""
    environ = {k: v for k, v in os.environ.items() if k not in env_drop} | env
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_use_cpu_cores_splits_the_cpu_before_jax_starts_and_refuses_after():
    result = fresh_python(
        """
        import json, jax
        import attnflow as af
        given = af.sweep.use_cpu_cores(3)
        devices = len(jax.devices())
        again = af.sweep.use_cpu_cores(3)  # the same count, after the start: nothing to change
        try:
            af.sweep.use_cpu_cores(2)
            late = None
        except ValueError as err:
            late = str(err)
        print(json.dumps({"given": given, "devices": devices, "again": again, "late": late}))
        """
    )
    assert result["given"] == result["devices"] == result["again"] == 3
    assert "with 3 CPU device(s)" in result["late"] and "before the first" in result["late"]
    default = fresh_python(
        "import json, jax, os, attnflow as af; n = af.sweep.use_cpu_cores(); "
        "print(json.dumps([n, len(jax.devices()), len(os.sched_getaffinity(0))]))"
    )
    assert default[0] == default[1] == default[2]


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_use_cpu_cores_refuses_a_bad_count(count):
    with pytest.raises(ValueError, match="count"):
        af.sweep.use_cpu_cores(count)


def test_sweep_commands_use_every_core_and_give_the_same_data(tmp_path):
    """`attnflow phase-diagram` as the script runs it, in a new process: one JAX device per core,
    and the data of a one-device run in this process (a call of `main` that keeps JAX's
    devices), to the last bit. A number of devices set by XLA_FLAGS is kept."""
    argv = ["phase-diagram", "--n", "6", "--d", "3", "--num-betas", "3", "--samples", "24"]
    argv += ["--t1", "2", "--saves", "5", "--no-plot", "--quiet"]
    out = str(tmp_path / "all.npz")
    script = f"""
        import json, jax
        from attnflow.cli import main
        status = main({[*argv, "--out", out]!r}, all_cores=True)
        print(json.dumps([status, len(jax.devices())]))
        """
    assert fresh_python(script) == [0, len(os.sched_getaffinity(0))]
    given = """
        import json, jax
        from attnflow.cli._devices import _cpu_cores
        from attnflow.cli._main import _full_parser
        _cpu_cores(_full_parser().parse_args(["phase-diagram"]))
        print(json.dumps(len(jax.devices())))
        """
    three = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    assert fresh_python(given, **three) == 3
    from attnflow.cli import main

    assert len(jax.devices()) == 1
    assert main([*argv, "--out", str(tmp_path / "one.npz")]) == 0
    with np.load(tmp_path / "one.npz") as one, np.load(out) as other:
        for field in ("prob", "status", "betas", "ts"):
            np.testing.assert_array_equal(other[field], one[field], err_msg=field)


class Interrupt(Exception):
    pass


def test_resume_recomputes_nothing_and_gives_the_same_result(tmp_path, monkeypatch):
    key, store = jax.random.key(2), tmp_path / "store"
    uninterrupted = af.phase_diagram(key=key, **SMALL, progress=False)
    write, writes = Store.write, []

    def interrupted_write(self, start, stop, arrays):
        if len(writes) == 2:
            raise Interrupt
        writes.append((start, stop))
        write(self, start, stop, arrays)

    monkeypatch.setattr(Store, "write", interrupted_write)
    with pytest.raises(Interrupt):
        af.phase_diagram(key=key, **SMALL, memory=20_000, store=store, progress=False)
    monkeypatch.setattr(Store, "write", write)
    first = {p.name: p.read_bytes() for p in store.glob("chunk-*.npz")}
    assert len(first) == 2

    computed = []
    monkeypatch.setattr(
        Store,
        "write",
        lambda self, a, b, arrays: (computed.append((a, b)), write(self, a, b, arrays)),
    )
    resumed = af.phase_diagram(key=key, **SMALL, memory=20_000, store=store, progress=False)
    np.testing.assert_array_equal(resumed.prob, uninterrupted.prob)
    assert not set(computed) & set(writes)  # nothing written before was computed again
    for name, content in first.items():
        assert (store / name).read_bytes() == content
    count = len(SMALL["betas"]) * SMALL["samples"]
    assert Store(store, resumed.config, count).missing() == []


def test_a_different_configuration_is_refused(tmp_path):
    key, store = jax.random.key(3), tmp_path / "store"
    af.phase_diagram(key=key, **SMALL, store=store, progress=False)
    with pytest.raises(ValueError, match=r"samples: 24 there, 25 now"):
        af.phase_diagram(key=key, **{**SMALL, "samples": 25}, store=store, progress=False)
    with pytest.raises(ValueError, match="key"):
        af.phase_diagram(key=jax.random.key(4), **SMALL, store=store, progress=False)
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["config"]["version"] == af.__version__
    assert manifest["config"]["samples"] == 24


def test_kill_9_while_running_loses_nothing(tmp_path):
    """A sweep killed with SIGKILL resumes from its finished chunks to the uninterrupted result."""
    store = tmp_path / "store"
    config = dict(n=8, d=3, betas=list(np.linspace(0.5, 9, 6)), samples=256)
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import attnflow as af
        af.phase_diagram(key=jax.random.key(5), **{config!r}, ts=np.arange(301) * 0.1,
                         memory=60_000, store="{store}", progress=False)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while len(list(store.glob("chunk-*.npz"))) < 2:
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    (store / ".chunk-torn.tmp").write_bytes(b"half a chunk")  # as a kill while writing leaves
    kept = {p.name: p.read_bytes() for p in store.glob("chunk-*.npz")}
    key, ts = jax.random.key(5), np.arange(301) * 0.1
    resumed = af.phase_diagram(key=key, **config, ts=ts, memory=60_000, store=store, progress=False)
    assert not list(store.glob(".*.tmp"))
    for name, content in kept.items():
        assert (store / name).read_bytes() == content
    fresh = af.phase_diagram(key=key, **config, ts=ts, progress=False)
    np.testing.assert_array_equal(resumed.prob, fresh.prob)
