"""`attnflow lyapunov`, `fixed-points` and `ftle`: stability from the command line."""

import time

from .._names import CLOSED_FORM, MODELS
from . import _options as opts

_MODULO = {"none": None, "rotations": "rotations", "symmetries": "rotations+permutations"}


def add_commands(commands) -> None:
    """Add the stability commands to the `attnflow` subparsers."""
    lyap = commands.add_parser(
        "lyapunov",
        help="the Lyapunov spectrum of SA/USA from uniform tokens, with its convergence plot",
        description="Lyapunov exponents of n uniform tokens on S^{d-1} under SA or USA with "
        "Q = K = V = I (Benettin/QR, tangents by jax.jvp), on the tangent bundle of the product "
        "of spheres: n (d - 1) exponents in all. Prints the spectrum; plots the running "
        "estimates.",
    )
    _add_model_options(lyap, n=32, d=3)
    opts.add(lyap, "--t1", 100.0, "final time", type=opts.positive)
    opts.add(
        lyap, "--k", None, "how many exponents", shown="all, n (d - 1)", type=opts.positive_int
    )
    opts.add(lyap, "--every", 1.0, "re-orthonormalization interval", type=opts.positive)
    opts.add(lyap, "--transient", 0.0, "time left out of the sums", type=opts.nonnegative)
    opts.add_ode_solver(lyap)
    step = "step; the layer step h for layers"
    opts.add(lyap, "--dt0", None, step, shown="0.1", type=opts.positive)
    opts.add_dtype(lyap)
    opts.add_outputs(lyap, "lyapunov")
    lyap.set_defaults(run=_lyapunov)

    fixed = commands.add_parser(
        "fixed-points",
        help="equilibria of SA/USA from random guesses, with their stability type",
        description="Refine random configurations of n tokens on S^{d-1} into equilibria of SA "
        "or USA with Q = K = V = I (optimistix), deduplicate them, and classify each (sink, "
        "source, saddle, degenerate) from the eigenvalues of the tangent Jacobian, modulo the "
        "rotations of the whole configuration.",
    )
    _add_model_options(fixed, n=4, d=2)
    fixed.add_argument(
        "--guesses",
        type=opts.positive_int,
        default=64,
        help="random configurations (64); their states under the flow at t = 1, 3, 10 are "
        "guesses too",
    )
    opts.add(fixed, "--solver", "newton", choices=["newton", "levenberg_marquardt"])
    modulo = "identify equilibria up to rotations, or rotations and relabelings"
    opts.add(fixed, "--modulo", "symmetries", modulo, choices=sorted(_MODULO))
    close = "equilibria this close are one"
    opts.add(fixed, "--tol", 1e-6, close, shown="1e-6", type=opts.positive)
    opts.add_dtype(fixed)
    opts.add_outputs(fixed, "fixed_points")
    fixed.set_defaults(run=_fixed_points)

    ftle = commands.add_parser(
        "ftle",
        help="largest finite-time Lyapunov exponent over (t, beta): where metastability lives",
        description="For each beta, the largest Lyapunov exponent of many realizations of n "
        "uniform tokens (the phase diagram's realizations), over each interval of time, through "
        "the sweep engine. Chunks are written to OUT.partial/ as they finish.",
    )
    opts.add(ftle, "--d", 2, "dimension, >= 2", type=opts.at_least_2)
    opts.add_beta_range(ftle, 0.5, 9.0, 35)
    opts.add(ftle, "--every", 0.5, "interval of time", type=opts.positive)
    opts.add(ftle, "--model", "SA", "dynamics", choices=MODELS)
    opts.add_sweep_options(ftle, resume=True, samples=64, saves=None)
    opts.add_outputs(ftle, "ftle", labelled=True)
    ftle.set_defaults(run=_ftle)


def _add_model_options(command, *, n: int, d: int) -> None:
    opts.add(command, "--n", n, "number of tokens", type=opts.positive_int)
    opts.add(command, "--d", d, "dimension, >= 2", type=opts.at_least_2)
    opts.add(command, "--beta", 1.0, "inverse temperature", type=opts.nonnegative)
    opts.add(command, "--model", "SA", "dynamics", choices=CLOSED_FORM)
    opts.add(command, "--seed", 0, "random seed", type=opts.seed)


def _rows(values, per_line: int = 8) -> list[str]:
    return [
        "    " + " ".join(f"{v:+.5f}" for v in values[i : i + per_line])
        for i in range(0, len(values), per_line)
    ]


def _lyapunov(args) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    dtype = args.dtype
    solver, dt0 = opts.solver(args)
    field = af.fields.KINDS[args.model](jnp.asarray(args.beta, dtype))
    key, tangents = jax.random.split(jax.random.key(args.seed))
    x0 = af.sphere.uniform(key, args.n, args.d, dtype=dtype)
    start = time.perf_counter()
    spectrum = af.stability.lyapunov_spectrum(
        field,
        x0,
        args.t1,
        k=args.k,
        every=args.every,
        transient=args.transient,
        solver=solver,
        dt0=dt0,
        key=tangents,
    )
    exponents = np.asarray(spectrum.exponents)
    elapsed = time.perf_counter() - start
    title = (
        f"{args.model}, n = {args.n}, d = {args.d}, beta = {args.beta:g}: "
        f"{len(exponents)} of {spectrum.dimension} exponents"
    )
    wrote = opts.write(
        args,
        opts.config(args) | {"version": af.__version__},
        opts.figure("plot_lyapunov", spectrum, title=title),
        exponents=exponents,
        **opts.fields(spectrum, "history ts"),
        x0=x0,
    )
    change = np.abs(spectrum.history[-1] - spectrum.history[len(spectrum.history) // 2]).max()
    return "\n".join(
        [
            f"attnflow lyapunov: {args.model}, n = {args.n}, d = {args.d}, beta = {args.beta:g}, "
            f"t in [0, {args.t1:g}], solver {args.solver}, {dtype}: {elapsed:.1f} s "
            "(compilation included)",
            f"  {len(exponents)} of {spectrum.dimension} exponents (tangent bundle), largest "
            "first:",
            *_rows(exponents),
            f"  sum {exponents.sum():+.6f}; largest change over the second half of the run: "
            f"{float(change):.2e}",
            wrote,
        ]
    )


def _fixed_points(args) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    dtype = args.dtype
    field = af.fields.KINDS[args.model](jnp.asarray(args.beta, dtype))
    start = time.perf_counter()
    guesses = af.stability.fixed_point_guesses(
        field, args.n, args.d, key=jax.random.key(args.seed), samples=args.guesses, dtype=dtype
    )
    found = af.stability.find_fixed_points(
        field,
        guesses,
        solver=args.solver,
        tol=args.tol,
        modulo=_MODULO[args.modulo],
    )
    types = [af.stability.classify_fixed_point(field, x) for x in found.points]
    elapsed = time.perf_counter() - start
    kinds = np.asarray([t.type for t in types])
    wrote = opts.write(
        args,
        opts.config(args) | {"version": af.__version__},
        opts.figure("plot_fixed_points", found.points, types),
        **opts.fields(found, "points residuals counts"),
        kinds=kinds,
        unstable_dims=np.asarray([t.unstable_dim for t in types], dtype=int),
        symmetry_dims=np.asarray([t.symmetry_dim for t in types], dtype=int),
    )
    lines = [
        f"attnflow fixed-points: {args.model}, n = {args.n}, d = {args.d}, beta = {args.beta:g}, "
        f"{len(guesses)} guesses, {args.solver}: {len(found)} equilibria (modulo "
        f"{args.modulo}), {found.failed} guesses did not converge; {elapsed:.1f} s",
        "    #  type        unstable  symmetry  max Re(lambda)  min cosine  residual  found",
    ]
    for i, (x, kind) in enumerate(zip(found.points, types, strict=True)):
        top = kind.eigenvalues.real.max(initial=-np.inf)
        cosine = (x @ x.T).min()
        lines.append(
            f"  {i:3d}  {kind.type:<10}  {kind.unstable_dim:8d}  {kind.symmetry_dim:8d}  "
            f"{top:+14.6f}  {cosine:+10.6f}  {found.residuals[i]:8.1e}  {found.counts[i]:5d}"
        )
    lines.append(wrote)
    return "\n".join(lines)


def _ftle(args) -> str:
    import numpy as np

    import attnflow as af

    betas = opts.beta_grid(args)
    start = time.perf_counter()
    diagram = af.studies.ftle_diagram(
        d=args.d,
        betas=betas,
        t1=args.t1,
        every=args.every,
        kind=args.model,
        store=opts.partial(args),
        **opts.sweep_kwargs(args),
    )
    elapsed = time.perf_counter() - start
    figure = opts.figure("plot_ftle", diagram)
    arrays = opts.fields(diagram, "betas ts ftle local status")
    wrote = opts.write(args, diagram.config, figure, diagram.to_xarray, **arrays)
    local = diagram.local.mean(axis=1)
    lines = [
        f"attnflow ftle: {args.model}, n = {args.n}, d = {args.d}, {args.num_betas} betas in "
        f"[{args.beta_min:g}, {args.beta_max:g}] x {args.samples} samples, t in [0, "
        f"{args.t1:g}], h = {args.h:g}: {elapsed:.1f} s"
    ]
    for b in np.unique(np.linspace(0, len(betas) - 1, 4).round().astype(int)):
        positive = diagram.ts[local[b] > 0]
        last = f"last positive at t = {positive[-1]:g}" if positive.size else "never positive"
        lines.append(
            f"  beta = {betas[b]:.3g}: mean local exponent max {local[b].max():+.4f}, {last}"
        )
    lines.append(wrote)
    return "\n".join(lines)
