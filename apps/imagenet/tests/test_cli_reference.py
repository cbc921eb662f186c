"""The command-line reference page of lse-imagenet is generated from the options and kept up to date."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "docs" / "scripts" / "make_cli_reference.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_page_matches_the_options_and_lists_every_option():
    from lse_imagenet.cli import APP

    script = _script()
    assert script.apps()["lse-imagenet"] == "lse_imagenet.cli"
    ((path, text),) = script.pages(["lse-imagenet"]).items()
    assert path.name == "lse-imagenet.md"
    assert path.is_file() and path.read_text() == text, "run python docs/scripts/make_cli_reference.py"
    for name, cmd in APP.commands.items():
        assert f"## `lse-imagenet {name}`" in text
        for group, cls in cmd.groups.items():
            for field in cls.__dataclass_fields__:
                assert f"`--{group}.{field}`" in text, (name, group, field)
    assert "| `--out_dir` | required |" in text
