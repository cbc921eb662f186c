"""The paper's approximate inverse (appendix A2.2): exact for separable maps, approximate otherwise."""

import pytest
import torch

import monowarp
from monowarp import MonotoneScale, approximate_inverse_map, approximate_warp, sample_monotone_scale


def _round_trip_px(g: MonotoneScale, size: tuple[int, int]) -> torch.Tensor:
    h, w = size
    inv = approximate_inverse_map(g, size).reshape(g.batch_size, h * w, 2)
    pts = monowarp.pixel_grid(size, dtype=inv.dtype).reshape(1, h * w, 2)
    scale = torch.tensor([w - 1, h - 1], dtype=inv.dtype)
    return ((g.forward_map(inv) - pts) * scale).norm(dim=-1)


def test_identity_is_exact():
    x = torch.rand(2, 3, 9, 13)
    assert torch.allclose(approximate_warp(x, MonotoneScale.identity(2)), x, atol=1e-5)


def test_separable_map_is_inverted_exactly():
    # every row function equal and every column function equal: l(x, y) = (f(x), h(y)) is separable
    g0 = sample_monotone_scale(1, grid=(4, 4), generator=torch.Generator().manual_seed(3))
    kx = g0.knots_x[:, :1].expand_as(g0.knots_x).clone()
    ky = g0.knots_y[:, :1].expand_as(g0.knots_y).clone()
    g = MonotoneScale.from_knots(kx, ky)
    assert _round_trip_px(g, (33, 41)).max() < 1e-3  # knots on pixels: the piecewise-linear rows are exact


def test_general_map_is_only_approximate_and_exact_warp_differs():
    g = sample_monotone_scale(4, grid=(4, 4), generator=torch.Generator().manual_seed(0))
    err = _round_trip_px(g, (64, 64))
    assert err.mean() > 0.3 and err.max() > 2  # pixels off on non-separable maps
    x = torch.rand(4, 2, 64, 64)
    assert not torch.allclose(approximate_warp(x, g), monowarp.warp(x, g), atol=1e-3)


def test_bad_arguments():
    with pytest.raises(TypeError, match="element"):
        approximate_inverse_map(torch.zeros(2), (4, 4))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size"):
        approximate_inverse_map(MonotoneScale.identity(1), (0, 4))
    with pytest.raises(ValueError, match="batch size"):
        approximate_warp(torch.rand(3, 1, 4, 4), MonotoneScale.identity(2))
