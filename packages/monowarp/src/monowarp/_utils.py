"""Helpers shared by the modules of ``monowarp``: validation, the coordinate conventions, 1-D interpolation.

Everything that more than one module needs lives here, so that no private name is imported across modules.

Coordinate conventions (one place for the whole package):

* points are normalised to $[0, 1]$ per axis, x horizontal, y vertical;
* with ``align_corners=True`` pixel column $c$ of $W$ sits at $x = c / (W - 1)$; with ``align_corners=False``
  at $x = (c + 1/2) / W$ (rows alike);
* `points_to_grid` is the only conversion to the $[-1, 1]$ coordinates of
  `torch.nn.functional.grid_sample`; it is $2p - 1$ under both conventions, because ``grid_sample``
  places its pixels exactly as above for the matching ``align_corners``.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

from .validation import check_choice, check_tensor

__all__ = [
    "MIN_SHARE",
    "MODES",
    "PADDING_MODES",
    "Mode",
    "PaddingMode",
    "check_choice",
    "check_grid",
    "check_same_device_dtype",
    "check_scale_range",
    "check_size",
    "check_tensor",
    "hat_weights",
    "interp1d",
    "knots_from_logits",
    "logits_from_knots",
    "pixel_coordinates",
    "pixels_to_unit",
    "points_to_grid",
    "strictly_increasing",
    "unit_to_pixels",
]

#: Floor on the share of each interval in `knots_from_logits`: every increment is at least
#: ``MIN_SHARE / (1 + K * MIN_SHARE)``, so any finite logits give strictly increasing knots even where the
#: softmax underflows. Equal logits still give exactly uniform knots.
MIN_SHARE = 1e-6

Mode = Literal["bilinear", "nearest", "bicubic"]
"""Interpolation of a warp, as in `torch.nn.functional.grid_sample`."""
PaddingMode = Literal["zeros", "border", "reflection"]
"""Values outside the image, as in `torch.nn.functional.grid_sample`."""
MODES: tuple[str, ...] = get_args(Mode)
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)


def check_same_device_dtype(a: torch.Tensor, name_a: str, b: torch.Tensor, name_b: str) -> None:
    """Raise ``ValueError`` (device) or ``TypeError`` (dtype) when two tensors do not agree."""
    if a.device != b.device:
        raise ValueError(f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}")


def check_grid(grid: object, name: str = "grid") -> tuple[int, int]:
    """Validate knot intervals ``(N, M)`` with ``N, M >= 1`` and return them as a tuple of ints."""
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in grid)
    ):
        raise ValueError(f"{name} must be a pair of positive ints (N, M), got {grid!r}")
    return int(grid[0]), int(grid[1])


def check_scale_range(scale_range: object, name: str = "scale_range") -> tuple[float, float]:
    """Validate a range ``(low, high)`` of local scale factors, ``0 < low <= 1 <= high``, as floats.

    The mean slope of a monotone map of $[0, 1]$ onto itself is 1, so its slopes cannot all lie above or
    all below 1.
    """
    try:
        low, high = (float(s) for s in scale_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (low, high) of numbers with 0 < low <= 1 <= high, got {scale_range!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and 0.0 < low <= 1.0 <= high):
        raise ValueError(
            f"{name} must be a pair (low, high) with 0 < low <= 1 <= high (a monotone map of [0, 1] onto "
            f"itself has mean slope 1), got {scale_range!r}"
        )
    return low, high


def check_size(size: object, name: str = "size") -> tuple[int, int]:
    """Validate an image size ``(H, W)`` with ``H, W >= 1`` and return it as a tuple of ints."""
    if (
        not isinstance(size, (tuple, list, torch.Size))
        or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in size)
    ):
        raise ValueError(f"{name} must be a pair of positive ints (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def strictly_increasing(x: torch.Tensor) -> torch.Tensor:
    """`(..., K)` -> `(...)` bool: whether each row is strictly increasing."""
    return (x[..., 1:] > x[..., :-1]).all(dim=-1)


def pixel_coordinates(
    n: int,
    *,
    align_corners: bool = True,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Normalised positions in $[0, 1]$ of ``n`` pixel centres along one axis, `(n,)`.

    ``align_corners=True``: $c / (n - 1)$ (a single pixel sits at 0); ``False``: $(c + 1/2) / n$.
    """
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    return pixels_to_unit(torch.arange(n, device=device, dtype=dtype), n, align_corners)


def points_to_grid(points: torch.Tensor) -> torch.Tensor:
    """Normalised points in $[0, 1]$ to ``grid_sample`` coordinates in $[-1, 1]$ (either convention)."""
    return points * 2 - 1


def hat_weights(t: torch.Tensor, n: int) -> torch.Tensor:
    """Linear interpolation weights `(L, n + 1)` of positions ``t`` `(L,)` on ``n + 1`` uniform knots.

    Row ``k`` holds the two non-zero weights of ``t[k]`` on its knot interval (the boundary interval's linear
    extension outside $[0, 1]$).
    """
    idx = torch.clamp(torch.floor(t * n), 0, n - 1).long()
    w = t * n - idx.to(t.dtype)
    out = torch.zeros(t.shape[0], n + 1, device=t.device, dtype=t.dtype)
    out.scatter_(1, idx[:, None], (1 - w)[:, None])
    out.scatter_add_(1, idx[:, None] + 1, w[:, None])
    return out


def interp1d(xs: torch.Tensor, ys: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Batched piecewise-linear interpolation through breakpoints ``(xs, ys)``.

    Args:
        xs: `(..., K)` non-decreasing breakpoints (zero-width intervals allowed), ``K >= 2``.
        ys: `(..., K)` values at the breakpoints.
        t: `(..., P)` query positions; outside ``[xs[0], xs[-1]]`` the end intervals are extended linearly.

    Returns:
        `(..., P)` interpolated values; differentiable in ``ys`` and ``t`` (and ``xs``).
    """
    k = xs.shape[-1]
    idx = torch.searchsorted(xs.detach().contiguous(), t.detach().contiguous(), right=True) - 1
    idx = idx.clamp_(0, k - 2)
    x0 = torch.gather(xs, -1, idx)
    x1 = torch.gather(xs, -1, idx + 1)
    y0 = torch.gather(ys, -1, idx)
    y1 = torch.gather(ys, -1, idx + 1)
    dx = x1 - x0
    pos = dx > 0
    w = torch.where(pos, (t - x0) / torch.where(pos, dx, torch.ones_like(dx)), torch.zeros_like(dx))
    return y0 + w * (y1 - y0)


def knots_from_logits(logits: torch.Tensor) -> torch.Tensor:
    r"""Strictly increasing knots from unconstrained logits, `(..., K)` -> `(..., K + 1)`.

    The shares are $s = (\mathrm{softmax}(z) + \delta) / (1 + K \delta)$ with $\delta$ = `MIN_SHARE`
    (a floor that keeps every increment positive even when the softmax underflows), the knots are the
    cumulative sum of the shares with a leading 0; the last knot is set to exactly 1. Equal logits give
    uniform knots $k / K$.
    """
    k = logits.shape[-1]
    shares = (torch.softmax(logits, dim=-1) + MIN_SHARE) / (1 + k * MIN_SHARE)
    inner = torch.cumsum(shares[..., :-1], dim=-1)
    zero = torch.zeros_like(logits[..., :1])
    one = torch.ones_like(logits[..., :1])
    return torch.cat([zero, inner, one], dim=-1)


def logits_from_knots(knots: torch.Tensor) -> torch.Tensor:
    """Zero-mean logits `(..., K)` with ``knots_from_logits(logits) == knots`` `(..., K + 1)`, up to rounding.

    Increments smaller than the floor `MIN_SHARE` allows are clamped to it.
    """
    k = knots.shape[-1] - 1
    inc = knots[..., 1:] - knots[..., :-1]
    inc = inc / inc.sum(dim=-1, keepdim=True)
    probs = (inc * (1 + k * MIN_SHARE) - MIN_SHARE).clamp_min(torch.finfo(knots.dtype).tiny)
    logits = torch.log(probs)
    return logits - logits.mean(dim=-1, keepdim=True)


def pixels_to_unit(c: torch.Tensor, n: int, align_corners: bool) -> torch.Tensor:
    """Pixel positions ``c`` (0-based, along an axis of ``n`` pixels) to normalised positions in $[0, 1]$."""
    if align_corners:
        return c / (n - 1) if n > 1 else c * 0
    return (c + 0.5) / n


def unit_to_pixels(t: torch.Tensor, n: int, align_corners: bool) -> torch.Tensor:
    """Inverse of `pixels_to_unit`."""
    if align_corners:
        return t * (n - 1)
    return t * n - 0.5
