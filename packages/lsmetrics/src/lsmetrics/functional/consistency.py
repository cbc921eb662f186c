r"""Local scale consistency errors: InvE (eq. 24) and EquE (eq. 23).

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
"""

from __future__ import annotations

from typing import Literal

import torch

from lsmetrics._utils import check_choice, check_tensor

__all__ = [
    "REDUCTIONS",
    "VARIANTS",
    "Reduction",
    "Variant",
    "equivariance_error",
    "invariance_error",
]

Variant = Literal["paper", "reference"]
Reduction = Literal["mean", "sum", "none"]

VARIANTS = ("paper", "reference")
REDUCTIONS = ("mean", "sum", "none")


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
    reference = check_tensor(reference, "reference", [("B", "K")], dims=dims)
    shapes = [("B", "S", "K"), ("B", "K")]
    transformed = check_tensor(transformed, "transformed", shapes, dims=dims, device=reference.device)
    single = transformed.ndim == 2
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
    expected = check_tensor(expected, "expected", shapes, dims=dims)
    pattern = shapes[0] if expected.ndim == 4 else shapes[1]
    actual = check_tensor(actual, "actual", [pattern], dims=dims, device=expected.device)
    per_pixel = (expected - actual).square().sum(dim=-3)  # (B, [S,] H, W)
    if valid is None:
        per_sample = per_pixel.mean(dim=(-2, -1))
    else:
        lead: tuple[str, ...] = ("B",) if expected.ndim == 4 else ("B", "S")
        valid = check_tensor(
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
