"""Write the command-line reference pages of the apps (docs/cli/<prog>.md) from their options.

    python docs/scripts/make_cli_reference.py

A test compares each page with what this script writes, so the pages follow the options.
"""

from __future__ import annotations

from pathlib import Path

PAGES = {"lse-mnist": "lse_mnist.cli"}
"""Program name -> module whose ``APP`` is the app."""


def pages() -> dict[Path, str]:
    """Each page's path and text."""
    import importlib

    root = Path(__file__).resolve().parents[1] / "cli"
    return {
        root / f"{prog}.md": importlib.import_module(module).APP.reference() for prog, module in PAGES.items()
    }


if __name__ == "__main__":
    for path, text in pages().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
