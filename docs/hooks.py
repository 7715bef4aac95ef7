"""mkdocs hooks: the CLI reference from the parser itself, and the notebooks that exist.

- `on_config` fills the nav's "Notebooks" section with `notebooks/*.ipynb` (sorted), so the site
  lists whatever notebooks the repository has, and reads the site's and the source's addresses
  from `[project.urls]` in `pyproject.toml`, where they are configured once.
- `on_page_markdown` lists the public names of each `::: attnflow.x` of the API pages as its
  `members` (attnflow re-exports its names with `from ._x import a as a`, which griffe does not
  count as public by itself), and replaces the marker `<!-- cli-help -->` in `cli.md` by the
  `--help` text of `attnflow` and of every subcommand (recursively), so the page cannot drift
  from the code.
- `on_files` serves each notebook page from its executed copy in `build/notebooks/` (or the
  folder `ATTNFLOW_EXECUTED_NOTEBOOKS` names) when one exists and its cells are those of the
  notebook (a copy left from before an edit is not shown): `tests/test_notebooks.py` writes
  them, so a site built after the notebook test shows the notebooks' figures, while git keeps
  the notebooks without outputs.
- `on_page_content` and `on_post_page` render the maths as MathML at build time (latex2mathml),
  which browsers display without any script: `$...$` in the Markdown pages (marked by
  `pymdownx.arithmatex`) and in the notebooks' Markdown cells, whose MathJax script, fetched
  from the network, is dropped.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import os
import re
from pathlib import Path

_MARKER = "<!-- cli-help -->"
_ROOT = Path(__file__).parent.parent


def on_config(config, **kwargs):
    docs = Path(config["docs_dir"])
    notebooks = sorted((docs / "notebooks").glob("*.ipynb"))
    for i, entry in enumerate(config["nav"] or []):
        if isinstance(entry, dict) and "Notebooks" in entry:
            config["nav"][i] = {"Notebooks": [f"notebooks/{p.name}" for p in notebooks]}
    urls = _project_urls(Path(config["config_file_path"]).parent / "pyproject.toml")
    config["site_url"] = urls.get("Documentation", config.get("site_url"))
    config["repo_url"] = urls.get("Source", config.get("repo_url"))
    return config


def _project_urls(pyproject: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the addresses stay unset
        return {}
    return tomllib.loads(pyproject.read_text()).get("project", {}).get("urls", {})


def _subcommands(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _sections(parser: argparse.ArgumentParser, name: str, level: int) -> list[str]:
    out = [f"{'#' * level} `{name}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for sub, subparser in _subcommands(parser):
        out += _sections(subparser, f"{name} {sub}", level + 1)
    return out


@functools.cache
def _package():
    import griffe

    return griffe.load("attnflow", search_paths=[str(Path(__file__).parent.parent)])


def _public_names(module_path: str) -> list[str]:
    """The module's public names in source order: its own definitions and its re-exports from
    attnflow's private modules (not submodules, not names imported from other packages)."""
    module = (
        _package()[module_path.removeprefix("attnflow").lstrip(".")]
        if "." in module_path
        else _package()
    )
    names = []
    for name, member in module.members.items():
        if name.startswith("_"):
            continue
        if member.is_alias:
            target = member.target_path
            if not target.startswith("attnflow.") or member.final_target.is_module:
                continue
        elif member.is_module:
            continue
        names.append(name)
    return names


def _with_members(match: re.Match) -> str:
    names = _public_names(match.group(1))
    return "\n".join(
        [match.group(0), "    options:", "      members:"] + [f"        - {n}" for n in names]
    )


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if page.file.src_uri.startswith("api/"):
        # a `:::` line with no options block of its own
        markdown = re.sub(
            r"^::: (attnflow[\w.]*)$(?!\n    options)", _with_members, markdown, flags=re.M
        )
    if _MARKER not in markdown:
        return markdown
    from attnflow.cli._main import _parser
    from attnflow.cli._options import _add_globals

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"  # argparse wraps to the terminal width: fix it to the page's
    try:
        parser = _parser()
        _add_globals(parser)  # --version and --quiet, as the command has them
        parser.prog = "attnflow"
        lines = []
        for sub, subparser in _subcommands(parser):
            subparser.prog = f"attnflow {sub}"
            lines += _sections(subparser, f"attnflow {sub}", 2)
        top = ["```text", parser.format_help().rstrip(), "```", ""]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    return markdown.replace(_MARKER, "\n".join(top + lines))


def on_files(files, config, **kwargs):
    executed = Path(os.environ.get("ATTNFLOW_EXECUTED_NOTEBOOKS", _ROOT / "build" / "notebooks"))
    for file in files:
        if file.src_uri.startswith("notebooks/") and file.src_uri.endswith(".ipynb"):
            copy = executed / Path(file.src_uri).name
            if copy.is_file() and _cells(copy) == _cells(Path(file.abs_src_path)):
                file.abs_src_path = str(copy)
    return files


def _cells(notebook: Path) -> list[tuple[str, str]]:
    """The type and source of each cell of a notebook (sources as one string each)."""
    cells = json.loads(notebook.read_text())["cells"]
    return [(c["cell_type"], "".join(c["source"])) for c in cells]


def _mathml(tex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    return convert(html.unescape(tex).strip(), display="block" if display else "inline")


# what pymdownx.arithmatex (generic mode) makes of `$...$` and `$$...$$`
_ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">\s*\\[(\[](.*?)\\[)\]]\s*</\1>', re.S)


def on_page_content(content: str, page, **kwargs) -> str:
    return _ARITHMATEX.sub(lambda m: _mathml(m.group(2), m.group(1) == "div"), content)


# text between tags, outside code, preformatted text, scripts and styles
_VERBATIM = re.compile(r"(<(pre|code|script|style)\b.*?</\2>|<[^>]*>)", re.S)
_DOLLARS = re.compile(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", re.S)
_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)


def on_post_page(output: str, page, **kwargs) -> str:
    if not page.file.src_uri.endswith(".ipynb"):
        return output
    output = _SCRIPT.sub(lambda m: "" if "mathjax" in m.group(0).lower() else m.group(0), output)
    parts = _VERBATIM.split(output)
    # split keeps each match and its inner group: text, match, group, text, match, group, ...
    for i in range(0, len(parts), 3):
        parts[i] = _DOLLARS.sub(
            lambda m: _mathml(m.group(1) or m.group(2), m.group(1) is not None), parts[i]
        )
    return "".join(p for i, p in enumerate(parts) if i % 3 != 2)
