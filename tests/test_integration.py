"""Cross-package checks: monowarp's group measured with lsmetrics, and canonicalization end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lsmetrics
import monowarp


def _smooth_images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images (low-frequency noise upsampled), so interpolation errors stay small."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)


def test_pointwise_model_is_equivariant_to_monotone_scaling():
    # A 1x1 convolution commutes with any resampling: EquE is zero up to float rounding.
    torch.manual_seed(0)
    model = nn.Conv2d(3, 5, kernel_size=1)
    images = _smooth_images(6, 24, 32)
    sample = lambda x: monowarp.sample_monotone_scale(x.shape[0], scale_range=(0.5, 2.0))  # noqa: E731
    err = lsmetrics.measure_equivariance(
        model, images, monowarp.warp, monowarp.warp, sample=sample, num_samples=2, softmax=False
    )
    assert err.item() < 1e-10


def test_spatial_model_is_not_equivariant_and_the_metric_sees_it():
    # A model that mixes a large neighbourhood does not commute with local scaling.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, kernel_size=9, padding=4), nn.Tanh(), nn.Conv2d(5, 5, 9, padding=4))
    images = _smooth_images(6, 24, 32)
    sample = lambda x: monowarp.sample_monotone_scale(x.shape[0], scale_range=(0.4, 2.5))  # noqa: E731
    pointwise = nn.Conv2d(3, 5, kernel_size=1)
    e_spatial = lsmetrics.measure_equivariance(
        model, images, monowarp.warp, monowarp.warp, sample=sample, num_samples=2, softmax=False
    )
    e_pointwise = lsmetrics.measure_equivariance(
        pointwise, images, monowarp.warp, monowarp.warp, sample=sample, num_samples=2, softmax=False
    )
    assert e_spatial.item() > 1e3 * max(e_pointwise.item(), 1e-12)


def test_max_pooled_classifier_is_nearly_invariant_and_a_linear_one_is_not():
    torch.manual_seed(0)
    images = _smooth_images(8, 32, 32)
    # Global max over a pointwise feature map: invariant to any resampling up to interpolation.
    invariant = nn.Sequential(nn.Conv2d(3, 10, 1), nn.AdaptiveMaxPool2d(1), nn.Flatten())
    # A linear read-out of the whole image: moves with every pixel.
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    nn.init.normal_(linear[1].weight, std=0.5)
    transforms = [lambda x: monowarp.warp(x, monowarp.sample_monotone_scale(x.shape[0]))] * 4
    e_inv = lsmetrics.measure_invariance(invariant, images, transforms)
    e_lin = lsmetrics.measure_invariance(linear, images, transforms)
    assert e_inv.item() < 1e-3
    assert e_lin.item() > 10 * e_inv.item()


def test_oracle_canonicalization_makes_a_classifier_exactly_invariant():
    # If the element g of every input is known, classifying S^-1(S(x; g); g) = x gives the same answer
    # as on x: the canonicalization identity of eq. 6 with monowarp's exact inverse.
    torch.manual_seed(0)
    x = _smooth_images(4, 40, 48)
    g = monowarp.sample_monotone_scale(4, scale_range=(0.6, 1.6))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    p_ref = model(x).softmax(-1)
    p_canon = model(monowarp.unwarp(monowarp.warp(x, g), g)).softmax(-1)
    p_raw = model(monowarp.warp(x, g)).softmax(-1)
    e_canon = lsmetrics.invariance_error(p_ref, p_canon)
    e_raw = lsmetrics.invariance_error(p_ref, p_raw)
    assert e_canon.item() < 0.05 * e_raw.item()


@pytest.mark.parametrize("mode", ["invariant", "equivariant"])
def test_adapted_backbone_with_fresh_dec_equals_the_base_model(mode):
    timm = pytest.importorskip("timm")
    latentcanon = pytest.importorskip("latentcanon")
    torch.manual_seed(0)
    base = timm.create_model("resnet18", pretrained=False, num_classes=7).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = base(x)
    adapted = latentcanon.adapt(base, layers=["input", 1], mode=mode).eval()
    with torch.no_grad():
        out, results = adapted(x, return_results=True)
    # A fresh DEC starts at the identity element, so the adapted network is the base network.
    assert torch.allclose(out, ref, atol=1e-5)
    assert len(results) == 2
