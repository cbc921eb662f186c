"""``lse-imagenet demo`` (work in progress in this commit: options only)."""

from __future__ import annotations

from dataclasses import dataclass

from lse_common.options import CanonOptions, RuntimeOptions

__all__ = ["DEMO_GROUPS", "DemoOptions"]


@dataclass
class DemoOptions:
    """The demo's settings.

    Args:
        out_dir: folder of the demo's data, runs and results.
    """

    out_dir: str = "runs/imagenet-demo"


DEMO_GROUPS = {"demo": DemoOptions, "canon": CanonOptions, "runtime": RuntimeOptions}

DEMO_DEFAULTS: dict = {}
