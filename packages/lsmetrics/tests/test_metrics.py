"""torchmetrics classes: accumulated over batches they equal the functional values on the whole set, and
`compute()` returns a tensor or a dict of tensors, as torchmetrics expects."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torchmetrics import Metric, MetricCollection, MetricTracker
from torchmetrics.classification import MulticlassJaccardIndex

import lsmetrics
from lsmetrics import (
    DatasetMeanIoU,
    EquivarianceError,
    InvarianceError,
    PerScaleAccuracy,
    dataset_mean_iou,
    equivariance_error,
    invariance_error,
    iou_from_confusion_matrix,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)
from lsmetrics import metrics as metrics_module


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


PER_SCALE_KEYS = {"accuracy", "mean", "std", "pooled", "correct", "total"}


def test_per_scale_accuracy_accumulates():
    gen = _gen(3)
    correct = torch.rand(8, generator=gen) > 0.4
    scale_ids = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    metric = PerScaleAccuracy(num_scales=4)
    for c, s in _split(correct, scale_ids):
        metric.update(c, s)
    out = metric.compute()
    assert set(out) == PER_SCALE_KEYS
    expected = per_scale_accuracy(correct, scale_ids, 4)
    torch.testing.assert_close(out["accuracy"], expected.accuracy, equal_nan=True)
    assert out["total"].tolist() == [3, 2, 3, 0]
    assert out["correct"].tolist() == expected.correct.tolist()
    assert out["correct"].dtype == out["total"].dtype == torch.int64
    for key in ("mean", "std", "pooled"):
        assert out[key].shape == ()
        torch.testing.assert_close(out[key], getattr(expected, key))


def test_per_scale_accuracy_hand_computed():
    # buckets: 2/3, 1/1, empty -> mean 5/6 over the two non-empty buckets, population std 1/6
    metric = PerScaleAccuracy(num_scales=3)
    metric.update(torch.tensor([1, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))
    out = metric.compute()
    assert out["accuracy"][:2].tolist() == pytest.approx([2 / 3, 1.0])
    assert math.isnan(out["accuracy"][2].item())
    assert out["mean"].item() == pytest.approx(5 / 6)
    assert out["std"].item() == pytest.approx(1 / 6)
    assert out["pooled"].item() == pytest.approx(3 / 4)
    # the dict gives back the functional result, e.g. for the table cell of Tables 3 and 6
    result = per_scale_accuracy_from_counts(out["correct"], out["total"])
    assert result.format_overall() == "83.33 ± 16.67"
    # a returned value is not the live state: later updates leave it as it was
    metric.update(torch.tensor([0, 0]), torch.tensor([2, 2]))
    assert out["correct"].tolist() == [2, 1, 0] and out["total"].tolist() == [3, 1, 0]
    assert metric.compute()["total"].tolist() == [3, 1, 2]


def test_per_scale_accuracy_forward_returns_batch_value():
    metric = PerScaleAccuracy(num_scales=2)
    batch = metric(torch.tensor([True, False]), torch.tensor([0, 1]))
    assert batch["accuracy"].tolist() == [1.0, 0.0]
    metric(torch.tensor([False, True]), torch.tensor([0, 1]))
    assert metric.compute()["accuracy"].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match="num_scales must be at least 1"):
        PerScaleAccuracy(num_scales=0)
    with pytest.raises(TypeError, match="num_scales must be an int"):
        PerScaleAccuracy(num_scales=2.0)


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_dataset_mean_iou_accumulates_over_the_data_set(ignore_index):
    gen = _gen(4)
    target = torch.randint(0, 4, (8, 5, 6), generator=gen)
    if ignore_index is not None:
        target[target == 3] = ignore_index
    scores = torch.randn(8, 4, 5, 6, generator=gen)
    metric = DatasetMeanIoU(num_classes=4, ignore_index=ignore_index)
    reference = MulticlassJaccardIndex(num_classes=4, average="macro", ignore_index=ignore_index)
    for s, t in _split(scores, target):
        metric.update(s, t)
        reference.update(s, t)
    whole = dataset_mean_iou(scores, target, 4, ignore_index=ignore_index)
    assert metric.compute().item() == pytest.approx(whole.mean.item(), rel=1e-6)
    assert metric.compute().item() == pytest.approx(reference.compute().item(), rel=1e-6)
    per_class = metric.compute_per_class()
    assert set(per_class) == {"iou", "mean", "support", "confusion_matrix"}
    torch.testing.assert_close(per_class["iou"], whole.iou, equal_nan=True)
    assert torch.equal(per_class["confusion_matrix"], whole.confusion_matrix)
    assert torch.equal(per_class["support"], whole.support)


def test_dataset_mean_iou_known_inputs():
    # batch 1: one class, perfectly predicted (mIoU 1); batch 2: a class-0 pixel predicted as 1
    # (mIoU (0 + 3/4) / 2); over the data set: class 0 4/5, class 1 3/4
    metric = DatasetMeanIoU(num_classes=3)
    batches = [
        (torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)),
        (torch.ones(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 1], [1, 1]]])),
    ]
    batch_values = [metric(preds, target).item() for preds, target in batches]
    assert batch_values == pytest.approx([1.0, 0.375])
    value = metric.compute()
    assert isinstance(value, torch.Tensor) and value.shape == ()
    assert value.item() == pytest.approx((4 / 5 + 3 / 4) / 2)
    assert value.item() != pytest.approx(sum(batch_values) / 2)
    per_class = metric.compute_per_class()
    assert per_class["iou"][:2].tolist() == pytest.approx([0.8, 0.75])
    assert math.isnan(per_class["iou"][2].item())  # class 2 never seen: NaN, left out of the mean
    assert per_class["support"].tolist() == [5, 3, 0]
    assert per_class["confusion_matrix"].tolist() == [[4, 1, 0], [0, 3, 0], [0, 0, 0]]
    table = iou_from_confusion_matrix(per_class["confusion_matrix"]).table()
    assert "| **mIoU** | 77.50 | 8 |" in table


def test_dataset_mean_iou_ignore_index_and_options():
    metric = DatasetMeanIoU(num_classes=2, ignore_index=255)
    metric.update(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 1, 255, 255]]))
    assert metric.compute().item() == 1.0  # the two ignored pixels, wrong or not, are left out
    assert metric.compute_per_class()["confusion_matrix"].sum().item() == 2
    with pytest.raises(TypeError, match="num_classes must be an int"):
        DatasetMeanIoU(num_classes=2.5)
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        DatasetMeanIoU(num_classes=0)
    with pytest.raises(TypeError, match="ignore_index must be an int or None"):
        DatasetMeanIoU(num_classes=2, ignore_index="255")
    with pytest.raises(ValueError, match="target must hold labels in"):
        DatasetMeanIoU(num_classes=2).update(torch.tensor([[0, 1]]), torch.tensor([[0, 2]]))


def test_no_name_shadows_torchmetrics():
    # torchmetrics' segmentation MeanIoU / mean_iou average per-image scores: lsmetrics has no such names
    for name in ("MeanIoU", "mean_iou"):
        assert not hasattr(lsmetrics, name)
        assert name not in lsmetrics.__all__
    assert {"DatasetMeanIoU", "dataset_mean_iou"} <= set(lsmetrics.__all__)


def test_import_leaves_torchmetrics_until_it_is_needed():
    code = (
        "import sys, torch, lsmetrics\n"
        "lsmetrics.invariance_error(torch.ones(1, 2), torch.ones(1, 2))\n"
        "print('torchmetrics' in sys.modules)\n"
        "lsmetrics.DatasetMeanIoU\n"
        "print('torchmetrics' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "True"]


def _metric_and_batches(name: str) -> tuple[Metric, list[tuple[torch.Tensor, ...]]]:
    """A metric of each class of `lsmetrics.metrics` and three batches for it."""
    gen = _gen(7)
    if name == "InvarianceError":
        return InvarianceError(), [
            (torch.rand(3, 4, generator=gen), torch.rand(3, 2, 4, generator=gen)) for _ in range(3)
        ]
    if name == "EquivarianceError":
        return EquivarianceError(variant="reference"), [
            (torch.rand(2, 3, 4, 5, generator=gen), torch.rand(2, 3, 4, 5, generator=gen)) for _ in range(3)
        ]
    if name == "PerScaleAccuracy":
        return PerScaleAccuracy(num_scales=3), [
            (torch.rand(6, generator=gen) > 0.5, torch.randint(0, 3, (6,), generator=gen)) for _ in range(3)
        ]
    if name == "DatasetMeanIoU":
        return DatasetMeanIoU(num_classes=3), [
            (torch.randn(2, 3, 4, 5, generator=gen), torch.randint(0, 3, (2, 4, 5), generator=gen))
            for _ in range(3)
        ]
    raise AssertionError(f"no compute() type test for the new class {name}")


@pytest.mark.parametrize("name", metrics_module.__all__)
def test_compute_returns_a_tensor_or_a_dict_of_tensors(name):
    metric, batches = _metric_and_batches(name)
    assert isinstance(metric, Metric)
    for batch in batches[:2]:
        metric.update(*batch)
    out = metric.compute()
    if isinstance(out, dict):
        assert out and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in out.items())
    else:
        assert isinstance(out, torch.Tensor) and out.shape == ()
        assert out.dtype.is_floating_point
    # the containers of torchmetrics take the values as they are
    tracker = MetricTracker(metric.clone())
    tracker.increment()
    tracker.update(*batches[2])
    assert type(tracker.compute_all()) is type(out)
    values = MetricCollection({"m": metric}).compute()
    assert values and all(isinstance(v, torch.Tensor) for v in values.values())


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
