"""Figure of the low-temperature concentration study (ABRR): the distance to the push-forward
by the zero-temperature limit map over `(beta, t)`, its closest approach, the terminal phase."""

import numpy as np

from ..concentration import eigenvectors, rate
from ._trajectory import _figure, _saved


def plot_concentration(result, *, path=None):
    """Three panels of a `Concentration` (`attnflow.concentration.concentration`):

    1. the mean `W_2(mu_t^beta, T_# mu_0)` over `t > 0` for each beta (log-log), its closest
       approach marked (an open marker where it is not resolved: at an end of `ts`);
    2. the closest approach against beta (log-log) with its least-squares line over the resolved
       betas (slope `result.slope`) and ABRR's rate `sqrt(log(beta+1)/beta)`, scaled to pass
       through the first resolved point;
    3. the terminal phase: realization 0 at its `terminal_time` for the smallest and the
       largest beta (a nearly merged cloud magnified about its mean to its initial size, the
       factor in the legend), its initial tokens (faint), its limit points `T(x0)`, and the
       eigenvector directions of `V` drawn through the mean of the smallest beta's tokens (the
       first two coordinates for `d > 2`).

    Returns the matplotlib `Figure`; saves it if `path` is given.
    """
    fig = _figure(14, 4.3)
    from matplotlib import colormaps

    betas, ts = np.asarray(result.betas, np.float64), np.asarray(result.ts, np.float64)
    mean = np.asarray(result.mean())
    closest, when = np.asarray(result.closest), np.asarray(result.closest_time)
    resolved = np.asarray(result.resolved, bool)
    colors = colormaps["viridis"](np.linspace(0, 0.9, betas.size))
    curves, law, phase = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.3, 1, 1.1]})

    later = ts > 0  # log axes: t = 0 is left out
    for b, beta in enumerate(betas):
        curves.loglog(ts[later], mean[b, later], color=colors[b], lw=1.2, label=f"{beta:g}")
        if np.isfinite(closest[b]):
            reached = int(np.argmin(np.abs(ts - when[b])))
            fill = colors[b] if resolved[b] else "none"
            at = max(when[b], ts[later][0])
            curves.loglog(at, mean[b, reached], "o", color=colors[b], mfc=fill, ms=6)
    curves.set(xlabel="t", ylabel=r"mean $W_2(\mu_t^\beta, T_\#\mu_0)$")
    curves.set_title("distance to the hardmax limit (o: closest; open: unresolved)", fontsize=9)
    curves.legend(title=r"$\beta$", fontsize=7, title_fontsize=8)

    finite = np.isfinite(closest) & (closest > 0)
    fit, unresolved = finite & resolved, finite & ~resolved
    law.loglog(betas[fit], closest[fit], "ko", label="closest")
    if unresolved.any():
        label = "unresolved (at an end of ts)"
        law.loglog(betas[unresolved], closest[unresolved], "ko", mfc="none", label=label)
    if np.isfinite(result.slope) and fit.sum() >= 2:
        # the least-squares line passes through the centroid of the fitted points
        x, y = np.log(betas[fit]), np.log(closest[fit])
        line = np.exp(y.mean() + result.slope * (np.log(betas) - x.mean()))
        law.loglog(betas, line, "C0-", lw=1, label=f"fit: slope {result.slope:.2f}")
    if fit.any():
        first = np.nonzero(fit)[0][0]
        reference = closest[first] * rate(betas) / rate(betas[first])
        label = r"$\propto\sqrt{\log(\beta+1)/\beta}$"
        if np.isfinite(result.exponent):
            label += f" (exponent {result.exponent:.2f})"
        law.loglog(betas, reference, "k--", lw=1, label=label)
    law.set(xlabel=r"$\beta$", ylabel=r"closest mean $W_2$")
    law.set_title(r"closest approach against ABRR's rate (slope $-1/2$)", fontsize=9)
    law.legend(fontsize=7)

    x0, final = np.asarray(result.x0), np.asarray(result.final)
    d = x0.shape[-1]
    phase.plot(x0[:, 0], x0[:, 1], ".", color="0.75", ms=4, label="x0")
    terminal = np.asarray(result.terminal_time)[:, 0]
    for b, marker in ((0, "o"), (betas.size - 1, "s")):
        # a cloud that has (nearly) merged is magnified about its mean to its initial size
        center = final[b].mean(axis=0)
        spread = np.sqrt(np.mean(np.sum((final[b] - center) ** 2, axis=-1)))
        initial = np.sqrt(np.mean(np.sum((x0 - x0.mean(axis=0)) ** 2, axis=-1)))
        zoom = initial / spread if spread > 0 and initial > 2 * spread else 1.0
        shown = center + zoom * (final[b] - center)
        when_b = terminal[b] if np.isfinite(terminal[b]) else ts[-1]
        label = rf"$\beta$ = {betas[b]:g}, t = {when_b:.3g}"
        label += f" (x{zoom:.2g} about its mean)" if zoom > 1 else ""
        phase.plot(shown[:, 0], shown[:, 1], marker, color=colors[b], ms=4, mfc="none", label=label)
    if int(np.asarray(result.limit_status)[0]) == 0:
        limits = np.asarray(result.limits)[0]
        phase.plot(limits[:, 0], limits[:, 1], "kx", ms=6, label=r"$T(x_0)$")
    V = result.config.get("V")
    values, bases = eigenvectors(None if V is None else np.asarray(V), d)
    center = final[0].mean(axis=0)[:2]
    if np.all(np.isfinite(center)):
        for k, (value, basis) in enumerate(zip(values, bases, strict=True)):
            if value.imag != 0 and np.any(values[:k] == np.conj(value)):
                continue  # a complex pair's plane is drawn once
            shown = f"{value.real:.3g}" if value.imag == 0 else f"{value:.3g}"
            label = f"eigenvector, {shown}" + (" (slowest)" if k == 0 else "")
            style = {"color": "C3", "ls": "-"} if k == 0 else {"color": "0.5", "ls": ":"}
            for direction in basis.T:
                if np.linalg.norm(direction[:2]) < 1e-6:  # orthogonal to the drawn plane
                    continue
                phase.axline(center, center + direction[:2], lw=1, label=label, **style)
                label = None
    phase.set_aspect("equal", adjustable="datalim")
    phase.set(xlabel=r"$x_1$", ylabel=r"$x_2$")
    plane = " (first two coordinates)" if d > 2 else ""
    phase.set_title(f"realization 0 in its terminal phase{plane}", fontsize=9)
    phase.legend(fontsize=7, loc="best")
    return _saved(fig, path, dpi=130)
