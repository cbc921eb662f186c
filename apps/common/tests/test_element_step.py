"""The element-equivariance term of the paired step, the step each app trains a method with, and resuming a
run whose stored configuration predates an option."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
from torch import nn

import deqcanon
import latentcanon
from lse_common.objectives import augmented_step, element_equivariance, method_step, paired_step
from lse_common.options import CanonOptions, TrainOptions
from lse_common.runs import RunFolder, config_differences
from lse_common.training import option_defaults


class _Classifier(nn.Module):
    def __init__(self, net, head):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x, return_results=False):
        if return_results:
            feats, results = self.net.forward_features(x, return_results=True)
            return self.head(feats.mean((2, 3))), results
        return self.head(self.net.forward_features(x).mean((2, 3)))


def _adapted() -> _Classifier:
    torch.manual_seed(0)
    backbone = timm.create_model("resnet10t", num_classes=0, pretrained=False)
    group = deqcanon.MonotoneScaleGroup(grid=(3, 3))
    adapted = latentcanon.adapt(
        backbone,
        layers=["input"],
        input_size=(3, 32, 32),
        canonicalizer=lambda c: deqcanon.DEQCanonicalizer(
            group, deqcanon.ParamNet(group, c, widths=(4, 8), head="bounded")
        ),
    )
    return _Classifier(adapted, nn.Linear(backbone.num_features, 3))


class _NoCanon(nn.Module):
    """A model that returns canonicalizer results, none with a monotone-scaling element."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x, return_results=False):
        return (self.net(x), {}) if return_results else self.net(x)


def _batch():
    torch.manual_seed(3)
    return torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize("direction", ["unwarp", "warp"])
def test_paired_step_logs_and_weighs_the_element_equivariance_of_the_canonicalizer(direction):
    model = _adapted()
    batch = _batch()
    torch.manual_seed(1)
    loss0, m0 = paired_step(lambda b: b, weight=0.0, log_warps=True, direction=direction)(model, batch)
    torch.manual_seed(1)
    step = paired_step(lambda b: b, weight=0.0, element_weight=2.0, log_warps=True, direction=direction)
    loss2, m2 = step(model, batch)
    assert 0 <= m0["equ_elem"] == pytest.approx(m2["equ_elem"])
    assert float(loss0.detach()) == pytest.approx(m0["ce"], rel=1e-5)
    assert float(loss2.detach()) == pytest.approx(m2["ce"] + 2.0 * m2["equ_elem"], rel=1e-5)
    model.zero_grad()
    loss2.backward()
    canon = [p.grad for p in model.net.canonicalizers.parameters() if p.grad is not None]
    assert canon and any(float(g.abs().sum()) > 0 for g in canon)


def test_element_equivariance_pairs_the_halves_in_the_order_of_the_warp():
    import monowarp

    def sample(n, seed):
        generator = torch.Generator().manual_seed(seed)
        return monowarp.sample_monotone_scale(n, (3, 3), (0.5, 2.0), generator=generator)

    g, h = sample(2, 0), sample(4, 1)

    class Result:
        def __init__(self, element):
            self.element = element

    clean, warped = h[:2], h[2:]
    results = {"input": Result(h), "skipped": Result(None)}
    # x' = S(x; g): the warped half's element should be g composed with the clean half's; x' = S^-1(x; g):
    # the clean half's should be g composed with the warped half's
    as_warp = deqcanon.element_equivariance_error(clean, warped, g)
    as_unwarp = deqcanon.element_equivariance_error(warped, clean, g)
    assert float(element_equivariance(results, g, "warp")) == pytest.approx(float(as_warp))
    assert float(element_equivariance(results, g, "unwarp")) == pytest.approx(float(as_unwarp))
    assert float(as_warp) != pytest.approx(float(as_unwarp))
    assert element_equivariance({}, g, "warp") is None
    assert element_equivariance({"input": Result(None)}, g, "unwarp") is None


def test_element_weight_needs_a_canonicalizer():
    with pytest.raises(ValueError, match="canonicalizing"):
        paired_step(lambda b: b, weight=0.0, element_weight=1.0)
    with pytest.raises(ValueError, match="element_weight"):
        paired_step(lambda b: b, weight=0.0, element_weight=-1.0, log_warps=True)
    with pytest.raises(ValueError, match="no canonicalizer"):
        paired_step(lambda b: b, weight=0.0, element_weight=1.0, log_warps=True)(_NoCanon(), _batch())


def test_method_step_chooses_the_objective():
    def kind(step):
        return step.__qualname__.split(".")[0]

    common = {"scale_range": (0.5, 2.0), "grid": (4, 4)}
    control = method_step(lambda b: b, paired_control=True, adapted=False, weight=1.0, **common)
    assert kind(control) == "paired_step"
    assert kind(method_step(lambda b: b, paired_control=False, adapted=False, weight=1.0, **common)) == (
        "augmented_step"
    )
    assert kind(method_step(lambda b: b, paired_control=False, adapted=True, weight=0.0, **common)) == (
        "augmented_step"
    )
    for weights in ({"weight": 1.0}, {"weight": 0.0, "element_weight": 0.5}):
        step = method_step(lambda b: b, paired_control=False, adapted=True, **weights, **common)
        assert kind(step) == "paired_step"
    assert kind(augmented_step(lambda b: b)) == "augmented_step"
    # the element term reaches the loss of an adapted model only
    model = _adapted()
    torch.manual_seed(1)
    _, metrics = method_step(lambda b: b, paired_control=False, adapted=True, weight=0.0, element_weight=1.0)(
        model, _batch()
    )
    assert "equ_elem" in metrics and "inv" in metrics


def test_a_run_started_before_an_option_existed_resumes_at_its_default(tmp_path):
    defaults = option_defaults(train=TrainOptions, canon=CanonOptions, runtime=None)
    assert defaults["canon.element_weight"] == 0.0 and defaults["canon.layers"] == ["input"]
    assert defaults["train.lr"] == TrainOptions().lr
    new = {"train": dataclasses.asdict(TrainOptions()), "canon": dataclasses.asdict(CanonOptions())}
    old = {"train": new["train"], "canon": {k: v for k, v in new["canon"].items() if k != "element_weight"}}
    assert config_differences(old, new, defaults=defaults) == []
    changed = {**new, "canon": {**new["canon"], "element_weight": 1.0}}
    for name, config, defaults_given, error in (
        ("default", new, True, None),
        ("changed", changed, True, r"canon.element_weight: <absent> -> 1.0"),
        ("no-defaults", new, False, r"canon.element_weight: <absent> -> 0.0"),
    ):
        RunFolder(tmp_path / name).open(old).close()
        kwargs = {"resume": True, "defaults": defaults if defaults_given else None}
        if error is None:
            RunFolder(tmp_path / name).open(config, **kwargs).close()
        else:
            with pytest.raises(ValueError, match=error):
                RunFolder(tmp_path / name).open(config, **kwargs)


def test_element_step_is_label_free_and_trains_the_canonicalizers_only():
    from lse_common.objectives import element_step, warmup_step

    model = _adapted()
    x, _ = _batch()
    torch.manual_seed(1)
    loss, metrics = element_step(lambda b: (b[0], None))(model, (x, None))
    assert float(loss.detach()) == pytest.approx(metrics["equ_elem"]) and "warp_log_scale_mean" in metrics
    loss.backward()
    canon = {id(p) for p in model.net.canonicalizers.parameters()}
    moved = {id(p) for p in model.parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0}
    assert moved and moved <= canon  # the backbone and head get no gradient from it
    with pytest.raises(ValueError, match="direction"):
        element_step(lambda b: b, direction="sideways")
    with pytest.raises(ValueError, match="canonicalizer"):
        element_step(lambda b: b)(_NoCanon(), _batch())
    from lse_common.options import AugmentOptions

    element = CanonOptions(freeze_backbone_epochs=1, warmup_objective="element")
    assert warmup_step(lambda b: b, True, element, AugmentOptions()) is not None
    assert warmup_step(lambda b: b, False, element, AugmentOptions()) is None
    assert warmup_step(lambda b: b, True, CanonOptions(), AugmentOptions()) is None
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        CanonOptions(warmup_objective="element")


def test_options_step_reads_the_option_groups():
    from lse_common.objectives import options_step
    from lse_common.options import AugmentOptions

    def kind(step):
        return step.__qualname__.split(".")[0]

    train, aug = TrainOptions(consistency_weight=0.0), AugmentOptions()
    common = {"train": train, "aug": aug}
    assert kind(options_step(lambda b: b, "invl", control="invl", adapted=False, **common)) == "paired_step"
    assert kind(options_step(lambda b: b, "aug", control="invl", adapted=False, **common)) == "augmented_step"
    dec = CanonOptions(element_weight=1.0)
    assert kind(options_step(lambda b: b, "dec", control="invl", adapted=True, canon=dec, **common)) == (
        "paired_step"
    )
    # an element weight on a model without canonicalizers does nothing: the plain augmented step
    assert kind(options_step(lambda b: b, "aug", control="invl", adapted=False, canon=dec, **common)) == (
        "augmented_step"
    )
    # augment=False (a base model) trains on the batch as it is
    x, y = _batch()
    seen = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    options_step(lambda b: b, "base", control="invl", adapted=False, augment=False, **common)(model, (x, y))
    assert torch.equal(seen[0], x)


@pytest.mark.parametrize("direction", ["unwarp", "warp"])
def test_the_content_weighting_weighs_by_the_edges_of_the_first_compared_half(direction):
    import monowarp

    generator = torch.Generator().manual_seed(0)
    g = monowarp.sample_monotone_scale(2, (3, 3), (0.5, 2.0), generator=generator)
    h = monowarp.sample_monotone_scale(4, (3, 3), (0.5, 2.0), generator=generator)

    class Result:
        def __init__(self, element):
            self.element = element

    images = torch.zeros(4, 1, 24, 48)
    images[:, :, 6:14, 10:18] = 1.0
    images[1::2, :, 4:20, 30:44] = 0.5  # the halves differ in content
    results = {"input": Result(h)}
    first, second = (h[:2], h[2:]) if direction == "warp" else (h[2:], h[:2])
    seen = images[:2] if direction == "warp" else images[2:]
    weight = deqcanon.content_weight(seen, radius=1)  # max(1, round(48 / 48))
    want = deqcanon.element_equivariance_error(first, second, g, points=17, weight=weight)
    got = element_equivariance(results, g, direction, images=images)
    assert float(got) == pytest.approx(float(want), rel=1e-6)
    assert float(got) != pytest.approx(float(element_equivariance(results, g, direction)), rel=1e-3)


def test_the_steps_take_the_weighting_and_name_a_wrong_one():
    from lse_common.objectives import element_step, options_step, warmup_step
    from lse_common.options import AugmentOptions

    model = _adapted()
    x, y = _batch()
    x = torch.zeros_like(x)
    x[:, :, 8:20, 8:14] = 1.0  # a sparse scene: one block on a flat background
    for weighting in ("uniform", "content"):
        torch.manual_seed(1)
        _, m_pair = paired_step(lambda b: b, weight=0.0, log_warps=True, element_weighting=weighting)(
            model, (x, y)
        )
        torch.manual_seed(1)
        loss, m_elem = element_step(lambda b: b, weighting=weighting)(model, (x, y))
        assert m_pair["equ_elem"] == pytest.approx(m_elem["equ_elem"], rel=1e-5) and torch.isfinite(loss)
    torch.manual_seed(1)
    _, uniform = element_step(lambda b: b)(model, (x, y))
    torch.manual_seed(1)
    _, content = element_step(lambda b: b, weighting="content")(model, (x, y))
    assert uniform["equ_elem"] != pytest.approx(content["equ_elem"], rel=1e-3)
    with pytest.raises(ValueError, match="weighting"):
        element_step(lambda b: b, weighting="edges")
    with pytest.raises(ValueError, match="weighting"):
        paired_step(lambda b: b, weight=0.0, log_warps=True, element_weighting="edges")
    # the options reach the steps
    canon = CanonOptions(freeze_backbone_epochs=1, warmup_objective="element", element_weighting="content")
    torch.manual_seed(1)
    _, warm = warmup_step(lambda b: b, True, canon, AugmentOptions())(model, (x, y))
    assert warm["equ_elem"] == pytest.approx(content["equ_elem"], rel=1e-5)
    canon = dataclasses.replace(canon, element_weight=1.0)
    torch.manual_seed(1)
    common = {"train": TrainOptions(), "aug": AugmentOptions()}
    step = options_step(lambda b: b, "dec", control="invl", adapted=True, canon=canon, **common)
    _, paired = step(model, (x, y))
    assert paired["equ_elem"] == pytest.approx(content["equ_elem"], rel=1e-5)


def test_a_canonicalizer_clip_clips_the_groups_by_their_own_norms():
    """With canon.grad_clip set (even to train.grad_clip), a canonicalizer's large gradient leaves the
    backbone's step alone; without it one norm over all parameters is clipped."""
    from lse_common.schedules import clip_gradients
    from lse_common.training import create_optimizer, gradient_clip

    train = TrainOptions(grad_clip=1.0)
    assert gradient_clip(train, CanonOptions(grad_clip=1.0)) == {"backbone": 1.0, "canonicalizers": 1.0}
    assert gradient_clip(train, CanonOptions()) == 1.0 and gradient_clip(train) == 1.0
    assert gradient_clip(TrainOptions(grad_clip=None), CanonOptions(grad_clip=2.0)) == {"canonicalizers": 2.0}
    model = _adapted()
    results = []
    for canon in (CanonOptions(grad_clip=1.0), CanonOptions()):
        optimizer = create_optimizer(model, train, canon)
        for p in model.parameters():
            p.grad = torch.full_like(p, 1e-4)
        for p in model.net.canonicalizers.parameters():
            p.grad = torch.full_like(p, 10.0)  # an exploding canonicalizer gradient
        before = next(model.head.parameters()).grad.clone()
        norms = clip_gradients(model, optimizer, gradient_clip(train, canon))
        results.append((norms, float((next(model.head.parameters()).grad / before).mean())))
    (separate, kept), (shared, shrunk) = results
    assert separate["grad_norm/canonicalizers"] > 100 and kept == pytest.approx(1.0)
    assert "grad_norm" in shared and shrunk < 0.01
