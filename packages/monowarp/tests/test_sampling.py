"""Tests of the sampler of random monotone scalings (the distribution Omega)."""

from __future__ import annotations

import pytest
import torch

from monowarp import MonotoneScale, sample_monotone_scale


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
    with pytest.raises(ValueError, match=r"0 < a <= 1 <= b"):
        sample_monotone_scale(2, scale_range=(1.2, 2.0))
    with pytest.raises(ValueError, match=r"0 < a <= 1 <= b"):
        sample_monotone_scale(2, scale_range=(0.5, 0.9))
    with pytest.raises(ValueError, match=r"0 < a <= 1 <= b"):
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
