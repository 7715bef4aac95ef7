"""Figures of the worked parameter searches: the loss curve and what the answer does."""

import numpy as np

from ..optimize import Recovery, SmallestBeta, ValueForGroups
from ._trajectory import _figure, _saved, draw_tokens


def _loss_curve(ax, search) -> None:
    history = np.asarray(search.history)
    steps = np.arange(len(history))
    best = int(search.best)
    style = "o-" if len(history) <= 2 else "-"  # a solver that reports its ends only
    (ax.semilogy if np.all(history > 0) else ax.plot)(steps, history, style, color="C0")
    ax.plot(best, history[best], "o", color="C3", label=f"best, step {best}")
    ax.set(xlabel="step", ylabel="loss")
    ax.set_title("search", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)


def _tokens(fig, spec, x, colors, title: str):
    """The tokens `x` by `draw_tokens`, colored by `colors` (integers), with a title."""
    colors = np.asarray(colors)
    cmap, top = ("tab10", 9) if colors.max() < 10 else ("viridis", int(colors.max()))
    ax = draw_tokens(fig, spec, np.asarray(x), colors, cmap, top, size=22, zoom=1.3).axes
    ax.set_title(title, fontsize="small")
    return ax


def _cluster_labels(x, delta: float) -> np.ndarray:
    """The cluster of each token (connected components of `<x_i, x_j> >= 1 - delta`)."""
    from scipy.sparse.csgraph import connected_components

    x = np.asarray(x)
    return connected_components(x @ x.T >= 1 - delta, directed=False)[1]


def plot_smallest_beta(result: SmallestBeta, *, samples: int = 4, path=None):
    """The search of `smallest_beta`: its loss curve, the `beta` schedule (for a schedule),
    and the tokens at `t1` under the answer from up to `samples` initial states, colored by
    their sharp cluster, each titled with its cluster count.

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    beta = np.asarray(result.beta)
    shown = min(samples, len(result.xs))
    panels = 1 + (beta.ndim == 1) + shown
    fig = _figure(3.3 * panels, 3.4)
    grid = fig.add_gridspec(1, panels)
    _loss_curve(fig.add_subplot(grid[0, 0]), result.search)
    if beta.ndim == 1:
        ax = fig.add_subplot(grid[0, 1])
        ts = np.arange(len(beta)) * result.h
        ax.step(ts, beta, where="post", color="C2", label="per layer")
        ax.axhline(beta.mean(), color="C2", ls="--", lw=1, label=f"mean {beta.mean():.3g}")
        ax.set(xlabel="t (layer start)", ylabel=r"$\beta$")
        ax.set_title(r"$\beta$ schedule", fontsize="medium")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    for s in range(shown):
        labels = _cluster_labels(result.xs[s], result.delta)
        count = int(result.clusters[s])
        mark = "ok" if count >= result.k else f"< {result.k}"
        sizes = " + ".join(map(str, sorted(np.bincount(labels), reverse=True)[:6]))
        title = f"{count} clusters ({mark}): {sizes}{' + ...' if count > 6 else ''}"
        _tokens(fig, grid[0, panels - shown + s], result.xs[s], labels, title)
    answer = f"mean beta = {beta.mean():.4g}" if beta.ndim else f"beta = {float(beta):.4g}"
    verdict = "holds" if result.holds else "FAILS"
    fig.suptitle(
        f"at least {result.k} clusters up to t = {result.t1:g}: {answer}; sharp check "
        f"(delta = {result.delta:g}) {verdict} on {len(result.xs)} initial states",
        fontsize="medium",
    )
    return _saved(fig, path, dpi=120)


def plot_value_groups(result: ValueForGroups, *, path=None):
    """The search of `value_for_groups`: its loss curve, the tokens at `t = 0` and at `t1`
    colored by their prescribed group, and `V`.

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    fig = _figure(13, 3.4)
    grid = fig.add_gridspec(1, 4)
    _loss_curve(fig.add_subplot(grid[0, 0]), result.search)
    labels = np.asarray(result.labels)
    _tokens(fig, grid[0, 1], result.x0, labels, "t = 0, colored by group")
    verdict = "clusters = groups" if result.matches else "clusters != groups"
    title = f"t = {result.t1:g}: {int(result.count)} clusters, {verdict}"
    _tokens(fig, grid[0, 2], result.xs, labels, title)
    ax = fig.add_subplot(grid[0, 3])
    V = np.asarray(result.V)
    bound = float(np.abs(V).max()) or 1.0
    image = ax.imshow(V, cmap="RdBu_r", vmin=-bound, vmax=bound)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set(xticks=[], yticks=[])
    ax.set_title("V", fontsize="medium")
    fig.suptitle(
        f"value matrix for {labels.max() + 1} groups, beta = {result.beta:g}: within groups "
        f"min cosine {float(result.same_min):.6f}, between max {float(result.apart_max):.3f}",
        fontsize="medium",
    )
    return _saved(fig, path, dpi=120)


def plot_recovery(result: Recovery, *, path=None):
    """The fit of `recover_parameters`: its loss, the fitted entries of `beta Q^T K` and `V`
    against the true ones, and the held-out prediction error over time.

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    from ..optimize import identifiable

    fig = _figure(11, 3.4)
    grid = fig.add_gridspec(1, 3)
    _loss_curve(fig.add_subplot(grid[0, 0]), result.search)
    ax = fig.add_subplot(grid[0, 1])
    pairs = zip(identifiable(result.true), identifiable(result.fitted), strict=True)
    names = (r"$\beta Q^T K$", "$V$")
    for (true, fitted), name, color in zip(pairs, names, ("C0", "C1"), strict=True):
        ax.plot(np.ravel(true), np.ravel(fitted), "o", color=color, label=name, ms=5)
    low, high = ax.get_xlim()
    ax.plot([low, high], [low, high], color="0.6", lw=0.8, zorder=0)
    ax.set(xlabel="true entry", ylabel="fitted entry")
    ax.set_title(
        f"relative errors {float(result.logits_error):.1e}, {float(result.value_error):.1e}",
        fontsize="medium",
    )
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[0, 2])
    ts = np.asarray(result.ts)
    gap = np.asarray(result.held_fitted) - np.asarray(result.held_true)
    error = np.sqrt(np.mean(np.sum(gap**2, axis=-1), axis=-1))
    ax.semilogy(ts[1:], np.maximum(error[1:], 1e-300), color="C3")
    ax.set(xlabel="t", ylabel="RMS distance")
    ax.set_title("held-out tokens: fitted vs true flow", fontsize="medium")
    ax.grid(alpha=0.3)
    return _saved(fig, path, dpi=120)
