"""Figures for the model variants: normalization schemes over depth, long-context scaling."""

import numpy as np

from ._trajectory import _figure, _saved


def plot_normalization(ts, gaps: dict, predictions: dict, *, title: str = "", path=None):
    """`1 - mean cosine` over depth for each scheme (solid) and its equiangular prediction
    (dashed), on log axes. `gaps`, `predictions`: scheme name -> values at `ts`."""
    fig = _figure(6, 4.2)
    ax = fig.add_subplot()
    ts = np.asarray(ts)
    positive = ts > 0
    for (name, gap), color in zip(gaps.items(), ("C0", "C1", "C2", "C3", "C4"), strict=False):
        ax.loglog(ts[positive], np.asarray(gap)[positive], color=color, label=name)
        if name in predictions:
            ax.loglog(ts[positive], np.asarray(predictions[name])[positive], "--", color=color)
    ax.set_ylim(bottom=1e-15)  # below: rounding of cosines near 1
    ax.set(xlabel="t (depth)", ylabel=r"$1 - $ mean cosine")
    ax.legend(title="dashed: equiangular", fontsize="small")
    ax.set_title(title, fontsize="medium")
    return _saved(fig, path, dpi=150)


def plot_long_context(rhos, gammas, cosine, *, n: float, path=None):
    """`(cos - rho) / (1 - rho)` over `(rho, gamma)`: 1 where the layer merges the tokens, 0
    where it leaves them; the critical curve `gamma = 1/(1 - rho)` overlaid."""
    rhos, gammas = np.asarray(rhos), np.asarray(gammas)
    fig = _figure(6, 4.2)
    ax = fig.add_subplot()
    gain = (np.asarray(cosine) - rhos[None, :]) / (1 - rhos[None, :])
    image = ax.pcolormesh(rhos, gammas, gain, vmin=0, vmax=1, cmap="viridis", shading="nearest")
    fig.colorbar(image, ax=ax, label=r"$(\cos - \rho) / (1 - \rho)$ after one layer")
    ax.plot(rhos, 1 / (1 - rhos), color="w", lw=1.5, label=r"$\gamma = 1/(1-\rho)$")
    ax.set_ylim(gammas[0], gammas[-1])
    ax.set(xlabel=r"$\rho$ (input cosine)", ylabel=r"$\gamma$ ($\beta = \gamma \log n$)")
    ax.set_title(f"one attention layer, n = {n:.3g}", fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    return _saved(fig, path, dpi=150)
