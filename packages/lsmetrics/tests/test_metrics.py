"""torchmetrics classes: accumulated over batches they equal the functional values on the whole set."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from lsmetrics import (
    EquivarianceError,
    InvarianceError,
    MeanIoU,
    PerScaleAccuracy,
    PerScaleAccuracyResult,
    equivariance_error,
    invariance_error,
    mean_iou,
    per_scale_accuracy,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


BATCHES = (3, 1, 4)  # uneven batch sizes


def _split(*tensors):
    out, start = [], 0
    for size in BATCHES:
        out.append(tuple(t[start : start + size] for t in tensors))
        start += size
    return out


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_invariance_error_accumulates(variant):
    gen = _gen(1)
    reference = torch.rand(8, 5, generator=gen).softmax(-1)
    transformed = torch.rand(8, 3, 5, generator=gen).softmax(-1)
    metric = InvarianceError(variant=variant)
    for ref, trans in _split(reference, transformed):
        metric.update(ref, trans)
    expected = invariance_error(reference, transformed, variant=variant)
    torch.testing.assert_close(metric.compute(), expected)
    metric.reset()
    metric.update(reference[:2], transformed[:2, 0])  # the (B, K) form
    torch.testing.assert_close(
        metric.compute(), invariance_error(reference[:2], transformed[:2, 0], variant=variant)
    )


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_equivariance_error_accumulates(variant):
    gen = _gen(2)
    expected = torch.rand(8, 3, 5, 6, generator=gen)
    actual = torch.rand(8, 3, 5, 6, generator=gen)
    valid = torch.rand(8, 5, 6, generator=gen) > 0.3
    metric = EquivarianceError(variant=variant)
    for e, a, v in _split(expected, actual, valid):
        metric.update(e, a, v)
    torch.testing.assert_close(
        metric.compute(), equivariance_error(expected, actual, variant=variant, valid=valid)
    )
    metric.reset()
    for e, a in _split(expected, actual):
        metric.update(e.unsqueeze(1), a.unsqueeze(1))  # the (B, S, C, H, W) form
    torch.testing.assert_close(metric.compute(), equivariance_error(expected, actual, variant=variant))


def test_equivariance_error_hand_computed_over_batches():
    metric = EquivarianceError()
    metric.update(torch.zeros(2, 1, 1, 2), torch.tensor([[[[1.0, 1.0]]], [[[0.0, 2.0]]]]))  # 1, 2
    metric.update(torch.zeros(1, 1, 1, 2), torch.tensor([[[[3.0, 3.0]]]]))  # 9
    assert metric.compute().item() == pytest.approx(4.0)


def test_per_scale_accuracy_accumulates():
    gen = _gen(3)
    correct = torch.rand(8, generator=gen) > 0.4
    scale_ids = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    metric = PerScaleAccuracy(num_scales=4)
    for c, s in _split(correct, scale_ids):
        metric.update(c, s)
    result = metric.compute()
    assert isinstance(result, PerScaleAccuracyResult)
    expected = per_scale_accuracy(correct, scale_ids, 4)
    torch.testing.assert_close(result.accuracy, expected.accuracy, equal_nan=True)
    assert result.total.tolist() == [3, 2, 3, 0]
    torch.testing.assert_close(result.mean, expected.mean)
    torch.testing.assert_close(result.std, expected.std)


def test_per_scale_accuracy_forward_returns_batch_value():
    metric = PerScaleAccuracy(num_scales=2)
    batch = metric(torch.tensor([True, False]), torch.tensor([0, 1]))
    assert batch.accuracy.tolist() == [1.0, 0.0]
    metric(torch.tensor([False, True]), torch.tensor([0, 1]))
    assert metric.compute().accuracy.tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="num_scales must be a positive int"):
        PerScaleAccuracy(num_scales=0)


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_mean_iou_accumulates_over_the_data_set(ignore_index):
    gen = _gen(4)
    target = torch.randint(0, 4, (8, 5, 6), generator=gen)
    if ignore_index is not None:
        target[target == 3] = ignore_index
    scores = torch.randn(8, 4, 5, 6, generator=gen)
    metric = MeanIoU(num_classes=4, ignore_index=ignore_index)
    reference = MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=ignore_index)
    for s, t in _split(scores, target):
        metric.update(s, t)
        reference.update(s, t)
    whole = mean_iou(scores, target, 4, ignore_index=ignore_index)
    assert metric.compute().item() == pytest.approx(whole.mean.item(), rel=1e-6)
    assert metric.compute().item() == pytest.approx(reference.compute().item(), rel=1e-6)
    table = metric.compute_per_class()
    torch.testing.assert_close(table.iou, whole.iou, equal_nan=True)
    assert torch.equal(table.confusion_matrix, whole.confusion_matrix)


def test_mean_iou_differs_from_batch_average():
    metric = MeanIoU(num_classes=2)
    batch_values = []
    batches = [
        (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)),  # mIoU 1
        (torch.ones(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 1], [1, 1]]])),  # mIoU (0 + 3/4) / 2
    ]
    for preds, target in batches:
        batch_values.append(metric(preds, target).item())
    assert batch_values == pytest.approx([1.0, 0.375])
    assert sum(batch_values) / 2 == pytest.approx(0.6875)
    assert metric.compute().item() == pytest.approx((4 / 5 + 3 / 4) / 2)
    assert metric.compute_per_class().iou.tolist() == pytest.approx([0.8, 0.75])
    with pytest.raises(TypeError, match="average='macro'"):
        MeanIoU(num_classes=2, average="micro")


def test_metric_bad_input_and_options():
    with pytest.raises(ValueError, match="variant must be one of"):
        InvarianceError(variant="l2")
    with pytest.raises(ValueError, match="variant must be one of"):
        EquivarianceError(variant="l2")
    with pytest.raises(ValueError, match=r"transformed must have shape"):
        InvarianceError().update(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="actual contains NaN"):
        EquivarianceError().update(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), math.nan))
    with pytest.raises(ValueError, match="scale_ids must lie in"):
        PerScaleAccuracy(num_scales=2).update(torch.tensor([True]), torch.tensor([2]))
