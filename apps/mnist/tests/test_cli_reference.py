"""The command-line reference page is generated from the options and kept up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "docs" / "scripts" / "make_cli_reference.py"


def _pages():
    spec = importlib.util.spec_from_file_location("make_cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pages()


def test_reference_page_matches_the_options():
    pages = _pages()
    assert pages, "no reference pages"
    remedy = "run python docs/scripts/make_cli_reference.py"
    for path, text in pages.items():
        assert path.is_file(), f"{path} is missing: {remedy}"
        assert path.read_text() == text, f"{path} is out of date: {remedy}"


def test_reference_lists_every_option_of_every_subcommand():
    from lse_mnist.cli import APP

    text = APP.reference()
    for name, cmd in APP.commands.items():
        assert f"## `lse-mnist {name}`" in text
        for group, cls in cmd.groups.items():
            for field in cls.__dataclass_fields__:
                assert f"`--{group}.{field}`" in text, (name, group, field)
    # the demo's presets are the defaults its table shows
    demo = text[text.index("## `lse-mnist demo`") :]
    assert "| `--data.canvas` | `PositiveInt` | `96` |" in demo
    assert "| `--runs` | required |" in text
