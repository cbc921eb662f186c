r"""The segmentation model: a timm backbone, a DPT-style dense head, and the canonicalizers of each method.

Images enter as `(B, 3, H, W)` floats in ``[0, 1]``; `SegmentationModel` normalises them with the backbone's
mean and std, reads features of several blocks or stages through timm's ``forward_intermediates`` (`(B, C, h,
w)`), and `DenseHead` turns them into per-pixel logits `(B, K + 1, H, W)` (class 0 is the background):

- reassemble (DPT, Ranftl et al. 2021): each feature is projected to ``width`` channels (1x1 conv); features
  that all share one stride (ViT, DINOv2 tokens laid on the patch grid) are resampled to a pyramid of strides
  (x4, x2, x1, x0.5 of the patch stride for four features: transposed or strided convolutions);
  features that already form a pyramid (CNN and Swin stages) keep their strides, FPN-style;
- fuse: from the coarsest level down, residual conv units, upsampling to the next level and addition;
- predict: a 3x3 conv, a 1x1 conv to the classes, bilinear upsampling to the input size.

The methods (appendix A1; Sec. 5.1):

- ``aug`` and ``augl``: the plain model (they differ in their training objective);
- ``canon``: a `deqcanon.DiscreteCanonicalizer` at the input; the output is warped back by $S(\cdot; \Phi)$,
  so that the prediction lies on the input image;
- ``dec``: `deqcanon.DEQCanonicalizer` modules before the chosen layers (``canon.layers``) in the
  equivariant form of eq. 21 (`latentcanon.adapt` with ``mode="equivariant"``): every adapted block's output
  is warped back by $S$; a DEC at ``"input"`` canonicalizes the image and the logits are warped back by $S$
  (eq. 21 with the whole network as the layer).

$S$ needs $l^{-1}$: `SegmentationModel.inverse` chooses monowarp's exact inverse (``"exact"``) or the paper's
per-row/per-column approximation (``"approximate"``, `monowarp.approximate_warp`), for every adapted layer
and the output alike; the evaluation measures both on the same weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import latentcanon
import monowarp
from lse_common.canonicalizers import adapt_for_method, make_canonicalizer, method_layers
from lse_common.options import CanonOptions
from lse_common.training import load_init_weights

from .options import SegModel

__all__ = [
    "CANON_METHODS",
    "DenseHead",
    "SegmentationModel",
    "build_model",
    "create_backbone",
    "default_indices",
    "make_canonicalizer",
]

logger = logging.getLogger(__name__)

CANON_METHODS: tuple[str, ...] = ("canon", "dec")
"""Methods whose model holds canonicalizers."""


def default_indices(reductions: Sequence[int], count: int = 4) -> list[int]:
    """Which features the head reads: ``count`` evenly spaced blocks when all share one stride (ViT: blocks
    2, 5, 8, 11 of 12, as DPT), else the last ``count`` levels of the pyramid.

    Example:
        >>> default_indices([16] * 12), default_indices([2, 4, 8, 16, 32])
        ([2, 5, 8, 11], [1, 2, 3, 4])
    """
    n = len(reductions)
    if n == 0:
        raise ValueError("the backbone reports no features (feature_info is empty)")
    count = min(count, n)
    if len(set(reductions)) == 1:
        return sorted({round((i + 1) * n / count) - 1 for i in range(count)})
    return list(range(n - count, n))


class _ResidualUnit(nn.Module):
    """DPT's residual conv unit: x + conv(relu(conv(relu(x))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _Fusion(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.skip = _ResidualUnit(width)
        self.out = _ResidualUnit(width)
        self.project = nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor, coarser: torch.Tensor | None) -> torch.Tensor:
        y = self.skip(x)
        if coarser is not None:
            y = y + F.interpolate(coarser, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.project(self.out(y))


def _resample(width: int, factor: float) -> nn.Module:
    if factor == 1:
        return nn.Identity()
    if factor > 1:
        f = round(factor)
        return nn.ConvTranspose2d(width, width, kernel_size=f, stride=f)
    stride = round(1 / factor)
    return nn.Conv2d(width, width, 3, stride=stride, padding=1)


class DenseHead(nn.Module):
    """DPT-style dense prediction: reassemble, fuse, predict (see the module docstring).

    Args:
        in_channels: channels of each feature, shallow to deep.
        reductions: stride of each feature with respect to the image.
        num_classes: output channels (the object classes and the background).
        width: channels inside the head.

    Example:
        >>> head = DenseHead([8, 8], [16, 16], num_classes=5, width=16)
        >>> head([torch.rand(2, 8, 4, 6), torch.rand(2, 8, 4, 6)], (64, 96)).shape
        torch.Size([2, 5, 64, 96])
    """

    def __init__(
        self, in_channels: Sequence[int], reductions: Sequence[int], num_classes: int, width: int = 64
    ) -> None:
        super().__init__()
        if len(in_channels) != len(reductions) or not in_channels:
            raise ValueError(
                f"in_channels and reductions must be non-empty and of one length, got {list(in_channels)} "
                f"and {list(reductions)}"
            )
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and one class), got {num_classes}")
        k = len(in_channels)
        self.kind = "dpt" if len(set(reductions)) == 1 and k > 1 else "fpn"
        factors = [2.0 ** (k - 2 - i) for i in range(k)] if self.kind == "dpt" else [1.0] * k
        self.project = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.resample = nn.ModuleList(_resample(width, f) for f in factors)
        self.fuse = nn.ModuleList(_Fusion(width) for _ in range(k))
        self.predict = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, num_classes, 1),
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Features `(B, C_k, h_k, w_k)`, shallow to deep -> logits `(B, num_classes, *size)`."""
        if len(features) != len(self.project):
            raise ValueError(f"expected {len(self.project)} features, got {len(features)}")
        levels = [r(p(f)) for f, p, r in zip(features, self.project, self.resample, strict=True)]
        y = None
        for i in range(len(levels) - 1, -1, -1):
            y = self.fuse[i](levels[i], y)
        logits = self.predict(y)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """Normalise, read intermediate features, predict: `(B, 3, H, W)` in ``[0, 1]`` -> `(B, K + 1, H, W)`.

    Args:
        net: the timm backbone, or a `latentcanon.LatentCanonicalizedModel` around it.
        head: the `DenseHead`.
        indices: the blocks or stages the head reads (``forward_intermediates(indices=...)``).
        mean, std: per-channel normalisation.
        restore_input: warp the logits back by $S(\\cdot; \\Phi)$ of the input canonicalizer (canon, and dec
            with a DEC at ``"input"``).
    """

    def __init__(
        self,
        net: nn.Module,
        head: DenseHead,
        indices: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        restore_input: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.indices = [int(i) for i in indices]
        self.restore_input = bool(restore_input)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), False)
        self._inverse = "exact"

    @property
    def adapted(self) -> bool:
        return isinstance(self.net, latentcanon.LatentCanonicalizedModel)

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone if self.adapted else self.net

    @property
    def inverse(self) -> str:
        """``"exact"`` or ``"approximate"``: the inverse $S$ uses (adapted layers and the output)."""
        return self._inverse

    @inverse.setter
    def inverse(self, value: str) -> None:
        if value not in latentcanon.INVERSES:
            raise ValueError(f"inverse must be one of {latentcanon.INVERSES}, got {value!r}")
        self._inverse = value
        if self.adapted:
            self.net.inverse = value

    def forward(self, x: torch.Tensor, *, return_results: bool = False) -> Any:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, H, W) RGB images, got {tuple(x.shape)}")
        z = (x - self.mean) / self.std
        kwargs = {"indices": self.indices, "intermediates_only": True, "output_fmt": "NCHW"}
        if self.adapted:
            features, results = self.net.forward_intermediates(z, return_results=True, **kwargs)
        else:
            features, results = self.backbone.forward_intermediates(z, **kwargs), {}
        logits = self.head(features, tuple(x.shape[-2:]))
        if self.restore_input and latentcanon.INPUT in results:
            canon = self.net.canonicalizers[latentcanon.INPUT]
            logits = self._restore(logits, canon.group, results[latentcanon.INPUT].params)
        return (logits, results) if return_results else logits

    def _restore(self, logits: torch.Tensor, group: Any, params: torch.Tensor) -> torch.Tensor:
        if self._inverse == "exact":
            return group.act(logits, params)
        return monowarp.approximate_warp(logits, group.element(params))


def create_backbone(
    model: SegModel, size: tuple[int, int], *, load_weights: bool = True
) -> tuple[nn.Module, list[int], list[int], list[int], tuple[list[float], list[float]]]:
    """The timm backbone (no classifier) and what the head needs of it.

    Returns:
        ``(backbone, indices, channels, reductions, (mean, std))``.
    """
    kwargs: dict[str, Any] = {"num_classes": 0, "drop_path_rate": model.drop_path_rate}
    name = model.backbone.lower()
    if any(k in name for k in ("vit", "deit", "beit", "dinov2", "swin", "eva")):
        kwargs["img_size"] = tuple(size)
    if "swin" in name and model.window_size is not None:
        kwargs["window_size"] = model.window_size
    if model.patch_size is not None:
        kwargs["patch_size"] = model.patch_size
    if model.depth is not None:
        kwargs["depth" if "swin" not in name else "depths"] = model.depth
    backbone = latentcanon.create_model(
        model.backbone,
        pretrained=model.pretrained and load_weights and model.weights is None,
        weights=model.weights if load_weights else None,
        key_matching=model.key_matching,
        **kwargs,
    )
    info = list(backbone.feature_info)
    reductions_all = [int(d["reduction"]) for d in info]
    indices = list(model.indices) if model.indices else default_indices(reductions_all, model.num_features)
    bad = [i for i in indices if not -len(info) <= i < len(info)]
    if bad:
        raise ValueError(
            f"model.indices {bad} out of range for {model.backbone} ({len(info)} feature levels)"
        )
    indices = [i % len(info) for i in indices]
    cfg = backbone.pretrained_cfg or {}
    mean = [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))]
    std = [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))]
    return (
        backbone,
        indices,
        [int(info[i]["num_chs"]) for i in indices],
        [reductions_all[i] for i in indices],
        (mean, std),
    )


def build_model(
    model: SegModel,
    size: tuple[int, int],
    num_classes: int,
    method: str,
    canon: CanonOptions,
    *,
    init_from: str | None = None,
    for_training: bool = True,
) -> SegmentationModel:
    """The model of ``method`` for ``num_classes`` object classes plus the background (module docstring).

    With ``for_training``, pretrained weights are loaded and ``init_from`` (the ``aug`` run a fine-tuned
    method starts from) is loaded into the plain model before canonicalizers are added; otherwise the
    architecture only (weights come from a run's checkpoint).
    """
    fresh = for_training and init_from is None
    backbone, indices, channels, reductions, (mean, std) = create_backbone(model, size, load_weights=fresh)
    head = DenseHead(channels, reductions, num_classes + 1, width=model.head_width)
    seg = SegmentationModel(backbone, head, indices, mean, std)
    if for_training and init_from:
        load_init_weights(seg, init_from)
    if method in CANON_METHODS:
        mode = "equivariant" if method == "dec" else None
        adapted = adapt_for_method(backbone, method, canon, (3, *size), mode=mode)
        restore = "input" in method_layers(method, canon)
        seg = SegmentationModel(adapted, head, indices, mean, std, restore_input=restore)
    return seg
