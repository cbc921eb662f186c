"""torchmetrics classes that accumulate the metrics of `lsmetrics.functional` over batches.

Every state is a sum (error sums and sample counts, per-bucket counts, the confusion matrix) reduced with
``dist_reduce_fx="sum"``, so a metric updated on disjoint shards in several processes computes, after
synchronisation, exactly the value of a single process that saw the whole data set. The means are taken
over samples (InvE: image-transform pairs; EquE: images, or image-draw pairs), so the result does not
depend on the batch size.

As torchmetrics expects, `compute()` returns a tensor (`InvarianceError`, `EquivarianceError`,
`DatasetMeanIoU`) or a dict of tensors (`PerScaleAccuracy`), so the classes work with Lightning's
``self.log``/``log_dict``, `MetricCollection` and `MetricTracker`. The result dataclasses with their
formatting helpers belong to the functions of `lsmetrics.functional`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from lsmetrics._utils import check_choice
from lsmetrics.functional import (
    VARIANTS,
    Variant,
    confusion_matrix,
    equivariance_error,
    invariance_error,
    iou_from_confusion_matrix,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)

__all__ = ["DatasetMeanIoU", "EquivarianceError", "InvarianceError", "PerScaleAccuracy"]


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

    States: `(S,)` counts of correct predictions and of samples per bucket (int64 sums, so counts from
    several processes add exactly). `compute()` returns a dict of tensors, all accuracies as fractions
    in [0, 1] (the tables show them $\times 100$):

    - ``"accuracy"``: `(S,)` accuracy of each bucket, NaN for an empty bucket;
    - ``"mean"``: `()` mean of the accuracies over the non-empty buckets ("Overall" in Tables 3 and 6);
    - ``"std"``: `()` their population std (divisor: the number of non-empty buckets);
    - ``"pooled"``: `()` accuracy over all samples;
    - ``"correct"``, ``"total"``: `(S,)` int64 counts per bucket.

    ``lsmetrics.per_scale_accuracy_from_counts(out["correct"], out["total"])`` turns the dict into a
    `lsmetrics.PerScaleAccuracyResult` (e.g. for its ``format_overall()``).

    Args:
        num_scales: Number of scale buckets S.
        **kwargs: Passed to `torchmetrics.Metric`.

    Raises:
        TypeError: If `num_scales` is not an int.
        ValueError: If `num_scales` is smaller than 1.

    Examples:
        >>> import torch
        >>> metric = PerScaleAccuracy(num_scales=2)
        >>> metric.update(torch.tensor([True, False]), torch.tensor([0, 0]))
        >>> metric.update(torch.tensor([True, True]), torch.tensor([1, 0]))
        >>> out = metric.compute()
        >>> print([round(a, 4) for a in out["accuracy"].tolist()], out["total"].tolist())
        [0.6667, 1.0] [3, 1]
        >>> print(round(out["mean"].item(), 4), round(out["std"].item(), 4), round(out["pooled"].item(), 4))
        0.8333 0.1667 0.75
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
        if isinstance(num_scales, bool) or not isinstance(num_scales, int):
            raise TypeError(f"num_scales must be an int, got {type(num_scales).__name__}")
        if num_scales < 1:
            raise ValueError(f"num_scales must be at least 1, got {num_scales}")
        self.num_scales = num_scales
        self.add_state("correct", torch.zeros(num_scales, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_scales, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: torch.Tensor, scale_ids: torch.Tensor) -> None:
        """Add a batch: `correct` `(N,)` (bool or 0/1), `scale_ids` `(N,)` in `[0, S)`."""
        batch = per_scale_accuracy(correct, scale_ids, self.num_scales)
        self.correct += batch.correct.to(self.correct.device)
        self.total += batch.total.to(self.total.device)

    def compute(self) -> dict[str, torch.Tensor]:
        """Per-bucket accuracy, its mean and population std over the buckets, pooled accuracy, counts."""
        result = per_scale_accuracy_from_counts(self.correct.clone(), self.total.clone())  # not the states
        return {
            "accuracy": result.accuracy,
            "mean": result.mean,
            "std": result.std,
            "pooled": result.pooled,
            "correct": result.correct,
            "total": result.total,
        }

    def plot(
        self, val: dict[str, torch.Tensor] | Sequence[dict[str, torch.Tensor]] | None = None, ax: Any = None
    ) -> Any:
        """Plot the per-scale accuracy curve (needs matplotlib); returns `(figure, axes)`.

        Args:
            val: A `compute()` output (error bars: binomial standard error per bucket), a sequence of them
                (error bars: std over the outputs), or None for the current value.
            ax: Axes to draw on; a new figure when omitted.
        """
        from lsmetrics.plot import plot_per_scale_accuracy

        value = val if val is not None else self.compute()
        fig = plot_per_scale_accuracy({type(self).__name__: value}, ax=ax)
        return fig, (fig.axes[0] if ax is None else ax)


class DatasetMeanIoU(Metric):
    r"""The data-set mIoU: IoU per class from one confusion matrix summed over every pixel of the data set.

    $\mathrm{IoU}_c = \mathrm{TP}_c / (\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c)$, averaged over the
    classes present in targets or predictions; pixels whose target is `ignore_index` are left out (and
    that class too, when it is one). The value equals torchmetrics'
    ``MulticlassJaccardIndex(average="macro")``. It is named for what it averages over, the data set, and
    is not `torchmetrics.segmentation.MeanIoU`, which averages per-image scores and so depends on how the
    pixels are split into images.

    States: the `(C, C)` int64 confusion matrix (rows: target class, columns: predicted class).
    `compute()` returns the mIoU, a `()` tensor; `compute_per_class()` the per-class details.

    Args:
        num_classes: Number of classes C.
        ignore_index: Target value whose pixels are left out (e.g. 255).
        **kwargs: Passed to `torchmetrics.Metric` (e.g. `sync_on_compute`, `process_group`).

    Raises:
        TypeError: If `num_classes` or `ignore_index` is not an int.
        ValueError: If `num_classes` is smaller than 1.

    Examples:
        >>> import torch
        >>> metric = DatasetMeanIoU(num_classes=2)
        >>> metric.update(torch.tensor([[[0, 0], [1, 1]]]), torch.tensor([[[0, 1], [1, 1]]]))
        >>> print(round(metric.compute().item(), 4))  # (1/2 + 2/3) / 2
        0.5833
        >>> print([round(v, 4) for v in metric.compute_per_class()["iou"].tolist()])
        [0.5, 0.6667]
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    confmat: torch.Tensor

    def __init__(self, num_classes: int, *, ignore_index: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
            raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        zeros = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.add_state("confmat", zeros, dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: `preds` `(B, H, W)` labels or `(B, C, H, W)` scores, `target` `(B, H, W)` labels."""
        counts = confusion_matrix(preds, target, self.num_classes, ignore_index=self.ignore_index)
        self.confmat += counts.to(self.confmat.device)

    def compute(self) -> torch.Tensor:
        """The mIoU over the classes present so far (NaN before any pixel was seen)."""
        return iou_from_confusion_matrix(self.confmat, ignore_index=self.ignore_index).mean

    def compute_per_class(self) -> dict[str, torch.Tensor]:
        """Per-class results, synchronised across processes like `compute()`.

        Returns:
            ``"iou"``: `(C,)` IoU per class (NaN for a class absent from targets and predictions, and for
            `ignore_index` when it is a class); ``"mean"``: `()` the mIoU; ``"support"``: `(C,)` target
            pixels per class; ``"confusion_matrix"``: `(C, C)` counts. For a Markdown table, pass the
            confusion matrix to `lsmetrics.iou_from_confusion_matrix` and call ``.table()``.
        """
        with self.sync_context(dist_sync_fn=self.dist_sync_fn):
            confmat = self.confmat.clone()
        result = iou_from_confusion_matrix(confmat, ignore_index=self.ignore_index)
        return {
            "iou": result.iou,
            "mean": result.mean,
            "support": result.support,
            "confusion_matrix": result.confusion_matrix,
        }
