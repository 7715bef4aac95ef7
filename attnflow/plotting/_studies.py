"""Figures of the batched studies: phase diagrams (GLPR Figs. 3, 5) and metastability (Fig. 4)."""

from collections.abc import Sequence

import numpy as np

from ..studies import Metastability, PhaseDiagram
from ._trajectory import _figure, _saved


def _draw_phase_diagram(ax, diagram: PhaseDiagram, colorbar: bool = True):
    c = diagram.config
    image = ax.pcolormesh(
        diagram.ts, diagram.betas, diagram.prob, vmin=0, vmax=1, cmap="magma", shading="nearest"
    )
    if diagram.has_gamma and len(diagram.betas) > 1:
        betas = np.linspace(diagram.betas[0], diagram.betas[-1], 200)
        ax.plot(diagram.gamma(betas), betas, color="tab:cyan", lw=1.5, label=r"$\Gamma$")
        ax.legend(loc="lower right", fontsize="small")
    ax.set(xlim=(diagram.ts[0], diagram.ts[-1]), ylim=(diagram.betas[0], diagram.betas[-1]))
    ax.set(xlabel="t", ylabel=r"$\beta$")
    title = f"d = {c['d']}" + ("" if c["weights"] == "identity" else f", {c['weights']}")
    ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="P(clustered pair)")
    return image


def plot_phase_diagram(diagram: PhaseDiagram, *, path=None):
    """Heat map of `prob` over `(t, beta)`, with the curve `Gamma` for `Q = K = V = I`.

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    fig = _figure(6, 4.2)
    ax = fig.add_subplot()
    _draw_phase_diagram(ax, diagram)
    c = diagram.config
    fig.suptitle(
        f"{c['kind']}, n = {c['n']}, {c['samples']} samples, "
        rf"$\langle x_i, x_j\rangle \geq 1 - {c['delta']:g}$",
        fontsize="medium",
    )
    return _saved(fig, path, dpi=150)


def plot_figure3(diagrams: Sequence[PhaseDiagram], *, path=None):
    """GLPR Fig. 3: one phase diagram per dimension, side by side (up to three per row)."""
    columns = min(3, len(diagrams))
    rows = -(-len(diagrams) // columns)
    fig = _figure(4.2 * columns + 1, 3.4 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, diagram in zip(axes.flat, diagrams, strict=False):
        image = _draw_phase_diagram(ax, diagram, colorbar=False)
    for ax in axes.flat[len(diagrams) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, label="P(clustered pair)", shrink=0.8)
    c = diagrams[0].config
    fig.suptitle(f"{c['kind']}, n = {c['n']}, {c['samples']} samples", fontsize="medium")
    return _saved(fig, path, dpi=150)


def plot_metastability(study: Metastability, *, snapshots=(2.5, 18.0, 30.0), path=None):
    """GLPR Fig. 4, one row per beta: realization 0 on the circle at the `snapshots` times,
    its angles over time, its energy (the staircase) and cluster count, and the distribution
    of the number of clusters at the last time over all realizations."""
    ts = study.ts
    picks = [int(np.argmin(np.abs(ts - s))) for s in snapshots]
    columns = len(picks) + 3
    fig = _figure(2.6 * columns + 1.5, 2.8 * len(study.betas))
    axes = fig.subplots(len(study.betas), columns, squeeze=False)
    circle = np.linspace(0, 2 * np.pi, 200)
    n = study.xs.shape[2]
    for row, beta in enumerate(study.betas):
        xs = study.xs[row]
        for col, k in enumerate(picks):
            ax = axes[row, col]
            ax.plot(np.cos(circle), np.sin(circle), color="0.8", lw=1)
            ax.scatter(xs[k, :, 0], xs[k, :, 1], c=np.arange(n), cmap="viridis", s=14, zorder=3)
            ax.set_aspect("equal")
            ax.set_axis_off()
            ax.set_title(rf"$\beta = {beta:g}$, t = {ts[k]:g}", fontsize="small")
        ax = axes[row, len(picks)]
        angles = np.unwrap(np.arctan2(xs[..., 1], xs[..., 0]), axis=0)
        ax.plot(ts, angles, lw=0.7)
        ax.set(xlabel="t", ylabel=r"angle $\theta_i$")
        ax = axes[row, len(picks) + 1]
        ax.plot(ts, study.energy[row, 0], color="tab:red")
        ax.set_xlabel("t")
        ax.set_ylabel(r"$E_\beta$", color="tab:red")
        twin = ax.twinx()
        twin.step(ts, study.clusters[row, 0], where="post", color="tab:blue", lw=1)
        twin.set_ylabel("clusters", color="tab:blue")
        ax = axes[row, len(picks) + 2]
        final = study.clusters[row, :, -1]
        values, counts = np.unique(final, return_counts=True)
        ax.bar(values, counts / final.size, color="tab:blue")
        ax.set(xticks=values, xlabel=f"clusters at t = {ts[-1]:g}", ylabel="fraction of samples")
    return _saved(fig, path, dpi=150)
