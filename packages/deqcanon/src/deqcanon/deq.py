"""The deep equilibrium canonicalizer (DEC, Sec. 4.2): the element is the fixed point of a learned map.

The canonicalizer of eq. 7 minimises an energy over the group, $h(I) = \\arg\\min_g E(S^{-1}(I; g))$;
its gradient-descent map $\\Phi \\mapsto \\Phi - \\nabla_\\Phi E(S^{-1}(I; \\Phi))$ (eq. 16) has the
minimiser as a fixed point (Claim 1, eqs. 17-19). The DEC replaces that map by a learned one,

$$\\Phi^* = f(\\Phi^*), \\qquad f(\\Phi) = H_\\psi\\big(S^{-1}(I; \\Phi)\\big) \\quad (\\text{eqs. 14-16}),$$

found by a root solver (Anderson acceleration by default) started at the identity, and trained end
to end by implicit differentiation: with $J = \\partial f / \\partial \\Phi$ at $\\Phi^*$, the gradient
of a loss $\\ell$ is $\\partial \\ell / \\partial \\psi = y^\\top \\partial f / \\partial \\psi$ with
$y = (I - J)^{-\\top} \\partial \\ell / \\partial \\Phi^*$, itself the fixed point of
$y \\mapsto J^\\top y + \\partial \\ell / \\partial \\Phi^*$ (the adjoint solve). No solver iteration
is stored, so memory does not grow with the number of iterations.

What happens in one forward:

1. The solver runs without autograd from the identity parameters on the view $H$ sees
   (`ParamNet.view`), at most `max_iter` evaluations of $f$.
2. One more evaluation $f(\\Phi^*)$ builds the only graph; it is the returned `params`, and
   $f(\\Phi^*) - \\Phi^*$ gives the residual statistics and `residual_loss`.
3. Backward: `"implicit"` solves the adjoint fixed point, reusing that one graph for its
   vector-Jacobian products; `"phantom"` instead backpropagates through `phantom_steps` damped
   iterations $\\Phi \\leftarrow \\lambda f(\\Phi) + (1 - \\lambda)\\Phi$ from $\\Phi^*$ (torchdeq's
   phantom gradient; the authors' code used 1 step).

torchdeq provides the solvers, the Jacobian regulariser and the normalisation layers; this module
owns the graph (rather than torchdeq's DEQ core) so that gradients stay available in eval mode when
asked for, the residual is measured at the returned state, and a failed solve falls back instead of
crashing.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ._utils import check_choice, check_option
from .base import ParamNetCanonicalizer
from .config import BackwardConfig, SolveConfig
from .functional import deq_canonicalize, deq_map, find_fixed_point
from .groups import Group
from .result import CanonicalizationResult

__all__ = ["DEQCanonicalizer"]


class DEQCanonicalizer(ParamNetCanonicalizer):
    """Deep equilibrium canonicalizer: $\\Phi^* = H(S^{-1}(I; \\Phi^*))$, solved with torchdeq's solvers.

    Args:
        group: the group (`deqcanon.Group`), e.g. `MonotoneScaleGroup(grid=(4, 4))`.
        param_net: the parameter network H, mapping a canonicalized input `(B, C, H, W)` to parameters
            `(B, *group.param_shape)`. Default: `ParamNet(group, in_channels)`. If it has a `view(x)`
            method (as `ParamNet` does), the solve runs on that view of the input.
        in_channels: input channels of the default `ParamNet` (default 3); not allowed with `param_net`.
        solve: the forward solve's settings (`deqcanon.SolveConfig`: solver, `max_iter`, `tol`, `stop_mode`,
            `solver_kwargs`, `fallback`, `eval_max_iter`). Default `SolveConfig()`: Anderson, 10
            evaluations, relative tolerance 1e-3, Broyden as the fallback.
        backward: the backward (`deqcanon.BackwardConfig`), or its kind: `"implicit"` (default, implicit
            differentiation with an Anderson adjoint solve) or `"phantom"` (one undamped phantom step).
        jac_reg_weight: weight of the Jacobian regulariser ($\\lVert J_f \\rVert_F^2$, Hutchinson estimate,
            torchdeq's `jac_reg`) computed in training; 0 (default) skips it.
        jac_reg_vectors: random vectors of the Hutchinson estimate.
        eval_backward: `"same"` (default): in eval mode, build the same backward as in training whenever
            autograd is enabled and something requires grad (use `torch.no_grad()` for cheap inference);
            `"detach"`: eval results never carry gradients (torchdeq's behaviour).
        on_nonfinite: `"identity"` (default): samples whose parameters are NaN/inf after the fallback are
            replaced by the identity, flagged in `info.finite` and logged, and the batch's parameters are
            detached from H (a NaN sample would otherwise turn every weight gradient into NaN); `"raise"`:
            raise `FloatingPointError`. This holds for every group: a sample whose state turns non-finite
            inside the solve is evaluated at the identity (never passed to the group's own validation) and
            stays non-finite, so it ends in this fallback; the other samples are unaffected.
        update: `"absolute"` (default, the authors' code): $f(\\Phi) = H(S^{-1}(I; \\Phi))$, H predicts the
            parameters; `"residual"`: $f(\\Phi) = \\Phi + H(S^{-1}(I; \\Phi))$, H predicts a step, as eq. 16
            writes the update ($\\Phi - \\nabla E$). Only the residual form can be equivariant (eq. 5): with
            the absolute one the fixed point is $H$ of the canonical form, so an invariant canonical form
            would give one element for a whole orbit, which eq. 5 forbids; the residual form's fixed point is
            a canonical form on which H proposes no step, which any element of the orbit can reach.

    Raises:
        TypeError, ValueError: invalid options (each names the option and its valid values). Unknown
            keyword options raise `TypeError`.

    Examples:
        >>> from deqcanon import GlobalScaleGroup, SolveConfig
        >>> dec = DEQCanonicalizer(GlobalScaleGroup(), in_channels=1, solve=SolveConfig(max_iter=6))
        >>> result = dec(torch.rand(2, 1, 32, 32))
        >>> result.params.shape, result.canonical.shape, result.info.iterations
        (torch.Size([2, 1]), torch.Size([2, 1, 32, 32]), 3)
        >>> result.info.converged.tolist()
        [True, True]
    """

    def __init__(
        self,
        group: Group,
        param_net: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        solve: SolveConfig | None = None,
        backward: BackwardConfig | Literal["implicit", "phantom"] = "implicit",
        jac_reg_weight: float = 0.0,
        jac_reg_vectors: int = 1,
        eval_backward: Literal["same", "detach"] = "same",
        on_nonfinite: Literal["identity", "raise"] = "identity",
        update: Literal["absolute", "residual"] = "absolute",
    ) -> None:
        super().__init__(
            group, param_net, in_channels=in_channels, eval_backward=eval_backward, on_nonfinite=on_nonfinite
        )
        solve = SolveConfig() if solve is None else solve
        if not isinstance(solve, SolveConfig):
            raise TypeError(f"solve must be a SolveConfig, got {type(solve).__name__}")
        check_option(jac_reg_weight, "jac_reg_weight", kind=(int, float), low=0.0)
        check_choice(update, "update", ("absolute", "residual"))
        self.update = update
        check_option(jac_reg_vectors, "jac_reg_vectors", kind=int, low=1)

        self.solve = solve
        self.backward = BackwardConfig.of(backward)
        self.jac_reg_weight = float(jac_reg_weight)
        self.jac_reg_vectors = jac_reg_vectors

    def extra_repr(self) -> str:
        return (
            f"solve={self.solve!r}, backward={self.backward!r}, jac_reg_weight={self.jac_reg_weight}, "
            f"update={self.update!r}"
        )

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, *, source: torch.Tensor | None = None) -> CanonicalizationResult:
        """Canonicalize `x` `(B, C, H, W)` (any channel count the parameter network accepts).

        Args:
            x: the tensor to canonicalize.
            source: predict the element from this `(B, C', H', W')` tensor instead of `x` (e.g. the input
                image while `x` is a latent feature map); default `x`.

        Returns:
            `CanonicalizationResult` with `params` (the fixed point, differentiable by the configured
            backward), `element`, `canonical` = `group.act_inverse(x, params)`, `info` (`SolverInfo`),
            `residual` and, in training with `jac_reg_weight > 0`, `jacobian_loss`.

        Raises:
            TypeError, ValueError: invalid input; FloatingPointError: non-finite parameters with
                `on_nonfinite="raise"`.
        """
        x, src = self._inputs(x, source)
        return deq_canonicalize(
            x,
            self.param_net,
            self.group,
            source=self._view(src),
            solve=self.solve,
            backward=self.backward,
            build_graph=self._builds_graph(src),
            training=self.training,
            jac_reg_weight=self.jac_reg_weight,
            jac_reg_vectors=self.jac_reg_vectors,
            on_nonfinite=self.on_nonfinite,
            update=self.update,
        )

    # ------------------------------------------------------------------------------------------- losses
    def residual_loss(self, result: CanonicalizationResult) -> torch.Tensor:
        """Batch mean of $\\lVert f(\\Phi^*) - \\Phi^* \\rVert_2^2$, differentiable through one evaluation.

        An auxiliary loss that makes the learned map reach its fixed point within the iteration budget
        (stable training, honest implicit gradients). Zero when the result carries no graph.
        """
        if result.residual is None:
            return result.params.new_zeros(())
        return result.residual.pow(2).flatten(1).sum(1).mean()

    # ------------------------------------------------------------------------------------- diagnostics
    def spectral_radius(self, x: torch.Tensor, *, n_iters: int = 50) -> torch.Tensor:
        """Estimate $|\\lambda_{\\max}(J_f)|$ at the fixed point, per sample `(B,)` (power method).

        Below 1, plain fixed-point iteration converges locally and the adjoint solve is well posed;
        close to or above 1, rely on Anderson/Broyden and consider `jac_reg_weight`.
        """
        from torchdeq.loss import power_method

        check_option(n_iters, "n_iters", kind=int, low=1)
        x, src = self._inputs(x, None)
        f = deq_map(self.param_net, self.group, self._view(src), self.update)
        z0 = self.group.identity_params(x.shape[0], device=x.device, dtype=x.dtype)
        sol = find_fixed_point(f, z0, self.solve)
        with torch.enable_grad():
            z = sol.z.detach().requires_grad_(True)
            _, radius = power_method(f(z), z, n_iters=n_iters)
        return radius.detach()
