"""The fine-tuning recipe (mixup/cutmix, label smoothing) in the training steps; label-free distillation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lse_common.objectives import augmented_step, classification_recipe, distillation_step, paired_step


def _prepare(batch):
    return batch


def _model(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, classes)
    )


def test_recipe_without_mixing_is_label_smoothed_cross_entropy():
    mix, loss_fn = classification_recipe(5, smoothing=0.1)
    assert mix is None
    logits, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert float(loss_fn(logits, y)) == pytest.approx(float(F.cross_entropy(logits, y, label_smoothing=0.1)))


def test_recipe_mixes_images_and_targets_and_the_steps_train_on_soft_targets():
    torch.manual_seed(0)
    mix, loss_fn = classification_recipe(5, mixup=0.8, cutmix=1.0, smoothing=0.1)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    mixed, soft = mix(x.clone(), y)
    assert soft.shape == (4, 5) and torch.allclose(soft.sum(1), torch.ones(4))
    assert not torch.equal(mixed, x)  # a mixed batch, not the input
    assert float(soft.max()) < 1.0  # smoothed and mixed
    with pytest.raises(ValueError, match="even batch"):
        mix(torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2]))
    model = _model()
    for step in (
        augmented_step(_prepare, p=1.0, mix=mix, loss_fn=loss_fn),
        paired_step(_prepare, weight=1.0, mix=mix, loss_fn=loss_fn),
    ):
        loss, metrics = step(model, (x, y))
        loss.backward()
        assert torch.isfinite(loss) and 0 <= metrics["acc"] <= 1
        assert model[-1].weight.grad is not None and float(model[-1].weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError):
        classification_recipe(5, mixup=-1.0)
    with pytest.raises(ValueError):
        classification_recipe(5, smoothing=1.5)


def test_distillation_is_zero_for_the_teacher_itself_on_the_same_image_and_trains_the_student():
    teacher = _model()
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    x = torch.rand(4, 3, 16, 16)
    same = distillation_step(lambda b: (b, b), teacher)
    loss, metrics = same(student, x)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6) and metrics["agree"] == 1.0
    assert all(not p.requires_grad for p in teacher.parameters())
    flipped = distillation_step(lambda b: (b, b.flip(-1).roll(3, -2) * 0.5), teacher, temperature=2.0)
    loss, metrics = flipped(student, x)
    assert float(loss.detach()) > 0 and metrics["kl"] == pytest.approx(float(loss.detach()))
    loss.backward()
    assert student[0].weight.grad is not None and teacher[0].weight.grad is None
    torch.manual_seed(0)
    random_warp = distillation_step(lambda b: (b, None), teacher, scale_range=(0.5, 2.0))
    loss, _ = random_warp(student, x)
    assert float(loss.detach()) > 0  # a random monotone scaling changes the student's view
    with pytest.raises(ValueError, match="temperature"):
        distillation_step(_prepare, teacher, temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        distillation_step(lambda b: (b, b[:, :, :8]), teacher)(student, x)


def test_adapt_for_method_adds_the_methods_canonicalizers_only():
    import timm

    import latentcanon
    from lse_common.canonicalizers import adapt_for_method, make_canonicalizer
    from lse_common.options import CanonOptions

    canon = CanonOptions(layers=["input", 0], dec_widths=[4], num_elements=4)
    x = torch.rand(2, 3, 32, 32)
    for method, n_keys in (("dec", 2), ("canon", 1)):
        net = timm.create_model("test_resnet", num_classes=3)
        net.eval()
        reference = net(x)
        adapted = adapt_for_method(net, method, canon, (3, 32, 32))
        assert isinstance(adapted, latentcanon.LatentCanonicalizedModel)
        assert len(adapted.keys) == n_keys and adapted.keys[0] == "input"
        adapted.eval()
        if method == "dec":  # identity at initialisation: the output of the backbone
            assert torch.allclose(adapted(x), reference, atol=1e-4)
    plain = timm.create_model("test_resnet", num_classes=3)
    assert adapt_for_method(plain, "invl", canon, (3, 32, 32)) is plain
    with pytest.raises(ValueError, match="no canonicalizer"):
        make_canonicalizer("aug", canon)
