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

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._utils import check_option
from .base import Canonicalizer
from .groups import Group, warp_stats
from .param_net import ParamNet
from .result import CanonicalizationResult, SolverInfo
from .solver import (
    FixedPointSolution,
    check_solver_kwargs,
    min_iterations,
    solve_fixed_point,
    solver_names,
)

__all__ = ["DEQCanonicalizer"]

logger = logging.getLogger(__name__)

_EPS = 1e-9


class DEQCanonicalizer(Canonicalizer):
    """Deep equilibrium canonicalizer: $\\Phi^* = H(S^{-1}(I; \\Phi^*))$, solved with torchdeq's solvers.

    Args:
        group: the group (`deqcanon.Group`), e.g. `MonotoneScaleGroup(grid=(4, 4))`.
        param_net: the parameter network H, mapping a canonicalized input `(B, C, H, W)` to parameters
            `(B, *group.param_shape)`. Default: `ParamNet(group, in_channels)`. If it has a `view(x)`
            method (as `ParamNet` does), the solve runs on that view of the input.
        in_channels: input channels of the default `ParamNet` (default 3); not allowed with `param_net`.
        solver: `"anderson"` (default), `"broyden"`, `"fixed_point"` or any registered name.
        max_iter: most evaluations of $f$ in the forward solve (Anderson needs at least 3).
        tol: the solve stops when every sample's residual (in `stop_mode`) is below `tol`.
        stop_mode: `"rel"` (default): $\\lVert f(z) - z \\rVert / \\lVert f(z) \\rVert$; `"abs"`:
            $\\lVert f(z) - z \\rVert$. Relative residuals are large near the zero vector, so prefer `"abs"`
            when the parameters of the identity are zeros and the elements stay close to it.
        solver_kwargs: extra options of the solver (Anderson: `m`, `lam`, `tau`; Broyden: `LBFGS_thres`,
            `ls`; fixed point: `tau`), checked. Anderson's `lam` applies to the problem rescaled by each
            sample's first residual (see `deqcanon.solver.rescaled`).
        fallback: solver used when the forward or adjoint solve raises (singular Anderson system) or
            returns non-finite values; None raises instead. Recorded in `info.fallback`.
        backward: `"implicit"` (default, implicit differentiation) or `"phantom"`.
        backward_solver: solver of the implicit backward's adjoint fixed point.
        backward_max_iter: most iterations of the adjoint solve.
        backward_tol: tolerance of the adjoint solve on its relative residual (gradients have no natural
            scale, so the adjoint always stops in relative mode).
        phantom_steps: damped iterations differentiated through in `"phantom"` mode.
        phantom_damping: damping $\\lambda \\in (0, 1]$ of those iterations.
        jac_reg_weight: weight of the Jacobian regulariser ($\\lVert J_f \\rVert_F^2$, Hutchinson estimate,
            torchdeq's `jac_reg`) computed in training; 0 (default) skips it.
        jac_reg_vectors: random vectors of the Hutchinson estimate.
        eval_max_iter: `max_iter` in eval mode (None: the same).
        eval_backward: `"same"` (default): in eval mode, build the same backward as in training whenever
            autograd is enabled and something requires grad (use `torch.no_grad()` for cheap inference);
            `"detach"`: eval results never carry gradients (torchdeq's behaviour).
        on_nonfinite: `"identity"` (default): samples whose parameters are NaN/inf after the fallback are
            replaced by the identity, flagged in `info.finite` and logged, and the batch's parameters are
            detached from H (a NaN sample would otherwise turn every weight gradient into NaN); `"raise"`:
            raise `FloatingPointError`. This holds for every group: a sample whose state turns non-finite
            inside the solve is evaluated at the identity (never passed to the group's own validation) and
            stays non-finite, so it ends in this fallback; the other samples are unaffected.

    Raises:
        TypeError, ValueError: invalid options (each names the option and its valid values). Unknown
            keyword options raise `TypeError`.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> dec = DEQCanonicalizer(GlobalScaleGroup(), in_channels=1, max_iter=6)
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
        solver: str = "anderson",
        max_iter: int = 10,
        tol: float = 1e-3,
        stop_mode: str = "rel",
        solver_kwargs: dict[str, Any] | None = None,
        fallback: str | None = "broyden",
        backward: str = "implicit",
        backward_solver: str = "anderson",
        backward_max_iter: int = 20,
        backward_tol: float = 1e-3,
        phantom_steps: int = 1,
        phantom_damping: float = 1.0,
        jac_reg_weight: float = 0.0,
        jac_reg_vectors: int = 1,
        eval_max_iter: int | None = None,
        eval_backward: str = "same",
        on_nonfinite: str = "identity",
    ) -> None:
        super().__init__(group)
        if param_net is None:
            param_net = ParamNet(group, 3 if in_channels is None else in_channels)
        elif in_channels is not None:
            raise ValueError("in_channels configures the default ParamNet; do not pass it with param_net")
        if not isinstance(param_net, nn.Module):
            raise TypeError(f"param_net must be an nn.Module, got {type(param_net).__name__}")
        self.param_net = param_net

        check_option(solver, "solver", choices=solver_names())
        check_option(max_iter, "max_iter", kind=int, low=min_iterations(solver))
        check_option(tol, "tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_option(stop_mode, "stop_mode", choices=("rel", "abs"))
        self.solver_kwargs = check_solver_kwargs(solver, solver_kwargs)
        check_option(fallback, "fallback", choices=(*solver_names(), None))
        check_option(backward, "backward", choices=("implicit", "phantom"))
        check_option(backward_solver, "backward_solver", choices=solver_names())
        check_option(backward_max_iter, "backward_max_iter", kind=int, low=min_iterations(backward_solver))
        check_option(backward_tol, "backward_tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_option(phantom_steps, "phantom_steps", kind=int, low=1)
        check_option(
            phantom_damping, "phantom_damping", kind=(int, float), low=0.0, low_inclusive=False, high=1.0
        )
        check_option(jac_reg_weight, "jac_reg_weight", kind=(int, float), low=0.0)
        check_option(jac_reg_vectors, "jac_reg_vectors", kind=int, low=1)
        check_option(eval_max_iter, "eval_max_iter", kind=int, low=min_iterations(solver), allow_none=True)
        check_option(eval_backward, "eval_backward", choices=("same", "detach"))
        check_option(on_nonfinite, "on_nonfinite", choices=("identity", "raise"))

        self.solver = solver
        self.max_iter = max_iter
        self.tol = float(tol)
        self.stop_mode = stop_mode
        self.fallback = fallback
        self.backward = backward
        self.backward_solver = backward_solver
        self.backward_max_iter = backward_max_iter
        self.backward_tol = float(backward_tol)
        self.phantom_steps = phantom_steps
        self.phantom_damping = float(phantom_damping)
        self.jac_reg_weight = float(jac_reg_weight)
        self.jac_reg_vectors = jac_reg_vectors
        self.eval_max_iter = eval_max_iter
        self.eval_backward = eval_backward
        self.on_nonfinite = on_nonfinite

    def extra_repr(self) -> str:
        return (
            f"solver={self.solver!r}, max_iter={self.max_iter}, tol={self.tol}, "
            f"stop_mode={self.stop_mode!r}, "
            f"backward={self.backward!r}, jac_reg_weight={self.jac_reg_weight}"
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
        f = self._deq_map(src)
        b = x.shape[0]
        z0 = self.group.identity_params(b, device=x.device, dtype=x.dtype)
        max_iter = self.max_iter if self.training or self.eval_max_iter is None else self.eval_max_iter

        sol = solve_fixed_point(
            f,
            z0,
            solver=self.solver,
            max_iter=max_iter,
            tol=self.tol,
            stop_mode=self.stop_mode,
            fallback=self.fallback,
            solver_kwargs=self.solver_kwargs,
        )
        z_star = sol.z
        finite = _finite_rows(z_star)
        if not bool(finite.all()):
            z_star = torch.where(_expand(finite, z_star), z_star, z0)

        info = SolverInfo(
            solver=sol.solver,
            iterations=sol.evaluations,
            abs_residual=torch.empty(0),
            rel_residual=torch.empty(0),
            converged=torch.empty(0, dtype=torch.bool),
            finite=finite,
            tol=self.tol,
            stop_mode=self.stop_mode,
            abs_trace=sol.abs_trace,
            rel_trace=sol.rel_trace,
            fallback=sol.fallback,
        )
        residual = jacobian_loss = None
        if self._builds_graph(src):
            use_jac = self.training and self.jac_reg_weight > 0
            z_in = z_star.detach().requires_grad_(self.backward == "implicit" or use_jac)
            fz = f(z_in)
            residual = fz - z_star
            if use_jac:
                from torchdeq.loss import jac_reg

                jac = jac_reg(fz, z_in, vecs=self.jac_reg_vectors, create_graph=True)
                jacobian_loss = self.jac_reg_weight * jac
            if self.backward == "implicit":
                params = _ImplicitBackward.apply(fz, z_in, self._adjoint_solver(), info)
            else:
                lam = self.phantom_damping
                params = lam * fz + (1 - lam) * z_star
                for _ in range(self.phantom_steps - 1):
                    params = lam * f(params) + (1 - lam) * params
        else:
            with torch.no_grad():
                fz = f(z_star)
            params = fz

        with torch.no_grad():
            diff = (fz - z_star).flatten(1)
            info.abs_residual = diff.norm(dim=1)
            info.rel_residual = info.abs_residual / (fz.flatten(1).norm(dim=1) + _EPS)
            info.finite = finite & _finite_rows(fz) & _finite_rows(params)
            measured = info.rel_residual if self.stop_mode == "rel" else info.abs_residual
            info.converged = (measured <= self.tol) & info.finite
        if not bool(info.finite.all()):
            bad = (~info.finite).nonzero().flatten().tolist()
            if self.on_nonfinite == "raise":
                raise FloatingPointError(f"non-finite canonicalization parameters for samples {bad}")
            logger.warning(
                "non-finite canonicalization parameters for samples %s; using the identity and no gradient "
                "through H for this batch",
                bad,
            )
            # Backpropagating through the graph of a NaN sample would put NaN into every weight gradient
            # (0 * NaN), so the whole batch is detached from H; the canonical input stays differentiable in x.
            params = torch.where(_expand(info.finite, params), params, z0).detach()
            residual = jacobian_loss = None
        stats = warp_stats(self.group, params)
        info.param_distance = stats["param_distance"]
        info.log_slope_mean = stats.get("log_slope_mean")
        info.log_slope_max = stats.get("log_slope_max")

        return CanonicalizationResult(
            params=params,
            element=self.group.element(params),
            canonical=self.group.act_inverse(x, params),
            info=info,
            residual=residual,
            jacobian_loss=jacobian_loss,
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
        f = self._deq_map(src)
        z0 = self.group.identity_params(x.shape[0], device=x.device, dtype=x.dtype)
        sol = solve_fixed_point(
            f,
            z0,
            solver=self.solver,
            max_iter=self.max_iter,
            tol=self.tol,
            stop_mode=self.stop_mode,
            fallback=self.fallback,
            solver_kwargs=self.solver_kwargs,
        )
        with torch.enable_grad():
            z = sol.z.detach().requires_grad_(True)
            _, radius = power_method(f(z), z, n_iters=n_iters)
        return radius.detach()

    # ----------------------------------------------------------------------------------------- helpers
    def _deq_map(self, src: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchdeq.norm import reset_norm

        # torchdeq's weight/spectral norm: recompute the normalised weights once per forward.
        reset_norm(self.param_net)
        view = getattr(self.param_net, "view", None)
        src_view = view(src) if callable(view) else src
        group, net = self.group, self.param_net

        def f(z: torch.Tensor) -> torch.Tensor:
            # A sample whose state is non-finite is evaluated at the identity and kept non-finite, so the
            # group's own validation (e.g. monowarp's) never sees NaN: the solver's fallback and
            # `on_nonfinite` handle that sample, and the others are unaffected (no host synchronisation).
            finite = _expand(_finite_rows(z), z)
            safe = torch.where(finite, z, group.identity_params(z.shape[0], device=z.device, dtype=z.dtype))
            out = net(group.act_inverse(src_view, safe))
            return torch.where(_expand(finite.flatten(), out), out, torch.full_like(out, float("nan")))

        return f

    def _builds_graph(self, src: torch.Tensor) -> bool:
        if not torch.is_grad_enabled():
            return False
        if not self.training and self.eval_backward == "detach":
            return False
        return src.requires_grad or any(p.requires_grad for p in self.param_net.parameters())

    def _adjoint_solver(self) -> _AdjointSolve:
        return _AdjointSolve(
            self.backward_solver, self.backward_max_iter, self.backward_tol, "rel", self.fallback
        )


@dataclass(frozen=True)
class _AdjointSolve:
    """Options of the adjoint fixed-point solve of the implicit backward."""

    solver: str
    max_iter: int
    tol: float
    stop_mode: str
    fallback: str | None

    def __call__(self, func: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor) -> FixedPointSolution:
        return solve_fixed_point(
            func,
            x0,
            solver=self.solver,
            max_iter=self.max_iter,
            tol=self.tol,
            stop_mode=self.stop_mode,
            fallback=self.fallback,
        )


class _ImplicitBackward(torch.autograd.Function):
    """Identity in the forward; the backward replaces the incoming gradient $g$ by the adjoint fixed point
    $y = J^\\top y + g$, using the graph of `fz = f(z)` for the vector-Jacobian products $J^\\top y$."""

    @staticmethod
    def forward(
        ctx: Any, fz: torch.Tensor, z: torch.Tensor, solve: _AdjointSolve, info: SolverInfo
    ) -> torch.Tensor:
        ctx.fz, ctx.z, ctx.solve, ctx.info = fz, z, solve, info
        return fz.detach().clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "DEQCanonicalizer's implicit backward does not support double backward (create_graph=True); "
                "use backward='phantom' for higher-order gradients"
            )
        fz, z = ctx.fz, ctx.z

        def adjoint(y: torch.Tensor) -> torch.Tensor:
            (vjp,) = torch.autograd.grad(fz, z, y, retain_graph=True, allow_unused=True)
            return grad if vjp is None else vjp + grad

        opts: _AdjointSolve = ctx.solve
        sol = opts(adjoint, grad)
        with torch.no_grad():
            y = adjoint(sol.z)
            abs_res = (y - sol.z).flatten(1).norm(dim=1)
            rel_res = abs_res / (y.flatten(1).norm(dim=1) + _EPS)
            finite = _finite_rows(y)
            measured = rel_res if opts.stop_mode == "rel" else abs_res
        ctx.info.backward = SolverInfo(
            solver=sol.solver,
            iterations=sol.evaluations,
            abs_residual=abs_res,
            rel_residual=rel_res,
            converged=(measured <= opts.tol) & finite,
            finite=finite,
            tol=opts.tol,
            stop_mode=opts.stop_mode,
            abs_trace=sol.abs_trace,
            rel_trace=sol.rel_trace,
            fallback=sol.fallback,
        )
        return y, None, None, None


def _finite_rows(t: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(t).flatten(1).all(dim=1)


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))
