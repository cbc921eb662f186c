"""The spatial transformer canonicalizer: the DEC's parameter network applied once, without a fixed point.

The DEC (Sec. 4.2, eqs. 14-16) predicts the element as the equilibrium $\\Phi^* = H(S^{-1}(I; \\Phi^*))$.
Its ablation keeps the same network $H$ and the same group and drops the equilibrium: $H$ reads the input
once,

$$\\tilde\\Phi = H(I) = H\\big(S^{-1}(I; e)\\big), \\qquad \\text{canonical form } S^{-1}(I; \\tilde\\Phi),$$

i.e. one evaluation of the DEC's map $f(\\Phi) = H(S^{-1}(I; \\Phi))$ from the identity $e$, where the
DEC's solver starts, and training backpropagates through that one evaluation. This is a spatial transformer
(Jaderberg et al., 2015) on the monotone scaling group. It is what the equilibrium has to beat at equal
training budget: it costs one evaluation of $H$ instead of a solve and an adjoint solve, but nothing makes
its prediction consistent, i.e. $H(S^{-1}(I; \\tilde\\Phi)) = \\tilde\\Phi$ need not hold: the canonical
input, read again by $H$, can ask for a further warp. The statistics report exactly that residual,
$\\lVert f(\\tilde\\Phi) - \\tilde\\Phi \\rVert$, measured without autograd (one more evaluation of $H$), so
one sees how far from an equilibrium the single step lands.

`stn_canonicalize` is the computation as a function; `SpatialTransformerCanonicalizer` is the module
(registered as `"stn"`, with the `"dec"` entry's `ParamNet` options). Both share the DEC's map `deq_map`,
statistics `solver_info` and result assembly `finish_canonicalization`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ._utils import check_choice, check_option
from .base import ParamNetCanonicalizer
from .functional import deq_map, finish_canonicalization, solver_info
from .groups import Group
from .result import CanonicalizationResult
from .solver import FixedPointSolution

__all__ = ["SpatialTransformerCanonicalizer", "stn_canonicalize"]

#: `SolverInfo.solver` of a single application of H.
SOLVER_NAME = "single_step"


def stn_canonicalize(
    x: torch.Tensor,
    param_fn: Callable[[torch.Tensor], torch.Tensor],
    group: Group,
    *,
    source: torch.Tensor | None = None,
    build_graph: bool = True,
    tol: float = 1e-3,
    stop_mode: Literal["rel", "abs"] = "rel",
    measure_residual: bool = True,
    on_nonfinite: Literal["identity", "raise"] = "identity",
) -> CanonicalizationResult:
    """Canonicalize `x` by one application of $H$: $\\tilde\\Phi = H(I)$, returning $S^{-1}(x; \\tilde\\Phi)$.

    Args:
        x: the tensor to canonicalize `(B, C, H, W)`.
        param_fn: the parameter network $H$, `(B, C', H', W') -> (B, *group.param_shape)`.
        group: the group acting on `x` and `source`.
        source: the input $I$ that $H$ reads, `(B, C', H', W')`; default `x`.
        build_graph: keep autograd's graph through $H$ (False: `params` carry no graph).
        tol: tolerance of `info.converged`: whether $\\tilde\\Phi$ is within `tol` of an equilibrium of
            $f(\\Phi) = H(S^{-1}(I; \\Phi))$, in the residual of `stop_mode` (the DEC's meaning).
        stop_mode: `"rel"` or `"abs"`, the residual `tol` applies to.
        measure_residual: evaluate $f(\\tilde\\Phi)$ once more, without autograd, for the fixed-point
            residual in `info`; False skips it (the residuals are NaN and `converged` is False).
        on_nonfinite: `"identity"`: non-finite samples become the identity (the batch is detached from $H$);
            `"raise"`: raise `FloatingPointError`.

    Returns:
        `CanonicalizationResult` with `params` = $H(I)$, `element`, `canonical`, and `info` (`SolverInfo`:
        solver `"single_step"`, 1 iteration, the residual $f(\\tilde\\Phi) - \\tilde\\Phi$, the warp
        statistics); `residual` and `jacobian_loss` are None.

    Raises:
        FloatingPointError: non-finite parameters with `on_nonfinite="raise"`.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> out = stn_canonicalize(torch.rand(2, 1, 8, 8), lambda v: v.mean((1, 2, 3))[:, None] * 0.1,
        ...                        GlobalScaleGroup())
        >>> out.params.shape, out.canonical.shape, out.info.iterations
        (torch.Size([2, 1]), torch.Size([2, 1, 8, 8]), 1)
    """
    src = x if source is None else source
    with torch.set_grad_enabled(build_graph and torch.is_grad_enabled()):
        params = param_fn(src)  # = f(e): the DEC's map at the identity, where its solver starts
    with torch.no_grad():
        finite = torch.isfinite(params).flatten(1).all(dim=1)
        z = params.detach()
        if measure_residual:
            fz = deq_map(param_fn, group, src)(z)
        else:
            fz = torch.full_like(z, float("nan"))
    trace = torch.empty(z.shape[0], 0, device=z.device, dtype=z.dtype)
    single = FixedPointSolution(z=z, solver=SOLVER_NAME, evaluations=1, abs_trace=trace, rel_trace=trace)
    info = solver_info(single, z, fz, tol=tol, stop_mode=stop_mode, finite=finite)
    return finish_canonicalization(x, group, params, info, on_nonfinite=on_nonfinite)


class SpatialTransformerCanonicalizer(ParamNetCanonicalizer):
    """The DEC's $H$ applied once, no fixed point: $\\tilde\\Phi = H(I)$, returning $S^{-1}(I; \\tilde\\Phi)$.

    The ablation of the DEC's equilibrium (see the module docstring): same parameter network, same group,
    same result type, plain backpropagation through one evaluation of $H$.

    Args:
        group: the group (`deqcanon.Group`), e.g. `MonotoneScaleGroup(grid=(4, 4))`.
        param_net: the parameter network $H$, `(B, C, H, W) -> (B, *group.param_shape)`. Default:
            `ParamNet(group, in_channels)`. If it has a `view(x)` method (as `ParamNet` does), $H$ reads
            that view of the input.
        in_channels: input channels of the default `ParamNet` (default 3); not allowed with `param_net`.
        tol: tolerance of `info.converged` (is the prediction within `tol` of an equilibrium of
            $f(\\Phi) = H(S^{-1}(I; \\Phi))$?); default 1e-3, the DEC's.
        stop_mode: `"rel"` (default) or `"abs"`, the residual `tol` applies to.
        measure_residual: measure the fixed-point residual $\\lVert f(\\tilde\\Phi) - \\tilde\\Phi \\rVert$
            with one more evaluation of $H$ without autograd (default True); False saves that evaluation
            (the residuals are then NaN).
        eval_backward: `"same"` (default): in eval mode, keep the graph whenever autograd is enabled and
            something requires grad; `"detach"`: eval results never carry gradients.
        on_nonfinite: `"identity"` (default): samples with non-finite parameters become the identity, are
            flagged in `info.finite` and logged, and the batch is detached from $H$; `"raise"`: raise
            `FloatingPointError`.

    Raises:
        TypeError, ValueError: invalid options (each names the option and its valid values).

    Examples:
        >>> from deqcanon import MonotoneScaleGroup
        >>> stn = SpatialTransformerCanonicalizer(MonotoneScaleGroup(grid=(4, 4)), in_channels=3)
        >>> result = stn(torch.rand(2, 3, 32, 32))
        >>> result.params.shape, result.info.iterations, result.info.solver
        (torch.Size([2, 40]), 1, 'single_step')
    """

    def __init__(
        self,
        group: Group,
        param_net: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        tol: float = 1e-3,
        stop_mode: Literal["rel", "abs"] = "rel",
        measure_residual: bool = True,
        eval_backward: Literal["same", "detach"] = "same",
        on_nonfinite: Literal["identity", "raise"] = "identity",
    ) -> None:
        super().__init__(
            group, param_net, in_channels=in_channels, eval_backward=eval_backward, on_nonfinite=on_nonfinite
        )
        check_option(tol, "tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_choice(stop_mode, "stop_mode", ("rel", "abs"))
        check_option(measure_residual, "measure_residual", kind=bool)
        self.tol = float(tol)
        self.stop_mode = stop_mode
        self.measure_residual = measure_residual

    def extra_repr(self) -> str:
        return f"tol={self.tol}, stop_mode={self.stop_mode!r}, measure_residual={self.measure_residual}"

    def forward(self, x: torch.Tensor, *, source: torch.Tensor | None = None) -> CanonicalizationResult:
        """Canonicalize `x` `(B, C, H, W)` (any channel count the parameter network accepts).

        Args:
            x: the tensor to canonicalize.
            source: predict the element from this `(B, C', H', W')` tensor instead of `x` (e.g. the input
                image while `x` is a latent feature map); default `x`.

        Returns:
            `CanonicalizationResult` with `params` = $H(I)$ (differentiable by plain backpropagation),
            `element`, `canonical` = `group.act_inverse(x, params)` and `info` (`SolverInfo`, one iteration,
            the fixed-point residual of `params`, the warp statistics).

        Raises:
            TypeError, ValueError: invalid input; FloatingPointError: non-finite parameters with
                `on_nonfinite="raise"`.
        """
        x, src = self._inputs(x, source)
        return stn_canonicalize(
            x,
            self.param_net,
            self.group,
            source=self._view(src),
            build_graph=self._builds_graph(src),
            tol=self.tol,
            stop_mode=self.stop_mode,
            measure_residual=self.measure_residual,
            on_nonfinite=self.on_nonfinite,
        )
