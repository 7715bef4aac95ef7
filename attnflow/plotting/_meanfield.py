"""Figures of the mean-field limit: the density over time against particles."""

import numpy as np

from ._trajectory import _figure, _saved


def plot_meanfield(result, *, beta: float, kind: str = "SA", path=None):
    """The density `rho(t, theta)` as a heat map with the largest particle system's tokens
    overlaid, the density against the particle histogram at three times, and the mean
    `W_1(mu_n(t), rho(t))` against `n` at the last time with its fitted slope and `n^{-1/2}`."""
    pde = result.pde
    theta, ts = np.asarray(pde.theta), np.asarray(pde.ts)
    density, angles = np.asarray(pde.density), np.asarray(result.angles)
    fig = _figure(13, 4)
    grid = fig.add_gridspec(1, 5, width_ratios=[2.2, 1, 1, 1, 1.6])
    heat = fig.add_subplot(grid[0])
    image = heat.pcolormesh(
        ts, theta, np.log10(np.maximum(density.T, 1e-6)), shading="nearest", cmap="magma"
    )
    fig.colorbar(image, ax=heat, label=r"$\log_{10} \rho$")
    sub = angles[:, :: max(1, angles.shape[1] // 200)]  # up to 200 tokens drawn
    heat.plot(ts, sub, ",", color="c", alpha=0.5)
    heat.set(xlabel="t", ylabel=r"$\theta$")
    heat.set_title(f"{kind}, beta = {beta:g}: density, {angles.shape[1]} particles", fontsize=9)
    for column, index in enumerate((0, len(ts) // 2, len(ts) - 1)):
        ax = fig.add_subplot(grid[1 + column])
        bins, label = min(96, theta.shape[0]), f"n = {angles.shape[1]}"
        ax.hist(angles[index], bins, range=(0, 2 * np.pi), density=True, color="0.7", label=label)
        ax.plot(theta, density[index], color="C3", lw=1, label="PDE")
        ax.set_title(f"t = {ts[index]:.3g}", fontsize=9)
        ax.set_xlabel(r"$\theta$")
        if column == 0:
            ax.legend(fontsize=7)
    law = fig.add_subplot(grid[4])
    counts = np.asarray(result.particles, dtype=float)
    mean = np.asarray(result.mean())[:, -1]
    law.loglog(counts, mean, "o-", label=f"t = {ts[-1]:.3g}: slope {float(result.slope[-1]):.2f}")
    law.loglog(counts, mean[0] * (counts / counts[0]) ** -0.5, "k--", lw=1, label=r"$n^{-1/2}$")
    law.loglog(counts, np.asarray(result.mean())[:, 0], "s:", color="0.5", label="t = 0")
    law.set_xticks(counts, [str(int(c)) for c in counts], minor=False)
    law.set_xticks([], minor=True)
    law.set(xlabel="n", ylabel=r"mean $W_1(\mu_n, \rho)$")
    law.legend(fontsize=7)
    return _saved(fig, path, dpi=130)


def plot_sphere_density(solution, *, indices=None, particles=None, path=None):
    """The density on S^2 (`meanfield.SphereDensity`) at a few save times (`indices`, default:
    the first, middle and last), each as a Mollweide map of longitude and latitude, with
    `particles` (tokens of shape `(T, n, 3)` at the same save times, optional) drawn over it."""
    theta, phi = np.asarray(solution.theta), np.asarray(solution.phi)
    ts, density = np.asarray(solution.ts), np.asarray(solution.density)
    if indices is None:
        indices = sorted({0, len(ts) // 2, len(ts) - 1})
    fig = _figure(4.2 * len(indices), 2.8)
    longitude = np.where(phi > np.pi, phi - 2 * np.pi, phi)
    order = np.argsort(longitude)
    top = float(np.max(density[list(indices)]))
    for column, index in enumerate(indices):
        ax = fig.add_subplot(1, len(indices), column + 1, projection="mollweide")
        image = ax.pcolormesh(
            longitude[order],
            np.pi / 2 - theta,
            density[index][:, order],
            shading="nearest",
            cmap="magma",
            vmin=0,
            vmax=top,
        )
        if particles is not None:
            x = np.asarray(particles)[index]
            ax.plot(
                np.arctan2(x[:, 1], x[:, 0]),
                np.arcsin(np.clip(x[:, 2], -1, 1)),
                ".",
                color="c",
                ms=1,
                alpha=0.6,
            )
        ax.set_title(f"t = {ts[index]:.3g}", fontsize=9)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
    fig.colorbar(image, ax=fig.axes, label=r"$\rho$", shrink=0.7)
    return _saved(fig, path, dpi=130)
