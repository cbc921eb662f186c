r"""The data-set mIoU of a segmentation: one confusion matrix over every pixel of the data set.

$\mathrm{IoU}_c = \mathrm{TP}_c / (\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c)$ from the confusion
matrix accumulated over all pixels, and mIoU its mean over the classes present in targets or
predictions. This is not the mean of per-batch or per-image scores (what the authors' code reported, and
what `torchmetrics.functional.segmentation.mean_iou` computes): those depend on how the data set is cut.

The confusion matrix is torchmetrics' `multiclass_confusion_matrix` behind this package's input checks.
The IoU of an accumulated matrix is computed here: torchmetrics offers it only from predictions, and
there an absent class scores `zero_division` rather than NaN. torchmetrics is imported on first use, as
it takes seconds to import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsmetrics._utils import check_tensor

__all__ = [
    "IoUResult",
    "confusion_matrix",
    "dataset_mean_iou",
    "iou_from_confusion_matrix",
]


@dataclass(eq=False)
class IoUResult:
    r"""Per-class IoU and mIoU from a confusion matrix accumulated over a data set.

    Attributes:
        iou: `(C,)` $\mathrm{TP}_c / (\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c)$; NaN for a class that
            appears in neither targets nor predictions, and for `ignore_index` when it is a class.
        mean: `()` mIoU, the mean of `iou` over the classes that are not NaN.
        confusion_matrix: `(C, C)` pixel counts, rows = target class, columns = predicted class.
        support: `(C,)` number of target pixels per class.
    """

    iou: torch.Tensor
    mean: torch.Tensor
    confusion_matrix: torch.Tensor
    support: torch.Tensor

    def table(self, class_names: list[str] | None = None, *, percent: bool = True, digits: int = 2) -> str:
        """The per-class table as Markdown: class, IoU, support, and a final mIoU row.

        Args:
            class_names: C names; class indices when omitted.
            percent: Show IoU in percent.
            digits: Decimal places.

        Raises:
            ValueError: If `class_names` does not have C entries.
        """
        num_classes = self.iou.shape[0]
        if class_names is None:
            class_names = [str(c) for c in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names must have {num_classes} entries, got {len(class_names)}")
        scale = 100.0 if percent else 1.0
        unit = " (%)" if percent else ""
        lines = [f"| class | IoU{unit} | support |", "| --- | ---: | ---: |"]
        for name, iou, support in zip(class_names, self.iou.tolist(), self.support.tolist(), strict=True):
            value = "n/a" if iou != iou else f"{iou * scale:.{digits}f}"
            lines.append(f"| {name} | {value} | {int(support)} |")
        lines.append(f"| **mIoU** | {self.mean.item() * scale:.{digits}f} | {int(self.support.sum())} |")
        return "\n".join(lines)


def _labels(preds: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.ndim < 1:
        raise ValueError("target must have shape (B, H, W) (at least one dimension), got ()")
    names = ("B", "H", "W") if target.ndim == 3 else ("B", *[f"D{i}" for i in range(1, target.ndim)])
    dims: dict[str, int] = {}
    target = check_tensor(target, "target", [names], dims=dims, kind="integer")
    if not isinstance(preds, torch.Tensor):
        raise TypeError(f"preds must be a torch.Tensor, got {type(preds).__name__}")
    if preds.dtype.is_floating_point:
        scores = (names[0], num_classes, *names[1:])
        return check_tensor(preds, "preds", [scores], dims=dims, device=target.device).argmax(dim=1)
    return check_tensor(preds, "preds", [names], dims=dims, kind="integer", device=target.device)


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_index: int | None = None
) -> torch.Tensor:
    """Pixel confusion matrix of a segmentation batch; sum these over a data set for mIoU.

    The counting is torchmetrics' `multiclass_confusion_matrix`; this function adds the input checks
    (shapes, dtypes, labels in range outside the ignored pixels) with errors that name the argument.

    Args:
        preds: `(B, H, W)` integer class labels, or `(B, C, H, W)` scores (probabilities or logits) whose
            argmax over C is taken. Any trailing dimensions work in place of `H, W`.
        target: `(B, H, W)` integer labels in `[0, C)`, or `ignore_index`.
        num_classes: Number of classes C.
        ignore_index: Target value whose pixels are left out entirely (e.g. 255 for void).

    Returns:
        `(C, C)` int64 counts, rows = target class, columns = predicted class.

    Raises:
        TypeError: On wrong dtypes or a non-integer `num_classes` / `ignore_index`.
        ValueError: On mismatched shapes or labels out of range.

    Examples:
        >>> import torch
        >>> confusion_matrix(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 255]]), 2, ignore_index=255)
        tensor([[1, 0],
                [0, 1]])
    """
    labels = _labels(preds, target, num_classes).flatten()
    truth = target.flatten()
    if ignore_index is not None:
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__}")
        keep = truth != ignore_index
        labels, truth = labels[keep], truth[keep]
    if bool(((truth < 0) | (truth >= num_classes)).any()):
        raise ValueError(
            f"target must hold labels in [0, {num_classes})"
            + (f" or {ignore_index}" if ignore_index is not None else "")
        )
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"preds must hold labels in [0, {num_classes})")
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    return multiclass_confusion_matrix(labels, truth, num_classes, validate_args=False)


def iou_from_confusion_matrix(confmat: torch.Tensor, *, ignore_index: int | None = None) -> IoUResult:
    r"""Per-class IoU and mIoU from an accumulated confusion matrix.

    $\mathrm{IoU}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c}$ with
    $\mathrm{TP}_c = N_{cc}$, $\mathrm{FP}_c = \sum_{t \ne c} N_{tc}$, $\mathrm{FN}_c = \sum_{p \ne c}
    N_{cp}$; mIoU is the mean over the classes present in targets or predictions (and not ignored). This is
    the value of torchmetrics' ``MulticlassJaccardIndex(average="macro")``.

    Args:
        confmat: `(C, C)` counts, rows = target, columns = prediction.
        ignore_index: A class index in `[0, C)` to leave out of the mean; other values are ignored.

    Returns:
        The per-class IoU, mIoU, the confusion matrix and the per-class support.

    Raises:
        TypeError: If `confmat` is not a real tensor.
        ValueError: If `confmat` is not square, has negative or non-finite entries.

    Examples:
        >>> import torch
        >>> result = iou_from_confusion_matrix(torch.tensor([[3, 1], [0, 2]]))
        >>> print([round(v, 4) for v in result.iou.tolist()], round(result.mean.item(), 4))
        [0.75, 0.6667] 0.7083
    """
    confmat = check_tensor(confmat, "confmat", [("C", "C")], kind="any")
    if bool((confmat < 0).any()):
        raise ValueError("confmat must not have negative entries")
    dtype = torch.float64
    counts = confmat.to(dtype)
    tp = counts.diagonal()
    union = counts.sum(dim=0) + counts.sum(dim=1) - tp
    present = union > 0
    if ignore_index is not None and 0 <= ignore_index < confmat.shape[0]:
        present[ignore_index] = False
    iou = torch.full_like(tp, float("nan"))
    iou[present] = tp[present] / union[present]
    mean = iou[present].mean() if bool(present.any()) else torch.tensor(float("nan"), dtype=dtype)
    out_dtype = torch.get_default_dtype()
    return IoUResult(
        iou=iou.to(out_dtype),
        mean=mean.to(out_dtype),
        confusion_matrix=confmat,
        support=counts.sum(dim=1).round().long(),
    )


def dataset_mean_iou(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_index: int | None = None
) -> IoUResult:
    """mIoU of one batch or a whole data set given at once (one confusion matrix over all pixels).

    Over several batches, sum `confusion_matrix` and call `iou_from_confusion_matrix`, or use
    `lsmetrics.DatasetMeanIoU`: averaging per-batch mIoU (what the authors' code did) gives another,
    batch-size dependent number. The name sets it apart from
    `torchmetrics.functional.segmentation.mean_iou`, a per-image score.

    Args:
        preds: `(B, H, W)` labels or `(B, C, H, W)` scores (argmax over C).
        target: `(B, H, W)` labels in `[0, C)` or `ignore_index`.
        num_classes: Number of classes C.
        ignore_index: Target value whose pixels are left out (and, if it is a class, left out of the mean).

    Returns:
        The per-class IoU, the mIoU, the confusion matrix and the support.

    Raises:
        TypeError: On wrong dtypes.
        ValueError: On mismatched shapes or labels out of range.

    Examples:
        >>> import torch
        >>> preds = torch.tensor([[[0, 0], [1, 1]]])
        >>> target = torch.tensor([[[0, 1], [1, 1]]])
        >>> print(round(dataset_mean_iou(preds, target, 2).mean.item(), 4))  # (1/2 + 2/3) / 2
        0.5833
    """
    confmat = confusion_matrix(preds, target, num_classes, ignore_index=ignore_index)
    return iou_from_confusion_matrix(confmat, ignore_index=ignore_index)
