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

from typing import Literal

import torch
from torch import nn

from ._utils import check_choice, check_tensor, detach_norm_weights
from .groups import Group
from .param_net import ParamNet
from .result import CanonicalizationResult

__all__ = ["Canonicalizer", "ParamNetCanonicalizer"]


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


class ParamNetCanonicalizer(Canonicalizer):
    """Base class of the canonicalizers that predict the element with a parameter network $H$.

    Args:
        group: the group (`deqcanon.Group`).
        param_net: $H$, mapping an input `(B, C, H, W)` to parameters `(B, *group.param_shape)`. Default:
            `ParamNet(group, in_channels)`. If it has a `view(x)` method (as `ParamNet` does), $H$ reads
            that view of the input.
        in_channels: input channels of the default `ParamNet` (default 3); not allowed with `param_net`.
        eval_backward: `"same"`: in eval mode, build the same graph as in training whenever autograd is
            enabled and something requires grad; `"detach"`: eval results never carry gradients.
        on_nonfinite: `"identity"`: samples with non-finite parameters become the identity (and the batch
            is detached from $H$); `"raise"`: raise `FloatingPointError`.

    Raises:
        TypeError, ValueError: invalid options.
    """

    def __init__(
        self,
        group: Group,
        param_net: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        eval_backward: Literal["same", "detach"] = "same",
        on_nonfinite: Literal["identity", "raise"] = "identity",
    ) -> None:
        super().__init__(group)
        if param_net is None:
            param_net = ParamNet(group, 3 if in_channels is None else in_channels)
        elif in_channels is not None:
            raise ValueError("in_channels configures the default ParamNet; do not pass it with param_net")
        if not isinstance(param_net, nn.Module):
            raise TypeError(f"param_net must be an nn.Module, got {type(param_net).__name__}")
        check_choice(eval_backward, "eval_backward", ("same", "detach"))
        check_choice(on_nonfinite, "on_nonfinite", ("identity", "raise"))
        self.param_net = param_net
        self.eval_backward = eval_backward
        self.on_nonfinite = on_nonfinite

    def _view(self, src: torch.Tensor) -> torch.Tensor:
        """The input as $H$ reads it (`param_net.view`, when it has one)."""
        from torchdeq.norm import reset_norm

        # torchdeq's weight/spectral norm: recompute the normalised weights once per forward.
        reset_norm(self.param_net)
        view = getattr(self.param_net, "view", None)
        return view(src) if callable(view) else src

    def _builds_graph(self, src: torch.Tensor) -> bool:
        """Whether this forward builds a differentiable graph (see `eval_backward`)."""
        if not torch.is_grad_enabled():
            return False
        if not self.training and self.eval_backward == "detach":
            return False
        return src.requires_grad or any(p.requires_grad for p in self.param_net.parameters())
