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

from ._utils import check_grid, check_scale_range
from .maps import MonotoneScale

__all__ = ["sample_monotone_scale"]

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
       (in closed form: the mean is continuous, piecewise exponential and non-decreasing in $c$, equal to
       $a \le 1$ and $b \ge 1$ at the ends, and the slopes it yields are unique);
    3. knots: the cumulative sums of $s_k / K$ from 0 (so the function ends at 1, its slope on interval $k$ is
       $s_k \in [a, b]$).

    The element is then conditioned on being invertible (`MonotoneScale.is_invertible`) by rejection:
    ``max_tries + 1`` candidates are drawn per item and the first invertible one is kept (the law of
    redrawing a rejected item up to ``max_tries`` times; all rounds and items are drawn in one vectorised
    pass, without Python-level iteration). An item with no invertible candidate (rare; only for wide ranges)
    is blended toward the identity, knots
    $(1 - t) k + t k_{\mathrm{id}}$ with the smallest $t \in \{1/2, 3/4, 7/8, 15/16, 1\}$ that is
    invertible; its slopes are convex combinations of slopes in $[a, b]$ and of 1, so they stay in range.

    Since the mean slope is 1, $a = 1$ or $b = 1$ forces every slope to 1: the identity.

    The elements are invertible, but a few (about 4-11%) miss the margin that `MonotoneScale.from_params`
    enforces; ``MonotoneScale.from_params(g.to_params())`` returns those slightly shrunk toward their mean
    functions (knots moved by at most about 0.02), with their slopes still in ``scale_range``.

    Args:
        batch: number of elements ``B``.
        grid: knot intervals ``(N, M)`` along x and y.
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
    lo, hi = check_scale_range(scale_range)
    if not isinstance(max_tries, int) or max_tries < 0:
        raise ValueError(f"max_tries must be a non-negative int, got {max_tries!r}")
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
    work = (
        generator.device if generator is not None else torch.device(device if device is not None else "cpu")
    )
    out_device = torch.device(device) if device is not None else work

    # All rejection rounds at once: ``max_tries + 1`` candidates per item, the first invertible one is kept
    # (the same law as redrawing the rejected items round by round).
    tries = max_tries + 1
    zx = torch.rand(tries, batch, m + 1, n, generator=generator, device=work, dtype=torch.float64)
    zy = torch.rand(tries, batch, n + 1, m, generator=generator, device=work, dtype=torch.float64)
    kx = _knots(_slopes(zx, lo, hi)).to(dtype)
    ky = _knots(_slopes(zy, lo, hi)).to(dtype)
    ok = (
        MonotoneScale(kx.flatten(0, 1), ky.flatten(0, 1), validate=False)
        .is_invertible()
        .reshape(tries, batch)
    )
    first = torch.argmax(ok.to(torch.uint8), dim=0)  # the first invertible candidate (0 if there is none)
    kx = kx.gather(0, first.view(1, -1, 1, 1).expand(1, *kx.shape[1:]))[0]
    ky = ky.gather(0, first.view(1, -1, 1, 1).expand(1, *ky.shape[1:]))[0]
    found = ok.any(dim=0)
    # Fallback for items without an invertible candidate: the first invertible blend toward the identity,
    # all blend steps evaluated at once.
    ident_x = torch.linspace(0, 1, n + 1, device=work, dtype=dtype)
    ident_y = torch.linspace(0, 1, m + 1, device=work, dtype=dtype)
    t = torch.tensor(_BLEND_STEPS, device=work, dtype=dtype).view(-1, 1, 1, 1)
    cx = (1 - t) * kx + t * ident_x
    cy = (1 - t) * ky + t * ident_y
    steps = len(_BLEND_STEPS)
    take = MonotoneScale(cx.flatten(0, 1), cy.flatten(0, 1), validate=False).is_invertible()
    pick = torch.argmax(take.reshape(steps, batch).to(torch.uint8), dim=0)
    bx = cx.gather(0, pick.view(1, -1, 1, 1).expand(1, *kx.shape))[0]
    by = cy.gather(0, pick.view(1, -1, 1, 1).expand(1, *ky.shape))[0]
    keep = found.view(-1, 1, 1)
    kx = torch.where(keep, kx, bx)
    ky = torch.where(keep, ky, by)
    return MonotoneScale(kx.to(out_device), ky.to(out_device), validate=False)


def _slopes(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    r"""Slopes in ``[lo, hi]`` with mean 1 along the last axis from uniform numbers ``u`` `(..., K)`.

    The shift $c$ with $\frac1K \sum_k \mathrm{clip}(e^{z_k + c}, a, b) = 1$ in closed form: the mean is
    continuous and non-decreasing in $c$ and, between its $2K$ breakpoints $\log a - z_k$ and
    $\log b - z_k$, equal to $(n_a a + n_b b + e^c S) / K$ with fixed counts $n_a$, $n_b$ of slopes clipped
    to $a$ and $b$ and the sum $S$ of the others' $e^{z_k}$. The interval where the mean crosses 1 is
    found by evaluating it at all breakpoints at once; there $e^c = (K - n_a a - n_b b) / S$.
    """
    llo, lhi = math.log(lo), math.log(hi)
    k = u.shape[-1]
    z = llo + (lhi - llo) * u
    bps = torch.cat([llo - z, lhi - z], dim=-1).sort(dim=-1).values  # (..., 2K)
    means = torch.exp(z[..., None, :] + bps[..., :, None]).clamp(lo, hi).mean(dim=-1)  # (..., 2K)
    # Breakpoints with mean < 1 precede the crossing; the crossing lies in [bps[j - 1], bps[j]].
    j = (means < 1).sum(dim=-1, keepdim=True)
    left = bps.gather(-1, (j - 1).clamp(min=0))
    right = bps.gather(-1, j.clamp(max=2 * k - 1))
    mid = torch.where(j == 0, right - 1, torch.where(j == 2 * k, left + 1, 0.5 * (left + right)))
    e = torch.exp(z + mid)
    n_lo = (e < lo).sum(dim=-1, keepdim=True).to(z.dtype)
    n_hi = (e > hi).sum(dim=-1, keepdim=True).to(z.dtype)
    free = torch.where((e >= lo) & (e <= hi), torch.exp(z), torch.zeros_like(z)).sum(dim=-1, keepdim=True)
    rest = k - n_lo * lo - n_hi * hi
    # A constant mean on the crossing interval (no free slope) only happens when it equals 1 there: any c
    # of the interval gives the same slopes; take its finite end.
    c_free = torch.log(rest.clamp_min(torch.finfo(z.dtype).tiny) / free.clamp_min(torch.finfo(z.dtype).tiny))
    c_end = torch.where(j == 0, right, left)
    c = torch.where(free > 0, c_free, c_end)
    s = torch.exp(z + c).clamp(lo, hi)
    return (s / s.mean(dim=-1, keepdim=True)).clamp(lo, hi)


def _knots(slopes: torch.Tensor) -> torch.Tensor:
    """Knots `(..., K + 1)` from slopes `(..., K)` with mean 1: cumulative sums of ``slopes / K`` from 0."""
    k = slopes.shape[-1]
    inner = torch.cumsum(slopes[..., :-1] / k, dim=-1)
    return torch.cat([torch.zeros_like(slopes[..., :1]), inner, torch.ones_like(slopes[..., :1])], dim=-1)
