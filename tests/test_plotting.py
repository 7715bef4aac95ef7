"""Movies of trajectories (`attnflow.plotting.animate`, `attnflow simulate --movie`): the frames
are the save times asked for, the side panel is the energy or the cluster count it says, and
bad requests are refused before anything is drawn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clitools import run_cli

import attnflow as af

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

from attnflow.plotting import animate  # noqa: E402


def _trajectory(d: int, saves: int = 21):
    x0 = af.sphere.uniform(jax.random.key(0), 8, d)
    return af.simulate(af.SA(4.0), x0, jnp.linspace(0.0, 8.0, saves))


@pytest.mark.parametrize("d, panel", [(2, "energy"), (3, "clusters")])
def test_movie_frames_follow_the_trajectory(tmp_path, d, panel):
    traj = _trajectory(d)
    path = tmp_path / "movie.gif"
    movie = animate(traj, 4.0, path=path, frames=11, panel=panel)
    with Image.open(path) as gif:
        assert gif.n_frames == 11  # every other save time of 21
    # the side panel's curve, and its marker at the last frame (the figure is the animation's)
    side = movie._fig.axes[-1]
    curve, marker = side.lines
    if panel == "energy":
        expected = jax.vmap(lambda x: af.energy(x, 4.0))(traj.xs)
    else:
        expected = jax.vmap(lambda x: af.analysis.count_clusters(x, 1e-3))(traj.xs)
    np.testing.assert_allclose(curve.get_ydata(), expected, rtol=1e-12)
    assert marker.get_xdata()[0] == pytest.approx(float(traj.ts[-1]))


def test_movie_bad_requests_are_refused(tmp_path):
    traj = _trajectory(2, saves=3)
    with pytest.raises(ValueError, match="panel must be one of 'energy', 'clusters'"):
        animate(traj, 1.0, panel="speed")
    with pytest.raises(ValueError, match=r"path must end in \.gif or \.mp4"):
        animate(traj, 1.0, path=tmp_path / "movie.png")
    with pytest.raises(ValueError, match="frames must be a positive integer"):
        animate(traj, 1.0, frames=0)
    with pytest.raises(ValueError, match=r"traj.xs must have shape \(T, n, d\)"):
        animate(af.Trajectory(traj.ts, traj.xs[..., :1], traj.status), 1.0)


def test_cli_simulate_writes_a_movie(tmp_path, capsys):
    out, movie = tmp_path / "traj.npz", tmp_path / "tokens.gif"
    argv = ["simulate", "--n", "6", "--t1", "2", "--saves", "5", "--out", str(out)]
    status, io = run_cli([*argv, "--movie", str(movie)], capsys)
    assert status == 0, io.err
    assert f"  wrote {movie}" in io.out
    with Image.open(movie) as gif:
        assert gif.n_frames == 5
    status, io = run_cli([*argv, "--movie", str(tmp_path / "tokens.txt")], capsys)
    assert status == 2 and "argument --movie: expected a file name ending in .gif or .mp4" in io.err
