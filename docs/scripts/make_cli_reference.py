"""Write the command-line reference pages of the apps (docs/cli/<prog>.md) from their options.

    python docs/scripts/make_cli_reference.py

Every app whose ``pyproject.toml`` declares a console script ``<prog> = "<module>:main"`` gets a page, made
from the ``APP`` of that module (an `lse_common.cli.App`); an app whose command module does not exist yet is
left out. Tests compare each page with what this script writes, so the pages follow the options.
"""

from __future__ import annotations

import importlib
import importlib.util
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def apps() -> dict[str, str]:
    """Program name -> module whose ``APP`` is the app, for every app of the repository."""
    out = {}
    for project in sorted(ROOT.glob("apps/*/pyproject.toml")):
        scripts = tomllib.loads(project.read_text()).get("project", {}).get("scripts", {})
        for prog, target in scripts.items():
            module = target.split(":", 1)[0]
            if importlib.util.find_spec(module.split(".", 1)[0]) and importlib.util.find_spec(module):
                out[prog] = module
    return out


def pages(progs: list[str] | None = None) -> dict[Path, str]:
    """Each page's path and text (all apps, or the programs named)."""
    root = ROOT / "docs" / "cli"
    found = apps()
    if progs is not None:
        missing = sorted(set(progs) - set(found))
        if missing:
            raise ValueError(f"no app declares {missing}; apps: {sorted(found)}")
        found = {p: m for p, m in found.items() if p in progs}
    return {
        root / f"{prog}.md": importlib.import_module(module).APP.reference() for prog, module in found.items()
    }


if __name__ == "__main__":
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
