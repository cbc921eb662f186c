"""Feature layouts: detection from the model, exact round trips, agreement with timm's own reshapes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from latentcanon import Layout, ModelLayout, from_nchw, to_nchw, unwarp_feature, warp_feature

SWIN = dict(img_size=(32, 64), window_size=2, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1))

LAYOUT_CASES = [
    (Layout("nchw"), (2, 5, 3, 4)),
    (Layout("nhwc"), (2, 3, 4, 5)),
    (Layout("tokens", num_prefix_tokens=0, grid_size=(3, 4)), (2, 12, 5)),
    (Layout("tokens", num_prefix_tokens=1, grid_size=(2, 3)), (2, 7, 5)),
    (Layout("tokens", num_prefix_tokens=5, grid_size=(3, 2)), (1, 11, 5)),
]


@pytest.mark.parametrize("layout,shape", LAYOUT_CASES)
def test_round_trip_is_exact(layout, shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    fmap, prefix = to_nchw(x, layout)
    assert fmap.ndim == 4 and fmap.shape[:2] == (shape[0], 5)
    assert fmap.shape[2:] == (layout.grid_size if layout.kind == "tokens" else (3, 4))
    back = from_nchw(fmap, layout, prefix)
    assert torch.equal(back, x) and back.is_contiguous()


def test_tokens_are_row_major_on_the_grid():
    layout = Layout("tokens", num_prefix_tokens=1, grid_size=(2, 3))
    x = torch.arange(7.0).reshape(1, 7, 1)  # token t has value t
    fmap, prefix = to_nchw(x, layout)
    assert prefix.flatten().tolist() == [0.0]
    assert fmap[0, 0].tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


@pytest.mark.parametrize("layout,shape", LAYOUT_CASES)
def test_warp_round_trip_and_prefix(layout, shape, column_scale):
    x = torch.randn(shape, dtype=torch.float64)
    params = torch.randn(shape[0], 1, dtype=torch.float64)
    y = unwarp_feature(x, column_scale, params, layout)
    assert y.shape == x.shape
    torch.testing.assert_close(warp_feature(y, column_scale, params, layout), x)
    if layout.num_prefix_tokens:
        assert torch.equal(y[:, : layout.num_prefix_tokens], x[:, : layout.num_prefix_tokens])
    assert not torch.allclose(y, x)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(kind="chw"), "kind must be one of"),
        (dict(kind="tokens"), "grid_size"),
        (dict(kind="tokens", grid_size=(0, 2)), "grid_size"),
        (dict(kind="tokens", grid_size=(2, 2), num_prefix_tokens=-1), "num_prefix_tokens"),
        (dict(kind="nchw", num_prefix_tokens=1), "tokens layout only"),
    ],
)
def test_layout_validation(kwargs, error):
    with pytest.raises(ValueError, match=error):
        Layout(**kwargs)


def test_model_layout_from_models():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, reg_tokens=4, dynamic_img_size=True)
    layout = ModelLayout.from_model(vit)
    assert layout.num_prefix_tokens == 5 and not layout.channels_last
    assert layout.detect(torch.zeros(1, 5 + 6, 192), (32, 48)) == Layout("tokens", 5, (2, 3))
    assert layout.detect(torch.zeros(1, 5 + 6, 192), (48, 32)) == Layout("tokens", 5, (3, 2))
    swin = timm.create_model("swin_tiny_patch4_window7_224", **SWIN)
    assert ModelLayout.from_model(swin).detect(torch.zeros(1, 8, 16, 24), (32, 64)) == Layout("nhwc")
    resnet = timm.create_model("resnet18")
    assert ModelLayout.from_model(resnet).detect(torch.zeros(1, 8, 16, 24), (32, 64)) == Layout("nchw")


def test_model_layout_errors():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1)
    layout = ModelLayout.from_model(vit)
    with pytest.raises(ValueError, match="1 prefix tokens \\+ a 2x2 patch grid"):
        layout.detect(torch.zeros(1, 6, 192), (32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\).*\(B, H, W, C\).*\(B, P \+ H\*W, C\)"):
        layout.detect(torch.zeros(4, 192), (32, 32))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        layout.detect((torch.zeros(1, 5, 192),), (32, 32))
    bare = ModelLayout(num_prefix_tokens=1)  # no patch_embed: the grid must be square
    assert bare.detect(torch.zeros(1, 10, 3), (1, 1)).grid_size == (3, 3)
    with pytest.raises(ValueError, match="not a square"):
        bare.detect(torch.zeros(1, 7, 3), (1, 1))


@pytest.mark.parametrize(
    "name,kwargs,size",
    [
        ("vit_tiny_patch16_224", dict(img_size=32, depth=2, dynamic_img_size=True), (32, 48)),
        (
            "vit_small_patch14_reg4_dinov2",
            dict(img_size=(28, 42), depth=2, embed_dim=48, num_heads=2),
            (28, 42),
        ),
        ("swin_tiny_patch4_window7_224", SWIN, (32, 64)),
    ],
)
def test_to_nchw_matches_timm_forward_intermediates(name, kwargs, size):
    """timm's own NCHW intermediates are the block outputs seen through our layout."""
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    x = torch.randn(2, 3, *size)
    seen = []
    layer = model.get_submodule(model.feature_info[1]["module"])
    layer.register_forward_hook(lambda m, a, out: seen.append(out))
    with torch.no_grad():
        timm_nchw = model.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
    ours, _ = to_nchw(seen[0], ModelLayout.from_model(model).detect(seen[0], size))
    assert torch.equal(ours, timm_nchw)


def test_model_without_patch_embed_uses_square_grid():
    model = nn.Module()
    assert ModelLayout.from_model(model) == ModelLayout()
