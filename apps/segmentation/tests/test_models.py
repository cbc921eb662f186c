"""The DPT-style head on each backbone family, the canonicalizing models and their inverse option."""

from __future__ import annotations

import pytest
import torch
from lse_segmentation.models import DenseHead, SegmentationModel, build_model, default_indices
from lse_segmentation.options import SegModel

from lse_common.options import CanonOptions

SIZE = (32, 48)
SMALL_CANON = CanonOptions(layers=["input", 0], dec_widths=[4, 8], dec_view_size=24, energy_width=4)

FAMILIES = {  # tiny, random-initialised members of each family (no download)
    "cnn": SegModel(backbone="tf_efficientnet_lite0", pretrained=False, head_width=8),
    "vit": SegModel(backbone="vit_tiny_patch16_224", pretrained=False, head_width=8, depth=4, patch_size=8),
    "swin": SegModel(
        backbone="swin_tiny_patch4_window7_224",
        pretrained=False,
        head_width=8,
        window_size=4,
        depth=[1, 1, 1, 1],
    ),
    "dinov2": SegModel(backbone="vit_small_patch14_reg4_dinov2", pretrained=False, head_width=8, depth=4),
}
KINDS = {"cnn": "fpn", "vit": "dpt", "swin": "fpn", "dinov2": "dpt"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_head_output_shape_per_family(family):
    size = (28, 42) if family == "dinov2" else SIZE  # DINOv2's 14-pixel patches
    model = build_model(FAMILIES[family], size, 5, "aug", SMALL_CANON).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *size))
    assert out.shape == (2, 6, *size)  # 5 classes and the background, at the input size
    assert model.head.kind == KINDS[family]
    assert len(model.indices) == 4


def test_default_indices():
    assert default_indices([16] * 12) == [2, 5, 8, 11]  # DPT's blocks of a 12-block ViT
    assert default_indices([2, 4, 8, 16, 32]) == [1, 2, 3, 4]  # the last levels of a pyramid
    assert default_indices([16, 16], 4) == [0, 1]
    with pytest.raises(ValueError, match="feature_info"):
        default_indices([])


def test_dense_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="one length"):
        DenseHead([8, 8], [16], 3)
    with pytest.raises(ValueError, match="num_classes"):
        DenseHead([8], [16], 1)
    head = DenseHead([8, 8], [16, 16], 3, width=4)
    with pytest.raises(ValueError, match="expected 2 features"):
        head([torch.rand(1, 8, 2, 2)], (32, 32))


def test_bad_input_and_indices_are_refused():
    model = build_model(FAMILIES["cnn"], SIZE, 3, "aug", SMALL_CANON)
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(1, 1, *SIZE))
    bad = SegModel(backbone="tf_efficientnet_lite0", pretrained=False, indices=[7])
    with pytest.raises(ValueError, match=r"model\.indices"):
        build_model(bad, SIZE, 3, "aug", SMALL_CANON)


@pytest.mark.parametrize("method", ["canon", "dec"])
def test_canonicalizing_models_start_at_the_plain_model(method):
    torch.manual_seed(0)
    plain = build_model(FAMILIES["cnn"], SIZE, 3, "aug", SMALL_CANON).eval()
    torch.manual_seed(0)  # the same backbone and head weights; the canonicalizers come after them
    adapted = build_model(FAMILIES["cnn"], SIZE, 3, method, SMALL_CANON).eval()
    assert adapted.adapted and adapted.restore_input
    x = torch.rand(2, 3, *SIZE)
    with torch.no_grad():
        out, results = adapted(x, return_results=True)
        assert "input" in results
        assert torch.allclose(out, plain(x), atol=1e-4)  # canonicalizers start at the identity


def test_dec_inverse_switch_reaches_every_warp():
    model = build_model(FAMILIES["cnn"], SIZE, 3, "dec", SMALL_CANON).eval()
    for canon in model.net.canonicalizers.values():  # push every DEC away from the identity
        for p in canon.parameters():
            torch.nn.init.normal_(p, std=0.3)
    x = torch.rand(2, 3, *SIZE)
    with torch.no_grad():
        exact = model(x)
        model.inverse = "approximate"
        assert model.net.inverse == "approximate"
        approx = model(x)
    assert exact.shape == approx.shape
    assert not torch.allclose(exact, approx, atol=1e-4)
    with pytest.raises(ValueError, match="inverse"):
        model.inverse = "newton"


def test_plain_model_has_no_canonicalizers():
    model = build_model(FAMILIES["cnn"], SIZE, 3, "augl", SMALL_CANON)
    assert isinstance(model, SegmentationModel) and not model.adapted
    out, results = model(torch.rand(1, 3, *SIZE), return_results=True)
    assert results == {} and out.shape[1] == 4
