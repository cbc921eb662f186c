"""The command-line reference pages (docs/cli) are generated from the apps' options and kept up to date."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "make_cli_reference.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_cli_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT_MODULE = _script()


@pytest.mark.parametrize("prog", SCRIPT_MODULE.PAGES)
def test_page_matches_the_options_and_lists_every_option(prog: str):
    found = SCRIPT_MODULE.apps()
    assert prog in found, f"no app declares {prog}"
    app = importlib.import_module(found[prog]).APP
    ((path, text),) = SCRIPT_MODULE.pages([prog]).items()
    remedy = "run python docs/scripts/make_cli_reference.py"
    assert path.is_file(), f"{path} is missing: {remedy}"
    assert path.read_text() == text, f"{path} is out of date: {remedy}"
    assert app.commands, prog
    for name, cmd in app.commands.items():
        assert f"## `{prog} {name}`" in text
        for group, cls in cmd.groups.items():
            for field in cls.__dataclass_fields__:
                assert f"`--{group}.{field}`" in text, (name, group, field)


def test_every_app_has_a_page_in_the_nav():
    nav = (SCRIPT.parents[2] / "mkdocs.yml").read_text()
    for prog in SCRIPT_MODULE.apps():
        assert prog in SCRIPT_MODULE.PAGES, f"{prog} has no reference page: add it to PAGES"
        assert f"cli/{prog}.md" in nav, f"docs/cli/{prog}.md is not in the nav"


def test_unknown_program_is_refused():
    with pytest.raises(ValueError, match="no app declares"):
        SCRIPT_MODULE.pages(["lse-nothing"])
