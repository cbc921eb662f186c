"""adapt() refuses, in its probe pass, families whose features it cannot warp consistently with the image.

Each case below was accepted or failed late before the probe checked layouts: Hiera keeps its tokens unrolled
by mask units (not in raster order) and SAM's ViT and PVT-v2's first stage pass channels-last features without
declaring them (both were silently warped along the wrong axes); PiT and CrossViT feed their layers tuples or
lists; Twins names layers in `feature_info` that its forward never calls. Random weights, small inputs.
"""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from latentcanon import UnsupportedLayoutError, adapt, probe_layers

# name: (timm model, kwargs, input (H, W), layers, what the message must say)
UNSUPPORTED = {
    "hiera_tokens_unrolled": (
        "hiera_tiny_224",
        dict(embed_dim=24, num_heads=1, stages=(1, 1, 1, 1)),
        (224, 224),
        [0],
        r"layer 'blocks\.0' of Hiera: its input feature, laid on a 56x56 grid, does not follow the image",
    ),
    "sam_undeclared_nhwc": (
        "samvit_base_patch16",
        dict(depth=2, img_size=64, embed_dim=48, num_heads=2, global_attn_indexes=()),
        (64, 64),
        [-1],
        r"layer 'blocks\.1' of VisionTransformerSAM: its input feature, laid on a 4x48 grid, does not follow",
    ),
    "pvt_v2_first_stage": (
        "pvt_v2_b0",
        {},
        (64, 64),
        [0],
        r"layer 'stages\.0' of PyramidVisionTransformerV2: its input feature, laid on a 16x32 grid",
    ),
    "pit_tuple_input": (
        "pit_ti_224",
        {},
        (224, 224),
        [0],
        r"layer 'transformers\.0' of PoolingVisionTransformer: its first positional input is tuple, not one "
        r"feature tensor",
    ),
    "twins_not_called": (
        "twins_pcpvt_small",
        dict(depths=(1, 1, 1, 1)),
        (64, 64),
        [0],
        r"layers \['blocks\.0'\] of Twins: they did not run in a forward pass",
    ),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_family_is_refused_by_adapt(case, canon_factory):
    name, kwargs, size, layers, message = UNSUPPORTED[case]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=3, **kwargs).eval()
    hooks_before = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    with pytest.raises(UnsupportedLayoutError, match=message) as info:
        adapt(model, layers=layers, canonicalizer=canon_factory(offset=0.3), input_size=(3, *size))
    assert isinstance(info.value, ValueError) and "adapt() cannot adapt" in str(info.value)
    assert "\n" not in str(info.value)
    # the probe leaves the model as it was: no hooks, eval mode kept, and it still runs
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == hooks_before
    assert not model.training
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 3)


def test_hiera_was_silently_permuted_without_the_spatial_check(canon_factory):
    """Without the spatial pass, Hiera is adapted and its unrolled tokens warped as a grid."""
    name, kwargs, size, _, _ = UNSUPPORTED["hiera_tokens_unrolled"]
    model = timm.create_model(name, num_classes=3, **kwargs).eval()
    with adapt(
        model, layers=[0], canonicalizer=canon_factory(), input_size=(3, *size), check_layout=False
    ) as a:
        assert a.layers == ("blocks.0",)


def test_probe_accepts_a_transposed_grid_only_when_it_follows_the_image():
    """A block that reads a transposed (B, C, W, H) map is refused; the same map untransposed passes."""

    class Toy(nn.Module):
        def __init__(self, transpose: bool) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.blocks = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))
            self.transpose = transpose

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.stem(x)
            return self.blocks(y.transpose(2, 3) if self.transpose else y)

    torch.manual_seed(0)
    assert probe_layers(Toy(False), ["blocks.0"], (3, 24, 24)) == {"blocks.0": 4}
    with pytest.raises(UnsupportedLayoutError, match=r"layer 'blocks\.0' of Toy: its input feature"):
        probe_layers(Toy(True), ["blocks.0"], (3, 24, 24))
    with pytest.raises(UnsupportedLayoutError, match="does not follow"):
        probe_layers(Toy(True), ["blocks.0"], (3, 24, 24), check_outputs=True)
    assert probe_layers(Toy(True), ["blocks.0"], (3, 24, 24), check_spatial=False) == {"blocks.0": 4}
    with torch.no_grad(), pytest.raises(UnsupportedLayoutError, match="does not follow"):
        probe_layers(Toy(True), ["blocks.0"], (3, 24, 24))  # the spatial pass turns gradients on itself
    with torch.inference_mode():
        assert probe_layers(Toy(True), ["blocks.0"], (3, 24, 24)) == {"blocks.0": 4}  # no gradients: skipped


def test_check_layout_must_be_a_bool(canon_factory):
    model = timm.create_model("resnet10t", num_classes=3)
    with pytest.raises(TypeError, match="check_layout must be a bool"):
        adapt(model, layers=[0], canonicalizer=canon_factory(), check_layout="no")  # type: ignore[arg-type]
