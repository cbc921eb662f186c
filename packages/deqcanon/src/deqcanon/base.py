"""The common interface of every canonicalizer in `deqcanon`.

A canonicalizer is an `nn.Module` with a `group` attribute and `forward(x) -> CanonicalizationResult`
(eq. 6: it predicts $\\tilde g = h(x)$ and returns $S^{-1}(x; \\tilde g)$). Downstream code
(`latentcanon`) relies only on `result.params`, `result.element`, `result.canonical` and
`canonicalizer.group`, so any module with that interface plugs in.

`forward(x, source=...)` predicts the element from another tensor than the one it canonicalizes
(for example from the input image while canonicalizing a latent feature map of the same batch);
the group acts in normalised coordinates, so the sizes may differ.
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import check_tensor, detach_norm_weights
from .groups import Group
from .result import CanonicalizationResult

__all__ = ["Canonicalizer"]


class Canonicalizer(nn.Module):
    """Base class: stores the group, validates inputs, and provides the prior loss.

    Args:
        group: the group to canonicalize with (any object implementing `deqcanon.Group`).

    Raises:
        TypeError: `group` does not implement the protocol.
    """

    def __init__(self, group: Group) -> None:
        super().__init__()
        if not isinstance(group, Group):
            raise TypeError(
                "group must implement the deqcanon.Group protocol (param_shape, identity_params, act, "
                f"act_inverse, element), got {type(group).__name__}"
            )
        if len(tuple(group.param_shape)) < 1:
            raise ValueError(f"group.param_shape must have at least one dimension, got {group.param_shape}")
        self.group = group

    def forward(self, x: torch.Tensor, *, source: torch.Tensor | None = None) -> CanonicalizationResult:
        """Canonicalize `x` `(B, C, H, W)`; the element is predicted from `source` (default: `x`)."""
        raise NotImplementedError

    def prior_loss(self, result: CanonicalizationResult) -> torch.Tensor:
        """Pull towards the identity: batch mean of $\\lVert \\Phi - \\Phi_{id} \\rVert_2^2$ (a scalar).

        Add it with a small weight to keep the predicted elements near the identity when the task
        alone does not determine them (the prior regularisation of equiadapt's canonicalizers).
        """
        params = result.params
        identity = self.group.identity_params(params.shape[0], device=params.device, dtype=params.dtype)
        return (params - identity).pow(2).flatten(1).sum(1).mean()

    def _inputs(self, x: torch.Tensor, source: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor(x, "x", [("B", "C", "H", "W")])
        if source is None:
            return x, x
        check_tensor(source, "source", [("B", "C'", "H'", "W'")])
        if source.shape[0] != x.shape[0]:
            raise ValueError(f"source must have the batch size of x, got {source.shape[0]} and {x.shape[0]}")
        return x, source

    def __getstate__(self) -> dict:
        # torchdeq's normalised weights are non-leaf tensors: detach them so deepcopy/pickle work.
        detach_norm_weights(self)
        return super().__getstate__()
