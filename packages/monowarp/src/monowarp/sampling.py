r"""Random monotone scalings: the distribution $\Omega$ with guaranteed local scale factors.

The authors' code draws logits uniformly and only implicitly bounds the local scale factors (see
REFERENCE-NOTES); here the range of the factors is the parameter. Every slope of every row and column function
(the local scale factors $\partial l_X / \partial x$ along the rows and $\partial l_Y / \partial y$ along the
columns, eqs. A27-A28) lies in ``scale_range``, and so do the diagonal entries of the Jacobian of the blended
map, which are convex combinations of those slopes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._utils import check_grid
from .maps import MonotoneScale

__all__ = ["sample_monotone_scale"]

_BISECTION_STEPS = 64
_BLEND_STEPS = (0.5, 0.75, 0.875, 0.9375, 1.0)


def sample_monotone_scale(
    batch: int,
    grid: Sequence[int] = (4, 4),
    scale_range: Sequence[float] = (0.5, 2.0),
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    max_tries: int = 16,
) -> MonotoneScale:
    r"""Draw a batch of invertible monotone scalings with every local scale factor in ``scale_range``.

    The distribution: with $[a, b]$ = ``scale_range`` and grid ``(N, M)``, each of the $M + 1$ row functions
    ($K = N$ intervals) and $N + 1$ column functions ($K = M$ intervals) is drawn independently:

    1. log-slopes $z_1, \dots, z_K$ i.i.d. uniform on $[\log a, \log b]$;
    2. slopes $s_k = \mathrm{clip}(e^{z_k + c}, a, b)$ with the shift $c$ that makes their mean exactly 1
       (found by bisection; the mean is non-decreasing in $c$, equal to $a \le 1$ and $b \ge 1$ at the ends,
       and the slopes it yields are unique);
    3. knots: the cumulative sums of $s_k / K$ from 0 (so the function ends at 1, its slope on interval $k$ is
       $s_k \in [a, b]$).

    The element is then conditioned on being invertible (`MonotoneScale.is_invertible`) by rejection:
    items that are not are redrawn as a whole, at most ``max_tries`` times. An item still not invertible
    after that (rare; only for wide ranges) is blended toward the identity, knots
    $(1 - t) k + t k_{\mathrm{id}}$ with the smallest $t \in \{1/2, 3/4, 7/8, 15/16, 1\}$ that is
    invertible; its slopes are convex combinations of slopes in $[a, b]$ and of 1, so they stay in range.

    Since the mean slope is 1, $a = 1$ or $b = 1$ forces every slope to 1: the identity.

    Args:
        batch: number of elements ``B``.
        grid: knot grid ``(N, M)``.
        scale_range: ``(a, b)`` with $0 < a \le 1 \le b$ (a mean slope of 1 is required by the fixed end
            points).
        generator: random generator; its device is where the numbers are drawn (results are deterministic
            for a seeded generator).
        device: device of the result (default: the generator's, else CPU).
        dtype: floating dtype of the result (default: ``torch.get_default_dtype()``).
        max_tries: number of rejection rounds before the blend fallback.

    Returns:
        A `MonotoneScale` of batch size ``B``.

    Raises:
        ValueError: ``scale_range`` not a pair with $0 < a \le 1 \le b$, bad ``grid`` or ``batch``.

    Examples:
        >>> g = sample_monotone_scale(3, grid=(4, 3), scale_range=(0.5, 2.0),
        ...                           generator=torch.Generator().manual_seed(0))
        >>> g.knots_x.shape, bool(g.is_invertible().all())
        (torch.Size([3, 4, 5]), True)
        >>> slopes = g.knots_x.diff(dim=-1) * 4
        >>> bool(slopes.min() >= 0.5 - 1e-5 and slopes.max() <= 2.0 + 1e-5)
        True
    """
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 0:
        raise ValueError(f"batch must be a non-negative int, got {batch!r}")
    n, m = check_grid(grid)
    lo, hi = _check_scale_range(scale_range)
    if not isinstance(max_tries, int) or max_tries < 0:
        raise ValueError(f"max_tries must be a non-negative int, got {max_tries!r}")
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    work = (
        generator.device if generator is not None else torch.device(device if device is not None else "cpu")
    )
    out_device = torch.device(device) if device is not None else work

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        zx = torch.rand(k, m + 1, n, generator=generator, device=work, dtype=torch.float64)
        zy = torch.rand(k, n + 1, m, generator=generator, device=work, dtype=torch.float64)
        return _knots(_slopes(zx, lo, hi)).to(dtype), _knots(_slopes(zy, lo, hi)).to(dtype)

    kx, ky = draw(batch)
    ok = MonotoneScale(kx, ky, validate=False).is_invertible()
    for _ in range(max_tries):
        bad = (~ok).nonzero().flatten()
        if bad.numel() == 0:
            break
        nx, ny = draw(bad.numel())
        kx[bad], ky[bad] = nx, ny
        ok[bad] = MonotoneScale(nx, ny, validate=False).is_invertible()
    bad = (~ok).nonzero().flatten()
    if bad.numel() > 0:
        ident = MonotoneScale.identity(bad.numel(), (n, m), device=work, dtype=dtype)
        bx, by = kx[bad], ky[bad]
        done = torch.zeros(bad.numel(), dtype=torch.bool, device=work)
        for t in _BLEND_STEPS:
            cx = (1 - t) * bx + t * ident.knots_x
            cy = (1 - t) * by + t * ident.knots_y
            take = MonotoneScale(cx, cy, validate=False).is_invertible() & ~done
            bx = torch.where(take[:, None, None], cx, bx)
            by = torch.where(take[:, None, None], cy, by)
            done |= take
        kx[bad], ky[bad] = bx, by
    return MonotoneScale(kx.to(out_device), ky.to(out_device), validate=False)


def _check_scale_range(scale_range: object) -> tuple[float, float]:
    try:
        lo, hi = (float(s) for s in scale_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"scale_range must be a pair (a, b) of floats, got {scale_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= 1 <= hi):
        raise ValueError(
            f"scale_range must satisfy 0 < a <= 1 <= b (the mean slope of a monotone map of [0, 1] is 1), "
            f"got {scale_range!r}"
        )
    return lo, hi


def _slopes(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Slopes in ``[lo, hi]`` with mean 1 along the last axis from uniform numbers ``u`` `(..., K)`."""
    llo, lhi = math.log(lo), math.log(hi)
    z = llo + (lhi - llo) * u
    a = torch.full((*u.shape[:-1], 1), llo - lhi, dtype=u.dtype, device=u.device)
    b = torch.full_like(a, lhi - llo)
    for _ in range(_BISECTION_STEPS):
        c = 0.5 * (a + b)
        below = torch.exp(z + c).clamp(lo, hi).mean(dim=-1, keepdim=True) < 1
        a = torch.where(below, c, a)
        b = torch.where(below, b, c)
    s = torch.exp(z + 0.5 * (a + b)).clamp(lo, hi)
    return (s / s.mean(dim=-1, keepdim=True)).clamp(lo, hi)


def _knots(slopes: torch.Tensor) -> torch.Tensor:
    """Knots `(..., K + 1)` from slopes `(..., K)` with mean 1: cumulative sums of ``slopes / K`` from 0."""
    k = slopes.shape[-1]
    inner = torch.cumsum(slopes[..., :-1] / k, dim=-1)
    return torch.cat([torch.zeros_like(slopes[..., :1]), inner, torch.ones_like(slopes[..., :1])], dim=-1)
