"""The sweep store refuses, or recomputes, everything it cannot vouch for: a second writer,
overlapping or foreign chunks, damaged chunks, broken manifests, unwritable folders."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest

from attnflow.sweep import Store, _store, run

CONFIG = {"study": "toy", "key": [0, 7], "n": 3, "betas": (0.5, 2.0)}
COUNT = 10


def results(start, stop):
    items = np.arange(start, stop)
    return {"square": items**2, "vector": np.outer(items, np.arange(3.0))}


def chunk(path, start, stop):
    return path / f"chunk-{start:010d}-{stop:010d}.npz"


def filled(path, ranges=((0, 4), (4, 8)), config=CONFIG, count=COUNT):
    """A store holding the chunks `ranges` of `results`, closed."""
    store = Store(path, config, count)
    for start, stop in ranges:
        store.write(start, stop, results(start, stop))
    store.close()
    return path


def toy(index):
    return {"square": index**2, "vector": jnp.arange(3) * index}


def test_a_store_writes_reads_and_resumes(tmp_path):
    path = filled(tmp_path / "s")
    with Store(path, CONFIG, COUNT) as store:
        assert store.chunks() == list(store) == [(0, 4), (4, 8)]
        assert store.missing() == [(8, 10)] and store.done() == 8
        got = store.read(4, 8)
        assert set(got) == {"square", "vector"}  # the header stays inside the store
        np.testing.assert_array_equal(got["vector"], results(4, 8)["vector"])
        store.write(8, 10, results(8, 10))
        assert store.missing() == []
    manifest = json.loads((path / _store.MANIFEST).read_text())
    assert manifest["count"] == COUNT and manifest["config"]["betas"] == [0.5, 2.0]
    with np.load(chunk(path, 4, 8)) as data:
        assert (int(data["_start"]), int(data["_stop"])) == (4, 8)
        assert str(data["_fingerprint"]) == manifest["fingerprint"]


# 1. One writer at a time, and never overlapping chunks.


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_closes(tmp_path):
    path = tmp_path / "s"
    first = Store(path, CONFIG, COUNT)
    with pytest.raises(
        ValueError,
        match=rf"another attnflow run is writing to {path} \(pid {os.getpid()}\b.*\); wait for "
        "it to finish or choose another output",
    ):
        Store(path, CONFIG, COUNT)
    first.close()
    first.close()  # closing twice is harmless
    with pytest.raises(ValueError, match="closed"):
        first.write(0, 4, results(0, 4))
    with Store(path, CONFIG, COUNT) as second:
        second.write(0, 4, results(0, 4))
        with pytest.raises(ValueError, match="another attnflow run"):
            Store(path, CONFIG, COUNT)
    with Store(path, CONFIG, COUNT) as third:  # the with block released the lock
        assert third.chunks() == [(0, 4)]


def test_a_writer_in_another_process_keeps_others_out_until_it_dies(tmp_path):
    path = tmp_path / "s"
    script = (
        "import sys\n"
        "from attnflow.sweep import Store\n"
        f"store = Store({str(path)!r}, {CONFIG!r}, {COUNT})\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline() == "open\n"
        with pytest.raises(ValueError, match=rf"writing to {path} \(pid {process.pid}\)"):
            Store(path, CONFIG, COUNT)
    finally:
        process.kill()  # as kill -9: no close(), no cleanup
        process.wait()
    Store(path, CONFIG, COUNT).close()  # the lock died with its process


def test_two_runs_resuming_one_folder_at_once_with_different_chunks_cannot_both_write(tmp_path):
    """The defect: two resumes with different memory budgets wrote chunk-0-3 and chunk-0-5 side
    by side, and a later resume added both (a probability reached 2)."""
    path = tmp_path / "s"
    first = run(
        toy,
        10,
        batch=1,
        bytes_per_item=100,
        memory=300,
        store=Store(path, CONFIG, 10),
        progress=False,
    )
    assert next(first)[:2] == (0, 3)  # the first run holds the folder from here on
    with pytest.raises(ValueError, match="another attnflow run is writing to"):
        run(toy, 10, batch=1, bytes_per_item=100, memory=500, store=Store(path, CONFIG, 10))
    rest = list(first)
    assert [(a, b) for a, b, _ in rest] == [(3, 6), (6, 9), (9, 10)]
    del first, rest
    with Store(path, CONFIG, 10) as store:
        got = list(
            run(toy, 10, batch=1, bytes_per_item=100, memory=500, store=store, progress=False)
        )
    np.testing.assert_array_equal(
        np.concatenate([r["square"] for *_, r in got]), np.arange(10) ** 2
    )


def test_overlapping_chunks_are_refused_naming_both_files(tmp_path):
    path = filled(tmp_path / "s", [(0, 6)])
    extra = tmp_path / "extra.npz"
    chunk(path, 0, 6).rename(extra)
    filled(path, [(4, 10)])  # as a second run with another chunk size would have
    extra.rename(chunk(path, 0, 6))
    with pytest.raises(
        ValueError,
        match=r"chunk-0000000000-0000000006\.npz and .*chunk-0000000004-0000000010\.npz hold "
        r"overlapping items \(4:6\).*delete",
    ):
        Store(path, CONFIG, COUNT)


def test_write_refuses_what_does_not_fit_the_plan_or_the_stored_chunks(tmp_path):
    with Store(tmp_path / "s", CONFIG, COUNT) as store:
        store.write(0, 4, results(0, 4))
        with pytest.raises(ValueError, match=r"overlap.*chunk-0000000000-0000000004\.npz"):
            store.write(2, 6, results(2, 6))
        for start, stop in [(-1, 2), (5, 5), (8, 11)]:
            with pytest.raises(ValueError, match=r"0 <= start < stop <= 10"):
                store.write(start, stop, results(max(start, 0), stop))
        with pytest.raises(ValueError, match=r"2 rows.*square"):
            store.write(4, 6, results(4, 7))
        with pytest.raises(ValueError, match="differ from those already stored"):
            store.write(4, 6, {"square": np.arange(2)})
        with pytest.raises(ValueError, match="differ from those already stored"):
            store.write(4, 6, {**results(4, 6), "vector": np.zeros((2, 4))})
        with pytest.raises(ValueError, match="reserved"):
            store.write(4, 6, {**results(4, 6), "_start": np.zeros(2)})
        assert store.chunks() == [(0, 4)]
        assert sorted(p.name for p in store.path.iterdir()) == [
            "chunk-0000000000-0000000004.npz",
            "lock",
            "manifest.json",
        ]


def test_a_chunk_whose_range_disagrees_with_its_name_or_the_plan_is_recomputed(tmp_path, capfd):
    path = filled(tmp_path / "s", [(0, 4), (4, 8)])
    chunk(path, 4, 8).rename(chunk(path, 6, 10))  # a renamed file: its items are 4:8
    fingerprint = json.loads((path / _store.MANIFEST).read_text())["fingerprint"]
    header = dict(_start=np.int64(8), _stop=np.int64(12), _fingerprint=np.array(fingerprint))
    np.savez(chunk(path, 8, 12), **results(8, 12), **header)  # beyond the 10 items
    with Store(path, CONFIG, COUNT) as store:
        assert store.missing() == [(4, 10)]
    err = capfd.readouterr().err
    assert f"attnflow: {chunk(path, 6, 10)} is damaged (it holds items 4:8" in err
    assert f"attnflow: {chunk(path, 8, 12)} is damaged (items 8:12 lie outside" in err
    assert not chunk(path, 6, 10).exists() and not chunk(path, 8, 12).exists()


# 2. Only this configuration's chunks are ever used.


def test_chunks_without_their_manifest_are_refused(tmp_path):
    """The defect: with manifest.json deleted, a resume with another seed reused the chunks."""
    path = filled(tmp_path / "s")
    (path / _store.MANIFEST).unlink()
    with pytest.raises(
        ValueError,
        match=rf"{path} holds chunk files but no valid manifest.json, so they cannot be checked "
        "against this configuration; delete the folder to start over",
    ):
        Store(path, {**CONFIG, "key": [0, 8]}, COUNT)
    assert len(list(path.glob("chunk-*.npz"))) == 2  # refused, not deleted


def test_a_chunk_of_another_configuration_is_refused_naming_it(tmp_path):
    path = filled(tmp_path / "s")
    other = filled(tmp_path / "other", [(8, 10)], config={**CONFIG, "key": [0, 8]})
    shutil.copy(chunk(other, 8, 10), chunk(path, 8, 10))
    with pytest.raises(
        ValueError, match=rf"{chunk(path, 8, 10)} was written for another configuration"
    ):
        Store(path, CONFIG, COUNT)
    longer = filled(tmp_path / "longer", [(8, 12)], count=12)  # the count is in the fingerprint
    shutil.copy(chunk(longer, 8, 12), chunk(path, 8, 10))
    with pytest.raises(ValueError, match="another configuration"):
        Store(path, CONFIG, COUNT)


def test_an_empty_folder_is_a_fresh_start(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".chunk-x.tmp").write_bytes(b"torn")  # a kill while writing leaves these
    with Store(tmp_path / "s", CONFIG, COUNT) as store:
        assert store.missing() == [(0, COUNT)]
    assert not list((tmp_path / "s").glob(".*.tmp"))
    assert (tmp_path / "s" / _store.MANIFEST).is_file()


# 3. Damage: recomputed when it is found on opening, a one-line error otherwise.


def _truncate(file):
    file.write_bytes(file.read_bytes()[:-40])


def _rewrite(file, **changes):
    with np.load(file) as data:
        arrays = dict(data)
    np.savez(file, **{**arrays, **changes})


DAMAGE = {
    "truncated": (_truncate, "not a readable npz archive"),
    "empty": (lambda file: file.write_bytes(b""), "empty file"),
    "zeroed": (lambda file: file.write_bytes(bytes(file.stat().st_size)), "not an npz archive"),
    "short": (lambda file: _rewrite(file, square=np.arange(3)), "square has 3 rows, not 4"),
    "keys": (lambda file: _rewrite(file, cube=np.arange(4)), "its arrays .* differ from"),
    "shape": (lambda file: _rewrite(file, vector=np.zeros((4, 2))), "its arrays .* differ"),
    "dtype": (lambda file: _rewrite(file, square=np.zeros(4, np.int8)), "its arrays .* differ"),
    "header": (lambda file: np.savez(file, **results(4, 8)), "no _start, _stop, _fingerprint"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_chunk_is_reported_and_recomputed_never_used(tmp_path, capfd, damage):
    path = filled(tmp_path / "s", [(0, 4), (4, 8), (8, 10)])
    spoil, why = DAMAGE[damage]
    spoil(chunk(path, 4, 8))
    with Store(path, CONFIG, COUNT) as store:
        assert store.chunks() == [(0, 4), (8, 10)]
        assert store.missing() == [(4, 8)]
        store.write(4, 8, results(4, 8))
        np.testing.assert_array_equal(store.read(4, 8)["square"], np.arange(4, 8) ** 2)
    (line,) = capfd.readouterr().err.splitlines()
    assert line.startswith(f"attnflow: {chunk(path, 4, 8)} is damaged (")
    assert line.endswith("); recomputing it")
    assert re.search(why, line), line
    assert (path / "chunk-0000000004-0000000008.npz.damaged").exists()  # kept aside


def test_a_chunk_damaged_after_opening_is_never_read(tmp_path):
    path = filled(tmp_path / "s", [(0, 4), (4, 8)])
    with Store(path, CONFIG, COUNT) as store:
        content = bytearray(chunk(path, 4, 8).read_bytes())
        content[content.find(b"\x93NUMPY") + 130] ^= 0xFF  # the data of the first array:
        chunk(path, 4, 8).write_bytes(bytes(content))  # only its checksum can tell
        with pytest.raises(
            ValueError,
            match=rf"{chunk(path, 4, 8)} is damaged \(.*CRC.*\); it was moved to "
            r"chunk-0000000004-0000000008\.npz\.damaged: run again to recompute it",
        ):
            store.read(4, 8)
        assert store.missing() == [(4, 10)]
        with pytest.raises(ValueError, match="not a stored chunk"):
            store.read(4, 8)
    with Store(path, CONFIG, COUNT) as store:
        assert store.missing() == [(4, 10)]


def test_run_recomputes_a_damaged_chunk(tmp_path, capfd):
    path = tmp_path / "s"
    list(
        run(
            toy,
            10,
            batch=1,
            bytes_per_item=100,
            memory=300,
            store=Store(path, CONFIG, 10),
            progress=False,
        )
    )
    chunk(path, 3, 6).write_bytes(bytes(100))
    with Store(path, CONFIG, 10) as store:
        got = list(
            run(toy, 10, batch=1, bytes_per_item=100, memory=300, store=store, progress=False)
        )
    assert [(a, b) for a, b, _ in got] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    np.testing.assert_array_equal(
        np.concatenate([r["square"] for *_, r in got]), np.arange(10) ** 2
    )
    assert "is damaged (not an npz archive); recomputing it" in capfd.readouterr().err


@pytest.mark.parametrize(
    "text, why",
    [
        ("{}", r"no 'config', 'count', 'fingerprint'"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "not JSON"),
        ("", "not JSON"),
        ('{"config": {}, "count": "ten", "fingerprint": "x"}', "'count' is not a positive"),
        ('{"config": [], "count": 10, "fingerprint": "x"}', "'config' is not a JSON object"),
    ],
)
def test_an_invalid_manifest_is_refused(tmp_path, text, why):
    path = filled(tmp_path / "s")
    (path / _store.MANIFEST).write_text(text)
    with pytest.raises(
        ValueError,
        match=rf"^{path}/manifest.json is not a valid attnflow manifest \({why}.*\); delete "
        rf"{path} to start over$",
    ):
        Store(path, CONFIG, COUNT)


def test_a_hand_edited_manifest_is_refused(tmp_path):
    path = filled(tmp_path / "s")
    manifest = json.loads((path / _store.MANIFEST).read_text())
    manifest["config"]["key"] = [0, 8]  # the chunks were computed for [0, 7]
    (path / _store.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="fingerprint does not match its configuration"):
        Store(path, {**CONFIG, "key": [0, 8]}, COUNT)


def test_a_different_configuration_is_refused_naming_what_differs(tmp_path):
    path = filled(tmp_path / "s")
    with pytest.raises(ValueError, match=r"n: 3 there, 4 now.*resume it with the same options"):
        Store(path, {**CONFIG, "n": 4}, COUNT)
    with pytest.raises(ValueError, match=r"10 items there, 12 now"):
        Store(path, CONFIG, 12)


def test_folders_and_files_in_the_wrong_places_are_refused_naming_them(tmp_path):
    path = filled(tmp_path / "s")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=rf"^{tmp_path}/file is a file, not a folder"):
        Store(tmp_path / "file", CONFIG, COUNT)
    chunk(path, 8, 10).mkdir()
    with pytest.raises(ValueError, match=rf"^{chunk(path, 8, 10)} is a folder where a chunk"):
        Store(path, CONFIG, COUNT)
    chunk(path, 8, 10).rmdir()
    (path / _store.MANIFEST).unlink()
    (path / _store.MANIFEST).mkdir()
    with pytest.raises(ValueError, match=rf"^{path}/manifest.json is a folder where"):
        Store(path, CONFIG, COUNT)
    (path / _store.MANIFEST).rmdir()
    (path / "lock").unlink()
    (path / "lock").mkdir()
    with pytest.raises(ValueError, match=rf"^{path}/lock is a folder where"):
        Store(path, CONFIG, COUNT)


def test_an_unwritable_output_is_refused(tmp_path, monkeypatch):
    # The tests run as root, for whom chmod does not deny writes: a path below a file stands for
    # a folder that cannot be created, and a patched mkstemp/os.open for a read-only folder.
    (tmp_path / "file").write_text("")
    with pytest.raises(
        ValueError,
        match=rf"^cannot write to {tmp_path}/file/s \(Not a directory\); choose a writable output$",
    ):
        Store(tmp_path / "file" / "s", CONFIG, COUNT)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    path = tmp_path / "s"
    path.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", denied)
        with pytest.raises(ValueError, match=rf"cannot write to {path}.*\(Permission denied\)"):
            Store(path, CONFIG, COUNT)  # the manifest
    store = Store(path, CONFIG, COUNT)
    with monkeypatch.context() as patch:
        patch.setattr(tempfile, "mkstemp", denied)
        with pytest.raises(
            ValueError,
            match=rf"cannot write to {chunk(path, 0, 4)} \(Permission denied\); choose a writable",
        ):
            store.write(0, 4, results(0, 4))
    assert store.missing() == [(0, COUNT)]
    store.close()
    real_open = os.open

    def lock_denied(file, *args, **kwargs):
        if str(file).endswith("lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    (path / "lock").unlink()
    with monkeypatch.context() as patch:
        patch.setattr(_store.os, "open", lock_denied)
        with pytest.raises(ValueError, match=rf"cannot write to {path}/lock \(Permission denied\)"):
            Store(path, CONFIG, COUNT)
