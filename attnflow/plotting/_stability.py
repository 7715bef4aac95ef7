"""Figures of stability: Lyapunov convergence, FTLE diagrams, equilibria and their types."""

import numpy as np

from ..stability import FixedPointType, LyapunovSpectrum
from ..studies import FTLEDiagram
from ._trajectory import _figure, _saved


def plot_lyapunov(spectrum: LyapunovSpectrum, *, title: str | None = None, path=None):
    """The running estimates of every exponent against time, to judge convergence.

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    ts, history = np.asarray(spectrum.ts), np.asarray(spectrum.history)
    k = history.shape[1]
    import matplotlib

    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, k))
    for j in range(k):
        ax.plot(ts, history[:, j], color=colors[j], lw=1.5 if j == 0 else 0.8)
    ax.axhline(0, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="t", ylabel=r"running estimate of $\lambda_j$", xlim=(ts[0], ts[-1]))
    exponents = np.asarray(spectrum.exponents)
    title = title or f"{k} of {spectrum.dimension} exponents; largest {exponents[0]:.4g}"
    ax.set_title(title, fontsize="medium")
    return _saved(fig, path, dpi=150)


def plot_ftle(diagram: FTLEDiagram, *, local: bool = True, path=None):
    """Heat map over `(t, beta)` of the mean largest finite-time exponent: over each interval
    (`local=True`: positive where the tokens pass saddles, metastable clusters) or from 0 to t."""
    values = (diagram.local if local else diagram.ftle).mean(axis=1)
    bound = float(np.abs(values).max()) or 1.0
    fig = _figure(6, 4.2)
    ax = fig.add_subplot()
    style = {"cmap": "RdBu_r", "vmin": -bound, "vmax": bound, "shading": "nearest"}
    image = ax.pcolormesh(diagram.ts, diagram.betas, values, **style)
    label = "local exponent (per interval)" if local else r"FTLE over $[0, t]$"
    fig.colorbar(image, ax=ax, label=f"mean largest {label}")
    ax.set(xlabel="t", ylabel=r"$\beta$")
    c = diagram.config
    ax.set_title(
        f"{c['kind']}, n = {c['n']}, d = {c['d']}, {c['samples']} samples", fontsize="medium"
    )
    return _saved(fig, path, dpi=150)


def plot_fixed_points(points, types: list[FixedPointType], *, path=None):
    """Each equilibrium (tokens on the circle, or their first two coordinates for `d > 2`) with
    its type and unstable dimension: one small panel per equilibrium, up to 12; tokens at the
    same place are drawn as one larger dot labelled with their number."""
    shown = min(len(points), 12)
    columns = min(4, max(shown, 1))
    rows = max(1, -(-shown // columns))
    fig = _figure(2.4 * columns, 2.5 * rows)
    axes = fig.subplots(rows, columns, squeeze=False)
    circle = np.linspace(0, 2 * np.pi, 200)
    for ax, x, kind in zip(axes.flat, points[:shown], types[:shown], strict=False):
        x = np.asarray(x)
        ax.plot(np.cos(circle), np.sin(circle), color="0.8", lw=0.8)
        places, sizes = np.unique(np.round(x[:, :2], 6), axis=0, return_counts=True)
        ax.scatter(places[:, 0], places[:, 1], s=30 * sizes, color="tab:red", zorder=3)
        for (u, v), size in zip(places, sizes, strict=True):
            if size > 1:  # tokens at one place: a cluster
                ax.annotate(f"{size}", (u, v), xytext=(0.8 * u, 0.8 * v), ha="center", va="center")
        ax.set_title(f"{kind.type}, unstable {kind.unstable_dim}", fontsize="small")
        ax.set(aspect="equal", xlim=(-1.15, 1.15), ylim=(-1.15, 1.15), xticks=[], yticks=[])
    for ax in axes.flat[shown:]:
        ax.set_axis_off()
    return _saved(fig, path, dpi=150)
