r"""The paper's approximate inverse of a monotone scaling (appendix A2.2), kept for comparison only.

The paper inverts $l$ "by computing the inverses of each $l_{x_i}$ and $l_{y_j}$ individually": the dense
map $l$ at the pixels is inverted one pixel row and one pixel column at a time,

$$\hat l^{-1}(x, y) = \big((l_X(\cdot, y))^{-1}(x),\ (l_Y(x, \cdot))^{-1}(y)\big).$$

This is exact for separable maps and off otherwise, because the row through the output point $y$ is not the
row the content came from: under the training distribution the round trip $l(\hat l^{-1}(p))$ is off by about
1 px on average and up to 18 px. monowarp's own inverse (`MonotoneScale.inverse_map`, used by `warp`)
is exact; `approximate_inverse_map` and `approximate_warp` exist to measure what exactness buys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._utils import check_size
from .functional import pixel_grid, sample_at
from .maps import ScalingMap

__all__ = ["approximate_inverse_map", "approximate_warp"]


def approximate_inverse_map(
    element: ScalingMap, size: Sequence[int], *, align_corners: bool = True
) -> torch.Tensor:
    r"""The paper's approximate $l^{-1}$ at every pixel (appendix A2.2; not exact, see the module docstring).

    Args:
        element: the scaling $l$, batch size B (e.g. a `monowarp.MonotoneScale`).
        size: `(H, W)` of the pixel grid.
        align_corners: pixel convention, as in `monowarp.warp`.

    Returns:
        `(B, H, W, 2)` points $(x, y)$ in $[0, 1]^2$, differentiable in the tensors of ``element``.

    Examples:
        >>> import torch, monowarp
        >>> g = monowarp.MonotoneScale.identity(1)
        >>> pts = approximate_inverse_map(g, (4, 5))
        >>> bool(torch.allclose(pts, monowarp.pixel_grid((4, 5))[None], atol=1e-6))
        True
    """
    if not isinstance(element, ScalingMap):
        raise TypeError(f"element must be a ScalingMap (e.g. a MonotoneScale), got {type(element).__name__}")
    h, w = check_size(size, "size")
    dense = element.dense_map((h, w), align_corners=align_corners)  # (B, H, W, 2)
    pix = pixel_grid((h, w), align_corners=align_corners, device=dense.device, dtype=dense.dtype)
    xs, ys = pix[0, :, 0], pix[:, 0, 1]  # (W,), (H,)
    b = dense.shape[0]
    # rows: x -> l_X(x, y_r) is increasing; invert it at the pixel x positions
    inv_x = _interp1d(dense[..., 0].contiguous(), xs.expand(b, h, w), xs.expand(b, h, w).contiguous())
    # columns: y -> l_Y(x_c, y) is increasing; invert it at the pixel y positions
    cols = dense[..., 1].transpose(1, 2).contiguous()  # (B, W, H)
    inv_y = _interp1d(cols, ys.expand(b, w, h), ys.expand(b, w, h).contiguous()).transpose(1, 2)
    return torch.stack([inv_x, inv_y], dim=-1).clamp(0, 1)


def approximate_warp(
    x: torch.Tensor,
    g: ScalingMap,
    *,
    mode: str = "bilinear",
    padding_mode: str = "border",
    align_corners: bool = True,
) -> torch.Tensor:
    r"""$\hat S(x; g)(p) = x(\hat l^{-1}(p))$: `monowarp.warp` with the paper's approximate inverse.

    Arguments and return value as in `monowarp.warp`; ``g`` has batch size B or 1.

    Examples:
        >>> import torch, monowarp
        >>> x = torch.rand(2, 3, 8, 8)
        >>> bool(torch.allclose(approximate_warp(x, monowarp.MonotoneScale.identity(2)), x, atol=1e-5))
        True
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a (B, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    b, _, h, w = x.shape
    pts = approximate_inverse_map(g, (h, w), align_corners=align_corners)
    if pts.shape[0] != b:
        if pts.shape[0] != 1:
            raise ValueError(f"g must have batch size {b} (that of x) or 1, got {pts.shape[0]}")
        pts = pts.expand(b, h, w, 2)
    return sample_at(x, pts, mode=mode, padding_mode=padding_mode, align_corners=align_corners)  # type: ignore[arg-type]


def _interp1d(xs: torch.Tensor, ys: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation through breakpoints ``(xs, ys)`` `(..., K)` at ``t`` `(..., P)`.

    ``xs`` is non-decreasing; outside ``[xs[0], xs[-1]]`` the end intervals are extended linearly.
    """
    k = xs.shape[-1]
    idx = (torch.searchsorted(xs.contiguous(), t.contiguous(), right=True) - 1).clamp_(0, k - 2)
    x0, x1 = torch.gather(xs, -1, idx), torch.gather(xs, -1, idx + 1)
    y0, y1 = torch.gather(ys, -1, idx), torch.gather(ys, -1, idx + 1)
    dx = x1 - x0
    pos = dx > 0
    w = torch.where(pos, (t - x0) / torch.where(pos, dx, torch.ones_like(dx)), torch.zeros_like(dx))
    return y0 + w * (y1 - y0)
