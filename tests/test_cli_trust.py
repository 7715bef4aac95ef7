"""The command line as a researcher meets it when things go wrong: Ctrl-C, failed items, bad
outputs, arguments checked before any computation (issue 10)."""

import importlib.util
import threading

import numpy as np
import pytest
from test_cli import TINY, run_cli

import attnflow as af
from attnflow.cli import main


def test_ctrl_c_prints_one_line_saying_how_to_resume(tmp_path, capsys, monkeypatch):
    out, partial = tmp_path / "pd.npz", tmp_path / "pd.npz.partial"
    argv = ["phase-diagram", *TINY, "--d", "3", "--samples", "40", "--memory", "1e-5"]
    argv += ["--out", str(out), "--no-plot"]
    write = af.sweep.Store.write

    def interrupt_after_one(self, start, stop, arrays):
        if self.chunks():
            raise KeyboardInterrupt
        write(self, start, stop, arrays)

    monkeypatch.setattr(af.sweep.Store, "write", interrupt_after_one)
    status, io = run_cli(argv, capsys)
    assert status == 130
    assert io.err.strip().splitlines()[-1] == (
        f"attnflow phase-diagram: interrupted; the finished chunks are kept in {partial}/: "
        "run the same command with --resume to continue"
    )
    assert "Traceback" not in io.err and not out.exists()
    monkeypatch.setattr(af.sweep.Store, "write", write)
    status, io = run_cli([*argv, "--resume"], capsys)
    assert status == 0, io.err
    assert out.exists() and not partial.exists()


def test_ctrl_c_keeps_the_chunks_of_figure3s_finished_dimensions(tmp_path, capsys, monkeypatch):
    """figure3 keeps one store per dimension in OUT.partial/d<d>/: a Ctrl-C in the second one
    keeps the first one's chunks (they were looked for in OUT.partial/ only, and deleted)."""
    out, partial = tmp_path / "f.npz", tmp_path / "f.npz.partial"
    argv = ["figure3", "--dims", "2", "3", "--n", "6", "--num-betas", "2", "--samples", "2"]
    argv += ["--t1", "1", "--out", str(out), "--no-plot", "--quiet"]
    write = af.sweep.Store.write

    def interrupt_in_d3(self, start, stop, arrays):
        if self.path.name == "d3":
            raise KeyboardInterrupt
        write(self, start, stop, arrays)

    monkeypatch.setattr(af.sweep.Store, "write", interrupt_in_d3)
    status, io = run_cli(argv, capsys)
    assert status == 130 and io.err.strip().splitlines()[-1] == (
        f"attnflow figure3: interrupted; the finished chunks are kept in {partial}/: "
        "run the same command with --resume to continue"
    )
    assert list((partial / "d2").glob("chunk-*.npz")) and not out.exists()


def test_ctrl_c_before_any_chunk_leaves_no_folder(tmp_path, capsys, monkeypatch):
    out = tmp_path / "pd.npz"

    def interrupt(self, start, stop, arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(af.sweep.Store, "write", interrupt)
    status, io = run_cli(["phase-diagram", *TINY, "--d", "3", "--out", str(out)], capsys)
    assert (
        status == 130 and io.err.strip().splitlines()[-1] == "attnflow phase-diagram: interrupted"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_failed_argument_check_leaves_no_partial_folder(tmp_path, capsys):
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *TINY, "--d", "3", "--memory", "1e-7", "--out", str(out)]
    status, io = run_cli(argv, capsys)
    assert status == 2 and "cannot hold one item" in io.err
    assert list(tmp_path.iterdir()) == []


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *TINY, "--d", "3", "--out", str(out), "--no-plot", "--resume"]
    status, io = run_cli(argv, capsys)
    assert status == 0
    assert (
        f"attnflow phase-diagram: nothing to resume ({out}.partial does not exist); "
        "starting a new run"
    ) in io.err
    assert "wrote" in io.out


def test_no_plot_writes_the_data_only_with_the_status(tmp_path, capsys):
    out = tmp_path / "pd.npz"
    status, io = run_cli(
        ["phase-diagram", *TINY, "--d", "3", "--out", str(out), "--no-plot"], capsys
    )
    assert status == 0, io.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pd.npz"]
    with np.load(out) as data:
        assert data["status"].shape == (3, 4) and (data["status"] == 0).all()


def test_a_plot_without_matplotlib_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    out = tmp_path / "pd.npz"
    status, io = run_cli(["phase-diagram", *TINY, "--d", "3", "--out", str(out)], capsys)
    assert status == 2
    assert "needs matplotlib: pip install 'attnflow[plot]', or pass --no-plot" in io.err
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_is_a_folder_or_unwritable_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "pd.npz").mkdir()
    argv = ["phase-diagram", *TINY, "--d", "3", "--out", str(tmp_path / "pd.npz")]
    status, io = run_cli(argv, capsys)
    assert status == 2 and "is a folder; give a file name" in io.err
    # As root, chmod does not deny writing: a failing write stands in for a read-only folder.
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "out.npz"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    argv = ["simulate", "--n", "4", "--t1", "1", "--out", str(tmp_path / "out.npz")]
    status, io = run_cli(argv, capsys)
    assert status == 2 and len(io.err.strip().splitlines()) == 1
    assert "Permission denied" in io.err and "Traceback" not in io.err


def test_failed_items_are_reported_in_one_line(tmp_path, capsys, monkeypatch):
    from attnflow.studies import _common

    monkeypatch.setitem(_common.MODELS, "USA", _exploding)
    out = tmp_path / "pd.npz"
    argv = ["phase-diagram", *TINY, "--d", "3", "--model", "USA", "--out", str(out), "--no-plot"]
    status, io = run_cli(argv, capsys)
    assert status == 0, io.err
    lines = [line for line in io.err.splitlines() if "warning" in line]
    assert lines == [
        "attnflow phase-diagram: warning: 4 of 12 items failed (4 non-finite state (an "
        "overflow, or attention that did not converge)) at beta = 9; they are left out of the averages (see .status)"
    ]
    with np.load(out) as data:
        assert (data["status"][2] == 2).all() and np.isnan(data["prob"][2]).all()


class _Exploding(af.AbstractSphereField):
    beta: object

    def __call__(self, t, x, args=None):
        return af.SA(self.beta)(t, x)

    def layer(self, t, x, h):
        import jax.numpy as jnp

        return af.SA(self.beta).layer(t, x, h) * jnp.where(self.beta > 5, jnp.nan, 1.0)

    def check(self, x0):
        return x0


def _exploding(beta, Q=None, K=None, V=None):
    return _Exploding(beta)


@pytest.mark.parametrize("command", ["phase-diagram", "metastability", "ftle"])
def test_every_study_command_takes_every_model(command, capsys):
    from attnflow.studies import MODELS

    parser_help = run_cli([command, "--help"], capsys)[1].out
    for name in MODELS:
        assert name in parser_help


# --- two runs on one output (issue 22) -------------------------------------------------------

# The points of a run's progress where `_Paced` holds it: before it starts, once its
# OUT.partial folder is taken, its sweep store opened (and locked), its first chunk written.
POINTS = ("started", "claimed", "locked", "chunk")


class _Paced:
    """Runs of `attnflow` in threads of this process, each held at every point of `POINTS`
    until the test lets it go on, so that two runs interleave exactly as a schedule says.
    Locks (`flock`) are per open file, so two runs in threads exclude each other as two
    processes do."""

    def __init__(self, monkeypatch, argv):
        from attnflow.cli import _options
        from attnflow.sweep import _study

        self.argv, self.runs, self.changed = argv, {}, threading.Condition()
        pace, store, partial = self.pace, _study.Store, _options.partial

        class PacedStore(store):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                pace("locked")

            def write(self, *args, **kwargs):
                super().write(*args, **kwargs)
                pace("chunk")

        def paced_partial(args):
            folder = partial(args)
            pace("claimed")
            return folder

        monkeypatch.setattr(_study, "Store", PacedStore)  # the store a study opens
        monkeypatch.setattr(_options, "partial", paced_partial)  # phase-diagram's folder

    def pace(self, point: str) -> None:
        run = self.runs.get(threading.current_thread().name)
        if run is None:  # not a paced run
            return
        with self.changed:
            run["reached"].add(point)
            self.changed.notify_all()
            assert self.changed.wait_for(lambda: run["allowed"] > POINTS.index(point), 60)

    def start(self, name: str) -> None:
        run = {"reached": set(), "allowed": 0, "status": None}

        def target():
            try:
                self.pace("started")
                run["status"] = main(self.argv)
            finally:
                with self.changed:
                    run["reached"].add("end")
                    self.changed.notify_all()

        run["thread"] = threading.Thread(target=target, name=name, daemon=True)
        self.runs[name] = run
        run["thread"].start()

    def advance(self, name: str, until: str) -> None:
        """Let run `name` go on to the point `until` (or to its end: "end"), and wait for it."""
        run = self.runs[name]
        with self.changed:
            run["allowed"] = len(POINTS) if until == "end" else POINTS.index(until)
            self.changed.notify_all()
            assert self.changed.wait_for(lambda: {until, "end"} & run["reached"], 60)

    def finish(self) -> None:
        for name in self.runs:
            self.advance(name, "end")


def _contents(folder):
    """Every file under `folder` and its bytes (None if there is no folder)."""
    if not folder.is_dir():
        return None
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


RACE = ["phase-diagram", *TINY, "--d", "3", "--samples", "24", "--memory", "1e-5"]
RACE += ["--no-plot", "--quiet"]  # 72 items: several chunks


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The data of the run done alone, with the same options and seed."""
    out = tmp_path_factory.mktemp("alone") / "pd.npz"
    assert main([*RACE, "--out", str(out)]) == 0
    with np.load(out) as data:
        return dict(data)


@pytest.mark.parametrize(
    "schedule",
    [
        # B starts while A holds OUT.partial, before A opened its store, then after it
        [("A", "claimed"), ("B", "end"), ("A", "end")],
        [("A", "locked"), ("B", "end"), ("A", "end")],  # before A wrote any chunk
        [("A", "chunk"), ("B", "end"), ("A", "end")],
        # issue 22: both looked at OUT.partial before either opened a store; A locked its
        # store first, and B, refused by the lock, deleted A's folder
        [("A", "claimed"), ("B", "claimed"), ("A", "locked"), ("B", "end"), ("A", "end")],
        # the same, with B opening its store first
        [("A", "claimed"), ("B", "claimed"), ("B", "locked"), ("A", "end"), ("B", "end")],
    ],
    ids=["A-claimed", "A-locked", "A-chunk", "both-claimed-A-locks", "both-claimed-B-locks"],
)
def test_a_run_refused_by_the_lock_leaves_the_other_alone(
    schedule, alone, tmp_path, capsys, monkeypatch
):
    """Two identical runs on one output, interleaved as `schedule` says: the run that took
    OUT.partial first (A) finishes with the data of a run done alone; the other (B) is refused
    with one line naming the folder, without changing a byte in it."""
    out = tmp_path / "pd.npz"
    partial = tmp_path / "pd.npz.partial"
    paced = _Paced(monkeypatch, [*RACE, "--out", str(out)])
    try:
        for name in "AB":
            paced.start(name)
        for name, until in schedule:
            before = _contents(partial)
            paced.advance(name, until)
            if name == "B":
                assert _contents(partial) == before, f"B changed {partial} on its way to {until}"
    finally:
        paced.finish()
    assert (paced.runs["A"]["status"], paced.runs["B"]["status"]) == (0, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"attnflow phase-diagram: error: another attnflow run is writing to {partial}; wait "
        "for it to finish or choose another output"
    ]
    with np.load(out) as data:
        for name in ("betas", "ts", "prob", "status"):
            np.testing.assert_array_equal(data[name], alone[name], err_msg=name)
    assert not partial.exists()
