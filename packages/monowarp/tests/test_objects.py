"""Object-level rescaling: the object's area grows as s**2, the background away from it is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import monowarp
from monowarp import get_inpainter, inpaint_background, inpainter_names, register_inpainter, rescale_object

pytest.importorskip("cv2")

FACTORS = [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]


def _scene(h=64, w=80, side=20, top=22, left=30, seed=0):
    """A textured background (values 0..99 in red) with a pure-white square object."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = rng.integers(0, 100, (h, w))
    img[..., 1] = rng.integers(0, 100, (h, w))
    mask = np.zeros((h, w), bool)
    mask[top : top + side, left : left + side] = True
    img[mask] = 255
    return img, mask


def _object_area(out: np.ndarray) -> int:
    return int((out[..., 2] > 127).sum())  # only the object has blue


def test_area_grows_with_factor_squared_numpy():
    img, mask = _scene()
    out = rescale_object(img, mask, FACTORS, feather=0)
    assert out.shape == (7, *img.shape) and out.dtype == np.uint8
    ratios = np.array([_object_area(o) for o in out]) / mask.sum()
    np.testing.assert_allclose(ratios, np.square(FACTORS), rtol=0.12)
    assert np.all(np.diff(ratios) > 0)


def test_area_grows_with_factor_squared_tensor_batch(device, dtype):
    img, mask = _scene()
    img2, mask2 = _scene(side=24, top=20, left=24, seed=1)
    x = (torch.from_numpy(np.stack([img, img2])).permute(0, 3, 1, 2) / 255).to(device, dtype)
    m = torch.from_numpy(np.stack([mask, mask2])).to(device)
    out, masks = rescale_object(x, m, torch.tensor([0.5, 1.0, 2.0]), feather=0, return_masks=True)
    assert out.shape == (2, 3, 3, 64, 80) and masks.shape == (2, 3, 1, 64, 80)
    assert out.dtype == dtype and out.device == x.device and masks.device == x.device
    out, masks, m = out.cpu(), masks.cpu(), m.cpu()
    area = (out[:, :, 2] > 0.5).sum(dim=(-1, -2)).float() / m.sum(dim=(-1, -2))[:, None]
    torch.testing.assert_close(area, torch.tensor([[0.25, 1.0, 4.0]]).expand(2, 3), rtol=0.12, atol=0.0)
    torch.testing.assert_close(
        (masks.sum(dim=(-1, -2, -3)) / m.sum(dim=(-1, -2))[:, None]).float(), area, rtol=0.1, atol=0
    )


def test_background_away_from_the_object_is_untouched():
    img, mask = _scene()
    out = rescale_object(img, mask, FACTORS, dilation=2, feather=1.0)
    ys, xs = np.nonzero(mask)
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    half = 10 * 1.3 + 2 + 4  # the largest object's half side, the dilation and the feathering's reach
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    far = (np.abs(yy - cy) > half) | (np.abs(xx - cx) > half)
    assert far.sum() > 0.5 * far.size
    for o in out:
        assert np.array_equal(o[far], img[far])  # bit for bit


def test_identity_factor_keeps_the_object_and_shrinking_reveals_inpainted_background():
    img, mask = _scene()
    same = rescale_object(img, mask, 1.0, feather=0)
    assert same.shape == img.shape
    assert np.array_equal(same[mask], img[mask])
    small = rescale_object(img, mask, 0.5, feather=0)
    ring = mask.copy()
    ring[27:37, 35:45] = False  # the old object minus the new, half-size one (20 -> 10 pixels, same centre)
    assert small[ring][:, 2].max() < 128  # no object colour left where the object was: filled background


def test_shapes_for_every_layout():
    img, mask = _scene(h=32, w=40, side=10, top=10, left=10)
    gray = img[..., 0]
    assert rescale_object(gray, mask, 1.2).shape == (32, 40)
    assert rescale_object(gray, mask, [1.2, 0.8]).shape == (2, 32, 40)
    x = torch.rand(3, 32, 40)
    m = torch.from_numpy(mask)
    assert rescale_object(x, m, 1.2).shape == (3, 32, 40)
    assert rescale_object(x, m, [1.2]).shape == (1, 3, 32, 40)
    assert rescale_object(x[None].expand(2, 3, 32, 40), m, 1.2).shape == (2, 3, 32, 40)
    f = rescale_object(img.astype(np.float32) / 255, mask, [0.9, 1.1])
    assert f.dtype == np.float32 and f.shape == (2, 32, 40, 3)
    deep = rescale_object(img.astype(np.uint16) * 257, mask, [0.9, 1.1])  # 16 bits: the same picture
    assert deep.dtype == np.uint16 and np.abs(deep / 65535.0 - f).max() < 2 / 255
    # arrays come back in C order, ready for OpenCV and torch.from_numpy
    assert f.flags["C_CONTIGUOUS"] and inpaint_background(img, mask).flags["C_CONTIGUOUS"]


def test_numpy_and_tensor_agree():
    img, mask = _scene()
    a = rescale_object(img, mask, [0.8, 1.25]).astype(np.float32)
    x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    b = rescale_object(x, torch.from_numpy(mask), [0.8, 1.25]).permute(0, 2, 3, 1).numpy() * 255
    assert np.abs(a - b).max() <= 1.0


def test_center_is_the_fixed_point():
    img, mask = _scene(top=4, left=4, side=12)  # object in the top-left corner
    out = rescale_object(img, mask, 2.0, center=(4.0, 4.0), feather=0)  # about its top-left pixel
    obj = out[..., 2] > 127
    ys, xs = np.nonzero(obj)
    assert (ys.min(), xs.min()) == (4, 4) and 22 <= ys.max() <= 28 and 22 <= xs.max() <= 28


def test_custom_inpainter_and_registry():
    img, mask = _scene()
    calls = []

    def grey(image, hole):
        calls.append((image.shape, hole.dtype, int(hole.max())))
        out = image.copy()
        out[hole > 0] = 77
        return out

    bg = inpaint_background(img, mask, inpaint=grey, dilation=1)
    assert calls == [(img.shape, np.uint8, 255)]
    hole = np.zeros_like(mask)
    hole[21:43, 29:51] = True  # the mask grown by one pixel
    assert np.all(bg[hole] == 77) and np.array_equal(bg[~hole], img[~hole])
    out, scaled = rescale_object(img, mask, 0.5, inpaint=grey, dilation=1, feather=0, return_masks=True)
    assert np.all(out[hole & (scaled == 0)] == 77) and np.array_equal(out[~hole], img[~hole])
    # a background made once serves every call
    again = rescale_object(img, mask, 0.5, background=bg, dilation=1, feather=0)
    assert np.array_equal(again, out) and len(calls) == 2
    assert {"telea", "ns"} <= set(inpainter_names())
    assert callable(get_inpainter("ns", radius=3))

    @register_inpainter("test-constant")
    def _constant(value: int = 0):
        return lambda image, hole: np.where(hole[..., None] > 0, value, image).astype(np.uint8)

    bg9 = inpaint_background(img, mask, inpaint=get_inpainter("test-constant", value=9), dilation=0)
    assert np.all(bg9[mask] == 9)
    with pytest.raises(ValueError, match="already registered"):
        register_inpainter("telea")(_constant)


def test_errors_name_the_argument():
    img, mask = _scene()
    with pytest.raises(ValueError, match="factor must be finite and > 0"):
        rescale_object(img, mask, [1.0, 0.0])
    with pytest.raises(ValueError, match="factor must not be empty"):
        rescale_object(img, mask, [])
    with pytest.raises(ValueError, match=r"mask must have shape \(64, 80\)"):
        rescale_object(img, mask[:10], 1.1)
    with pytest.raises(ValueError, match="mask is empty"):
        rescale_object(img, np.zeros_like(mask), 1.1)
    with pytest.raises(ValueError, match="inpaint must be one of 'ns', 'telea'"):
        rescale_object(img, mask, 1.1, inpaint="lama")
    with pytest.raises(TypeError, match="image must be uint8, uint16 or floating point"):
        rescale_object(img.astype(np.int32), mask, 1.1)
    with pytest.raises(TypeError, match="image must have a floating point dtype"):
        rescale_object(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.ones(8, 8), 1.1)
    with pytest.raises(TypeError, match="mask must be a numpy array"):
        rescale_object(img, torch.from_numpy(mask), 1.1)
    with pytest.raises(ValueError, match="dilation must be >= 0"):
        rescale_object(img, mask, 1.1, dilation=-1)
    with pytest.raises(TypeError, match="image must be a numpy array or a torch tensor"):
        rescale_object([[0]], mask, 1.1)
    with pytest.raises(ValueError, match="NaN"):
        rescale_object(torch.full((3, 8, 8), float("nan")), torch.ones(8, 8), 1.1)


def test_exported():
    assert monowarp.rescale_object is rescale_object and "rescale_object" in monowarp.__all__
