"""Tests of the functional warps (warp/unwarp, 1-D warps) and the pixel-coordinate helpers."""

from __future__ import annotations

import math

import pytest
import torch

from monowarp import (
    Monotone1d,
    MonotoneScale,
    pixel_grid,
    pixels_to_points,
    points_to_pixels,
    sample_at,
    sample_monotone_scale,
    unwarp,
    unwarp1d,
    warp,
    warp1d,
)


def _random(batch, device, dtype, grid=(4, 4), scale_range=(0.5, 2.0), seed=0) -> MonotoneScale:
    gen = torch.Generator().manual_seed(seed)
    return sample_monotone_scale(batch, grid, scale_range, generator=gen, dtype=dtype).to(device)


def _smooth(b, c, h, w, device, dtype) -> torch.Tensor:
    """Smooth images: a few low-frequency sinusoids per channel."""
    gen = torch.Generator().manual_seed(1)
    ys = torch.linspace(0, 1, h, dtype=torch.float64)[:, None]
    xs = torch.linspace(0, 1, w, dtype=torch.float64)[None, :]
    out = torch.zeros(b, c, h, w, dtype=torch.float64)
    for k in range(3):
        a, fx, fy, ph = torch.rand(4, b, c, 1, 1, generator=gen, dtype=torch.float64)
        out += a * torch.sin(2 * math.pi * (fx * 1.5 * xs + fy * 1.5 * ys) + 6 * ph) / (k + 1)
    return out.to(device, dtype)


def _naive_bilinear(img: torch.Tensor, pts: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Independent reference sampler: `(C, H, W)` image at points `(P, 2)` in [0, 1]^2, border clamping."""
    _, h, w = img.shape
    if align_corners:
        px, py = pts[:, 0] * (w - 1), pts[:, 1] * (h - 1)
    else:
        px, py = pts[:, 0] * w - 0.5, pts[:, 1] * h - 0.5
    px, py = px.clamp(0, w - 1), py.clamp(0, h - 1)
    x0, y0 = px.floor().long().clamp(max=w - 1), py.floor().long().clamp(max=h - 1)
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    wx, wy = px - x0, py - y0
    top = img[:, y0, x0] * (1 - wx) + img[:, y0, x1] * wx
    bot = img[:, y1, x0] * (1 - wx) + img[:, y1, x1] * wx
    return top * (1 - wy) + bot * wy


def _tol(dtype):
    return 1e-10 if dtype == torch.float64 else 1e-5


# ----------------------------------------------------------------------------------------------------- smoke
def test_smoke(device, dtype):
    g = _random(2, device, dtype)
    x = torch.rand(2, 3, 12, 17, device=device, dtype=dtype)
    assert warp(x, g).shape == x.shape
    assert unwarp(x, g).shape == x.shape
    assert warp(x, g, mode="nearest", padding_mode="zeros", align_corners=False).shape == x.shape


@pytest.mark.parametrize("shape", [(1, 1, 8, 8), (2, 5, 7, 13), (3, 2, 20, 6)])
@pytest.mark.parametrize("grid", [(4, 4), (2, 5)])
def test_cardinality(shape, grid, device, dtype):
    b = shape[0]
    g = _random(b, device, dtype, grid=grid)
    x = torch.rand(shape, device=device, dtype=dtype)
    assert warp(x, g).shape == shape
    assert unwarp(x, g).shape == shape
    # a batch of one element is broadcast
    assert warp(x, g[:1]).shape == shape
    torch.testing.assert_close(warp(x, g[:1])[-1], warp(x[-1:], g[:1])[0])


# ------------------------------------------------------------------------------------------------ exceptions
def test_errors():
    g = MonotoneScale.identity(2)
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\), got \(3, 8, 8\)"):
        warp(x[0], g)
    with pytest.raises(
        ValueError, match=r"g must have batch size 3 \(that of x, shape \(B, C, H, W\)\) or 1"
    ):
        unwarp(torch.rand(3, 1, 8, 8), g)
    with pytest.raises(TypeError, match="g must be a ScalingMap"):
        warp(x, torch.zeros(2, 40))
    with pytest.raises(ValueError, match="mode must be one of"):
        warp(x, g, mode="area")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        unwarp(x, g, padding_mode="wrap")
    with pytest.raises(TypeError, match="needs mode='nearest'"):
        warp(torch.zeros(2, 1, 8, 8, dtype=torch.long), g)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor"):
        warp(x.numpy(), g)
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, L\)"):
        warp1d(x, Monotone1d.identity(2))
    with pytest.raises(ValueError, match=r"f must have batch size 2"):
        unwarp1d(torch.rand(2, 1, 9), Monotone1d.identity(3))
    with pytest.raises(ValueError, match=r"points must have shape \(2, H_out, W_out, 2\)"):
        sample_at(x, torch.rand(2, 4, 4, 3))
    with pytest.raises(ValueError, match=r"pixels must have shape \(\.\.\., 2\)"):
        pixels_to_points(torch.rand(4, 3), (8, 8))


# --------------------------------------------------------------------------------------------------- feature
def test_identity_is_exact(device, dtype):
    x = torch.rand(2, 3, 9, 14, device=device, dtype=dtype)
    e = MonotoneScale.identity(2, (3, 5), device=device, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 4e-6
    for ac in (True, False):
        # bilinear: up to the rounding of the pixel positions; nearest: bit for bit
        torch.testing.assert_close(warp(x, e, align_corners=ac), x, atol=tol, rtol=0)
        torch.testing.assert_close(unwarp(x, e, align_corners=ac), x, atol=tol, rtol=0)
        assert torch.equal(warp(x, e, mode="nearest", align_corners=ac), x)
        assert torch.equal(unwarp(x, e, mode="nearest", align_corners=ac), x)
    masks = torch.randint(0, 5, (2, 1, 9, 14), device=device)
    assert torch.equal(warp(masks, e, mode="nearest"), masks)


@pytest.mark.parametrize("align_corners", [True, False])
def test_unwarp_matches_reference(align_corners, device, dtype):
    """unwarp(x, g)(p) = x(g(p)): sample with an independent bilinear sampler at forward_map(pixel grid)."""
    b, c, h, w = 2, 3, 11, 16
    g = _random(b, device, dtype, grid=(4, 3), scale_range=(0.3, 3.0))
    x = torch.rand(b, c, h, w, device=device, dtype=dtype)
    pts = pixel_grid((h, w), align_corners=align_corners, device=device, dtype=dtype).reshape(-1, 2)
    out = unwarp(x, g, align_corners=align_corners)
    for k in range(b):
        src = g[k].forward_map(pts[None])[0]
        ref = _naive_bilinear(x[k], src, align_corners).reshape(c, h, w)
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("align_corners", [True, False])
def test_warp_matches_reference(align_corners, device, dtype):
    """warp(x, g)(p) = x(g^-1(p)) with the exact inverse."""
    b, c, h, w = 2, 2, 10, 13
    g = _random(b, device, dtype, scale_range=(0.25, 4.0))
    x = torch.rand(b, c, h, w, device=device, dtype=dtype)
    pts = pixel_grid((h, w), align_corners=align_corners, device=device, dtype=dtype).reshape(-1, 2)
    out = warp(x, g, align_corners=align_corners)
    for k in range(b):
        src = g[k].inverse_map(pts[None])[0]
        ref = _naive_bilinear(x[k], src, align_corners).reshape(c, h, w)
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=1e-5)


def test_warp_moves_content_to_forward_map(device, dtype):
    """S(I; l): the content at q moves to l(q) (eq. 13), checked on a single bright pixel."""
    h = w = 41
    g = _random(1, device, dtype, scale_range=(0.5, 2.0), seed=3)
    q = torch.tensor([[[0.3, 0.6]]], device=device, dtype=dtype)
    target = points_to_pixels(g.forward_map(q), (h, w))[0, 0]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    src = points_to_pixels(q, (h, w))[0, 0].cpu()
    blob = torch.exp(-((xs - src[0]) ** 2 + (ys - src[1]) ** 2) / 4.0).to(device, dtype)[None, None]
    out = warp(blob, g)[0, 0]
    peak = (out == out.max()).nonzero()[0].flip(0).to(dtype)
    assert float((peak - target).abs().max()) <= 1.0


def test_round_trip_on_smooth_images(device, dtype):
    b, c, h, w = 3, 2, 64, 80
    g = _random(b, device, dtype)
    x = _smooth(b, c, h, w, device, dtype)
    err1 = (warp(unwarp(x, g), g) - x).abs().mean()
    err2 = (unwarp(warp(x, g), g) - x).abs().mean()
    scale = x.abs().mean()
    assert float(err1 / scale) < 0.01 and float(err2 / scale) < 0.01
    # composition: warping by b then by a equals warping by a o b (content at q moves to a(b(q)))
    a, bb = _random(b, device, dtype, seed=5), _random(b, device, dtype, seed=6)
    two = warp(warp(x, bb), a)
    one = warp(x, a.compose(bb))
    assert float((two - one).abs().mean() / scale) < 0.01


def test_nearest_label_masks(device):
    g = _random(2, device, torch.float32, scale_range=(0.5, 2.0))
    masks = torch.randint(0, 7, (2, 1, 15, 18), device=device, dtype=torch.uint8)
    out = warp(masks, g, mode="nearest")
    assert out.dtype == torch.uint8
    assert set(out.unique().tolist()) <= set(masks.unique().tolist())
    # the mask follows the image: warping the float mask with nearest gives the same labels
    torch.testing.assert_close(out.float(), warp(masks.float(), g, mode="nearest"))


def test_pixel_helpers(device, dtype):
    for ac in (True, False):
        grid = pixel_grid((4, 6), align_corners=ac, device=device, dtype=dtype)
        pix = points_to_pixels(grid, (4, 6), align_corners=ac)
        cols, rows = torch.meshgrid(torch.arange(6), torch.arange(4), indexing="xy")
        torch.testing.assert_close(pix, torch.stack([cols, rows], -1).to(device, dtype), atol=1e-5, rtol=0)
        torch.testing.assert_close(pixels_to_points(pix, (4, 6), align_corners=ac), grid)
    assert float(pixel_grid((3, 3), align_corners=False)[0, 0, 0]) == pytest.approx(1 / 6)


# -------------------------------------------------------------------------------------------------- gradients
def test_gradcheck_image():
    g = _random(1, "cpu", torch.float64, grid=(2, 2))
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: warp(t, g), (x,))
    assert torch.autograd.gradcheck(lambda t: unwarp(t, g), (x,))


@pytest.mark.parametrize("fn", [warp, unwarp])
def test_gradcheck_params(fn):
    g = _random(2, "cpu", torch.float64, grid=(2, 3))
    params = g.to_params().requires_grad_(True)
    x = _smooth(2, 1, 6, 7, "cpu", torch.float64)
    assert torch.autograd.gradcheck(lambda p: fn(x, MonotoneScale.from_params(p, grid=(2, 3))), (params,))


def test_gradients_flow(device, dtype):
    params = torch.zeros(2, 40, device=device, dtype=dtype, requires_grad=True)
    x = torch.rand(2, 3, 16, 16, device=device, dtype=dtype, requires_grad=True)
    (warp(x, MonotoneScale.from_params(params)).square().sum()).backward()
    assert x.grad is not None and params.grad is not None
    assert bool(torch.isfinite(params.grad).all()) and float(params.grad.abs().sum()) > 0


# ------------------------------------------------------------------------------------------------------- 1-D
def test_warp1d(device, dtype):
    f = Monotone1d.from_knots(torch.tensor([[0.0, 0.25, 1.0], [0.0, 0.5, 1.0]], device=device, dtype=dtype))
    x = torch.linspace(0, 1, 9, device=device, dtype=dtype).expand(2, 3, 9).clone()
    out = warp1d(x, f)
    t = torch.linspace(0, 1, 9, device=device, dtype=dtype).expand(2, 9)
    torch.testing.assert_close(out[:, 0], f.inverse_map(t), atol=1e-6, rtol=0)  # x(t) = t, so S(x; f) = f^-1
    torch.testing.assert_close(unwarp1d(x, f)[:, 1], f.forward_map(t), atol=1e-6, rtol=0)
    torch.testing.assert_close(unwarp1d(warp1d(x, f), f), x, atol=1e-6, rtol=0)  # linear signal: exact
    assert warp1d(x, f, align_corners=False).shape == (2, 3, 9)


@pytest.mark.parametrize("fn", [warp, unwarp, sample_at, warp1d, unwarp1d])
def test_string_options_are_typed_and_checked(fn):
    """The Literal types of the signatures list exactly what the runtime check accepts."""
    import typing

    import monowarp

    hints = typing.get_type_hints(fn)
    assert typing.get_args(hints["mode"]) == ("bilinear", "nearest", "bicubic")
    assert typing.get_args(hints["padding_mode"]) == ("zeros", "border", "reflection")
    aug_hints = typing.get_type_hints(monowarp.RandomMonotoneScale.__init__)
    assert typing.get_args(aug_hints["mode"]) == ("bilinear", "nearest")
    assert typing.get_args(aug_hints["direction"]) == ("unwarp", "warp")
    g = sample_monotone_scale(1, generator=torch.Generator().manual_seed(0))
    x, pts = torch.rand(1, 1, 4, 4), torch.rand(1, 4, 4, 2)
    f = Monotone1d.identity(1)
    args = {sample_at: (x, pts), warp1d: (x[:, :, 0], f), unwarp1d: (x[:, :, 0], f)}.get(fn, (x, g))
    with pytest.raises(ValueError, match="mode must be one of 'bilinear', 'nearest', 'bicubic', got 'area'"):
        fn(*args, mode="area")
    with pytest.raises(ValueError, match="padding_mode must be one of 'zeros', 'border', 'reflection'"):
        fn(*args, padding_mode="wrap")
