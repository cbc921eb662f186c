"""Tests of the sampler of random monotone scalings (the distribution Omega)."""

from __future__ import annotations

import math

import pytest
import torch

from monowarp import MonotoneScale, RandomMonotoneScale, sample_monotone_scale


def _slopes(g: MonotoneScale) -> tuple[torch.Tensor, torch.Tensor]:
    n, m = g.grid
    return g.knots_x.diff(dim=-1) * n, g.knots_y.diff(dim=-1) * m


def test_smoke(device, dtype):
    g = sample_monotone_scale(3, device=device, dtype=dtype)
    assert isinstance(g, MonotoneScale)
    assert g.grid == (4, 4) and g.batch_size == 3 and g.dtype == dtype and g.device.type == device.type
    MonotoneScale.from_knots(g.knots_x, g.knots_y)  # valid knots


@pytest.mark.parametrize("batch", [0, 1, 5])
@pytest.mark.parametrize("grid", [(1, 1), (4, 4), (6, 3), (2, 7)])
def test_cardinality(batch, grid):
    g = sample_monotone_scale(batch, grid)
    n, m = grid
    assert g.knots_x.shape == (batch, m + 1, n + 1) and g.knots_y.shape == (batch, n + 1, m + 1)


def test_errors():
    with pytest.raises(ValueError, match=r"0 < low <= 1 <= high"):
        sample_monotone_scale(2, scale_range=(1.2, 2.0))
    with pytest.raises(ValueError, match=r"0 < low <= 1 <= high"):
        sample_monotone_scale(2, scale_range=(0.5, 0.9))
    with pytest.raises(ValueError, match=r"0 < low <= 1 <= high"):
        sample_monotone_scale(2, scale_range=(0.0, 2.0))
    with pytest.raises(ValueError, match="scale_range must be a pair"):
        sample_monotone_scale(2, scale_range=(0.5,))
    with pytest.raises(ValueError, match="grid must be a pair"):
        sample_monotone_scale(2, grid=(0, 4))
    with pytest.raises(ValueError, match="batch must be a non-negative int"):
        sample_monotone_scale(-1)
    with pytest.raises(TypeError, match="dtype must be a floating point dtype"):
        sample_monotone_scale(1, dtype=torch.long)


@pytest.mark.parametrize("scale_range", [(0.5, 2.0), (0.8, 1.25), (0.25, 4.0), (0.9, 3.0), (0.2, 1.1)])
@pytest.mark.parametrize("grid", [(4, 4), (6, 3)])
def test_scale_range_guarantee(scale_range, grid, dtype):
    lo, hi = scale_range
    g = sample_monotone_scale(256, grid, scale_range, generator=torch.Generator().manual_seed(0), dtype=dtype)
    eps = 1e-9 if dtype == torch.float64 else 2e-5
    for s in _slopes(g):
        assert float(s.min()) >= lo * (1 - eps) and float(s.max()) <= hi * (1 + eps)
    assert bool(g.is_invertible().all())
    # the diagonal of the Jacobian of the blend is a convex combination of slopes
    jac = g.local_scale(torch.rand(256, 100, 2, dtype=dtype))
    diag = torch.diagonal(jac, dim1=-2, dim2=-1)
    assert float(diag.min()) >= lo * (1 - eps) and float(diag.max()) <= hi * (1 + eps)
    # the range is used, not just respected
    if hi > lo:
        sx, _ = _slopes(g)
        assert float(sx.max()) > 1 + 0.5 * (hi - 1) or float(sx.min()) < 1 - 0.5 * (1 - lo)


@pytest.mark.parametrize("scale_range", [(1.0, 1.0), (1.0, 3.0), (0.3, 1.0)])
def test_identity_range(scale_range):
    """Slopes with mean 1 and all >= 1 (or all <= 1) are all 1: the identity."""
    g = sample_monotone_scale(4, scale_range=scale_range)
    e = MonotoneScale.identity(4)
    torch.testing.assert_close(g.knots_x, e.knots_x)
    torch.testing.assert_close(g.knots_y, e.knots_y)


def test_deterministic_with_generator():
    a = sample_monotone_scale(8, generator=torch.Generator().manual_seed(7))
    b = sample_monotone_scale(8, generator=torch.Generator().manual_seed(7))
    c = sample_monotone_scale(8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.knots_x, b.knots_x) and torch.equal(a.knots_y, b.knots_y)
    assert not torch.equal(a.knots_x, c.knots_x)


def test_invertible_under_wide_ranges():
    """Wide ranges need the rejection step (and possibly the blend fallback): results stay invertible."""
    gen = torch.Generator().manual_seed(0)
    g = sample_monotone_scale(512, (4, 4), (0.05, 20.0), generator=gen, max_tries=1)
    assert bool(g.is_invertible().all())
    for s in _slopes(g):
        assert float(s.min()) >= 0.05 * (1 - 2e-5) and float(s.max()) <= 20.0 * (1 + 2e-5)
    p = torch.rand(512, 200, 2)
    assert float((g.forward_map(g.inverse_map(p)) - p).abs().max()) < 1e-5


def test_distribution_is_not_degenerate():
    g = sample_monotone_scale(2000, (4, 4), (0.5, 2.0), generator=torch.Generator().manual_seed(0))
    sx, sy = _slopes(g)
    logs = torch.cat([sx.flatten(), sy.flatten()]).log()
    assert abs(float(logs.mean())) < 0.1  # roughly symmetric in log-scale
    assert float(logs.std()) > 0.2
    # rows are drawn independently: neighbouring row functions differ
    assert float((g.knots_x[:, 1:] - g.knots_x[:, :-1]).abs().mean()) > 0.01


# ------------------------------------------------------------------- the previous sampler, the reference
def _reference_slopes(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The previous algorithm: the shift c found by 64 bisection steps."""
    llo, lhi = math.log(lo), math.log(hi)
    z = llo + (lhi - llo) * u
    a = torch.full((*u.shape[:-1], 1), llo - lhi, dtype=u.dtype)
    b = torch.full_like(a, lhi - llo)
    for _ in range(64):
        c = 0.5 * (a + b)
        below = torch.exp(z + c).clamp(lo, hi).mean(dim=-1, keepdim=True) < 1
        a = torch.where(below, c, a)
        b = torch.where(below, b, c)
    s = torch.exp(z + 0.5 * (a + b)).clamp(lo, hi)
    return (s / s.mean(dim=-1, keepdim=True)).clamp(lo, hi)


def _reference_knots(slopes: torch.Tensor) -> torch.Tensor:
    k = slopes.shape[-1]
    inner = torch.cumsum(slopes[..., :-1] / k, dim=-1)
    return torch.cat([torch.zeros_like(slopes[..., :1]), inner, torch.ones_like(slopes[..., :1])], dim=-1)


def reference_sampler(batch, grid, scale_range, generator, max_tries=16):
    """The previous sampler: bisection per function, rejection round by round, blend fallback."""
    n, m = grid
    lo, hi = scale_range

    def draw(k):
        zx = torch.rand(k, m + 1, n, generator=generator, dtype=torch.float64)
        zy = torch.rand(k, n + 1, m, generator=generator, dtype=torch.float64)
        return _reference_knots(_reference_slopes(zx, lo, hi)), _reference_knots(
            _reference_slopes(zy, lo, hi)
        )

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
        ident = MonotoneScale.identity(bad.numel(), (n, m), dtype=torch.float64)
        bx, by = kx[bad], ky[bad]
        done = torch.zeros(bad.numel(), dtype=torch.bool)
        for t in (0.5, 0.75, 0.875, 0.9375, 1.0):
            cx = (1 - t) * bx + t * ident.knots_x
            cy = (1 - t) * by + t * ident.knots_y
            take = MonotoneScale(cx, cy, validate=False).is_invertible() & ~done
            bx = torch.where(take[:, None, None], cx, bx)
            by = torch.where(take[:, None, None], cy, by)
            done |= take
        kx[bad], ky[bad] = bx, by
    return MonotoneScale(kx, ky, validate=False)


def _statistics(g: MonotoneScale, lo: float, hi: float) -> dict[str, torch.Tensor]:
    """Per-item statistics of the log local scales (row and column slopes), `(B,)` each."""
    sx, sy = _slopes(g)
    logs = torch.cat([sx.flatten(1), sy.flatten(1)], dim=1).log()
    width = math.log(hi) - math.log(lo)
    return {
        "mean": logs.mean(dim=1),
        "std": logs.std(dim=1),
        "near_low": (logs < math.log(lo) + 0.05 * width).double().mean(dim=1),
        "near_high": (logs > math.log(hi) - 0.05 * width).double().mean(dim=1),
    }


@pytest.mark.parametrize(
    ("scale_range", "grid"), [((0.5, 2.0), (4, 4)), ((0.25, 4.0), (6, 3)), ((0.8, 1.5), (4, 4))]
)
def test_distribution_matches_the_previous_sampler(scale_range, grid):
    """Mean and spread of the log local scales and the mass near the range ends agree (sampling error)."""
    lo, hi = scale_range
    n = 3000
    new = _statistics(
        sample_monotone_scale(
            n, grid, scale_range, generator=torch.Generator().manual_seed(1), dtype=torch.float64
        ),
        lo,
        hi,
    )
    old = _statistics(reference_sampler(n, grid, scale_range, torch.Generator().manual_seed(2)), lo, hi)
    for key in new:
        a, b = new[key], old[key]
        stderr = math.sqrt((a.var() + b.var()) / n)
        assert abs(float(a.mean() - b.mean())) < 4.5 * stderr + 1e-12, (key, float(a.mean()), float(b.mean()))


@pytest.mark.parametrize("scale_range", [(0.5, 2.0), (0.05, 20.0), (1.0, 3.0), (0.3, 1.0), (0.9, 1.1)])
def test_closed_form_shift_equals_the_bisection(scale_range):
    """Item by item, on the same first-round draw, the closed form gives the bisection's slopes."""
    gen = torch.Generator().manual_seed(3)
    # max_tries=0: one candidate per item, so both samplers read the same uniform numbers; compare the items
    # that the previous sampler accepted in its first round.
    new = sample_monotone_scale(500, (4, 4), scale_range, generator=gen, dtype=torch.float64, max_tries=0)
    gen = torch.Generator().manual_seed(3)
    old = reference_sampler(500, (4, 4), scale_range, gen, max_tries=0)
    ok = old.is_invertible()
    assert int(ok.sum()) > 0
    torch.testing.assert_close(new.knots_x[ok], old.knots_x[ok], atol=1e-12, rtol=0)
    torch.testing.assert_close(new.knots_y[ok], old.knots_y[ok], atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "kwargs", [dict(scale_range=(1.2, 2.0)), dict(scale_range="wide"), dict(grid=(0, 4)), dict(grid=4)]
)
def test_sampling_and_augmentation_reject_alike(kwargs):
    """One check each for grid and scale_range: the sampler and the augmentation say the same."""
    with pytest.raises(ValueError) as sampled:
        sample_monotone_scale(2, **kwargs)
    with pytest.raises(ValueError) as augmented:
        RandomMonotoneScale(**kwargs)
    assert str(sampled.value) == str(augmented.value)
    assert next(iter(kwargs)) + " must be a pair" in str(sampled.value)
