"""`attnflow search NAME`: worked gradient searches through the flow (attnflow.optimize)."""

import time

from ._options import (
    _add_dtype,
    _add_outputs,
    _at_least_2,
    _config,
    _nonnegative,
    _positive,
    _positive_int,
    _progress,
    _write,
)


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
            one.add_argument("--k", type=_positive_int, default=2, help="clusters, >= 2 (2)")
            one.add_argument("--n", type=_positive_int, default=32, help="tokens (32)")
            one.add_argument("--d", type=_at_least_2, default=2, help="dimension (2)")
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
            one.add_argument("--n", type=_at_least_2, default=16, help="tokens (16)")
            one.add_argument("--d", type=_at_least_2, default=3, help="dimension (3)")
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
            one.add_argument("--d", type=_at_least_2, default=3, help="dimension (3)")
            one.add_argument("--m", type=_positive_int, default=2, help="rows of Q and K (2)")
            one.add_argument("--beta", type=_positive, default=1.0, help="(1)")
            one.add_argument("--t1", type=_positive, default=5.0, help="recording length (5)")
            one.add_argument("--saves", type=_at_least_2, default=21, help="save times (21)")
            steps = 200
        one.add_argument(
            "--steps", type=_positive_int, default=steps, help=f"optimizer steps ({steps})"
        )
        one.add_argument("--seed", type=int, default=0, help="random seed (0)")
        _add_dtype(one)
        _add_outputs(one, name.replace("-", "_"))
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
        if args.groups > min(2 * args.d, args.n):
            raise ValueError(
                f"--groups must be at most 2 d = {2 * args.d} and n = {args.n}; got {args.groups}"
            )
        x0, labels = af.sphere.around_axes(key, args.n, args.d, args.groups, args.spread, dtype)
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
