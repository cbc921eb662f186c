"""Functional metrics against hand-computed values, shapes and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from lsmetrics import (
    confusion_matrix,
    correct_class_probability,
    dataset_mean_iou,
    equivariance_error,
    invariance_error,
    iou_from_confusion_matrix,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)

# ------------------------------------------------------------------------------------------------
# InvE
# ------------------------------------------------------------------------------------------------


class TestInvarianceError:
    def test_paper_hand_computed(self, device, dtype):
        reference = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 4.0]], device=device, dtype=dtype)
        transformed = torch.tensor(
            [[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 3.0, 2.0]]],
            device=device,
            dtype=dtype,
        )
        # squared distances: 2, 0 | 25, 4 -> mean 31 / 4
        value = invariance_error(reference, transformed)
        assert value.shape == ()
        assert value.item() == pytest.approx(31 / 4, rel=1e-6)
        per_pair = invariance_error(reference, transformed, reduction="none")
        torch.testing.assert_close(
            per_pair, torch.tensor([[2.0, 0.0], [25.0, 4.0]], device=device, dtype=dtype)
        )
        assert invariance_error(reference, transformed, reduction="sum").item() == pytest.approx(
            31.0, rel=1e-6
        )

    def test_reference_hand_computed(self, device, dtype):
        reference = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 4.0]], device=device, dtype=dtype)
        transformed = torch.tensor(
            [[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 3.0, 2.0]]],
            device=device,
            dtype=dtype,
        )
        # ||r - t|| / ||r||: sqrt(2)/1, 0 | 5/5, 2/5
        expected = (math.sqrt(2.0) + 0.0 + 1.0 + 0.4) / 4
        value = invariance_error(reference, transformed, variant="reference")
        assert value.item() == pytest.approx(expected, rel=1e-6)

    def test_single_transform_shape(self):
        reference = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
        transformed = torch.tensor([[0.5, 0.5], [0.0, 1.0], [0.0, 1.0]])
        per_pair = invariance_error(reference, transformed, reduction="none")
        assert per_pair.shape == (3,)
        torch.testing.assert_close(per_pair, torch.tensor([0.0, 2.0, 0.0]))
        assert invariance_error(reference, transformed).item() == pytest.approx(2 / 3)

    def test_variants_differ_and_zero_when_equal(self):
        reference = torch.softmax(torch.randn(4, 10, generator=torch.Generator().manual_seed(0)), dim=-1)
        same = reference.unsqueeze(1).repeat(1, 3, 1)
        assert invariance_error(reference, same).item() == 0.0
        assert invariance_error(reference, same, variant="reference").item() == 0.0
        other = same.flip(-1)
        paper = invariance_error(reference, other).item()
        code = invariance_error(reference, other, variant="reference").item()
        assert paper > 0 and code > 0 and paper != pytest.approx(code)

    def test_reference_variant_zero_norm_is_finite(self):
        value = invariance_error(torch.zeros(1, 2), torch.ones(1, 2), variant="reference", eps=1e-3)
        assert value.item() == pytest.approx(math.sqrt(2) / 1e-3, rel=1e-5)

    def test_gradcheck_paper(self):
        reference = torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
        transformed = torch.rand(2, 3, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda r, t: invariance_error(r, t), (reference, transformed))
        assert torch.autograd.gradcheck(
            lambda r, t: invariance_error(r, t, variant="reference"), (reference, transformed)
        )

    @pytest.mark.parametrize(
        ("reference", "transformed", "error", "match"),
        [
            (
                torch.zeros(2, 3),
                torch.zeros(2, 4),
                ValueError,
                r"transformed must have shape \(B=2, S, K=3\)",
            ),
            (torch.zeros(2, 3), torch.zeros(3, 5, 3), ValueError, "transformed must have shape"),
            (torch.zeros(2, 3, 1), torch.zeros(2, 3), ValueError, r"reference must have shape \(B, K\)"),
            (
                torch.zeros(2, 3, dtype=torch.long),
                torch.zeros(2, 3),
                TypeError,
                "reference must have a floating",
            ),
            (torch.zeros(2, 3).tolist(), torch.zeros(2, 3), TypeError, "reference must be a torch.Tensor"),
            (torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2), ValueError, "reference contains NaN"),
            (torch.zeros(1, 2), torch.tensor([[float("inf"), 0.0]]), ValueError, "transformed contains NaN"),
            (torch.zeros(0, 2), torch.zeros(0, 2), ValueError, "reference must not be empty"),
        ],
    )
    def test_bad_input(self, reference, transformed, error, match):
        with pytest.raises(error, match=match):
            invariance_error(reference, transformed)

    def test_other_device(self):
        with pytest.raises(ValueError, match="transformed must be on the same device"):
            invariance_error(torch.zeros(2, 3), torch.zeros(2, 3, device="meta"))
        with pytest.raises(ValueError, match="actual must be on the same device"):
            equivariance_error(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, device="meta"))

    def test_bad_options(self):
        with pytest.raises(ValueError, match="variant must be one of 'paper', 'reference'"):
            invariance_error(torch.zeros(1, 2), torch.zeros(1, 2), variant="squared")
        with pytest.raises(ValueError, match="reduction must be one of"):
            invariance_error(torch.zeros(1, 2), torch.zeros(1, 2), reduction="max")


# ------------------------------------------------------------------------------------------------
# EquE
# ------------------------------------------------------------------------------------------------


class TestEquivarianceError:
    def _pair(self, device, dtype):
        expected = torch.zeros(2, 2, 2, 3, device=device, dtype=dtype)
        actual = torch.zeros(2, 2, 2, 3, device=device, dtype=dtype)
        actual[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # squared norm 25 at one of 6 pixels
        actual[1, 0, 1, 2] = 1.0  # 1 at one pixel
        actual[1, 1, 0, 1] = 2.0  # 4 at another
        return expected, actual

    def test_paper_hand_computed(self, device, dtype):
        expected, actual = self._pair(device, dtype)
        per_sample = equivariance_error(expected, actual, reduction="none")
        torch.testing.assert_close(per_sample, torch.tensor([25 / 6, 5 / 6], device=device, dtype=dtype))
        assert equivariance_error(expected, actual).item() == pytest.approx(15 / 6, rel=1e-6)

    def test_reference_hand_computed(self, device, dtype):
        expected, actual = self._pair(device, dtype)
        value = equivariance_error(expected, actual, variant="reference")
        assert value.item() == pytest.approx((math.sqrt(25 / 6) + math.sqrt(5 / 6)) / 2, rel=1e-6)

    def test_valid_mask_bool_and_weights(self, device, dtype):
        expected, actual = self._pair(device, dtype)
        valid = torch.ones(2, 2, 3, dtype=torch.bool, device=device)
        valid[0, 0, 0] = False  # drops the 25 of sample 0
        valid[1, 1, :] = False  # keeps only row 0 of sample 1: pixel (0, 1) with 4
        per_sample = equivariance_error(expected, actual, valid=valid, reduction="none")
        torch.testing.assert_close(per_sample, torch.tensor([0.0, 4 / 3], device=device, dtype=dtype))
        # a channel dimension of 1 is accepted, and float weights weigh pixels
        weights = torch.full((2, 1, 2, 3), 0.5, device=device, dtype=dtype)
        weights[0, 0, 0, 0] = 1.0
        value = equivariance_error(expected, actual, valid=weights, reduction="none")
        torch.testing.assert_close(value, torch.tensor([25 / 3.5, 2.5 / 3.0], device=device, dtype=dtype))

    def test_five_dimensional(self):
        expected = torch.zeros(2, 3, 4, 5, 6)
        actual = expected.clone()
        actual[1, 2, :, 0, 0] = 1.0  # 4 channels -> 4 at one of 30 pixels
        per_sample = equivariance_error(expected, actual, reduction="none")
        assert per_sample.shape == (2, 3)
        assert per_sample[1, 2].item() == pytest.approx(4 / 30)
        assert equivariance_error(expected, actual).item() == pytest.approx(4 / 30 / 6)
        valid = torch.ones(2, 3, 1, 5, 6, dtype=torch.bool)
        valid[1, 2, 0, 0, 0] = False
        assert equivariance_error(expected, actual, valid=valid).item() == 0.0

    def test_gradcheck_paper(self):
        expected = torch.rand(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
        actual = torch.rand(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda e, a: equivariance_error(e, a), (expected, actual))

    @pytest.mark.parametrize(
        ("expected", "actual", "valid", "error", "match"),
        [
            (torch.zeros(2, 3, 4, 5), torch.zeros(2, 3, 5, 4), None, ValueError, r"actual must have shape"),
            (
                torch.zeros(2, 3, 4, 5),
                torch.zeros(2, 1, 3, 4, 5),
                None,
                ValueError,
                r"actual must have shape",
            ),
            (
                torch.zeros(3, 4, 5),
                torch.zeros(3, 4, 5),
                None,
                ValueError,
                r"expected must have shape \(B, C, H, W\)",
            ),
            (
                torch.zeros(1, 1, 2, 2),
                torch.full((1, 1, 2, 2), float("nan")),
                None,
                ValueError,
                "actual contains NaN",
            ),
            (
                torch.zeros(1, 1, 2, 2, dtype=torch.int64),
                torch.zeros(1, 1, 2, 2),
                None,
                TypeError,
                "floating",
            ),
            (
                torch.zeros(2, 1, 2, 2),
                torch.zeros(2, 1, 2, 2),
                torch.ones(2, 3, 3),
                ValueError,
                r"valid must have shape \(B=2, H=2, W=2\)",
            ),
            (
                torch.zeros(2, 1, 2, 2),
                torch.zeros(2, 1, 2, 2),
                torch.ones(2, 2, 2, dtype=torch.long),
                TypeError,
                "valid must have a bool or floating",
            ),
            (
                torch.zeros(2, 1, 2, 2),
                torch.zeros(2, 1, 2, 2),
                torch.full((2, 2, 2), 2.0),
                ValueError,
                r"\[0, 1\]",
            ),
            (
                torch.zeros(2, 1, 2, 2),
                torch.zeros(2, 1, 2, 2),
                torch.zeros(2, 2, 2, dtype=torch.bool),
                ValueError,
                "no valid pixel",
            ),
        ],
    )
    def test_bad_input(self, expected, actual, valid, error, match):
        with pytest.raises(error, match=match):
            equivariance_error(expected, actual, valid=valid)


# ------------------------------------------------------------------------------------------------
# Per-scale accuracy and Fig. 8
# ------------------------------------------------------------------------------------------------


class TestPerScaleAccuracy:
    def test_hand_computed(self):
        correct = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1])
        scale_ids = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
        result = per_scale_accuracy(correct, scale_ids, 3)
        torch.testing.assert_close(result.accuracy, torch.tensor([0.75, 0.5, 0.5]))
        assert result.correct.tolist() == [3, 1, 1]
        assert result.total.tolist() == [4, 2, 2]
        assert result.mean.item() == pytest.approx(1.75 / 3)
        # population std: deviations 1/6, -1/12, -1/12
        assert result.std.item() == pytest.approx(math.sqrt((1 / 36 + 2 / 144) / 3))
        assert result.pooled.item() == pytest.approx(5 / 8)

    @pytest.mark.parametrize(
        ("accuracies", "overall"),
        [
            ([91.64, 96.32, 93.84], "93.93 ± 1.91"),  # Table 3, Aug
            ([95.14, 97.81, 96.64], "96.53 ± 1.09"),  # Table 3, Ours
            ([74.71, 76.47, 78.07, 79.56, 79.48, 78.87, 78.57], "77.96 ± 1.64"),  # Table 6, Aug
            ([75.31, 77.04, 78.65, 79.86, 79.60, 79.05, 78.73], "78.32 ± 1.49"),  # Table 6, Ours
        ],
    )
    def test_reproduces_paper_tables(self, accuracies, overall):
        total = torch.full((len(accuracies),), 10000)
        correct = torch.tensor([round(a * 100) for a in accuracies])
        result = per_scale_accuracy_from_counts(correct, total)
        assert result.format_overall() == overall
        # the sample std (divisor S - 1) would not match the tables
        assert result.accuracy.std(correction=1).item() > result.std.item() + 0.001

    def test_empty_bucket_is_nan_and_left_out(self):
        result = per_scale_accuracy(torch.tensor([True, False, True]), torch.tensor([0, 0, 2]), 3)
        assert math.isnan(result.accuracy[1].item())
        assert result.mean.item() == pytest.approx(0.75)
        assert result.std.item() == pytest.approx(0.25)

    def test_bool_and_float_inputs_agree(self):
        ids = torch.tensor([0, 1, 1])
        a = per_scale_accuracy(torch.tensor([True, False, True]), ids, 2)
        b = per_scale_accuracy(torch.tensor([1.0, 0.0, 1.0]), ids, 2)
        torch.testing.assert_close(a.accuracy, b.accuracy)

    @pytest.mark.parametrize(
        ("correct", "scale_ids", "num_scales", "error", "match"),
        [
            (
                torch.tensor([1, 0]),
                torch.tensor([0, 1, 1]),
                2,
                ValueError,
                r"scale_ids must have shape \(N=2,\)",
            ),
            (torch.tensor([1, 0]), torch.tensor([0, 2]), 2, ValueError, r"scale_ids must lie in \[0, 2\)"),
            (torch.tensor([1, 2]), torch.tensor([0, 1]), 2, ValueError, "only 0/1"),
            (torch.tensor([1, 0]), torch.tensor([0.0, 1.0]), 2, TypeError, "scale_ids must have an integer"),
            (torch.tensor([1, 0]), torch.tensor([0, 1]), 2.0, TypeError, "num_scales must be an int"),
            (torch.tensor([1, 0]), torch.tensor([0, 1]), 0, ValueError, "num_scales must be at least 1"),
        ],
    )
    def test_bad_input(self, correct, scale_ids, num_scales, error, match):
        with pytest.raises(error, match=match):
            per_scale_accuracy(correct, scale_ids, num_scales)

    def test_bad_counts(self):
        with pytest.raises(ValueError, match="correct <= total"):
            per_scale_accuracy_from_counts(torch.tensor([3]), torch.tensor([2]))


class TestCorrectClassProbability:
    def test_single_image(self):
        probs = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.9, 0.1]])
        curve = correct_class_probability(probs, 1)
        torch.testing.assert_close(curve.probability, torch.tensor([0.9, 0.7, 0.5, 0.1]))
        torch.testing.assert_close(curve.image_std, torch.zeros(4))
        assert curve.mean.item() == pytest.approx(0.55)
        assert curve.std.item() == pytest.approx(math.sqrt((0.35**2 + 0.15**2 + 0.05**2 + 0.45**2) / 4))

    def test_batch_of_images_and_logits(self):
        probs = torch.tensor([[[0.2, 0.8], [0.6, 0.4]], [[0.6, 0.4], [0.2, 0.8]]])  # (B=2, S=2, K=2)
        curve = correct_class_probability(probs, torch.tensor([1, 0]))
        torch.testing.assert_close(curve.probability, torch.tensor([0.7, 0.3]))
        torch.testing.assert_close(curve.image_std, torch.tensor([0.1, 0.1]))
        logits = probs.log()
        torch.testing.assert_close(
            correct_class_probability(logits, torch.tensor([1, 0]), from_logits=True).probability,
            curve.probability,
        )

    def test_bad_input(self):
        with pytest.raises(ValueError, match="probs must lie in"):
            correct_class_probability(torch.tensor([[2.0, -1.0]]), 0)
        with pytest.raises(ValueError, match=r"target must lie in \[0, 2\)"):
            correct_class_probability(torch.tensor([[0.5, 0.5]]), 2)
        with pytest.raises(ValueError, match=r"target must have shape \(B=2,\)"):
            correct_class_probability(torch.full((2, 3, 2), 0.5), torch.tensor([0, 1, 1]))
        with pytest.raises(TypeError, match="target must be an int"):
            correct_class_probability(torch.full((3, 2), 0.5), 0.5)


# ------------------------------------------------------------------------------------------------
# mIoU
# ------------------------------------------------------------------------------------------------


class TestDatasetMeanIoU:
    def test_hand_computed(self):
        target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
        preds = torch.tensor([[[0, 1, 1], [1, 2, 0]]])
        # class 0: tp 1, fp 1, fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
        result = dataset_mean_iou(preds, target, 3)
        torch.testing.assert_close(result.iou, torch.tensor([1 / 3, 2 / 3, 1 / 2]))
        assert result.mean.item() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
        assert result.support.tolist() == [2, 2, 2]
        assert result.confusion_matrix.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]

    def test_scores_are_argmaxed(self):
        target = torch.tensor([[[0, 1]]])
        scores = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # (B=1, C=2, H=1, W=2): argmax 0, 1
        assert dataset_mean_iou(scores, target, 2).mean.item() == 1.0

    def test_absent_class_and_ignore_index(self):
        target = torch.tensor([[0, 0, 255, 1]])
        preds = torch.tensor([[0, 1, 3, 1]])
        result = dataset_mean_iou(preds, target, 4, ignore_index=255)
        # the 255 pixel is dropped, with its prediction 3; classes 2 and 3 never appear -> NaN, left out
        assert result.iou[:2].tolist() == pytest.approx([0.5, 0.5])
        assert math.isnan(result.iou[2].item()) and math.isnan(result.iou[3].item())
        assert result.mean.item() == pytest.approx(0.5)
        # an in-range ignore_index drops its pixels and its class
        result = dataset_mean_iou(
            torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 0, 1, 2]]), 3, ignore_index=0
        )
        assert math.isnan(result.iou[0].item())
        assert result.mean.item() == pytest.approx(1.0)

    @pytest.mark.parametrize("ignore_index", [None, 0, 255])
    def test_matches_torchmetrics(self, ignore_index):
        gen = torch.Generator().manual_seed(3)
        target = torch.randint(0, 5, (3, 6, 7), generator=gen)
        target[0, 0] = 255 if ignore_index == 255 else target[0, 0]
        preds = torch.randint(0, 4, (3, 6, 7), generator=gen)  # class 4 never predicted
        ours = dataset_mean_iou(preds, target, 5, ignore_index=ignore_index)
        theirs = MulticlassJaccardIndex(5, average="macro", ignore_index=ignore_index)(preds, target)
        assert ours.mean.item() == pytest.approx(theirs.item(), rel=1e-6)

    @pytest.mark.parametrize("ignore_index", [None, 1, -1])
    def test_confusion_matrix_is_torchmetrics(self, ignore_index):
        from torchmetrics.functional.classification import multiclass_confusion_matrix

        gen = torch.Generator().manual_seed(5)
        target = torch.randint(0, 4, (2, 5, 3), generator=gen)
        if ignore_index == -1:
            target[0, :2] = -1
        scores = torch.randn(2, 4, 5, 3, generator=gen)
        ours = confusion_matrix(scores, target, 4, ignore_index=ignore_index)
        theirs = multiclass_confusion_matrix(scores, target, 4, ignore_index=ignore_index)
        assert ours.dtype == torch.int64
        assert torch.equal(ours, theirs)
        kept = target.numel() if ignore_index is None else int((target != ignore_index).sum())
        assert int(ours.sum()) == kept
        with pytest.raises(TypeError, match="ignore_index must be an int or None"):
            confusion_matrix(scores, target, 4, ignore_index=1.0)

    def test_dataset_accumulation_differs_from_batch_average(self):
        # batch 1: one class, perfectly predicted; batch 2: a class-0 pixel predicted as class 1
        t1, p1 = torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)
        t2, p2 = torch.tensor([[[0, 1], [1, 1]]]), torch.ones(1, 2, 2, dtype=torch.long)
        per_batch = (dataset_mean_iou(p1, t1, 2).mean + dataset_mean_iou(p2, t2, 2).mean) / 2
        assert per_batch.item() == pytest.approx((1.0 + 0.375) / 2)
        confmat = confusion_matrix(p1, t1, 2) + confusion_matrix(p2, t2, 2)
        dataset = iou_from_confusion_matrix(confmat)
        assert dataset.iou.tolist() == pytest.approx([0.8, 0.75])
        assert dataset.mean.item() == pytest.approx(0.775)
        assert dataset.mean.item() != pytest.approx(per_batch.item())
        whole = dataset_mean_iou(torch.cat([p1, p2]), torch.cat([t1, t2]), 2)
        assert whole.mean.item() == pytest.approx(0.775)

    def test_table(self):
        result = dataset_mean_iou(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]), 3)
        table = result.table(["bg", "cup", "mug"])
        assert "| bg | 50.00 | 2 |" in table
        assert "| mug | n/a | 0 |" in table
        assert "| **mIoU** | 50.00 | 3 |" in table
        with pytest.raises(ValueError, match="class_names must have 3 entries"):
            result.table(["bg"])

    @pytest.mark.parametrize(
        ("preds", "target", "error", "match"),
        [
            (
                torch.zeros(2, 3, 4, dtype=torch.long),
                torch.zeros(2, 3, 5, dtype=torch.long),
                ValueError,
                r"preds must have shape \(B=2, H=3, W=5\)",
            ),
            (
                torch.zeros(2, 4, 3, 4),
                torch.zeros(2, 3, 4, dtype=torch.long),
                ValueError,
                r"preds must have shape \(B=2, 3, H=3, W=4\)",
            ),
            (
                torch.zeros(1, 2, dtype=torch.long),
                torch.tensor([[0, 3]]),
                ValueError,
                r"target must hold labels",
            ),
            (
                torch.tensor([[0, 5]]),
                torch.zeros(1, 2, dtype=torch.long),
                ValueError,
                r"preds must hold labels",
            ),
            (
                torch.zeros(1, 2, dtype=torch.long),
                torch.zeros(1, 2),
                TypeError,
                "target must have an integer",
            ),
            (
                torch.zeros(1, 3, 2).fill_(float("nan")),
                torch.zeros(1, 2, dtype=torch.long),
                ValueError,
                "preds contains NaN",
            ),
        ],
    )
    def test_bad_input(self, preds, target, error, match):
        with pytest.raises(error, match=match):
            dataset_mean_iou(preds, target, 3)


# ------------------------------------------------------------------------------------------------
# The validation helper
# ------------------------------------------------------------------------------------------------


def test_check_tensor_returns_the_checked_tensor():
    from lsmetrics._utils import check_tensor

    dims: dict[str, int] = {}
    x = torch.zeros(2, 3)
    assert check_tensor(x, "x", [("B", "K")], dims=dims) is x
    assert dims == {"B": 2, "K": 3}
    y = check_tensor(torch.zeros(2, 4, 3), "y", [("B", "K"), ("B", "S", "K")], dims=dims)
    assert y.shape == (2, 4, 3) and dims == {"B": 2, "K": 3, "S": 4}
    with pytest.raises(ValueError, match=r"z must have shape \(B=2, K=3\), got \(2, 4\)"):
        check_tensor(torch.zeros(2, 4), "z", [("B", "K")], dims=dims)
    with pytest.raises(TypeError, match=r"z must be a torch\.Tensor, got list"):
        check_tensor([1.0], "z", [("N",)])
