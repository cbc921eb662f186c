r"""Accuracy per scale bucket and the probability of the correct class across scales.

Tables 3 and 6 report the accuracy of each scale bucket and, as "Overall", the unweighted mean
$\pm$ the population std of those accuracies over the buckets. Fig. 8 follows the probability of the
correct class for the same image(s) across scale factors. The per-bucket form works from counts
(`per_scale_accuracy_from_counts`), so that counts summed over batches and processes give the exact
data-set value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lsmetrics._utils import check_tensor

__all__ = [
    "CorrectClassProbability",
    "PerScaleAccuracyResult",
    "correct_class_probability",
    "per_scale_accuracy",
    "per_scale_accuracy_from_counts",
]


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
    correct = check_tensor(correct, "correct", [("S",)], dims=dims, kind="integer")
    total = check_tensor(total, "total", [("S",)], dims=dims, kind="integer", device=correct.device)
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
    correct = check_tensor(correct, "correct", [("N",)], dims=dims, kind="any")
    scale_ids = check_tensor(
        scale_ids, "scale_ids", [("N",)], dims=dims, kind="integer", device=correct.device
    )
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
    probs = check_tensor(probs, "probs", [("S", "K"), ("B", "S", "K")], dims=dims)
    single = probs.ndim == 2
    if isinstance(target, bool) or not isinstance(target, (int, torch.Tensor)):
        raise TypeError(f"target must be an int or an integer tensor, got {type(target).__name__}")
    if isinstance(target, int):
        target = torch.tensor(target, device=probs.device)
    if single:
        target = check_tensor(target, "target", [()], kind="integer")
        probs = probs.unsqueeze(0)
        target = target.reshape(1)
    else:
        target = check_tensor(target, "target", [("B",)], dims=dims, kind="integer")
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
