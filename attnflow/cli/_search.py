"""`attnflow search NAME`: worked gradient searches through the flow (attnflow.optimize)."""

import time

from . import _options as opts


def add_commands(commands) -> None:
    """Add `search` and its worked searches to the `attnflow` subparsers."""
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
            opts.add(one, "--k", 2, "clusters, >= 2", type=opts.positive_int)
            opts.add(one, "--n", 32, "tokens", type=opts.positive_int)
            opts.add(one, "--d", 2, "dimension", type=opts.at_least_2)
            opts.add(one, "--t1", 30.0, "final time", type=opts.positive)
            opts.add(one, "--h", 0.1, "layer step", type=opts.positive)
            opts.add(one, "--samples", 4, "initial states", type=opts.positive_int)
            opts.add(one, "--init", 10.0, "initial beta", type=opts.positive)
            opts.add(one, "--delta", 1e-3, "cluster radius", shown="1e-3", type=opts.positive)
            opts.add(one, "--margin", 1.0, "time asked beyond t1", type=opts.nonnegative)
            steps = 100 if name == "smallest-beta" else 200
        elif name == "value-groups":
            opts.add(one, "--n", 16, "tokens", type=opts.at_least_2)
            opts.add(one, "--d", 3, "dimension", type=opts.at_least_2)
            groups = "groups: tokens drawn around +-e_1, +-e_2, ... of a random basis"
            opts.add(one, "--groups", 2, groups, type=opts.positive_int)
            opts.add(one, "--spread", 0.3, "noise around them", type=opts.nonnegative)
            opts.add(one, "--beta", 1.0, type=opts.nonnegative)
            opts.add(one, "--t1", 10.0, "final time", type=opts.positive)
            steps = 300
        else:
            opts.add(one, "--n", 8, "tokens", type=opts.positive_int)
            opts.add(one, "--d", 3, "dimension", type=opts.at_least_2)
            opts.add(one, "--m", 2, "rows of Q and K", type=opts.positive_int)
            opts.add(one, "--beta", 1.0, type=opts.positive)
            opts.add(one, "--t1", 5.0, "recording length", type=opts.positive)
            opts.add(one, "--saves", 21, "save times", type=opts.at_least_2)
            steps = 200
        opts.add(one, "--steps", steps, "optimizer steps", type=opts.positive_int)
        opts.add(one, "--seed", 0, "random seed", type=opts.seed)
        opts.add_dtype(one)
        opts.add_outputs(one, name.replace("-", "_"))
        one.set_defaults(run=_search)


def _search(args) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import attnflow as af

    key, dtype = jax.random.key(args.seed), jnp.dtype(args.dtype)
    start = time.perf_counter()
    head = f"attnflow search {args.name}: "
    if args.name in ("smallest-beta", "beta-schedule"):
        result = af.optimize.smallest_beta(
            key=key,
            k=args.k,
            n=args.n,
            d=args.d,
            t1=args.t1,
            solver=af.Layers(args.h),
            samples=args.samples,
            schedule=args.name == "beta-schedule",
            init=args.init,
            delta=args.delta,
            margin=args.margin,
            steps=args.steps,
            dtype=dtype,
            progress=opts.progress(args),
        )
        arrays = opts.fields(result, "beta x0 xs clusters clusters_below")
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
        figure = opts.figure("plot_smallest_beta", result)
    elif args.name == "value-groups":
        if args.groups > min(2 * args.d, args.n):
            raise ValueError(
                f"--groups must be at most 2 d = {2 * args.d} and n = {args.n}; got {args.groups}"
            )
        x0, labels = af.sphere.around_axes(key, args.n, args.d, args.groups, args.spread, dtype)
        result = af.optimize.value_for_groups(
            x0, labels, beta=args.beta, t1=args.t1, steps=args.steps, progress=opts.progress(args)
        )
        arrays = opts.fields(result, "V x0 labels xs clusters")
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
        figure = opts.figure("plot_value_groups", result)
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
            progress=opts.progress(args),
        )
        (A, V), (A_fit, V_fit) = map(af.optimize.identifiable, (result.true, result.fitted))
        arrays = opts.fields(result, "ts xs") | {"A": A, "V": V, "A_fit": A_fit, "V_fit": V_fit}
        arrays |= opts.fields(result, "held_true held_fitted")
        head += f"SA with Q, K of shape ({args.m}, {args.d}), {args.n} tokens, t in [0, "
        lines = [
            f"{args.t1:g}] ({args.saves} save times)",
            f"  loss {float(result.search.loss):.3g}; relative errors: beta Q^T K "
            f"{float(result.logits_error):.2e}, V {float(result.value_error):.2e}; "
            f"held-out prediction RMS {float(result.prediction_error):.2e}",
        ]
        figure = opts.figure("plot_recovery", result)
    elapsed = time.perf_counter() - start
    arrays["loss"] = result.search.history
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    config = opts.config(args) | {"version": af.__version__}
    lines[0] += f": {elapsed:.1f} s"
    return "\n".join([head + lines[0], *lines[1:], opts.write(args, config, figure, **arrays)])
