"""Tokens on the circle or sphere at a few times, and the energy over time."""

import jax
import jax.numpy as jnp
import numpy as np

from ..fields import energy
from ..integrate import Trajectory


def _require_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'attnflow[plot]'") from err
    return Figure


def _figure(width: float, height: float):
    """A matplotlib `Figure` of `width` by `height` inches, in constrained layout."""
    return _require_matplotlib()(figsize=(width, height), layout="constrained")


def _saved(fig, path, dpi: int):
    """`fig`, saved to `path` first unless it is None."""
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def energy_curve(xs, beta: float) -> tuple[np.ndarray, str]:
    """`E_beta` at each saved state, with its label; at `beta = 0`, the finite part
    `lim (E_beta - 1/(2 beta)) = |mean_i x_i|^2 / 2`."""
    if beta > 0:
        return np.asarray(jax.vmap(lambda x: energy(x, beta))(xs)), r"$E_\beta$"
    values = 0.5 * jnp.sum(jnp.mean(xs, axis=1) ** 2, axis=-1)
    return np.asarray(values), r"$\lim_{\beta\to 0}\,(E_\beta - 1/2\beta)$"


def draw_tokens(fig, spec, x, colors=None, cmap="viridis", vmax=None, size=18, zoom=1.35):
    """Draw the tokens `x` `(n, d)` on the circle (`d = 2`) or the sphere (`d >= 3`: the first
    three coordinates, renormalized) in the subplot `spec` of `fig`, colored by `colors`
    (integers, default the token index) on `cmap` from 0 to `vmax`; returns a function that
    moves them to new positions (its `.axes` is the subplot)."""
    colors = np.arange(x.shape[0]) if colors is None else np.asarray(colors)
    style = dict(c=colors, cmap=cmap, vmin=None if vmax is None else 0, vmax=vmax, s=size)
    if x.shape[-1] == 2:
        ax = fig.add_subplot(spec)
        circle = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(circle), np.sin(circle), color="0.8", lw=1)
        points = ax.scatter(x[:, 0], x[:, 1], zorder=3, **style)
        ax.set_aspect("equal")

        def move(x):
            points.set_offsets(x[:, :2])

    else:
        ax = fig.add_subplot(spec, projection="3d")
        u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 24), np.linspace(0, np.pi, 12))
        ax.plot_wireframe(
            np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.85", lw=0.5
        )
        p = x[:, :3] / np.linalg.norm(x[:, :3], axis=-1, keepdims=True)
        points = ax.scatter(p[:, 0], p[:, 1], p[:, 2], depthshade=False, **style)
        ax.set_box_aspect((1, 1, 1), zoom=zoom)

        def move(x):
            p = x[:, :3] / np.linalg.norm(x[:, :3], axis=-1, keepdims=True)
            points._offsets3d = (p[:, 0], p[:, 1], p[:, 2])

    ax.set_axis_off()
    move.axes = ax
    return move


def plot_trajectory(traj: Trajectory, beta: float, *, snapshots: int = 4, path=None):
    """Plot `snapshots` states of a sphere trajectory (shape `(T, n, d)`) and its energy.

    `d = 2`: the tokens on the circle; `d >= 3`: on the sphere (for `d > 3`, their first three
    coordinates, renormalized). Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    _require_matplotlib()  # the ImportError before any complaint about the trajectory
    xs, ts = np.asarray(traj.xs), np.asarray(traj.ts)
    if xs.ndim != 3 or xs.shape[-1] < 2:
        raise ValueError(f"traj.xs must have shape (T, n, d) with d >= 2; got shape {xs.shape}")
    d = xs.shape[-1]
    picks = np.unique(np.linspace(0, len(ts) - 1, snapshots).round().astype(int))
    fig = _figure(3.2 * (len(picks) + 1.3), 3.4)
    grid = fig.add_gridspec(1, len(picks) + 1, width_ratios=[1] * len(picks) + [1.3])
    for col, i in enumerate(picks):
        draw_tokens(fig, grid[0, col], xs[i]).axes.set_title(f"t = {ts[i]:.3g}")
    values, label = energy_curve(xs, beta)
    ax = fig.add_subplot(grid[0, -1])
    ax.plot(ts, values, color="C3")
    ax.set(xlabel="t", ylabel=label)
    ax.set_title(rf"energy, $\beta$ = {beta:g}")
    ax.grid(alpha=0.3)
    if d > 3:
        fig.suptitle(f"d = {d}: first three coordinates, renormalized")
    return _saved(fig, path, dpi=120)
