"""Option groups of the segmentation app (model and evaluation; the data's group is above them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from jsonargparse.typing import PositiveInt

from lse_common.options import EvalOptions, check_range

# ---- the model, the methods and the evaluation ------------------------------------------------------------
Method = Literal["aug", "canon", "augl", "dec"]
METHODS: tuple[str, ...] = ("aug", "canon", "augl", "dec")
"""The methods of Table 1 (and canon, the discrete canonicalizer baseline)."""


@dataclass
class SegModel:
    """The segmentation model: a timm backbone, the features its DPT-style head reads, the head's width.

    Args:
        backbone: any timm model with ``forward_intermediates`` (ViT, Swin, DINOv2, EfficientNet, ResNet...).
        pretrained: start from pretrained weights (offline: tf_efficientnet_lite0, whose ImageNet weights ship
            in a package).
        weights: a local checkpoint file for the backbone.
        key_matching: name or order: how the keys of weights match the model's.
        drop_path_rate: stochastic depth, for backbones that have it.
        indices: blocks or stages the head reads (default: 4 evenly spaced blocks of a ViT, the last 4
            stages of a pyramid).
        num_features: how many features the head reads when indices is not given.
        head_width: channels inside the head.
        window_size: Swin's attention window (small images need a small one).
        depth: blocks of a ViT (or Swin's depths) built smaller than the named model (random init only).
        background_weight: cross-entropy weight of the background class (appendix A1: 0.1).
    """

    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    weights: str | None = None
    key_matching: Literal["name", "order"] = "name"
    drop_path_rate: float = 0.0
    indices: list[int] | None = None
    num_features: PositiveInt = 4
    head_width: PositiveInt = 64
    window_size: PositiveInt | None = None
    depth: int | list[int] | None = None
    background_weight: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.drop_path_rate < 1:
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not 0 < self.background_weight <= 1:
            raise ValueError(f"model.background_weight must be in (0, 1], got {self.background_weight}")


@dataclass
class SegEval(EvalOptions):
    """Evaluation of segmentation runs: mIoU, EquE under random monotone scalings, variant consistency.

    Args:
        equ_rescalings: random monotone scalings per test image for EquE (eq. 23).
        equ_scale_range: local scale factors of EquE's scalings.
        equ_grid: knot intervals of EquE's scalings.
        inverses: the inverses a DEC's S is evaluated with: exact, and approximate (the paper's per-row /
            per-column inverse, on the same weights).
        figure_examples: test images in the prediction figure.
        data_dir: read the data from this folder instead of the run's data.dir.
    """

    batch_size: PositiveInt = 16
    equ_rescalings: PositiveInt = 2
    equ_scale_range: tuple[float, float] = (0.5, 2.0)
    equ_grid: tuple[PositiveInt, PositiveInt] = (4, 4)
    inverses: list[Literal["exact", "approximate"]] = field(default_factory=lambda: ["exact", "approximate"])
    figure_examples: int = 4
    data_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("eval.equ_scale_range", self.equ_scale_range)
        if not self.inverses or self.inverses[0] != "exact":
            raise ValueError(f"eval.inverses must start with exact, got {self.inverses}")


def default_run_dir(out_dir: str | None, backbone: str, method: str, seed: int, root: str = "runs/seg") -> Path:
    """``out_dir``, or ``<root>/<backbone>/<method>-s<seed>``."""
    if out_dir:
        return Path(out_dir)
    return Path(root) / backbone / f"{method}-s{seed}"
