"""What the lse-mnist reference page shows (tests/test_cli_reference.py checks that every page is current)."""

from __future__ import annotations


def test_reference_shows_the_demo_presets_and_required_arguments():
    from lse_mnist.cli import APP

    text = APP.reference()
    # the demo's presets are the defaults its table shows
    demo = text[text.index("## `lse-mnist demo`") :]
    assert "| `--data.canvas` | `PositiveInt` | `96` |" in demo
    assert "| `--runs` | required |" in text
