"""Figure of a trained model's clustering against the flows its weights drive."""

import numpy as np

from ._trajectory import _figure, _saved


def plot_flow_comparison(comparison, *, path=None):
    """Two panels of an `attnflow.pretrained.FlowComparison`: the mean pairwise cosine of the
    tokens and the fraction of pairs with cosine `>= 1 - delta`, against depth, one curve per
    dynamics (the trained model, its attention-only network, one layer repeated with and
    without its feed-forward block, SA with that layer's heads). Returns the `Figure`; saves it
    if `path` is given."""
    fig = _figure(11, 4)
    cosine, fraction = fig.subplots(1, 2)
    styles = ["k-o", "k--s", "C0-", "C1-", "C3-"]
    for name, style in zip(comparison.names, styles, strict=False):
        mean = np.asarray(comparison.mean_cosine[name])
        pairs = np.asarray(comparison.fraction[name])
        depth = np.arange(mean.size)
        marker = {"ms": 4} if "o" in style or "s" in style else {}
        cosine.plot(depth, mean, style, lw=1.2, label=name, **marker)
        fraction.plot(depth, pairs, style, lw=1.2, label=name, **marker)
    cosine.set(xlabel="depth (layers)", ylabel="mean pairwise cosine")
    cosine.set_ylim(min(0.0, cosine.get_ylim()[0]), 1.02)
    cosine.set_title(f"{comparison.tokens} tokens from the model's embeddings", fontsize=9)
    cosine.legend(fontsize=7)
    fraction.set(xlabel="depth (layers)", ylim=(-0.02, 1.02))
    fraction.set_ylabel(rf"fraction of pairs with cosine $\geq 1 - {comparison.delta:g}$")
    fraction.set_title(f"weights of layer {comparison.layer} drive the repeated runs", fontsize=9)
    return _saved(fig, path, dpi=130)
