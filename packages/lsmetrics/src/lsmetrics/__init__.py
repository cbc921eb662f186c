r"""Local scale equivariance and invariance metrics: EquE, InvE, per-scale accuracy, mIoU.

- Functions (`lsmetrics.functional`): `invariance_error` (InvE, eq. 24),
  `equivariance_error` (EquE, eq. 23), each with ``variant="paper"`` (squared L2, as defined) or
  ``variant="reference"`` (what the authors' code computes); `per_scale_accuracy` (Tables 3 and 6);
  `correct_class_probability` (Fig. 8); `dataset_mean_iou`, `confusion_matrix` and
  `iou_from_confusion_matrix` (data-set mIoU). Results with several parts are dataclasses.
- Model-level loops (`lsmetrics.measure`): `measure_invariance`, `measure_equivariance`,
  for any transform given as a callable (the package imports no group library).
- torchmetrics classes (`lsmetrics.metrics`, imported on first use since torchmetrics is slow to
  import): `InvarianceError`, `EquivarianceError`, `PerScaleAccuracy`, `DatasetMeanIoU`, synchronised
  across processes; `compute()` returns a tensor or a dict of tensors.
- Plots (`lsmetrics.plot`, import it explicitly; needs matplotlib): per-scale accuracy and Fig. 8 style
  curves.
"""

from typing import TYPE_CHECKING, Any

from lsmetrics.functional import (
    CorrectClassProbability,
    IoUResult,
    PerScaleAccuracyResult,
    confusion_matrix,
    correct_class_probability,
    dataset_mean_iou,
    equivariance_error,
    invariance_error,
    iou_from_confusion_matrix,
    per_scale_accuracy,
    per_scale_accuracy_from_counts,
)
from lsmetrics.measure import measure_equivariance, measure_invariance

if TYPE_CHECKING:  # imported on first use: torchmetrics takes seconds to import
    from lsmetrics.metrics import DatasetMeanIoU, EquivarianceError, InvarianceError, PerScaleAccuracy

__version__ = "0.1.0"

__all__ = [
    "CorrectClassProbability",
    "DatasetMeanIoU",
    "EquivarianceError",
    "InvarianceError",
    "IoUResult",
    "PerScaleAccuracy",
    "PerScaleAccuracyResult",
    "__version__",
    "confusion_matrix",
    "correct_class_probability",
    "dataset_mean_iou",
    "equivariance_error",
    "invariance_error",
    "iou_from_confusion_matrix",
    "measure_equivariance",
    "measure_invariance",
    "per_scale_accuracy",
    "per_scale_accuracy_from_counts",
]

_LAZY = {"DatasetMeanIoU", "EquivarianceError", "InvarianceError", "PerScaleAccuracy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from lsmetrics import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'lsmetrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
