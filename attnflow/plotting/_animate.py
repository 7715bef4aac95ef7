"""A movie of a trajectory: the tokens moving on the circle or the sphere, beside the energy or
the number of clusters over time."""

import jax
import numpy as np

from ..analysis import count_clusters
from ..integrate import Trajectory
from ._trajectory import _require_matplotlib, draw_tokens, energy_curve

PANELS = ("energy", "clusters")


def animate(
    traj: Trajectory,
    beta: float,
    *,
    path=None,
    fps: int = 15,
    frames: int = 120,
    panel: str = "energy",
    delta: float = 1e-3,
):
    """A movie of a sphere trajectory (`traj.xs` of shape `(T, n, d)`, `d >= 2`): the tokens
    on the circle (`d = 2`) or the sphere (`d >= 3`: their first three coordinates,
    renormalized), beside the energy `E_beta` over time (`panel="energy"`) or the number of
    clusters at radius `delta` (`panel="clusters"`, `attnflow.analysis.count_clusters`), with
    a marker at the current time.

    `frames`: at most this many frames, spread evenly over the save times (all of them when
    there are fewer). `path`: a `.gif` file (written with Pillow, which matplotlib brings) or
    `.mp4` (needs ffmpeg), at `fps` frames per second. Returns the
    `matplotlib.animation.FuncAnimation`; in a notebook,
    `IPython.display.HTML(animation.to_jshtml())` shows it.
    """
    Figure = _require_matplotlib()
    from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter

    xs, ts = np.asarray(traj.xs), np.asarray(traj.ts)
    if xs.ndim != 3 or xs.shape[-1] < 2 or xs.shape[0] != ts.shape[0]:
        raise ValueError(
            f"traj.xs must have shape (T, n, d) with d >= 2 and T = len(traj.ts); got shape "
            f"{xs.shape} for {ts.shape[0]} save times"
        )
    if panel not in PANELS:
        raise ValueError(f"panel must be one of {', '.join(map(repr, PANELS))}; got {panel!r}")
    for value, name in ((fps, "fps"), (frames, "frames")):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    writer = None
    if path is not None:
        suffix = str(path)[-4:].lower()
        if suffix not in (".gif", ".mp4"):
            raise ValueError(f"path must end in .gif or .mp4; got {str(path)!r}")
        if suffix == ".mp4" and not FFMpegWriter.isAvailable():
            raise ValueError("writing .mp4 needs ffmpeg, which is not installed; use a .gif path")
        writer = PillowWriter(fps=fps) if suffix == ".gif" else FFMpegWriter(fps=fps)
    picks = np.unique(np.linspace(0, len(ts) - 1, min(frames, len(ts))).round().astype(int))

    if panel == "energy":
        values, label = energy_curve(xs, beta)
    else:
        values = np.asarray(jax.vmap(lambda x: count_clusters(x, delta))(xs))
        label = f"clusters (radius {delta:g})"
    fig = Figure(figsize=(7.6, 3.6), layout="constrained")
    grid = fig.add_gridspec(1, 2, width_ratios=[1, 1.2])
    update_tokens = draw_tokens(fig, grid[0, 0], xs[picks[0]])
    ax = fig.add_subplot(grid[0, 1])
    ax.plot(ts, values, color="C3")
    (marker,) = ax.plot([ts[picks[0]]], [values[picks[0]]], "o", color="C3")
    ax.set(xlabel="t", ylabel=label)
    ax.grid(alpha=0.3)
    title = fig.suptitle("")

    def frame(i):
        update_tokens(xs[i])
        marker.set_data([ts[i]], [values[i]])
        title.set_text(rf"$\beta$ = {beta:g}, t = {ts[i]:.3g}")
        return ()

    animation = FuncAnimation(fig, frame, frames=picks, interval=1000 / fps, blit=False)
    if writer is not None:
        animation.save(path, writer=writer, dpi=100)
    return animation
