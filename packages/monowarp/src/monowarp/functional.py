"""Functional warps: monotone scaling of images (eq. 13) and signals (eq. 8), and the pixel conventions.

For an element $l$ of the monotone scaling group,

* ``warp(x, l)`` is $S(x; l)(p) = x(l^{-1}(p))$ (eq. 13): the content at $q$ moves to $l(q)$;
* ``unwarp(x, l)`` is $S^{-1}(x; l)(p) = x(l(p))$, which needs no inverse.

Both sample the input once with `torch.nn.functional.grid_sample` at the dense map of $l^{-1}$ or
$l$ and are differentiable in ``x`` and in the tensors ``l`` was built from (knots or parameters). Pixel
column $c$ of $W$ sits at $x = c / (W - 1)$ with ``align_corners=True`` (the default) and at $(c + 1/2) / W$
with ``align_corners=False``; images and masks use the same convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ._utils import (
    MODES,
    PADDING_MODES,
    Mode,
    PaddingMode,
    check_choice,
    check_size,
    check_tensor,
    pixel_coordinates,
    pixels_to_unit,
    points_to_grid,
    unit_to_pixels,
)
from .maps import ScalingMap
from .monotone1d import Monotone1d

__all__ = [
    "pixel_grid",
    "pixels_to_points",
    "points_to_pixels",
    "sample_at",
    "unwarp",
    "unwarp1d",
    "warp",
    "warp1d",
]


def warp(
    x: torch.Tensor,
    g: ScalingMap,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    """Monotone scaling $S(x; g)(p) = x(g^{-1}(p))$ of images or features (eq. 13).

    Args:
        x: `(B, C, H, W)` tensor, any ``C``, ``H != W`` allowed. Integer or bool tensors (label masks) need
            ``mode="nearest"`` and keep their dtype.
        g: a `monowarp.ScalingMap` with batch size ``B`` (or 1, broadcast), on the device of ``x``.
        mode: ``"bilinear"``, ``"nearest"`` (label masks) or ``"bicubic"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"`` (only matters at the image border, since
            $g$ maps $[0, 1]^2$ onto itself).
        align_corners: pixel convention, see the module docstring.

    Returns:
        `(B, C, H, W)` warped tensor, differentiable in ``x`` and in the tensors of ``g``.

    Raises:
        TypeError: ``x`` or ``g`` of the wrong type, or an integer ``x`` with a mode other than nearest.
        ValueError: wrong shapes, batch sizes or devices, or an unknown mode.

    Examples:
        >>> from monowarp import MonotoneScale
        >>> x = torch.rand(2, 3, 16, 24)
        >>> warp(x, MonotoneScale.identity(2)).sub(x).abs().max() < 1e-5
        tensor(True)
    """
    return sample_at(
        x,
        _dense(g, x, align_corners, inverse=True),
        mode=mode,
        padding_mode=padding_mode,
        align_corners=align_corners,
    )


def unwarp(
    x: torch.Tensor,
    g: ScalingMap,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    """Inverse monotone scaling $S^{-1}(x; g)(p) = x(g(p))$, so that ``unwarp(warp(x, g), g) ~ x``.

    Arguments, return value and errors as in `warp`.

    Examples:
        >>> from monowarp import sample_monotone_scale
        >>> g = sample_monotone_scale(2, generator=torch.Generator().manual_seed(0))
        >>> unwarp(torch.rand(2, 1, 8, 8), g).shape
        torch.Size([2, 1, 8, 8])
    """
    return sample_at(
        x,
        _dense(g, x, align_corners, inverse=False),
        mode=mode,
        padding_mode=padding_mode,
        align_corners=align_corners,
    )


def sample_at(
    x: torch.Tensor,
    points: torch.Tensor,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    """Sample images at normalised points: ``out[b, :, h, w] = x[b](points[b, h, w])``.

    Args:
        x: `(B, C, H, W)` input (integer/bool only with ``mode="nearest"``).
        points: `(B, H_out, W_out, 2)` points $(x, y)$ in $[0, 1]^2$ (see the module docstring for the pixel
            convention), the floating point dtype of the computation.
        mode: `"bilinear"` or `"nearest"`, as in `warp`.
        padding_mode: `"border"`, `"zeros"` or `"reflection"`, as in `warp`.
        align_corners: the pixel convention, as in `warp`.

    Returns:
        `(B, C, H_out, W_out)`.
    """
    check_tensor(x, "x", [("B", "C", "H", "W")], kind="any", finite=False, nonempty=False)
    check_tensor(points, "points", [(x.shape[0], "H_out", "W_out", 2)], finite=False, nonempty=False)
    check_choice(mode, "mode", MODES)
    check_choice(padding_mode, "padding_mode", PADDING_MODES)
    grid = points_to_grid(points)
    if x.is_floating_point():
        return F.grid_sample(
            x, grid.to(x.dtype), mode=mode, padding_mode=padding_mode, align_corners=align_corners
        )
    if mode != "nearest":
        raise TypeError(f"x of dtype {x.dtype} (a label mask) needs mode='nearest', got mode={mode!r}")
    out = F.grid_sample(
        x.to(grid.dtype), grid, mode="nearest", padding_mode=padding_mode, align_corners=align_corners
    )
    return out.round().to(x.dtype)


def warp1d(
    x: torch.Tensor,
    f: Monotone1d,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    """1-D monotone scaling $S(x; f)(t) = x(f^{-1}(t))$ (eq. 8) of signals `(B, C, L)`.

    Examples:
        >>> from monowarp import Monotone1d
        >>> f = Monotone1d.from_knots(torch.tensor([[0.0, 0.25, 1.0]]))
        >>> x = torch.linspace(0, 1, 5).reshape(1, 1, 5)
        >>> warp1d(x, f)  # content at 0.5 moves to f(0.5) = 0.25
        tensor([[[0.0000, 0.5000, 0.6667, 0.8333, 1.0000]]])
    """
    return _sample1d(x, f, inverse=True, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def unwarp1d(
    x: torch.Tensor,
    f: Monotone1d,
    *,
    mode: Mode = "bilinear",
    padding_mode: PaddingMode = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    """Inverse 1-D monotone scaling $S^{-1}(x; f)(t) = x(f(t))$ of signals `(B, C, L)`."""
    return _sample1d(x, f, inverse=False, mode=mode, padding_mode=padding_mode, align_corners=align_corners)


def pixel_grid(
    size: Sequence[int],
    *,
    align_corners: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Normalised positions of the pixels of an image of ``size`` $(H, W)$, `(H, W, 2)` of $(x, y)$.

    Examples:
        >>> pixel_grid((2, 3))[..., 0]
        tensor([[0.0000, 0.5000, 1.0000],
                [0.0000, 0.5000, 1.0000]])
    """
    h, w = check_size(size)
    xs = pixel_coordinates(w, align_corners=align_corners, device=device, dtype=dtype)
    ys = pixel_coordinates(h, align_corners=align_corners, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)


def pixels_to_points(
    pixels: torch.Tensor, size: Sequence[int], *, align_corners: bool = True
) -> torch.Tensor:
    """Pixel coordinates `(..., 2)` (column, row; e.g. keypoints) of an image of ``size`` $(H, W)$ to
    points in $[0, 1]^2$ under the ``align_corners`` convention."""
    h, w = check_size(size)
    check_tensor(pixels, "pixels", None, finite=False, nonempty=False)
    if pixels.shape[-1] != 2:
        raise ValueError(f"pixels must have shape (..., 2), got {tuple(pixels.shape)}")
    return torch.stack(
        [pixels_to_unit(pixels[..., 0], w, align_corners), pixels_to_unit(pixels[..., 1], h, align_corners)],
        -1,
    )


def points_to_pixels(
    points: torch.Tensor, size: Sequence[int], *, align_corners: bool = True
) -> torch.Tensor:
    """Inverse of `pixels_to_points`: points `(..., 2)` in $[0, 1]^2$ to pixel (column, row)."""
    h, w = check_size(size)
    check_tensor(points, "points", None, finite=False, nonempty=False)
    if points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {tuple(points.shape)}")
    return torch.stack(
        [unit_to_pixels(points[..., 0], w, align_corners), unit_to_pixels(points[..., 1], h, align_corners)],
        -1,
    )


# ------------------------------------------------------------------------------------------------- private
def _dense(g: ScalingMap, x: torch.Tensor, align_corners: bool, *, inverse: bool) -> torch.Tensor:
    check_tensor(x, "x", [("B", "C", "H", "W")], kind="any", finite=False, nonempty=False)
    if not isinstance(g, ScalingMap):
        raise TypeError(f"g must be a ScalingMap (e.g. a MonotoneScale), got {type(g).__name__}")
    b, _, h, w = x.shape
    if g.batch_size not in (b, 1):
        raise ValueError(
            f"g must have batch size {b} (that of x, shape (B, C, H, W)) or 1, got {g.batch_size}"
        )
    if g.device != x.device:
        raise ValueError(f"g and x must be on the same device, got {g.device} and {x.device}")
    pts = g.dense_inverse_map((h, w), align_corners) if inverse else g.dense_map((h, w), align_corners)
    return pts.expand(b, h, w, 2) if g.batch_size != b else pts


def _sample1d(
    x: torch.Tensor,
    f: Monotone1d,
    *,
    inverse: bool,
    mode: Mode,
    padding_mode: PaddingMode,
    align_corners: bool,
) -> torch.Tensor:
    check_tensor(x, "x", [("B", "C", "L")], kind="any", finite=False, nonempty=False)
    if not isinstance(f, Monotone1d):
        raise TypeError(f"f must be a Monotone1d, got {type(f).__name__}")
    b, _, length = x.shape
    if f.batch_size != b:
        raise ValueError(f"f must have batch size {b} (that of x, shape (B, C, L)), got {f.batch_size}")
    t = pixel_coordinates(length, align_corners=align_corners, device=f.device, dtype=f.dtype).expand(
        b, length
    )
    s = f.inverse_map(t) if inverse else f.forward_map(t)
    # A signal is an image of height 1; its row sits at y = 1/2 under both conventions (grid coordinate 0).
    pts = torch.stack([s, torch.full_like(s, 0.5)], dim=-1)[:, None]
    out = sample_at(x[:, :, None], pts, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
    return out[:, :, 0]
