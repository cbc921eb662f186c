"""The DEC as a function: solve $\\Phi^* = H(S^{-1}(I; \\Phi^*))$ once and return the canonical input.

The canonicalizer of eq. 7 minimises an energy over the group; its gradient-descent map has the minimiser as
a fixed point (eq. 16, Claim 1). The DEC learns that map instead (eqs. 14-16):

$$\\Phi^* = f(\\Phi^*), \\qquad f(\\Phi) = H_\\psi\\big(S^{-1}(I; \\Phi)\\big),$$

and returns $S^{-1}(x; \\Phi^*)$. `deq_canonicalize` is that computation as a pure function of the input, the
parameter map $H$ and the group; `deqcanon.DEQCanonicalizer` is the module that stores $H$ and the settings
and calls it. One code path solves (`find_fixed_point`), one place measures the statistics (`solver_info`),
for the forward fixed point and for the adjoint of the implicit backward alike.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ._utils import check_choice
from .config import BackwardConfig, SolveConfig
from .groups import Group, warp_stats
from .result import CanonicalizationResult, SolverInfo
from .solver import FixedPointSolution, solve_fixed_point

__all__ = ["deq_canonicalize", "deq_map", "find_fixed_point", "finish_canonicalization", "solver_info"]

logger = logging.getLogger(__name__)

_EPS = 1e-9


def deq_map(
    param_fn: Callable[[torch.Tensor], torch.Tensor],
    group: Group,
    source: torch.Tensor,
    update: Literal["absolute", "residual"] = "absolute",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map $f$ of eq. 14 on the input `source` `(B, C, H, W)`.

    - ``update="absolute"``: $f(\\Phi) = H(S^{-1}(I; \\Phi))$, $H$ predicts the parameters themselves
      (the authors' code);
    - ``update="residual"``: $f(\\Phi) = \\Phi + H(S^{-1}(I; \\Phi))$, $H$ predicts a step, as eq. 16
      writes the update, $\\Phi - \\nabla_\\Phi E(S^{-1}(I; \\Phi))$; the fixed point is a canonical form on
      which $H$ proposes no step. The step is centred by the group's `center_params` when it has one (the
      monotone group's logits are defined up to a shift per knot function, which would otherwise drift).

    A sample whose state is non-finite is evaluated at the identity and kept non-finite, so the group's own
    validation (e.g. monowarp's) never sees NaN: the solver's fallback and `on_nonfinite` handle that sample,
    and the others are unaffected (no host synchronisation).
    """
    check_choice(update, "update", ("absolute", "residual"))
    center = getattr(group, "center_params", None) if update == "residual" else None

    def f(z: torch.Tensor) -> torch.Tensor:
        finite = _expand(_finite_rows(z), z)
        safe = torch.where(finite, z, group.identity_params(z.shape[0], device=z.device, dtype=z.dtype))
        out = param_fn(group.act_inverse(source, safe))
        if update == "residual":
            out = safe + (center(out) if center is not None else out)
        return torch.where(_expand(finite.flatten(), out), out, torch.full_like(out, float("nan")))

    return f


def find_fixed_point(
    f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, config: SolveConfig, *, training: bool = True
) -> FixedPointSolution:
    """Solve $z = f(z)$ from `z0` `(B, ...)` without autograd, with the settings of `config`.

    Examples:
        >>> config = SolveConfig(max_iter=30, tol=1e-6)
        >>> find_fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), config).z[0].tolist()
        [2.0, 2.0, 2.0]
    """
    return solve_fixed_point(
        f,
        z0,
        solver=config.solver,
        max_iter=config.iterations(training=training),
        tol=config.tol,
        stop_mode=config.stop_mode,
        fallback=config.fallback,
        solver_kwargs=config.solver_kwargs,
    )


def solver_info(
    sol: FixedPointSolution,
    z: torch.Tensor,
    fz: torch.Tensor,
    *,
    tol: float,
    stop_mode: str,
    finite: torch.Tensor | None = None,
) -> SolverInfo:
    """The statistics of a solve: residuals of the state `z` against one more evaluation `fz` = $f(z)$.

    `finite` `(B,)`: samples known to be finite besides `z`'s and `fz`'s (default: those of `fz`).
    """
    with torch.no_grad():
        abs_res = (fz - z).flatten(1).norm(dim=1)
        rel_res = abs_res / (fz.flatten(1).norm(dim=1) + _EPS)
        finite = _finite_rows(fz) if finite is None else finite
        measured = rel_res if stop_mode == "rel" else abs_res
    return SolverInfo(
        solver=sol.solver,
        iterations=sol.evaluations,
        abs_residual=abs_res,
        rel_residual=rel_res,
        converged=(measured <= tol) & finite,
        finite=finite,
        tol=tol,
        stop_mode=stop_mode,
        abs_trace=sol.abs_trace,
        rel_trace=sol.rel_trace,
        fallback=sol.fallback,
    )


def deq_canonicalize(
    x: torch.Tensor,
    param_fn: Callable[[torch.Tensor], torch.Tensor],
    group: Group,
    *,
    source: torch.Tensor | None = None,
    solve: SolveConfig | None = None,
    backward: BackwardConfig | str = "implicit",
    build_graph: bool = True,
    training: bool = True,
    jac_reg_weight: float = 0.0,
    jac_reg_vectors: int = 1,
    on_nonfinite: Literal["identity", "raise"] = "identity",
    update: Literal["absolute", "residual"] = "absolute",
) -> CanonicalizationResult:
    """Canonicalize `x` by the fixed point $\\Phi^* = f(\\Phi^*)$ (eqs. 14-16), with
    $f(\\Phi) = H(S^{-1}(I; \\Phi))$ or, with ``update="residual"``, $\\Phi + H(S^{-1}(I; \\Phi))$
    (`deq_map`).

    1. `find_fixed_point` runs without autograd from the identity on `source` (the view $H$ sees).
    2. One more evaluation $f(\\Phi^*)$ builds the only graph; it is the returned `params`, and
       $f(\\Phi^*) - \\Phi^*$ gives the statistics (`solver_info`) and the `residual`.
    3. Backward: `"implicit"` solves the adjoint fixed point
       $y = J^\\top y + \\partial \\ell / \\partial \\Phi^*$ reusing that graph; `"phantom"` backpropagates
       through damped iterations from $\\Phi^*$.

    Args:
        x: the tensor to canonicalize `(B, C, H, W)`.
        param_fn: the parameter network $H$, `(B, C', H', W') -> (B, *group.param_shape)`.
        group: the group acting on `x` and `source`.
        source: the input $I$ that $H$ reads, `(B, C', H', W')`; default `x`.
        solve: the forward solve (default `SolveConfig()`).
        backward: `BackwardConfig` or its kind, `"implicit"` or `"phantom"`.
        build_graph: build the differentiable evaluation (False: `params` carry no graph).
        training: training mode (the iteration budget and the Jacobian regulariser depend on it).
        jac_reg_weight: weight of torchdeq's Hutchinson estimate of $\\lVert J_f \\rVert_F^2$, in training.
        jac_reg_vectors: random vectors of that estimate.
        on_nonfinite: `"identity"`: non-finite samples become the identity (the batch is detached from $H$);
            `"raise"`: raise `FloatingPointError`.
        update: `"absolute"` ($H$ predicts the parameters) or `"residual"` ($H$ predicts a step; `deq_map`).

    Returns:
        `CanonicalizationResult` with `params`, `element`, `canonical`, `info`, `residual`, `jacobian_loss`.

    Raises:
        FloatingPointError: non-finite parameters with `on_nonfinite="raise"`.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> group = GlobalScaleGroup()
        >>> out = deq_canonicalize(torch.rand(2, 1, 8, 8), lambda v: v.mean((1, 2, 3))[:, None] * 0.1, group)
        >>> out.params.shape, out.canonical.shape, bool(out.info.converged.all())
        (torch.Size([2, 1]), torch.Size([2, 1, 8, 8]), True)
    """
    config = SolveConfig() if solve is None else solve
    back = BackwardConfig.of(backward)
    src = x if source is None else source
    f = deq_map(param_fn, group, src, update)
    z0 = group.identity_params(x.shape[0], device=x.device, dtype=x.dtype)

    sol = find_fixed_point(f, z0, config, training=training)
    z_star = sol.z
    finite = _finite_rows(z_star)
    if not bool(finite.all()):
        z_star = torch.where(_expand(finite, z_star), z_star, z0)

    residual = jacobian_loss = None
    record = _Record()
    if build_graph:
        use_jac = training and jac_reg_weight > 0
        z_in = z_star.detach().requires_grad_(back.kind == "implicit" or use_jac)
        fz = f(z_in)
        residual = fz - z_star
        if use_jac:
            from torchdeq.loss import jac_reg

            jacobian_loss = jac_reg_weight * jac_reg(fz, z_in, vecs=jac_reg_vectors, create_graph=True)
        if back.kind == "implicit":
            adjoint = _AdjointSolve(back.solver, back.max_iter, back.tol, "rel", config.fallback)
            params = _ImplicitBackward.apply(fz, z_in, adjoint, record)
        else:
            lam = back.phantom_damping
            params = lam * fz + (1 - lam) * z_star
            for _ in range(back.phantom_steps - 1):
                params = lam * f(params) + (1 - lam) * params
    else:
        with torch.no_grad():
            fz = f(z_star)
        params = fz

    with torch.no_grad():
        finite = finite & _finite_rows(fz) & _finite_rows(params)
    info = solver_info(sol, z_star, fz, tol=config.tol, stop_mode=config.stop_mode, finite=finite)
    record.info = info
    return finish_canonicalization(
        x, group, params, info, on_nonfinite=on_nonfinite, residual=residual, jacobian_loss=jacobian_loss
    )


def finish_canonicalization(
    x: torch.Tensor,
    group: Group,
    params: torch.Tensor,
    info: SolverInfo,
    *,
    on_nonfinite: Literal["identity", "raise"] = "identity",
    residual: torch.Tensor | None = None,
    jacobian_loss: torch.Tensor | None = None,
) -> CanonicalizationResult:
    """The result of a predicted element: the non-finite fallback, the warp statistics, the canonical input.

    Shared by every canonicalizer that predicts `params` with a parameter network (the DEC's fixed point,
    the spatial transformer's single application).

    Args:
        x: the tensor to canonicalize `(B, C, H, W)`.
        group: the group acting on `x`.
        params: the predicted parameters `(B, *group.param_shape)`.
        info: the statistics of the prediction; `info.finite` `(B,)` marks the usable samples, and the warp
            statistics (`param_distance`, `log_slope_mean`, `log_slope_max`) are filled in here.
        on_nonfinite: `"identity"`: samples not in `info.finite` become the identity and the batch's
            parameters are detached from $H$ (a NaN sample would otherwise put NaN into every weight
            gradient); `"raise"`: raise `FloatingPointError`.
        residual: passed on to the result (dropped when a sample is not finite).
        jacobian_loss: passed on to the result (dropped when a sample is not finite).

    Returns:
        `CanonicalizationResult` with `canonical` = `group.act_inverse(x, params)`.

    Raises:
        FloatingPointError: non-finite parameters with `on_nonfinite="raise"`.
    """
    if not bool(info.finite.all()):
        bad = (~info.finite).nonzero().flatten().tolist()
        if on_nonfinite == "raise":
            raise FloatingPointError(f"non-finite canonicalization parameters for samples {bad}")
        logger.warning(
            "non-finite canonicalization parameters for samples %s; using the identity and no gradient "
            "through H for this batch",
            bad,
        )
        # Backpropagating through the graph of a NaN sample would put NaN into every weight gradient
        # (0 * NaN), so the whole batch is detached from H; the canonical input stays differentiable in x.
        z0 = group.identity_params(params.shape[0], device=params.device, dtype=params.dtype)
        params = torch.where(_expand(info.finite, params), params, z0).detach()
        residual = jacobian_loss = None
    stats = warp_stats(group, params)
    info.param_distance = stats["param_distance"]
    info.log_slope_mean = stats.get("log_slope_mean")
    info.log_slope_max = stats.get("log_slope_max")

    return CanonicalizationResult(
        params=params,
        element=group.element(params),
        canonical=group.act_inverse(x, params),
        info=info,
        residual=residual,
        jacobian_loss=jacobian_loss,
    )


# ------------------------------------------------------------------------------------------------- private
@dataclass
class _Record:
    """Where the implicit backward records the adjoint statistics: the forward's `SolverInfo`."""

    info: SolverInfo | None = None


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
        ctx: Any, fz: torch.Tensor, z: torch.Tensor, solve: _AdjointSolve, record: _Record
    ) -> torch.Tensor:
        ctx.fz, ctx.z, ctx.solve, ctx.record = fz, z, solve, record
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
        if ctx.record.info is not None:
            ctx.record.info.backward = solver_info(sol, sol.z, y, tol=opts.tol, stop_mode=opts.stop_mode)
        return y, None, None, None


def _finite_rows(t: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(t).flatten(1).all(dim=1)


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))
