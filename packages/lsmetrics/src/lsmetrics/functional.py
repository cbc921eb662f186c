r"""Local scale consistency metrics as pure tensor functions.

The paper measures how far a model $M$ is from being equivariant or invariant to a local scaling
$S(\cdot; \Phi)$ (eq. 13), with $\Phi$ drawn from a distribution $\Omega$:

- EquE (eq. 23), for dense outputs:
  $\frac{1}{\lvert D\rvert}\sum_{I \in D} \mathbb{E}_{\Phi \sim \Omega}
  \lVert S(M(I); \Phi) - M(S(I; \Phi))\rVert_2^2$, the squared norm taken over the channels of every
  pixel and averaged over the pixels.
- InvE (eq. 24), for class scores:
  $\frac{1}{\lvert D\rvert \lvert S_I\rvert}\sum_{I \in D}\sum_{I_s \in S_I} \lVert M(I) - M(I_s)\rVert_2^2$.
- The training loss of eq. 25 is InvE with $\Phi \sim \Omega$; the same function serves as a loss.

Both errors come in two variants: ``variant="paper"`` is the squared L2 mean of the equations;
``variant="reference"`` is what the authors' code computes (InvE: the relative, unsquared norm
$\lVert r - t\rVert_2 / \lVert r\rVert_2$; EquE: the root of the per-sample mean, i.e. a root mean
square over pixels).

Accuracy per scale bucket with "overall mean $\pm$ std" over the buckets (Tables 3 and 6, population std),
the probability of the correct class across scales (Fig. 8) and the data-set level mIoU (accumulated
confusion matrix, not a mean of per-batch scores) complete the set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lsmetrics._utils import check_choice, check_tensor

__all__ = [
    "CorrectClassProbability",
    "IoUResult",
    "PerScaleAccuracyResult",
    "confusion_matrix",
    "correct_class_probability",
    "equivariance_error",
    "invariance_error",
    "iou_from_confusion_matrix",
    "mean_iou",
    "per_scale_accuracy",
    "per_scale_accuracy_from_counts",
]

Variant = Literal["paper", "reference"]
Reduction = Literal["mean", "sum", "none"]

VARIANTS = ("paper", "reference")
REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------------
# InvE and EquE
# --------------------------------------------------------------------------------------------------


def invariance_error(
    reference: torch.Tensor,
    transformed: torch.Tensor,
    *,
    variant: Variant = "paper",
    reduction: Reduction = "mean",
    eps: float = 1e-12,
) -> torch.Tensor:
    r"""Local scale invariance error InvE (eq. 24).

    With $r_b = M(I_b)$ the output on an untransformed input and $t_{b,s} = M(I_{b,s})$ the outputs on its
    $S$ transformed versions:

    - ``variant="paper"`` (eq. 24): $e_{b,s} = \lVert r_b - t_{b,s}\rVert_2^2$;
    - ``variant="reference"`` (the authors' code):
      $e_{b,s} = \lVert r_b - t_{b,s}\rVert_2 / \lVert r_b\rVert_2$ (the denominator clamped at `eps`).

    The result is the mean of $e_{b,s}$ over $b$ and $s$. The paper evaluates InvE on softmax
    probabilities (and reports it $\times 10^{-2}$); pass probabilities to reproduce it, logits only if
    you mean it. The paper variant is differentiable and doubles as the InvL loss of eq. 25.

    Args:
        reference: `(B, K)` outputs on the untransformed inputs.
        transformed: `(B, S, K)` outputs on S transformed versions of each input, or `(B, K)` for one.
        variant: ``"paper"`` (squared L2, eq. 24) or ``"reference"`` (relative unsquared L2).
        reduction: ``"mean"`` (a scalar), ``"sum"`` or ``"none"`` (the per-pair errors, `(B, S)`, or
            `(B,)` when `transformed` is `(B, K)`).
        eps: Lower bound of $\lVert r_b\rVert_2$ in the reference variant.

    Returns:
        The error: a scalar for ``"mean"``/``"sum"``, else `(B, S)` or `(B,)`.

    Raises:
        TypeError: If an input is not a floating point tensor.
        ValueError: On mismatched shapes, NaN/inf entries or an unknown `variant`/`reduction`.

    Examples:
        >>> import torch
        >>> reference = torch.tensor([[0.8, 0.2], [0.5, 0.5]])
        >>> transformed = torch.tensor([[[0.6, 0.4]], [[0.5, 0.5]]])
        >>> print(round(invariance_error(reference, transformed).item(), 4))  # (0.04 + 0.04 + 0) / 2
        0.04
        >>> print(round(invariance_error(reference, transformed, variant="reference").item(), 4))
        0.1715
    """
    check_choice(variant, "variant", VARIANTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    dims: dict[str, int] = {}
    check_tensor(reference, "reference", [("B", "K")], dims=dims)
    shapes = [("B", "S", "K"), ("B", "K")]
    single = check_tensor(transformed, "transformed", shapes, dims=dims, device=reference.device) == 1
    if single:
        transformed = transformed.unsqueeze(1)
    ref = reference.unsqueeze(1)
    diff = transformed - ref
    if variant == "paper":
        errors = diff.square().sum(dim=-1)
    else:
        norm = torch.linalg.vector_norm(ref, dim=-1).clamp_min(eps)
        errors = torch.linalg.vector_norm(diff, dim=-1) / norm
    if single:
        errors = errors.squeeze(1)
    return _reduce(errors, reduction)


def equivariance_error(
    expected: torch.Tensor,
    actual: torch.Tensor,
    *,
    variant: Variant = "paper",
    valid: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    r"""Local scale equivariance error EquE (eq. 23) of dense outputs.

    `expected` is $S(M(I); \Phi)$ (the transformed output) and `actual` is $M(S(I; \Phi))$ (the output on
    the transformed input). Per pixel $p$ of sample $n$ (a sample is one `(b, s)` pair), with weights
    $w_{n,p}$ from `valid` (all ones without it):

    - $d_{n,p} = \sum_c (\mathrm{expected}_{n,c,p} - \mathrm{actual}_{n,c,p})^2$;
    - ``variant="paper"`` (eq. 23): $e_n = \sum_p w_{n,p} d_{n,p} / \sum_p w_{n,p}$;
    - ``variant="reference"`` (the authors' code): $e_n = \sqrt{\sum_p w_{n,p} d_{n,p} / \sum_p w_{n,p}}$.

    The result is the mean of $e_n$ over samples. The paper compares predicted masks, i.e. softmax
    probabilities over the C classes. The `valid` mask drops pixels that a warp filled from outside the
    image (padding), where no equivariant model can agree.

    Args:
        expected: `(B, C, H, W)` or `(B, S, C, H, W)`: the model's output, transformed.
        actual: The model's output on the transformed input, same shape as `expected`.
        variant: ``"paper"`` (squared L2, eq. 23) or ``"reference"`` (root mean square per sample).
        valid: Optional `(B, H, W)` / `(B, 1, H, W)` mask (`(B, S, H, W)` / `(B, S, 1, H, W)` for 5-D
            inputs), bool or float weights in [0, 1]. Every sample needs a positive total weight.
        reduction: ``"mean"`` (a scalar), ``"sum"`` or ``"none"`` (per-sample errors, `(B,)` or
            `(B, S)`).

    Returns:
        The error: a scalar for ``"mean"``/``"sum"``, else `(B,)` or `(B, S)`.

    Raises:
        TypeError: If an input has the wrong dtype.
        ValueError: On mismatched shapes, NaN/inf entries, weights outside [0, 1], a sample without valid
            pixels or an unknown `variant`/`reduction`.

    Examples:
        >>> import torch
        >>> expected = torch.zeros(1, 2, 2, 2)
        >>> actual = torch.zeros(1, 2, 2, 2)
        >>> actual[0, :, 0, 0] = torch.tensor([0.6, 0.8])  # one pixel off by a unit vector
        >>> print(round(equivariance_error(expected, actual).item(), 4))  # 1 / 4 pixels
        0.25
        >>> print(round(equivariance_error(expected, actual, variant="reference").item(), 4))
        0.5
        >>> valid = torch.tensor([[[False, True], [True, True]]])
        >>> print(round(equivariance_error(expected, actual, valid=valid).item(), 4))
        0.0
    """
    check_choice(variant, "variant", VARIANTS)
    check_choice(reduction, "reduction", REDUCTIONS)
    dims: dict[str, int] = {}
    shapes: list[tuple[str, ...]] = [("B", "C", "H", "W"), ("B", "S", "C", "H", "W")]
    index = check_tensor(expected, "expected", shapes, dims=dims)
    check_tensor(actual, "actual", [shapes[index]], dims=dims, device=expected.device)
    per_pixel = (expected - actual).square().sum(dim=-3)  # (B, [S,] H, W)
    if valid is None:
        per_sample = per_pixel.mean(dim=(-2, -1))
    else:
        lead: tuple[str, ...] = ("B",) if index == 0 else ("B", "S")
        check_tensor(
            valid,
            "valid",
            [(*lead, "H", "W"), (*lead, 1, "H", "W")],
            dims=dims,
            kind="mask",
            nonempty=False,
            device=expected.device,
        )
        if valid.ndim == per_pixel.ndim + 1:
            valid = valid.squeeze(-3)
        if valid.dtype != torch.bool and bool(((valid < 0) | (valid > 1)).any()):
            raise ValueError("valid must hold weights in [0, 1]")
        weights = valid.to(per_pixel.dtype)
        total = weights.sum(dim=(-2, -1))
        if bool((total <= 0).any()):
            empty = (total <= 0).nonzero().tolist()
            raise ValueError(f"valid has no valid pixel for sample(s) {empty[:5]}")
        per_sample = (weights * per_pixel).sum(dim=(-2, -1)) / total
    if variant == "reference":
        per_sample = per_sample.sqrt()
    return _reduce(per_sample, reduction)


def _reduce(errors: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return errors.mean()
    if reduction == "sum":
        return errors.sum()
    return errors


# --------------------------------------------------------------------------------------------------
# Per-scale accuracy and the probability of the correct class
# --------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class PerScaleAccuracyResult:
    r"""Accuracy per scale bucket, and its mean and population std over the buckets (Tables 3, 6).

    All accuracies are fractions in [0, 1]; the paper's tables show them $\times 100$.

    Attributes:
        accuracy: `(S,)` accuracy of each bucket; NaN for a bucket without samples.
        correct: `(S,)` number of correct predictions per bucket.
        total: `(S,)` number of samples per bucket.
        mean: `()` mean of `accuracy` over the non-empty buckets ("Overall" in Tables 3 and 6).
        std: `()` population standard deviation (divisor S) of `accuracy` over the non-empty buckets.
        pooled: `()` accuracy over all samples (differs from `mean` when the buckets differ in size).
    """

    accuracy: torch.Tensor
    correct: torch.Tensor
    total: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    pooled: torch.Tensor

    def format_overall(self, *, percent: bool = True, digits: int = 2) -> str:
        """The "mean ± std" cell of Tables 3 and 6, e.g. ``"93.93 ± 1.91"``."""
        scale = 100.0 if percent else 1.0
        return f"{self.mean.item() * scale:.{digits}f} ± {self.std.item() * scale:.{digits}f}"


def per_scale_accuracy_from_counts(correct: torch.Tensor, total: torch.Tensor) -> PerScaleAccuracyResult:
    r"""Per-scale accuracy from per-bucket counts of correct predictions and of samples.

    $\mathrm{acc}_s = \mathrm{correct}_s / \mathrm{total}_s$; over the non-empty buckets $\mathcal{S}$,
    $\mu = \frac{1}{\lvert\mathcal{S}\rvert}\sum_s \mathrm{acc}_s$ and
    $\sigma = \sqrt{\frac{1}{\lvert\mathcal{S}\rvert}\sum_s (\mathrm{acc}_s - \mu)^2}$ (population std, as in
    Tables 3 and 6).

    Args:
        correct: `(S,)` correct predictions per bucket (integer counts).
        total: `(S,)` samples per bucket, at least `correct`.

    Returns:
        The result; `mean`, `std` and `pooled` are NaN when every bucket is empty.

    Raises:
        TypeError: If the counts are not integer tensors.
        ValueError: On mismatched shapes, negative counts or `correct > total`.

    Examples:
        >>> import torch
        >>> correct, total = torch.tensor([9164, 9632, 9384]), torch.tensor([10000, 10000, 10000])
        >>> result = per_scale_accuracy_from_counts(correct, total)
        >>> print(result.format_overall())  # Table 3, Aug
        93.93 ± 1.91
    """
    dims: dict[str, int] = {}
    check_tensor(correct, "correct", [("S",)], dims=dims, kind="integer")
    check_tensor(total, "total", [("S",)], dims=dims, kind="integer", device=correct.device)
    if bool((correct < 0).any()) or bool((correct > total).any()):
        raise ValueError("correct must satisfy 0 <= correct <= total in every bucket")
    dtype = torch.get_default_dtype()
    correct = correct.long()
    total = total.long()
    present = total > 0
    accuracy = torch.full(total.shape, float("nan"), dtype=dtype, device=total.device)
    accuracy[present] = correct[present].to(dtype) / total[present].to(dtype)
    kept = accuracy[present]
    nan = torch.tensor(float("nan"), dtype=dtype, device=total.device)
    if kept.numel() == 0:
        mean, std, pooled = nan, nan.clone(), nan.clone()
    else:
        mean = kept.mean()
        std = (kept - mean).square().mean().sqrt()
        pooled = correct.sum().to(dtype) / total.sum().to(dtype)
    return PerScaleAccuracyResult(
        accuracy=accuracy, correct=correct, total=total, mean=mean, std=std, pooled=pooled
    )


def per_scale_accuracy(
    correct: torch.Tensor, scale_ids: torch.Tensor, num_scales: int
) -> PerScaleAccuracyResult:
    r"""Accuracy per scale bucket with "overall mean $\pm$ std" over the buckets (Tables 3 and 6).

    Each sample belongs to one bucket (e.g. the local scale range of its digits, Table 3, or the object
    scale factor, Table 6). See `per_scale_accuracy_from_counts` for the formulas; "Overall" is
    the unweighted mean over buckets with the population std, not the pooled accuracy.

    Args:
        correct: `(N,)` whether each prediction is right: bool, or integers / floats in {0, 1}.
        scale_ids: `(N,)` integer bucket index of each sample, in `[0, num_scales)`.
        num_scales: Number of buckets S.

    Returns:
        The per-bucket accuracies (fractions) with their mean, std and pooled accuracy.

    Raises:
        TypeError: On a wrong dtype or a non-integer `num_scales`.
        ValueError: On mismatched shapes, values outside {0, 1} or bucket ids out of range.

    Examples:
        >>> import torch
        >>> correct = torch.tensor([True, True, False, True, False, False])
        >>> scale_ids = torch.tensor([0, 0, 0, 1, 1, 2])
        >>> result = per_scale_accuracy(correct, scale_ids, 3)
        >>> print([round(a, 4) for a in result.accuracy.tolist()])
        [0.6667, 0.5, 0.0]
        >>> print(round(result.mean.item(), 4), round(result.std.item(), 4))
        0.3889 0.2833
    """
    if isinstance(num_scales, bool) or not isinstance(num_scales, int):
        raise TypeError(f"num_scales must be an int, got {type(num_scales).__name__}")
    if num_scales < 1:
        raise ValueError(f"num_scales must be at least 1, got {num_scales}")
    dims: dict[str, int] = {}
    check_tensor(correct, "correct", [("N",)], dims=dims, kind="any")
    check_tensor(scale_ids, "scale_ids", [("N",)], dims=dims, kind="integer", device=correct.device)
    if correct.dtype != torch.bool:
        if bool(((correct != 0) & (correct != 1)).any()):
            raise ValueError("correct must hold only 0/1 (or bool) values")
    if bool((scale_ids < 0).any()) or bool((scale_ids >= num_scales).any()):
        raise ValueError(
            f"scale_ids must lie in [0, {num_scales}), got values in "
            f"[{int(scale_ids.min())}, {int(scale_ids.max())}]"
        )
    ids = scale_ids.long()
    total = torch.bincount(ids, minlength=num_scales)
    hits = torch.zeros(num_scales, dtype=torch.long, device=ids.device)
    hits.scatter_add_(0, ids, correct.long())
    return per_scale_accuracy_from_counts(hits, total)


@dataclass(eq=False)
class CorrectClassProbability:
    r"""The probability of the correct class across scales (Fig. 8).

    Attributes:
        probability: `(S,)` probability of the correct class at each scale, averaged over the images.
        image_std: `(S,)` population std of that probability over the images (zeros for one image).
        mean: `()` mean of `probability` over the scales ("across all scales, ... 73.11").
        std: `()` population std of `probability` over the scales (the "$\pm$" of Fig. 8).
    """

    probability: torch.Tensor
    image_std: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def correct_class_probability(
    probs: torch.Tensor, target: torch.Tensor | int, *, from_logits: bool = False
) -> CorrectClassProbability:
    r"""Probability of the correct class for the same image(s) at S scales (the curve of Fig. 8).

    With $p_{b,s} = \mathrm{softmax}(M(I_{b,s}))_{y_b}$: the curve is $\bar p_s = \frac{1}{B}\sum_b
    p_{b,s}$, summarised as mean and population std over the scales.

    Args:
        probs: `(S, K)` class probabilities of one image at S scales, or `(B, S, K)` for B images.
        target: The correct class: an int or a `()` tensor for one image, a `(B,)` tensor for B images.
        from_logits: Apply a softmax over K first.

    Returns:
        The per-scale curve with its spread over images and its summary over scales.

    Raises:
        TypeError: On a wrong dtype.
        ValueError: On mismatched shapes, class indices out of range, or (without `from_logits`)
            probabilities outside [0, 1].

    Examples:
        >>> import torch
        >>> probs = torch.tensor([[0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])  # 3 scales, 2 classes
        >>> curve = correct_class_probability(probs, 1)
        >>> print([round(p, 2) for p in curve.probability.tolist()], round(curve.mean.item(), 4))
        [0.8, 0.6, 0.3] 0.5667
    """
    dims: dict[str, int] = {}
    single = check_tensor(probs, "probs", [("S", "K"), ("B", "S", "K")], dims=dims) == 0
    if isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)):
        raise TypeError(f"target must be an int or an integer tensor, got {type(target).__name__}")
    if isinstance(target, int):
        target = torch.tensor(target, device=probs.device)
    if single:
        check_tensor(target, "target", [()], kind="integer")
        probs = probs.unsqueeze(0)
        target = target.reshape(1)
    else:
        check_tensor(target, "target", [("B",)], dims=dims, kind="integer")
    num_classes = probs.shape[-1]
    if bool((target < 0).any()) or bool((target >= num_classes).any()):
        raise ValueError(f"target must lie in [0, {num_classes}), got {target.tolist()}")
    if from_logits:
        probs = probs.softmax(dim=-1)
    elif bool(((probs < 0) | (probs > 1)).any()):
        raise ValueError("probs must lie in [0, 1]; pass from_logits=True for logits")
    index = target.long().to(probs.device).view(-1, 1, 1).expand(-1, probs.shape[1], 1)
    p = probs.gather(-1, index).squeeze(-1)  # (B, S)
    probability = p.mean(dim=0)
    image_std = (p - probability).square().mean(dim=0).sqrt()
    mean = probability.mean()
    std = (probability - mean).square().mean().sqrt()
    return CorrectClassProbability(probability=probability, image_std=image_std, mean=mean, std=std)


# --------------------------------------------------------------------------------------------------
# mIoU
# --------------------------------------------------------------------------------------------------


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
    check_tensor(target, "target", [names], dims=dims, kind="integer")
    if not isinstance(preds, torch.Tensor):
        raise TypeError(f"preds must be a torch.Tensor, got {type(preds).__name__}")
    if preds.dtype.is_floating_point:
        check_tensor(preds, "preds", [(names[0], num_classes, *names[1:])], dims=dims, device=target.device)
        return preds.argmax(dim=1)
    check_tensor(preds, "preds", [names], dims=dims, kind="integer", device=target.device)
    return preds


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_index: int | None = None
) -> torch.Tensor:
    """Pixel confusion matrix of a segmentation batch; sum these over a data set for mIoU.

    Args:
        preds: `(B, H, W)` integer class labels, or `(B, C, H, W)` scores (probabilities or logits) whose
            argmax over C is taken. Any trailing dimensions work in place of `H, W`.
        target: `(B, H, W)` integer labels in `[0, C)`, or `ignore_index`.
        num_classes: Number of classes C.
        ignore_index: Target value whose pixels are left out entirely (e.g. 255 for void).

    Returns:
        `(C, C)` int64 counts, rows = target class, columns = predicted class.

    Raises:
        TypeError: On wrong dtypes.
        ValueError: On mismatched shapes or labels out of range.

    Examples:
        >>> import torch
        >>> confusion_matrix(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 255]]), 2, ignore_index=255)
        tensor([[1, 0],
                [0, 1]])
    """
    labels = _labels(preds, target, num_classes)
    labels = labels.flatten().long()
    truth = target.flatten().long()
    if ignore_index is not None:
        keep = truth != ignore_index
        labels, truth = labels[keep], truth[keep]
    if bool(((truth < 0) | (truth >= num_classes)).any()):
        raise ValueError(
            f"target must hold labels in [0, {num_classes})"
            + (f" or {ignore_index}" if ignore_index is not None else "")
        )
    if bool(((labels < 0) | (labels >= num_classes)).any()):
        raise ValueError(f"preds must hold labels in [0, {num_classes})")
    counts = torch.bincount(truth * num_classes + labels, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


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
    check_tensor(confmat, "confmat", [("C", "C")], kind="any")
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


def mean_iou(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, *, ignore_index: int | None = None
) -> IoUResult:
    """mIoU of one batch or a whole data set given at once (one confusion matrix over all pixels).

    Over several batches, sum `confusion_matrix` and call `iou_from_confusion_matrix`, or use
    `lsmetrics.MeanIoU`: averaging per-batch mIoU (what the authors' code did) gives another,
    batch-size dependent number.

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
        >>> print(round(mean_iou(preds, target, 2).mean.item(), 4))  # (1/2 + 2/3) / 2
        0.5833
    """
    confmat = confusion_matrix(preds, target, num_classes, ignore_index=ignore_index)
    return iou_from_confusion_matrix(confmat, ignore_index=ignore_index)
