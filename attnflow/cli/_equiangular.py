"""`attnflow normalization` and `long-context`: equiangular tokens and their closed forms."""

from . import _options as opts


def add_commands(commands) -> None:
    """Add `normalization` and `long-context` to the `attnflow` subparsers."""
    norm = commands.add_parser(
        "normalization",
        help="mean cosine over depth for Post-LN, Pre-LN, Peri-LN and nGPT",
        description="n tokens uniform on S^{d-1}, softmax attention with Q = K = V = I, under "
        "each normalization scheme; 1 - mean pairwise cosine over depth on log axes, with the "
        "equiangular predictions (rho(0) = 0).",
    )
    opts.add(norm, "--n", 32, "number of tokens", type=opts.at_least_2)
    opts.add(norm, "--d", 128, "dimension, >= 2", type=opts.at_least_2)
    opts.add(norm, "--beta", 1.0, "inverse temperature", type=opts.nonnegative)
    opts.add(norm, "--t1", 1000.0, "final time", type=opts.positive)
    opts.add(norm, "--alpha", 1.0, "nGPT step alpha", type=opts.positive)
    opts.add(norm, "--seed", 0, "seed of the tokens", type=opts.seed)
    opts.add_dtype(norm, old=None)
    opts.add_outputs(norm, "normalization")
    norm.set_defaults(run=_normalization)

    long = commands.add_parser(
        "long-context",
        help="one attention layer with beta = gamma log n: the (rho, gamma) phase diagram",
        description="Output cosine of one softmax layer on n equiangular tokens with cosine rho "
        "and beta = gamma log n (Rigollet Thm 7), over a (rho, gamma) grid, with the critical "
        "curve gamma = 1/(1 - rho).",
    )
    opts.add(long, "--n", 1e9, "number of tokens", shown="1e9", type=opts.real_at_least_2)
    opts.add(long, "--gamma-max", 10.0, "largest gamma", type=opts.positive)
    opts.add(long, "--points", 200, "grid size", type=opts.positive_int)
    opts.add_dtype(long, old=None)
    opts.add_outputs(long, "long_context")
    long.set_defaults(run=_long_context)


def _normalization(args) -> str:
    import jax
    import numpy as np

    import attnflow as af

    ts = np.concatenate([[0.0], np.geomspace(0.1, args.t1, 60)]).astype(args.dtype)
    x0 = af.sphere.uniform(jax.random.key(args.seed), args.n, args.d, dtype=args.dtype)
    # float64 tight; float32 simulate's defaults (rtol 1e-6, atol 1e-8), the tightest it meets
    tolerances = {"rtol": 1e-9, "atol": 1e-12} if args.dtype == "float64" else {}
    kernel = af.Softmax(args.beta)
    schemes = {
        "Post-LN": (af.PostLN(kernel), "SA"),
        "Pre-LN": (af.PreLN(kernel), "PreLN"),
        "Peri-LN": (af.PeriLN(kernel), "PeriLN"),
        "nGPT": (af.NGPT(kernel, args.alpha), "nGPT"),
    }

    def mean_gap(t, x):
        return af.analysis.mean_cosine_gap(x)

    gaps, predictions, lines = {}, {}, []
    for name, (field, kind) in schemes.items():
        gap = af.simulate(field, x0, ts, save=mean_gap, max_steps=10**6, **tolerances).xs
        rho = af.equiangular_rho(ts, args.beta, args.n, kind=kind, alpha=args.alpha)
        gaps[name], predictions[name] = np.asarray(gap), np.asarray(1 - rho)
        lines.append(
            f"  {name}: 1 - mean cosine at t = {args.t1:g}: {gaps[name][-1]:.3g} "
            f"(equiangular: {predictions[name][-1]:.3g})"
        )
    title = f"n = {args.n}, d = {args.d}, beta = {args.beta:g}"
    wrote = opts.write(
        args,
        opts.config(args),
        opts.figure("plot_normalization", ts, gaps, predictions, title=title),
        ts=ts,
        **{f"gap_{k}": v for k, v in gaps.items()},
        **{f"equiangular_{k}": v for k, v in predictions.items()},
    )
    return "\n".join([f"attnflow normalization: {title}", *lines, wrote])


def _long_context(args) -> str:
    import numpy as np

    import attnflow as af

    rhos = np.linspace(0.0, 1.0, args.points + 2)[1:-1].astype(args.dtype)
    gammas = np.linspace(0.0, args.gamma_max, args.points).astype(args.dtype)
    cosine = np.asarray(af.long_context_cosine(args.n, rhos[None, :], gammas[:, None]))
    config = opts.fields(args, "n gamma_max points dtype")
    figure = opts.figure("plot_long_context", rhos, gammas, cosine, n=args.n)
    wrote = opts.write(args, config, figure, rhos=rhos, gammas=gammas, cosine=cosine)
    rho = 0.5
    limits = [
        float(af.long_context_cosine(args.n, np.asarray(rho, args.dtype), g / (1 - rho)))
        for g in (0.5, 1.0, 2.0)
    ]
    return "\n".join(
        [
            f"attnflow long-context: n = {args.n:.3g}, {args.points} x {args.points} grid",
            f"  rho = 0.5, gamma = 1, 2, 4 (critical 2): output cosine {limits[0]:.6f}, "
            f"{limits[1]:.6f}, {limits[2]:.6f} (limits 1, 0.8, 0.5)",
            wrote,
        ]
    )
