"""Layer discovery and timm-style `layers=` selection."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from latentcanon import INPUT, find_layers, resolve_layers

NAMES = ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]


@pytest.mark.parametrize(
    "name,kwargs,expected",
    [
        ("vit_tiny_patch16_224", dict(img_size=32, depth=3), ["blocks.0", "blocks.1", "blocks.2"]),
        (
            "swin_tiny_patch4_window7_224",
            dict(img_size=32, window_size=2, depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1)),
            ["layers.0", "layers.1", "layers.2", "layers.3"],
        ),
        ("resnet18", {}, ["act1", "layer1", "layer2", "layer3", "layer4"]),
        ("tf_efficientnet_lite0", {}, ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]),
        ("convnext_atto", {}, ["stages.0", "stages.1", "stages.2", "stages.3"]),
    ],
)
def test_find_layers_follows_feature_info(name, kwargs, expected):
    model = timm.create_model(name, pretrained=False, **kwargs)
    found = find_layers(model)
    assert [n for n, _ in found] == expected
    assert all(module is model.get_submodule(n) for n, module in found)
    # the same indices as timm's forward_intermediates
    assert len(found) == len(model.feature_info)


class Staged(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stages = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x)).mean((2, 3))


def test_find_layers_falls_back_to_containers():
    assert [n for n, _ in find_layers(Staged())] == ["stages.0", "stages.1", "stages.2"]


@pytest.mark.parametrize("model", [nn.Linear(3, 3), nn.Sequential(nn.Conv2d(3, 3, 1))])
def test_find_layers_unsupported_model_names_what_is_supported(model):
    with pytest.raises(TypeError, match=r"feature_info.*blocks.*stages.*layers"):
        find_layers(model)


def test_find_layers_rejects_non_modules():
    with pytest.raises(TypeError, match=r"nn\.Module"):
        find_layers("resnet18")


@pytest.mark.parametrize(
    "layers,expected",
    [
        (1, ["blocks.3"]),
        (4, NAMES),
        ([0], ["blocks.0"]),
        ([-1, 0], ["blocks.0", "blocks.3"]),
        ((2, -4), ["blocks.0", "blocks.2"]),
        ("input", [INPUT]),
        ([1, "input"], [INPUT, "blocks.1"]),
        (["blocks.2", 0], ["blocks.0", "blocks.2"]),
        ("blocks.1", ["blocks.1"]),
    ],
)
def test_resolve_layers(layers, expected):
    assert resolve_layers(layers, NAMES) == expected


@pytest.mark.parametrize(
    "layers,error,match",
    [
        (0, ValueError, "out of range"),
        (5, ValueError, "out of range"),
        ([4], ValueError, "index 4 is out of range"),
        ([-5], ValueError, "index -5 is out of range"),
        ([], ValueError, "empty"),
        ([0, -4], ValueError, "twice"),
        (["input", "input"], ValueError, "twice"),
        (["head"], ValueError, "not a layer name"),
        ("stem", ValueError, "not a layer name"),
        (1.5, TypeError, "float"),
        (True, TypeError, "bool"),
        (None, TypeError, "NoneType"),
        ([0.0], TypeError, "entry 0.0"),
        ([[0]], TypeError, "entry"),
        ([False], TypeError, "entry False"),
    ],
)
def test_resolve_layers_errors_name_what_is_valid(layers, error, match):
    with pytest.raises(error, match=match) as info:
        resolve_layers(layers, NAMES)
    message = str(info.value)
    if "twice" not in message:
        assert "'blocks.3'" in message and "'input'" in message and "-4..3" in message
