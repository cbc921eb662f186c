"""The wrapper: argument errors, hook hygiene, results, parameter groups, copies, the default DEC."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import latentcanon
from latentcanon import LatentCanonicalizedModel, adapt


def vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        depth=2,
        embed_dim=48,
        num_heads=2,
        num_classes=5,
        **kwargs,
    ).eval()


X = torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(mode="covariant"), ValueError, "mode must be one of 'invariant', 'equivariant'"),
        (dict(source="image"), ValueError, "source must be one of 'input', 'feature'"),
        (dict(canonicalizer="dec"), TypeError, "canonicalizer must be a callable"),
        (dict(canonicalizer=lambda c: nn.Identity()), TypeError, "group.*act_inverse"),
        (dict(layers=[7]), ValueError, "out of range"),
        (dict(layers=[0.5]), TypeError, "entry 0.5"),
        (dict(input_size=(32, 32)), ValueError, "input_size must be"),
    ],
)
def test_adapt_argument_errors(kwargs, error, match, canon_factory):
    model = vit()
    before = [len(m._forward_pre_hooks) for m in model.modules()]
    with pytest.raises(error, match=match):
        adapt(model, **{"layers": [0], "canonicalizer": canon_factory(), **kwargs})
    assert [len(m._forward_pre_hooks) for m in model.modules()] == before  # nothing left behind


class FlatBlocks(nn.Module):
    """Blocks on `(B, C)` vectors: no spatial layout to canonicalize."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x.mean((2, 3)))


def test_unsupported_models_get_clear_errors(canon_factory):
    with pytest.raises(TypeError, match=r"feature_info.*blocks.*stages.*layers"):
        adapt(nn.Sequential(nn.Conv2d(3, 3, 1)), layers=1, canonicalizer=canon_factory())
    with pytest.raises(ValueError, match=r"'blocks.0'.*\(B, C, H, W\).*\(B, H, W, C\).*\(B, P \+ H\*W, C\)"):
        adapt(FlatBlocks(), layers=[0], canonicalizer=canon_factory(), input_size=(3, 8, 8))


def test_calling_the_backbone_while_adapted_is_an_error(canon_factory):
    model = vit()
    adapted = adapt(model, layers=[0], canonicalizer=canon_factory())
    with pytest.raises(RuntimeError, match="outside its LatentCanonicalizedModel"):
        model(X)
    adapted.remove()
    model(X)


def test_a_layer_cannot_be_adapted_twice(canon_factory):
    model = vit()
    first = adapt(model, layers=[0], canonicalizer=canon_factory())
    with pytest.raises(ValueError, match="already adapted"):
        adapt(model, layers=[0, 1], canonicalizer=canon_factory())
    first.remove()
    adapt(model, layers=[0, 1], canonicalizer=canon_factory()).remove()


def test_input_only_and_results_are_returned_not_kept(canon_factory):
    model = vit()
    with torch.no_grad():
        expected = model(X)
        adapted = adapt(model, layers="input", canonicalizer=canon_factory(offset=0.7))
        assert not any(len(m._forward_pre_hooks) for m in model.modules())  # the image needs no hook
        out, results = adapted(X, return_results=True)
        again = adapted(X)
    assert list(results) == ["input"]
    assert torch.equal(results["input"].params, torch.full((2, 1), 0.7))
    assert torch.is_tensor(again) and torch.equal(again, out)
    assert not torch.allclose(out, expected)
    adapted.remove()
    with torch.no_grad():
        assert torch.equal(adapted(X), expected)


def test_source_input_reads_the_canonical_image(canon_factory):
    """With "input" adapted too, the other canonicalizers read the image the backbone receives."""
    seen = []

    class Spy(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.inner = canon_factory(offset=0.5)(c)
            self.group = self.inner.group

        def forward(self, x):
            seen.append(x)
            return self.inner(x)

    adapted = adapt(vit(), layers=["input", 0], canonicalizer=Spy)
    with torch.no_grad():
        _, results = adapted(X, return_results=True)
    assert seen[0] is X and torch.equal(seen[1], results["input"].canonical)


def test_param_groups_work_with_timm_optimizer_factory(canon_factory):
    adapted = adapt(vit(), layers=["input", 0], canonicalizer=canon_factory(init_std=0.1))
    groups = adapted.param_groups(backbone_lr=1e-5, canonicalizer_lr=1e-2, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in adapted.parameters()) and len(ids) == len(set(ids))
    by_name = {g["name"] for g in groups}
    assert by_name == {"backbone", "canonicalizers"}
    for group in groups:
        assert group["lr"] == (1e-5 if group["name"] == "backbone" else 1e-2)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(adapted.backbone.pos_embed) in no_decay and id(adapted.backbone.cls_token) in no_decay
    assert id(adapted.backbone.blocks[0].attn.qkv.weight) not in no_decay
    opt = timm.optim.create_optimizer_v2(groups, "adamw", lr=1e-3, weight_decay=0.05)
    assert sorted({g["lr"] for g in opt.param_groups}) == [1e-5, 1e-2]
    before = adapted.canonicalizers["input"].head.weight.clone()
    adapted.train()
    adapted(X).square().mean().backward()
    opt.step()
    assert not torch.equal(before, adapted.canonicalizers["input"].head.weight)
    # timm's param_group_fn hook and layer decay
    opt = timm.optim.create_optimizer_v2(adapted, "sgd", lr=0.1, param_group_fn=lambda m: m.param_groups())
    assert all(g["lr"] == 0.1 for g in opt.param_groups)
    decayed = adapted.param_groups(layer_decay=0.5, weight_decay=0.05)
    scales = {g["lr_scale"] for g in decayed if g["name"] == "backbone"}
    assert len(scales) > 2 and max(scales) == 1.0
    assert all("lr_scale" not in g for g in decayed if g["name"] == "canonicalizers")


def test_deepcopy_is_independent(canon_factory):
    model = vit()
    with torch.no_grad():
        expected = model(X)
    adapted = adapt(
        model, layers=["input", 0, 1], mode="equivariant", canonicalizer=canon_factory(offset=0.4)
    )
    clone = copy.deepcopy(adapted)
    with torch.no_grad():
        torch.testing.assert_close(clone(X), adapted(X), atol=0, rtol=0)
    clone.remove()
    with torch.no_grad():
        torch.testing.assert_close(clone(X), expected, atol=0, rtol=0)
        assert not torch.allclose(adapted(X), expected)


def test_wrapper_built_directly_and_repr(canon_factory):
    model = vit()
    adapted = LatentCanonicalizedModel(
        model,
        {"blocks.1": canon_factory()(48), "input": canon_factory()(3)},
        mode="equivariant",
        source="feature",
    )
    assert adapted.layers == ("input", "blocks.1") and adapted.keys == ("input", "blocks_1")
    assert "mode='equivariant'" in repr(adapted) and "blocks.1" in repr(adapted)
    with pytest.raises(ValueError, match="not a layer name"):
        LatentCanonicalizedModel(vit(), {"head": canon_factory()(48)})
    with pytest.raises(ValueError, match="non-empty mapping"):
        LatentCanonicalizedModel(vit(), {})


def test_input_must_be_an_image(canon_factory):
    adapted = adapt(vit(), layers=[0], canonicalizer=canon_factory())
    with pytest.raises(ValueError, match=r"x must have shape \(B, C, H, W\)"):
        adapted(torch.randn(3, 32, 32))


# ---- the default canonicalizer: deqcanon's DEC -------------------------------------------------------------
@pytest.mark.parametrize("mode", latentcanon.MODES)
@pytest.mark.parametrize(
    "name,kwargs,size,layers",
    [
        (
            "vit_tiny_patch16_224",
            dict(img_size=64, depth=2, embed_dim=48, num_heads=2),
            (64, 64),
            ["input", 0],
        ),
        ("resnet18", dict(zero_init_last=False), (64, 96), ["input", 1]),
    ],
)
def test_default_dec_starts_at_the_identity(name, kwargs, size, layers, mode):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=5, **kwargs).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        expected = model(x)
    adapted = adapt(model, layers=layers, mode=mode, source="feature", input_size=(3, *size))
    assert all(type(c).__name__ == "DEQCanonicalizer" for c in adapted.canonicalizers.values())
    with torch.no_grad():
        out, results = adapted(x, return_results=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert all(r.params.shape == (2, 40) for r in results.values())
    adapted.train()
    adapted(x).sum().backward()
    assert all(p.grad is not None for p in adapted.parameters())
