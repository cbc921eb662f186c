"""What the lse-imagenet reference page shows (tests/test_cli_reference.py checks each app's page)."""

from __future__ import annotations


def test_reference_shows_the_required_arguments():
    from lse_imagenet.cli import APP

    text = APP.reference()
    assert "## `lse-imagenet merge`" in text
    assert "| `--out_dir` | required |" in text
