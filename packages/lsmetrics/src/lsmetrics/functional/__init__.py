r"""Local scale consistency metrics as pure tensor functions.

- `lsmetrics.functional.consistency`: InvE (eq. 24) and EquE (eq. 23), each in the paper's variant
  (squared L2) and the authors' code variant (``variant="reference"``); the paper variant of InvE is
  also the InvL loss of eq. 25.
- `lsmetrics.functional.accuracy`: accuracy per scale bucket with "overall mean $\pm$ std" over the
  buckets (Tables 3 and 6, population std), and the probability of the correct class across scales
  (Fig. 8).
- `lsmetrics.functional.segmentation`: the data-set mIoU from an accumulated confusion matrix (not a
  mean of per-batch or per-image scores).

The functions and result classes of the three modules are re-exported here and at the top level of
`lsmetrics`. Results with several parts
are small dataclasses (`PerScaleAccuracyResult`, `CorrectClassProbability`, `IoUResult`); the
torchmetrics classes of `lsmetrics.metrics` return tensors or dicts of tensors instead.
"""

from lsmetrics.functional.accuracy import (
    CorrectClassProbability,
    PerScaleAccuracyResult,
    correct_class_probability,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)
from lsmetrics.functional.consistency import (
    REDUCTIONS,
    VARIANTS,
    Reduction,
    Variant,
    equivariance_error,
    invariance_error,
)
from lsmetrics.functional.segmentation import (
    IoUResult,
    confusion_matrix,
    dataset_mean_iou,
    iou_from_confusion_matrix,
)

__all__ = [
    "REDUCTIONS",
    "VARIANTS",
    "CorrectClassProbability",
    "IoUResult",
    "PerScaleAccuracyResult",
    "Reduction",
    "Variant",
    "confusion_matrix",
    "correct_class_probability",
    "dataset_mean_iou",
    "equivariance_error",
    "invariance_error",
    "iou_from_confusion_matrix",
    "per_scale_accuracy",
    "per_scale_accuracy_from_counts",
]
