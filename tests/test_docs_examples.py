"""Every Python example on the home page and on the how-to pages runs as written.

The ```python blocks of a page are executed in order in one namespace (a later block may use what an
earlier one defined), in a temporary working directory, with torch seeded. The pages are `docs/index.md`
and every page whose title in the `nav` of `mkdocs.yml` starts with "How-to".

A block that cannot run here (it needs a checkpoint file, a data set or a data loader) is marked on the
line before its opening fence with the HTML comment

    <!-- docs-test: skip -->

which the rendered page does not show. Keep the examples small (tiny images, few iterations): all pages
together should run in well under a minute.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_docs_sources", Path(__file__).with_name("_docs_sources.py"))
_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_docs)
DOCS, code_blocks, load_mkdocs_config, nav_pages = (
    _docs.DOCS,
    _docs.code_blocks,
    _docs.load_mkdocs_config,
    _docs.nav_pages,
)


def example_pages() -> list[str]:
    """The home page and the how-to pages, as paths relative to `docs/`."""
    howtos = [path for title, path in nav_pages(load_mkdocs_config()["nav"]) if title.startswith("How-to")]
    return ["index.md", *howtos]


def test_example_pages_are_found():
    pages = example_pages()
    assert pages[0] == "index.md"
    assert len(pages) >= 4, pages  # the home page and at least one how-to per package that has one
    for page in pages:
        assert (DOCS / page).is_file(), page


def test_code_blocks_parser_reads_fences_and_the_skip_marker():
    text = f"a\n\n```python\nx = 1\n```\n\n{_docs.SKIP_MARKER}\n```python\nraise SystemExit\n```\n"
    text += "```bash\nls\n```\n"
    blocks = code_blocks(text)
    assert [(b[0], b[1], b[2], b[3]) for b in blocks] == [
        ("python", 4, "x = 1\n", False),
        ("python", 9, "raise SystemExit\n", True),
        ("bash", 12, "ls\n", False),
    ]


@pytest.mark.parametrize("page", example_pages())
def test_python_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import matplotlib
    import torch

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    path = DOCS / page
    blocks = [b for b in code_blocks(path.read_text(encoding="utf-8")) if b[0] in ("python", "py")]
    runnable = [b for b in blocks if not b[3]]
    if not runnable:
        pytest.skip(f"{page} has no runnable Python example")
    # A real module, so that classes defined in an example (dataclasses, pickling) find it.
    module = types.ModuleType("docs_example_" + re.sub(r"\W", "_", page))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for _, line, code, _ in runnable:
        # Line numbers of errors point into the page: pad the code to the block's first line.
        compiled = compile("\n" * (line - 1) + code, str(path), "exec")
        exec(compiled, module.__dict__)
