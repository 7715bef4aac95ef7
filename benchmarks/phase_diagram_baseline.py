"""The published way to compute a phase diagram (GLPR Fig. 3), in NumPy, as a baseline.

Batch over the realizations, loop over beta, one Euler step of the attention then
renormalization per layer, and the full Gram matrix of every realization at each checkpoint.
No shortcut: every realization runs every layer in the full dimension d.
"""

import numpy as np


def layers_phase_diagram(x0, betas, checkpoints, h, delta):
    """Mean fraction of pairs `i != j` with `<x_i, x_j> >= 1 - delta`.

    x0: initial tokens, shape `(samples, n, d)`. checkpoints: increasing layer indices, the
    first one 0. Returns `prob` of shape `(len(betas), len(checkpoints))`.
    """
    samples, n, _ = x0.shape
    checkpoints = list(checkpoints)
    prob = np.zeros((len(betas), len(checkpoints)))
    off_diagonal = ~np.eye(n, dtype=bool)
    for b, beta in enumerate(betas):
        x = x0.copy()
        layer = 0
        for c, target in enumerate(checkpoints):
            while layer < target:
                logits = beta * (x @ x.transpose(0, 2, 1))
                weights = np.exp(logits - logits.max(axis=2, keepdims=True))
                weights /= weights.sum(axis=2, keepdims=True)
                x = x + h * (weights @ x)
                x /= np.linalg.norm(x, axis=2, keepdims=True)
                layer += 1
            gram = x @ x.transpose(0, 2, 1)
            prob[b, c] = np.mean((gram >= 1 - delta)[:, off_diagonal])
    return prob
