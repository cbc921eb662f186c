"""Tests of ``monowarp.RandomMonotoneScale``: kornia augmentation, masks, keypoints, replay and inverse."""

from __future__ import annotations

import math

import kornia.augmentation as K
import pytest
import torch
from kornia.geometry.keypoints import Keypoints

import monowarp
from monowarp import MonotoneScale, RandomMonotoneScale


def smooth_image(batch: int, channels: int, height: int, width: int, *, seed: int = 0, **kw) -> torch.Tensor:
    """A smooth random image in [0, 1]: a few low-frequency sinusoids per channel."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 1, height)[:, None]
    xs = torch.linspace(0, 1, width)[None, :]
    out = torch.zeros(batch, channels, height, width)
    for _ in range(3):
        fx, fy, phase = (
            torch.rand(3, batch, channels, 1, 1, generator=gen)
            * torch.tensor([3.0, 3.0, 6.3])[:, None, None, None, None]
        )
        out = out + torch.sin(2 * math.pi * (fx * xs + fy * ys) + phase)
    out = (out - out.amin(dim=(-2, -1), keepdim=True)) / (
        out.amax(dim=(-2, -1), keepdim=True) - out.amin(dim=(-2, -1), keepdim=True)
    )
    return out.to(**kw)


def element_of(params: dict[str, torch.Tensor], **kw) -> MonotoneScale:
    return MonotoneScale.from_knots(params["knots_x"].to(**kw), params["knots_y"].to(**kw))


def to_unit(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return points / torch.tensor([width - 1, height - 1], dtype=points.dtype)


def to_pixels(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return points * torch.tensor([width - 1, height - 1], dtype=points.dtype)


DIRECTIONS = ["unwarp", "warp"]


def moved(g: MonotoneScale, points: torch.Tensor, direction: str) -> torch.Tensor:
    """Where a point goes under the augmentation: $l^{-1}(q)$ for ``"unwarp"``, $l(q)$ for ``"warp"``."""
    return g.inverse_map(points) if direction == "unwarp" else g.forward_map(points)


def resampled(x: torch.Tensor, g: MonotoneScale, direction: str, **kw) -> torch.Tensor:
    return (monowarp.unwarp if direction == "unwarp" else monowarp.warp)(x, g, **kw)


# ------------------------------------------------------------------------------------------------ smoke


def test_smoke(device, dtype):
    aug = RandomMonotoneScale(p=1.0)
    x = smooth_image(2, 3, 24, 32, device=device, dtype=dtype)
    out = aug(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert set(aug._params) >= {"knots_x", "knots_y", "batch_prob", "forward_input_shape"}
    assert aug._params["knots_x"].shape == (2, 5, 5)
    assert aug._params["knots_y"].shape == (2, 5, 5)
    assert "scale_range=(0.5, 2.0)" in repr(aug) and "grid=(4, 4)" in repr(aug)
    assert isinstance(aug, K.GeometricAugmentationBase2D)


def test_transform_matrix_is_identity():
    aug = RandomMonotoneScale(p=1.0)
    aug(smooth_image(3, 1, 16, 16))
    assert torch.equal(aug.transform_matrix, torch.eye(3).expand(3, 3, 3))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(("height", "width"), [(16, 24), (21, 13)])
@pytest.mark.parametrize("grid", [(4, 4), (6, 3)])
def test_cardinality(batch, height, width, grid):
    aug = RandomMonotoneScale(grid=grid, p=1.0)
    out = aug(smooth_image(batch, 2, height, width))
    assert out.shape == (batch, 2, height, width)
    n, m = grid
    assert aug._params["knots_x"].shape == (batch, m + 1, n + 1)
    assert aug._params["knots_y"].shape == (batch, n + 1, m + 1)


@pytest.mark.parametrize(
    ("shape", "keepdim", "expected"),
    [
        ((3, 16, 20), True, (3, 16, 20)),
        ((3, 16, 20), False, (1, 3, 16, 20)),
        ((16, 20), True, (16, 20)),
        ((16, 20), False, (1, 1, 16, 20)),
    ],
)
def test_keepdim(shape, keepdim, expected):
    aug = RandomMonotoneScale(p=1.0, keepdim=keepdim)
    out = aug(torch.rand(shape))
    assert out.shape == expected
    assert aug.inverse(out).shape == expected


def test_empty_batch():
    aug = RandomMonotoneScale(p=1.0)
    assert aug(torch.rand(0, 3, 8, 8)).shape == (0, 3, 8, 8)


# ------------------------------------------------------------------------------------------------ probability


def test_p0_is_identity():
    aug = RandomMonotoneScale(p=0.0)
    x = smooth_image(4, 3, 16, 16)
    assert torch.equal(aug(x), x)


def test_p1_changes_the_image():
    aug = RandomMonotoneScale(scale_range=(0.5, 2.0), p=1.0)
    x = smooth_image(4, 3, 32, 32)
    out = aug(x)
    assert ((out - x).abs().amax(dim=(1, 2, 3)) > 0.02).all()


def test_mixed_gate_leaves_skipped_samples_unchanged():
    torch.manual_seed(3)
    aug = RandomMonotoneScale(p=0.5)
    x = smooth_image(16, 2, 16, 16)
    out = aug(x)
    applied = aug._params["batch_prob"] > 0.5
    assert 0 < int(applied.sum()) < 16
    assert torch.equal(out[~applied], x[~applied])
    assert ((out[applied] - x[applied]).abs().amax(dim=(1, 2, 3)) > 1e-3).all()
    # the applied samples are exactly the resampling (S^-1 by default) by their own element
    g = element_of(aug._params)
    assert torch.allclose(out[applied], monowarp.unwarp(x, g)[applied], atol=1e-6)
    # and inverse only touches them too
    back = aug.inverse(out)
    assert torch.equal(back[~applied], x[~applied])


# ------------------------------------------------------------------------------------- replay, seeding


def test_replay_with_params_is_exact():
    aug = RandomMonotoneScale(p=0.7)
    x = smooth_image(5, 3, 20, 28)
    out = aug(x)
    assert torch.equal(aug(x, params=aug._params), out)


def test_manual_seed_reproduces():
    aug = RandomMonotoneScale(p=0.5)
    x = smooth_image(6, 1, 16, 16)
    torch.manual_seed(11)
    a = aug(x)
    knots = aug._params["knots_x"].clone()
    torch.manual_seed(11)
    b = aug(x)
    assert torch.equal(a, b)
    assert torch.equal(aug._params["knots_x"], knots)
    torch.manual_seed(12)
    aug(x)
    assert not torch.equal(aug._params["knots_x"], knots)


def test_same_on_batch():
    aug = RandomMonotoneScale(p=1.0, same_on_batch=True)
    x = smooth_image(1, 3, 16, 24).repeat(4, 1, 1, 1)
    out = aug(x)
    assert (aug._params["knots_x"] == aug._params["knots_x"][:1]).all()
    assert (aug._params["knots_y"] == aug._params["knots_y"][:1]).all()
    assert torch.allclose(out, out[:1].expand_as(out))
    aug_diff = RandomMonotoneScale(p=1.0, same_on_batch=False)
    out = aug_diff(x)
    assert not torch.allclose(out, out[:1].expand_as(out))


def test_scale_range_is_respected():
    torch.manual_seed(0)
    aug = RandomMonotoneScale(scale_range=(0.8, 1.25), grid=(4, 4), p=1.0)
    aug(torch.rand(64, 1, 8, 8))
    slopes_x = aug._params["knots_x"].diff(dim=-1) * 4
    slopes_y = aug._params["knots_y"].diff(dim=-1) * 4
    for s in (slopes_x, slopes_y):
        assert s.min() >= 0.8 - 1e-5 and s.max() <= 1.25 + 1e-5


# --------------------------------------------------------------------------------- masks and keypoints


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_mask_is_nearest_and_aligned_with_the_image(direction):
    torch.manual_seed(1)
    x = smooth_image(3, 1, 40, 56)
    mask = (x > 0.5).float()
    seq = K.AugmentationSequential(
        RandomMonotoneScale(p=1.0, direction=direction), data_keys=["input", "mask"]
    )
    img_out, mask_out = seq(mask.clone(), mask)  # the image *is* the mask, warped bilinearly
    assert set(mask_out.unique().tolist()) <= {0.0, 1.0}
    # same map, same align_corners: nearest of the mask == rounding of the bilinear image almost everywhere
    disagree = (mask_out != (img_out > 0.5).float()).float().mean()
    assert disagree < 0.02
    # and exactly the nearest-neighbour warp by the stored element
    g = element_of(seq[0]._params)
    assert torch.equal(mask_out, resampled(mask, g, direction, mode="nearest"))


def test_integer_label_mask_keeps_its_labels():
    torch.manual_seed(2)
    labels = torch.randint(0, 5, (2, 1, 24, 24)).float()
    seq = K.AugmentationSequential(RandomMonotoneScale(p=1.0), data_keys=["input", "mask"])
    _, out = seq(torch.rand(2, 3, 24, 24), labels)
    assert set(out.unique().tolist()) <= set(range(5))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_keypoints_map_exactly(direction):
    torch.manual_seed(4)
    h, w = 30, 44
    aug = RandomMonotoneScale(p=1.0, direction=direction)
    seq = K.AugmentationSequential(aug, data_keys=["input", "keypoints"])
    kps = torch.tensor([[[0.0, 0.0], [w - 1.0, h - 1.0], [10.3, 7.7], [30.0, 20.5]]]).repeat(2, 1, 1)
    _, kps_out = seq(torch.rand(2, 3, h, w), kps)
    g = element_of(seq[0]._params)
    expected = to_pixels(moved(g, to_unit(kps, h, w), direction), h, w)
    assert torch.allclose(kps_out, expected, atol=1e-4)
    # the corners are fixed points of every element
    assert torch.allclose(kps_out[:, :2], kps[:, :2], atol=1e-4)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_keypoint_on_a_bright_dot_lands_on_the_dot(direction):
    torch.manual_seed(5)
    h, w = 64, 96
    centres = torch.tensor([[20.0, 15.0], [70.0, 40.0], [50.0, 50.0]])
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    img = torch.zeros(1, 1, h, w)
    for cx, cy in centres:
        img[0, 0] = torch.maximum(img[0, 0], torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2)))
    aug = RandomMonotoneScale(scale_range=(0.6, 1.6), p=1.0, direction=direction)
    seq = K.AugmentationSequential(aug, data_keys=["input", "keypoints"])
    img_out, kps_out = seq(img, centres[None])
    assert not torch.allclose(kps_out, centres[None], atol=0.5)  # the dots did move
    # the warped image, read at the mapped keypoint, is the dot's peak (1) up to interpolation
    grid = (kps_out / torch.tensor([w - 1.0, h - 1.0]) * 2 - 1)[:, None]
    peak = torch.nn.functional.grid_sample(img_out, grid, align_corners=True)[0, 0, 0]
    assert (peak > 0.85).all()  # (the other map reads ~0 here)
    for k in range(3):
        # and the brightest pixel near it is within a pixel
        px, py = kps_out[0, k].tolist()
        win = ((xs - px).abs() < 6) & ((ys - py).abs() < 6)
        idx = int(torch.argmax(img_out[0, 0] * win))
        assert abs(idx % w - px) <= 1.0 and abs(idx // w - py) <= 1.0


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_keypoints_outside_the_image_move_with_the_border_and_invert_exactly(direction):
    torch.manual_seed(12)
    h, w = 20, 30
    aug = RandomMonotoneScale(p=1.0, direction=direction)
    aug(torch.rand(1, 1, h, w))
    kps = Keypoints(torch.tensor([[[-5.0, 7.0], [35.0, 12.0], [10.0, -3.0], [-2.0, 25.0], [12.0, 9.0]]]))
    out = aug.transform_keypoints(kps.clone(), aug._params, aug.flags).data
    g = element_of(aug._params)
    border = torch.tensor([[[0.0, 7.0], [29.0, 12.0], [10.0, 0.0], [0.0, 19.0], [12.0, 9.0]]])
    moved_border = to_pixels(moved(g, to_unit(border, h, w), direction), h, w)
    assert torch.allclose(out, moved_border + (kps.data - border), atol=1e-4)
    back = aug.inverse_keypoints(Keypoints(out), aug._params, aug.flags).data
    assert torch.allclose(back, kps.data, atol=1e-4)


def test_pipeline_with_kornia_geometric_augmentations_inverts():
    torch.manual_seed(13)
    h, w = 40, 60
    x = torch.rand(3, 3, h, w)
    kps = torch.rand(3, 8, 2) * torch.tensor([w - 1.0, h - 1.0])
    seq = K.AugmentationSequential(
        K.RandomAffine(degrees=30, translate=(0.2, 0.2), p=1.0, align_corners=True),
        RandomMonotoneScale(p=1.0),
        K.RandomHorizontalFlip(p=0.5),
        data_keys=["input", "keypoints"],
    )
    _, kps_out = seq(x, kps)
    _, kps_back = seq.inverse(torch.rand(3, 3, h, w), kps_out)
    assert torch.allclose(kps_back, kps, atol=1e-3)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_keypoints_align_corners_false(direction):
    torch.manual_seed(6)
    h, w = 20, 30
    aug = RandomMonotoneScale(p=1.0, align_corners=False, direction=direction)
    aug(torch.rand(1, 1, h, w))
    kps = Keypoints(torch.tensor([[[-0.5, -0.5], [w - 0.5, h - 0.5], [3.0, 4.0]]]))
    out = aug.transform_keypoints(kps, aug._params, aug.flags).data
    assert torch.allclose(out[0, :2], kps.data[0, :2], atol=1e-4)  # the image corners are fixed
    g = element_of(aug._params)
    unit = (kps.data + 0.5) / torch.tensor([w, h])
    assert torch.allclose(out, moved(g, unit, direction) * torch.tensor([w, h]) - 0.5, atol=1e-4)


# ------------------------------------------------------------------------------------------------ inverse


def test_inverse_round_trip_image():
    torch.manual_seed(7)
    aug = RandomMonotoneScale(scale_range=(0.7, 1.4), p=1.0)
    x = smooth_image(4, 3, 64, 80)
    back = aug.inverse(aug(x))
    err = (back - x).abs()
    assert err.mean() < 5e-3 and err.max() < 0.08


def test_inverse_with_explicit_params():
    aug = RandomMonotoneScale(p=1.0)
    x = smooth_image(2, 3, 32, 32)
    out = aug(x)
    params = aug._params
    aug(torch.rand(2, 3, 32, 32))  # another draw
    back = aug.inverse(out, params=params)
    assert (back - x).abs().mean() < 1e-2


def test_kornia_inverse_transform_hook_matches_inverse():
    aug = RandomMonotoneScale(p=1.0)
    x = smooth_image(2, 3, 24, 24)
    out = aug(x)
    assert torch.equal(aug.inverse_transform(out, aug.flags), aug.inverse(out))


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_container_forward_inverse_round_trip(direction):
    torch.manual_seed(8)
    h, w = 48, 64
    x = smooth_image(4, 3, h, w)
    mask = (smooth_image(4, 1, h, w, seed=3) > 0.5).float()
    kps = torch.rand(4, 10, 2) * torch.tensor([w - 1.0, h - 1.0])
    seq = K.AugmentationSequential(
        RandomMonotoneScale(scale_range=(0.7, 1.4), p=1.0, direction=direction),
        data_keys=["input", "mask", "keypoints"],
    )
    img_out, mask_out, kps_out = seq(x, mask, kps)
    assert not torch.allclose(kps_out, kps, atol=0.1)
    g = element_of(seq[0]._params)
    assert torch.equal(mask_out, resampled(mask, g, direction, mode="nearest"))
    img_back, mask_back, kps_back = seq.inverse(img_out, mask_out, kps_out)
    assert (img_back - x).abs().mean() < 1e-2
    assert set(mask_back.unique().tolist()) <= {0.0, 1.0}
    assert (mask_back != mask).float().mean() < 0.02
    assert torch.allclose(kps_back, kps, atol=2e-3)  # float32 precision on pixel coordinates
    # the inverse resamples the mask in the other direction, on the same element
    other = "warp" if direction == "unwarp" else "unwarp"
    assert torch.equal(mask_back, resampled(mask_out, g, other, mode="nearest"))


def test_container_mixed_gate_and_replay():
    torch.manual_seed(9)
    h, w = 24, 32
    x = smooth_image(8, 3, h, w)
    mask = (x[:, :1] > 0.5).float()
    kps = torch.rand(8, 5, 2) * torch.tensor([w - 1.0, h - 1.0])
    seq = K.AugmentationSequential(RandomMonotoneScale(p=0.5), data_keys=["input", "mask", "keypoints"])
    img_out, mask_out, kps_out = seq(x, mask, kps)
    applied = seq[0]._params["batch_prob"] > 0.5
    assert 0 < int(applied.sum()) < 8
    assert torch.equal(img_out[~applied], x[~applied])
    assert torch.equal(mask_out[~applied], mask[~applied])
    assert torch.equal(kps_out[~applied], kps[~applied])
    assert not torch.allclose(kps_out[applied], kps[applied], atol=0.1)
    # replay through the container gives identical outputs
    img_2, mask_2, kps_2 = seq(x, mask, kps, params=seq._params)
    assert torch.equal(img_2, img_out) and torch.equal(mask_2, mask_out) and torch.equal(kps_2, kps_out)
    # inverse
    _, _, kps_back = seq.inverse(img_out, mask_out, kps_out)
    assert torch.equal(kps_back[~applied], kps[~applied])
    assert torch.allclose(kps_back, kps, atol=2e-3)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_inverse_keypoints_float64_precision(direction):
    torch.manual_seed(10)
    h, w = 100, 150
    aug = RandomMonotoneScale(p=1.0, direction=direction)
    aug(torch.rand(3, 1, h, w, dtype=torch.float64))
    kps = Keypoints(
        torch.rand(3, 20, 2, dtype=torch.float64) * torch.tensor([w - 1.0, h - 1.0], dtype=torch.float64)
    )
    fwd = aug.transform_keypoints(kps.clone(), aug._params, aug.flags)
    back = aug.inverse_keypoints(fwd, aug._params, aug.flags)
    assert not torch.allclose(fwd.data, kps.data, atol=0.1)
    # exact inverse: the round trip is at float64 precision (1e-10 in unit coordinates)
    assert torch.allclose(back.data, kps.data, atol=1e-10 * max(h, w), rtol=0)


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_direction_matches_the_functional_warps(direction):
    torch.manual_seed(14)
    aug = RandomMonotoneScale(p=1.0, direction=direction)
    assert aug.direction == direction
    x = smooth_image(3, 2, 24, 40)
    out = aug(x)
    g = element_of(aug._params)
    assert torch.equal(out, resampled(x, g, direction))
    other = "warp" if direction == "unwarp" else "unwarp"
    assert torch.equal(aug.inverse(out), resampled(out, g, other))


def test_directions_apply_inverse_elements():
    """``"unwarp"`` with l equals ``"warp"`` with l^-1: S^-1(x; l) = S(x; l^-1), up to the exact inverse."""
    torch.manual_seed(15)
    x = smooth_image(2, 1, 48, 48, dtype=torch.float64)
    aug = RandomMonotoneScale(p=1.0, direction="unwarp")
    out = aug(x)
    g = element_of(aug._params, dtype=torch.float64)
    via_inverse = monowarp.sample_at(x, g.dense_map((48, 48)))
    torch.testing.assert_close(out, via_inverse)
    torch.testing.assert_close(out, monowarp.warp(x, g.inverse()), atol=1e-10, rtol=0)


def test_default_direction_is_unwarp():
    assert RandomMonotoneScale().direction == "unwarp"


def test_gradient_flows_to_the_input():
    aug = RandomMonotoneScale(p=1.0)
    x = smooth_image(2, 1, 16, 16).requires_grad_(True)
    aug(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ exceptions


@pytest.mark.parametrize(
    "scale_range",
    [(2.0, 3.0), (0.5, 0.9), (0.0, 2.0), (-1.0, 2.0), (1.5, 0.5), "ab", (1.0,), (0.5, float("inf"))],
)
def test_bad_scale_range(scale_range):
    with pytest.raises(ValueError, match="scale_range"):
        RandomMonotoneScale(scale_range=scale_range)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid": (0, 4)}, "grid"),
        ({"grid": (4,)}, "grid"),
        ({"p": 1.5}, "p must"),
        ({"padding_mode": "wrap"}, "padding_mode"),
        ({"mode": "bicubic"}, "mode"),
        ({"direction": "forward"}, "direction"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RandomMonotoneScale(**kwargs)


def test_params_without_knots_raise():
    aug = RandomMonotoneScale(p=1.0)
    with pytest.raises(ValueError, match="knots_x"):
        aug(
            torch.rand(1, 1, 8, 8),
            params={"batch_prob": torch.ones(1), "forward_input_shape": torch.tensor([1, 1, 8, 8])},
        )


def test_params_with_wrong_batch_raise():
    aug = RandomMonotoneScale(p=1.0)
    aug(torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="knots_x"):
        aug(torch.rand(3, 1, 8, 8), params=aug._params)


def test_boxes_are_refused():
    seq = K.AugmentationSequential(RandomMonotoneScale(p=1.0), data_keys=["input", "bbox_xyxy"])
    with pytest.raises(NotImplementedError, match="keypoints"):
        seq(torch.rand(1, 3, 16, 16), torch.tensor([[[1.0, 1.0, 5.0, 5.0]]]))
