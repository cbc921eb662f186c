r"""Feature layouts of timm backbones, and group actions applied through them.

A canonicalizer's group acts on image-like tensors `(B, C, H, W)`: $S(F; \Phi)$ (`group.act`) and
$S^{-1}(F; \Phi)$ (`group.act_inverse`), in normalised coordinates, so one element acts on a feature map of
any resolution. Inside a timm backbone a feature comes in one of three layouts:

- `"nchw"`: a convolutional feature `(B, C, H, W)` (ResNet, EfficientNet, ConvNeXt stages);
- `"nhwc"`: a channels-last feature `(B, H, W, C)` (Swin stages);
- `"tokens"`: a token sequence `(B, P + H*W, C)`: P prefix tokens (class, distillation, register tokens)
  followed by the patch tokens of an `H x W` grid in row-major order (ViT, DeiT, BEiT, DINOv2).

`to_nchw` turns any of them into `(B, C, H, W)` (splitting off the prefix tokens) and `from_nchw` undoes it
exactly, so `unwarp_feature` ($S^{-1}$, eq. 22) and `warp_feature` ($S$, eq. 21) act on the spatial part
only; prefix tokens are never warped. `ModelLayout.from_model` reads what a model says about its features
(`num_prefix_tokens`, `patch_embed`, `output_fmt`), and `ModelLayout.detect` combines it with a tensor and
the input image size: the patch grid follows the image (dynamic and non-square sizes included).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import nn

from ._utils import check_choice, check_tensor

__all__ = [
    "INVERSES",
    "LAYOUTS",
    "GroupAction",
    "Layout",
    "ModelLayout",
    "from_nchw",
    "to_nchw",
    "unwarp_feature",
    "warp_feature",
]

LAYOUTS: tuple[str, ...] = ("nchw", "nhwc", "tokens")
"""The feature layouts latentcanon understands."""

# nchw, nhwc (any 4-D tensor matches the first; the second names the form in messages) and tokens
_SHAPES = [("B", "C", "H", "W"), ("B", "H", "W", "C"), ("B", "P + H*W", "C")]


class GroupAction(Protocol):
    """What latentcanon needs of a group: its action on `(B, C, H, W)` tensors, given parameters."""

    def act(self, x: torch.Tensor, params: Any) -> torch.Tensor:
        """$S(x; \\Phi)$."""
        ...

    def act_inverse(self, x: torch.Tensor, params: Any) -> torch.Tensor:
        """$S^{-1}(x; \\Phi)$."""
        ...


@dataclass(frozen=True)
class Layout:
    """The layout of one feature tensor.

    Args:
        kind: `"nchw"`, `"nhwc"` or `"tokens"`.
        num_prefix_tokens: P, the number of leading tokens that are not on the patch grid (tokens only).
        grid_size: `(H, W)` of the patch grid (tokens only), as timm's `patch_embed.grid_size`.

    Examples:
        >>> layout = Layout("tokens", num_prefix_tokens=1, grid_size=(2, 3))
        >>> fmap, prefix = to_nchw(torch.zeros(4, 7, 16), layout)
        >>> tuple(fmap.shape), tuple(prefix.shape)
        ((4, 16, 2, 3), (4, 1, 16))
    """

    kind: Literal["nchw", "nhwc", "tokens"]
    num_prefix_tokens: int = 0
    grid_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        check_choice(self.kind, "kind", LAYOUTS)
        if self.kind == "tokens":
            if self.grid_size is None or len(self.grid_size) != 2 or min(self.grid_size) < 1:
                raise ValueError(
                    f"a tokens layout needs grid_size=(H, W) with H, W >= 1, got {self.grid_size!r}"
                )
            if self.num_prefix_tokens < 0:
                raise ValueError(f"num_prefix_tokens must be >= 0, got {self.num_prefix_tokens}")
        elif self.num_prefix_tokens or self.grid_size is not None:
            raise ValueError(
                f"num_prefix_tokens and grid_size apply to the tokens layout only, not {self.kind!r}"
            )


@dataclass(frozen=True)
class ModelLayout:
    """How a backbone lays out its features, read from the model (never from a table of model names).

    Args:
        num_prefix_tokens: P, the number of prefix tokens of token features (`model.num_prefix_tokens`).
        channels_last: whether 4-D features are `(B, H, W, C)` (a model with `output_fmt == "NHWC"`, e.g.
            Swin) rather than `(B, C, H, W)`.
        feat_size: maps the input image size `(H, W)` to the patch grid `(H, W)` of token features
            (`model.patch_embed.dynamic_feat_size`); None: the grid must be square.
    """

    num_prefix_tokens: int = 0
    channels_last: bool = False
    feat_size: Callable[[tuple[int, int]], tuple[int, int]] | None = None

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelLayout:
        """Read the layout conventions of a timm model.

        Examples:
            >>> import timm
            >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, reg_tokens=4)
            >>> ModelLayout.from_model(vit).detect(torch.zeros(1, 9, 192), (32, 32))
            Layout(kind='tokens', num_prefix_tokens=5, grid_size=(2, 2))
        """
        num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0) or 0)
        fmt = getattr(model, "output_fmt", "NCHW")
        channels_last = str(getattr(fmt, "value", fmt)).upper() == "NHWC"
        patch_embed = getattr(model, "patch_embed", None)
        feat_size = None
        if callable(getattr(patch_embed, "dynamic_feat_size", None)):
            feat_size = patch_embed.dynamic_feat_size
        elif getattr(patch_embed, "grid_size", None) is not None:
            feat_size = functools.partial(_fixed_grid_size, tuple(int(g) for g in patch_embed.grid_size))
        return cls(num_prefix_tokens=num_prefix_tokens, channels_last=channels_last, feat_size=feat_size)

    def detect(self, x: torch.Tensor, image_size: tuple[int, int]) -> Layout:
        """The layout of feature `x` of this model for an input image of size `image_size`.

        Args:
            x: a feature, `(B, C, H, W)`, `(B, H, W, C)` (channels-last models) or `(B, P + H*W, C)`.
            image_size: `(H, W)` of the image that entered the backbone.

        Raises:
            ValueError: `x` has another rank, or its tokens do not fill the patch grid.
        """
        x = check_tensor(x, "feature", _SHAPES, finite=False, nonempty=False)
        if x.ndim == 4:
            return Layout("nhwc" if self.channels_last else "nchw")
        num_tokens = x.shape[1]
        num_patches = num_tokens - self.num_prefix_tokens
        if self.feat_size is not None:
            grid_size = tuple(int(g) for g in self.feat_size(tuple(image_size)))
            if grid_size[0] * grid_size[1] != num_patches:
                raise ValueError(
                    f"a token feature of shape {tuple(x.shape)} has {num_tokens} tokens, but "
                    f"{self.num_prefix_tokens} prefix tokens + a {grid_size[0]}x{grid_size[1]} patch grid "
                    f"(image {tuple(image_size)}) make {self.num_prefix_tokens + grid_size[0] * grid_size[1]}"
                )
        else:
            side = math.isqrt(max(num_patches, 0))
            if num_patches < 1 or side * side != num_patches:
                raise ValueError(
                    f"a token feature of shape {tuple(x.shape)} minus {self.num_prefix_tokens} prefix tokens "
                    "is not a square patch grid, and the model has no patch_embed to give the grid size"
                )
            grid_size = (side, side)
        return Layout(
            "tokens", num_prefix_tokens=self.num_prefix_tokens, grid_size=(grid_size[0], grid_size[1])
        )


def to_nchw(x: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn a feature into a feature map `(B, C, H, W)`, splitting off the prefix tokens.

    Args:
        x: a feature in `layout`.
        layout: its layout.

    Returns:
        The feature map `(B, C, H, W)` and the prefix tokens `(B, P, C)` (None unless `layout` is tokens).

    Examples:
        >>> fmap, prefix = to_nchw(torch.zeros(2, 5, 6, 8), Layout("nhwc"))
        >>> tuple(fmap.shape), prefix
        ((2, 8, 5, 6), None)
    """
    if layout.kind == "nchw":
        return x, None
    if layout.kind == "nhwc":
        return x.permute(0, 3, 1, 2), None
    num_prefix, (height, width) = layout.num_prefix_tokens, layout.grid_size
    patches = x[:, num_prefix:]
    fmap = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)
    return fmap, x[:, :num_prefix]


def from_nchw(fmap: torch.Tensor, layout: Layout, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of `to_nchw`: put a feature map `(B, C, H, W)` back into `layout` (contiguous).

    Args:
        fmap: `(B, C, H, W)`.
        layout: the target layout.
        prefix: the prefix tokens `(B, P, C)` that `to_nchw` split off (tokens layout with P > 0).

    Examples:
        >>> layout = Layout("tokens", num_prefix_tokens=2, grid_size=(3, 2))
        >>> x = torch.randn(1, 8, 4)
        >>> fmap, prefix = to_nchw(x, layout)
        >>> torch.equal(from_nchw(fmap, layout, prefix), x)
        True
    """
    if layout.kind == "nchw":
        return fmap
    if layout.kind == "nhwc":
        return fmap.permute(0, 2, 3, 1).contiguous()
    tokens = fmap.flatten(2).transpose(1, 2)
    if layout.num_prefix_tokens:
        if prefix is None:
            raise ValueError(f"prefix must hold the {layout.num_prefix_tokens} prefix tokens, got None")
        return torch.cat([prefix, tokens], dim=1)
    return tokens.contiguous()


def unwarp_feature(x: torch.Tensor, group: GroupAction, params: Any, layout: Layout) -> torch.Tensor:
    """$S^{-1}(x; \\Phi)$ on the spatial part of a feature in any layout (eq. 22); prefix tokens unchanged.

    Args:
        x: a feature in `layout`.
        group: the group (`act_inverse` on `(B, C, H, W)`).
        params: the group parameters $\\Phi$, `(B, *group.param_shape)`.
        layout: the layout of `x`.
    """
    fmap, prefix = to_nchw(x, layout)
    return from_nchw(group.act_inverse(fmap, params), layout, prefix)


INVERSES: tuple[str, ...] = ("exact", "approximate")
"""How $S$ gets $l^{-1}$: monowarp's exact inverse, or the paper's per-row/per-column approximation."""


def warp_feature(
    x: torch.Tensor, group: GroupAction, params: Any, layout: Layout, *, inverse: str = "exact"
) -> torch.Tensor:
    """$S(x; \\Phi)$ on the spatial part of a feature in any layout (eq. 21); prefix tokens unchanged.

    Args:
        x: a feature in `layout`.
        group: the group (`act` on `(B, C, H, W)`).
        params: the group parameters $\\Phi$, `(B, *group.param_shape)`.
        layout: the layout of `x`.
        inverse: `"exact"` (`group.act`) or `"approximate"`: $S$ with the paper's per-row/per-column inverse
            (`monowarp.approximate_warp`, appendix A2.2), for comparison; needs a group with
            `element(params)` returning a `monowarp.ScalingMap` (e.g. `deqcanon.MonotoneScaleGroup`).
    """
    check_choice(inverse, "inverse", INVERSES)
    fmap, prefix = to_nchw(x, layout)
    if inverse == "exact":
        return from_nchw(group.act(fmap, params), layout, prefix)
    element = getattr(group, "element", None)
    if not callable(element):
        raise TypeError(
            f"inverse='approximate' needs a group with element(params), got {type(group).__name__}"
        )
    import monowarp

    kwargs = {k: getattr(group, k) for k in ("mode", "padding_mode", "align_corners") if hasattr(group, k)}
    return from_nchw(monowarp.approximate_warp(fmap, element(params), **kwargs), layout, prefix)


def _fixed_grid_size(grid_size: tuple[int, int], image_size: tuple[int, int]) -> tuple[int, int]:
    return grid_size[0], grid_size[1]
