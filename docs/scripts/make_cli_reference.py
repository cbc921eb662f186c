"""Write the command-line reference pages of the apps (docs/cli/<prog>.md) from their options.

    python docs/scripts/make_cli_reference.py

The apps with a page are listed in `PAGES` by program name; each app's command module is found from the
console script its ``pyproject.toml`` declares (``<prog> = "<module>:main"``), and the page is made from
that module's ``APP`` (an `lse_common.cli.App`). A new app gets its page by adding its program to `PAGES`
(and the page to the nav of mkdocs.yml). Tests compare each page with what this script writes, so the
pages follow the options.
"""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("lse-mnist", "lse-segmentation", "lse-imagenet")
"""The programs whose reference pages the docs have."""


def apps() -> dict[str, str]:
    """Program name -> module whose ``APP`` is the app, for each app of the repository whose module exists."""
    out = {}
    for project in sorted(ROOT.glob("apps/*/pyproject.toml")):
        scripts = tomllib.loads(project.read_text()).get("project", {}).get("scripts", {})
        for prog, target in scripts.items():
            module = target.split(":", 1)[0]
            if importlib.util.find_spec(module.split(".", 1)[0]) and importlib.util.find_spec(module):
                out[prog] = module
    return out


def pages(progs: Sequence[str] = PAGES) -> dict[Path, str]:
    """Each page's path and text, for the programs ``progs`` (default: `PAGES`).

    Raises:
        ValueError: if no app declares one of ``progs``.
    """
    root = ROOT / "docs" / "cli"
    found = apps()
    missing = sorted(set(progs) - set(found))
    if missing:
        raise ValueError(f"no app declares {missing}; apps: {sorted(found)}")
    return {root / f"{prog}.md": importlib.import_module(found[prog]).APP.reference() for prog in progs}


if __name__ == "__main__":
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
