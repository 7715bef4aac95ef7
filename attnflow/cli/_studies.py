"""`attnflow phase-diagram`, `figure3` and `metastability`: the batched studies of GLPR."""

import time

from .._names import MODELS, WEIGHTS
from . import _options as opts


def add_commands(commands) -> None:
    """Add `phase-diagram`, `figure3` and `metastability` to the `attnflow` subparsers."""
    phase = commands.add_parser(
        "phase-diagram",
        help="P(clustered pair) over time and temperature (GLPR Figs. 3, 5)",
        description="For each beta, run many realizations of n uniform tokens on S^{d-1} through "
        "the discrete post-LN transformer and record the fraction of clustered pairs over "
        "time; the curve Gamma is overlaid. Chunks are written to OUT.partial/ as they finish.",
    )
    opts.add(phase, "--d", 32, "dimension, >= 2", type=opts.at_least_2)
    opts.add_beta_range(phase, 0.1, 9.0, 90)
    opts.add(phase, "--weights", "identity", choices=WEIGHTS)
    opts.add(phase, "--model", "SA", "dynamics", choices=MODELS)
    opts.add_sweep_options(phase, resume=True, samples=256, saves=151)
    opts.add_outputs(phase, "phase_diagram", labelled=True)
    phase.set_defaults(run=_phase_diagram)

    figure3 = commands.add_parser(
        "figure3",
        help="the whole GLPR Fig. 3: phase diagrams for d = 2, 8, 32, 128, 512, 1024",
        description="GLPR Fig. 3: SA with Q = K = V = I, n = 32, 90 betas in [0.1, 9], 1024 "
        "samples, T = 30, h = 0.1, one panel per dimension.",
    )
    dims = [2, 8, 32, 128, 512, 1024]
    shown = " ".join(map(str, dims))
    opts.add(figure3, "--dims", dims, "dimensions", shown=shown, type=opts.at_least_2, nargs="+")
    opts.add(figure3, "--num-betas", 90, "in [0.1, 9]", type=opts.positive_int)
    opts.add_sweep_options(figure3, resume=True, samples=1024, saves=151)
    opts.add_outputs(figure3, "figure3")
    figure3.set_defaults(run=_figure3)

    meta = commands.add_parser(
        "metastability",
        help="clusters on the circle that live long before merging (GLPR Fig. 4)",
        description="n uniform tokens on the circle (d = 2), SA layers at each beta: snapshots, "
        "angles, the energy staircase, and the distribution of the number of clusters at t1.",
    )
    opts.add(meta, "--betas", [4.0, 9.0], shown="4 9", type=opts.positive, nargs="+")
    opts.add(meta, "--model", "SA", "dynamics", choices=MODELS)
    opts.add_sweep_options(meta, resume=False, samples=256, saves=301)
    opts.add_outputs(meta, "metastability", labelled=True)
    meta.set_defaults(run=_metastability)


def _phase_diagram(args) -> str:
    import attnflow as af

    ts = opts.layer_times(args.t1, args.h, args.saves)
    betas = opts.beta_grid(args)
    start = time.perf_counter()
    diagram = af.phase_diagram(
        d=args.d,
        betas=betas,
        ts=ts,
        delta=args.delta,
        weights=args.weights,
        kind=args.model,
        store=opts.partial(args),
        **opts.sweep_kwargs(args),
    )
    elapsed = time.perf_counter() - start
    arrays = opts.fields(diagram, "betas ts prob status")
    if diagram.has_gamma:
        arrays["gamma"] = diagram.gamma()
    figure = opts.figure("plot_phase_diagram", diagram)
    wrote = opts.write(args, diagram.config, figure, diagram.to_xarray, **arrays)
    items = args.num_betas * args.samples
    return "\n".join(
        [
            f"attnflow phase-diagram: {args.model}, n = {args.n}, d = {args.d}, "
            f"weights {args.weights}, {args.num_betas} betas in [{args.beta_min:g}, "
            f"{args.beta_max:g}] x {args.samples} samples, t in [0, {ts[-1]:g}], h = {args.h:g}"
            f": {elapsed:.1f} s ({items / elapsed:.0f} samples/s)",
            *diagram.summary(),
            wrote,
        ]
    )


def _figure3(args) -> str:
    import numpy as np

    import attnflow as af

    ts = opts.layer_times(args.t1, args.h, args.saves)
    betas = np.linspace(0.1, 9.0, args.num_betas)
    partial = opts.partial(args)
    lines, diagrams = [], []
    for d in args.dims:
        start = time.perf_counter()
        diagrams.append(
            af.phase_diagram(
                d=d,
                betas=betas,
                ts=ts,
                delta=args.delta,
                store=partial / f"d{d}",
                **opts.sweep_kwargs(args),
            )
        )
        lines.append(f"  d = {d}: {time.perf_counter() - start:.1f} s")
    config = {"dims": list(args.dims), **diagrams[0].config}
    config.pop("d")
    wrote = opts.write(
        args,
        config,
        opts.figure("plot_figure3", diagrams),
        dims=np.asarray(args.dims),
        betas=betas,
        ts=diagrams[0].ts,
        prob=np.stack([p.prob for p in diagrams]),
        status=np.stack([p.status for p in diagrams]),
        gamma=diagrams[0].gamma() if diagrams[0].has_gamma else np.full(betas.size, np.nan),
    )
    head = (
        f"attnflow figure3: n = {args.n}, {args.num_betas} betas x {args.samples} samples, "
        f"t in [0, {ts[-1]:g}], h = {args.h:g}, d in {args.dims}"
    )
    return "\n".join([head, *lines, wrote])


def _metastability(args) -> str:
    import attnflow as af

    ts = opts.layer_times(args.t1, args.h, args.saves)
    start = time.perf_counter()
    study = af.studies.metastability(
        betas=args.betas,
        ts=ts,
        delta=args.delta,
        kind=args.model,
        **opts.sweep_kwargs(args),
    )
    elapsed = time.perf_counter() - start
    snapshots = [t for t in (2.5, 18.0, 30.0) if t <= study.ts[-1]] or [study.ts[-1]]
    figure = opts.figure("plot_metastability", study, snapshots=snapshots)
    arrays = opts.fields(study, "betas ts clusters energy xs status")
    wrote = opts.write(args, study.config, figure, study.to_xarray, **arrays)
    lines = [
        f"attnflow metastability: n = {args.n}, d = 2, {args.samples} samples, "
        f"t in [0, {study.ts[-1]:g}], h = {args.h:g}: {elapsed:.1f} s"
    ]
    return "\n".join([*lines, *study.summary(), wrote])
