"""Reading the documentation sources: mkdocs.yml, its nav, and the fenced code blocks of a page.

Shared by the documentation tests in this folder (loaded by path: pytest runs with
``--import-mode=importlib``, which does not put this folder on ``sys.path``).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARKER = "<!-- docs-test: skip -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*$")


class _AnyTagLoader(yaml.SafeLoader):
    """A YAML loader that reads mkdocs' custom tags (`!ENV`, `!!python/name`) as plain values."""


def _any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_mapping(node)


_AnyTagLoader.add_multi_constructor("!", _any_tag)
_AnyTagLoader.add_multi_constructor("tag:yaml.org,2002:python/", _any_tag)


def load_mkdocs_config() -> dict:
    """`mkdocs.yml` as a dict, custom tags read as plain values."""
    return yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_AnyTagLoader)


def nav_pages(nav: list) -> list[tuple[str, str]]:
    """`(title, path)` of every page in a mkdocs `nav`, in order."""
    pages = []
    for entry in nav:
        if isinstance(entry, str):
            pages.append((entry, entry))
            continue
        for title, value in entry.items():
            if isinstance(value, str):
                pages.append((title, value))
            else:
                pages.extend(nav_pages(value))
    return pages


def code_blocks(text: str) -> list[tuple[str, int, str, bool]]:
    """`(language, first line number, code, skip)` of every fenced block of a Markdown text."""
    blocks = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match["indent"], match["lang"]
        before = [line.strip() for line in lines[max(0, i - 2) : i] if line.strip()]
        skip = bool(before) and before[-1] == SKIP_MARKER
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : j])
        blocks.append((lang, i + 2, body + "\n", skip))
        i = j + 1
    return blocks
