"""torchmetrics classes that accumulate the metrics of `lsmetrics.functional` over batches.

Every state is a sum (error sums and sample counts, per-bucket counts, the confusion matrix) reduced with
``dist_reduce_fx="sum"``, so a metric updated on disjoint shards in several processes computes, after
synchronisation, exactly the value of a single process that saw the whole data set. The means are taken
over samples (InvE: image-transform pairs; EquE: images, or image-draw pairs), so the result does not
depend on the batch size.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassJaccardIndex

from lsmetrics._utils import check_choice
from lsmetrics.functional import (
    VARIANTS,
    IoUResult,
    PerScaleAccuracyResult,
    Variant,
    equivariance_error,
    invariance_error,
    iou_from_confusion_matrix,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)

__all__ = ["EquivarianceError", "InvarianceError", "MeanIoU", "PerScaleAccuracy"]


class InvarianceError(Metric):
    r"""InvE (eq. 24) accumulated over batches; see `lsmetrics.invariance_error`.

    States: the sum of the per-pair errors and the number of pairs (float64 and int64 sums).

    Args:
        variant: ``"paper"`` ($\lVert r - t\rVert_2^2$, eq. 24) or ``"reference"``
            ($\lVert r - t\rVert_2 / \lVert r\rVert_2$).
        eps: Lower bound of $\lVert r\rVert_2$ in the reference variant.
        **kwargs: Passed to `torchmetrics.Metric` (e.g. `sync_on_compute`, `process_group`).

    Examples:
        >>> import torch
        >>> metric = InvarianceError()
        >>> metric.update(torch.tensor([[0.8, 0.2]]), torch.tensor([[[0.6, 0.4], [0.8, 0.2]]]))
        >>> metric.update(torch.tensor([[0.5, 0.5]]), torch.tensor([[0.5, 0.5]]))
        >>> print(round(metric.compute().item(), 4))  # (0.08 + 0 + 0) / 3
        0.0267
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    error_sum: torch.Tensor
    count: torch.Tensor

    def __init__(self, variant: Variant = "paper", *, eps: float = 1e-12, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = check_choice(variant, "variant", VARIANTS)
        self.eps = eps
        self.add_state("error_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, reference: torch.Tensor, transformed: torch.Tensor) -> None:
        """Add a batch: `reference` `(B, K)`, `transformed` `(B, S, K)` or `(B, K)`."""
        errors = invariance_error(
            reference, transformed, variant=self.variant, reduction="none", eps=self.eps
        )
        self.error_sum += errors.detach().double().sum()
        self.count += errors.numel()

    def compute(self) -> torch.Tensor:
        """The mean error over every (image, transform) pair seen so far."""
        return (self.error_sum / self.count).to(torch.get_default_dtype())


class EquivarianceError(Metric):
    r"""EquE (eq. 23) accumulated over batches; see `lsmetrics.equivariance_error`.

    States: the sum of the per-sample errors and the number of samples.

    Args:
        variant: ``"paper"`` (mean over pixels of the squared channel norm) or ``"reference"`` (its square
            root per sample).
        **kwargs: Passed to `torchmetrics.Metric`.

    Examples:
        >>> import torch
        >>> metric = EquivarianceError()
        >>> metric.update(torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2))  # 2 per pixel
        >>> metric.update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2))
        >>> print(round(metric.compute().item(), 4))
        1.0
    """

    is_differentiable = True
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0

    error_sum: torch.Tensor
    count: torch.Tensor

    def __init__(self, variant: Variant = "paper", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.variant = check_choice(variant, "variant", VARIANTS)
        self.add_state("error_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, expected: torch.Tensor, actual: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add a batch: `(B, C, H, W)` or `(B, S, C, H, W)` outputs and an optional `valid` mask."""
        errors = equivariance_error(expected, actual, variant=self.variant, valid=valid, reduction="none")
        self.error_sum += errors.detach().double().sum()
        self.count += errors.numel()

    def compute(self) -> torch.Tensor:
        """The mean error over every sample seen so far."""
        return (self.error_sum / self.count).to(torch.get_default_dtype())


class PerScaleAccuracy(Metric):
    r"""Per-scale accuracy with mean $\pm$ population std over the buckets (Tables 3 and 6).

    States: `(S,)` counts of correct predictions and of samples per bucket. `compute()` returns a
    `lsmetrics.PerScaleAccuracyResult` (fractions, not percent).

    Args:
        num_scales: Number of scale buckets S.
        **kwargs: Passed to `torchmetrics.Metric`.

    Examples:
        >>> import torch
        >>> metric = PerScaleAccuracy(num_scales=2)
        >>> metric.update(torch.tensor([True, False]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([True, True]), torch.tensor([1, 0]))
        >>> result = metric.compute()
        >>> print([round(a, 4) for a in result.accuracy.tolist()], result.format_overall())
        [0.6667, 1.0] 83.33 ± 16.67
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, num_scales: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_scales, bool) or not isinstance(num_scales, int) or num_scales < 1:
            raise ValueError(f"num_scales must be a positive int, got {num_scales!r}")
        self.num_scales = num_scales
        self.add_state("correct", torch.zeros(num_scales, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_scales, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: torch.Tensor, scale_ids: torch.Tensor) -> None:
        """Add a batch: `correct` `(N,)` (bool or 0/1), `scale_ids` `(N,)` in `[0, S)`."""
        batch = per_scale_accuracy(correct, scale_ids, self.num_scales)
        self.correct += batch.correct.to(self.correct.device)
        self.total += batch.total.to(self.total.device)

    def compute(self) -> PerScaleAccuracyResult:
        """Per-bucket accuracy, mean and population std over the buckets, pooled accuracy."""
        return per_scale_accuracy_from_counts(self.correct, self.total)

    def plot(self, val: PerScaleAccuracyResult | None = None, ax: Any = None) -> Any:
        """Plot the per-scale accuracy curve (needs matplotlib); returns `(figure, axes)`."""
        from lsmetrics.plot import plot_per_scale_accuracy

        result = val if val is not None else self.compute()
        fig = plot_per_scale_accuracy({type(self).__name__: result}, ax=ax)
        return fig, (fig.axes[0] if ax is None else ax)


class MeanIoU(MulticlassJaccardIndex):
    r"""Data-set mIoU from an accumulated confusion matrix, with a per-class table.

    This is torchmetrics' `MulticlassJaccardIndex` with ``average="macro"``, which fits exactly:
    it sums a `(C, C)` confusion matrix over all batches (and processes) and averages
    $\mathrm{TP}_c / (\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c)$ over the classes present in targets or
    predictions, leaving out `ignore_index` pixels (and that class when it is one). Note that
    `torchmetrics.segmentation.MeanIoU` is a different quantity (a mean of per-image scores). Added here:
    `compute_per_class`, the per-class IoU table of `lsmetrics.iou_from_confusion_matrix`.

    Args:
        num_classes: Number of classes C.
        ignore_index: Target value whose pixels are left out (e.g. 255).
        **kwargs: Passed to `MulticlassJaccardIndex` / `torchmetrics.Metric` (e.g. `validate_args`).

    Examples:
        >>> import torch
        >>> metric = MeanIoU(num_classes=2)
        >>> metric.update(torch.tensor([[[0, 0], [1, 1]]]), torch.tensor([[[0, 1], [1, 1]]]))
        >>> print(round(metric.compute().item(), 4))
        0.5833
        >>> print([round(v, 4) for v in metric.compute_per_class().iou.tolist()])
        [0.5, 0.6667]
    """

    def __init__(self, num_classes: int, *, ignore_index: int | None = None, **kwargs: Any) -> None:
        if "average" in kwargs:
            raise TypeError(
                "MeanIoU always uses average='macro'; use MulticlassJaccardIndex for other averages"
            )
        super().__init__(num_classes=num_classes, average="macro", ignore_index=ignore_index, **kwargs)

    def compute_per_class(self) -> IoUResult:
        """Per-class IoU (NaN for absent classes), mIoU, confusion matrix and support, synchronised."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            confmat = self.confmat.clone()
        return iou_from_confusion_matrix(confmat, ignore_index=self.ignore_index)
