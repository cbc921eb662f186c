"""What a canonicalizer returns: the canonical input, the group element, and solver statistics.

A canonicalizer $h$ maps an input $I$ to a group element $\\tilde g = h(I)$ and returns the
canonical form $S^{-1}(I; \\tilde g)$ (eqs. 5-7). Results are returned, never kept in module state:
`CanonicalizationResult` carries everything a training loop or a downstream wrapper needs, and
`SolverInfo` the convergence statistics of the fixed-point (or optimisation) solve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["CanonicalizationResult", "SolverInfo"]


@dataclass
class SolverInfo:
    """Statistics of one batched solve; all tensors are detached.

    The residual of a state $z$ is $r = f(z) - z$. `abs_residual` is $\\lVert r \\rVert_2$ per sample and
    `rel_residual` is $\\lVert r \\rVert_2 / (\\lVert f(z) \\rVert_2 + 10^{-9})$, both measured at the
    solver's final estimate $z^*$ (one extra evaluation, which is also the returned state $f(z^*)$).

    Attributes:
        solver: name of the solver that produced the estimate (after any fallback).
        iterations: number of evaluations of $f$ the solver used (the batch stops together).
        abs_residual: `(B,)` absolute residual at $z^*$.
        rel_residual: `(B,)` relative residual at $z^*$.
        converged: `(B,)` bool, residual in `stop_mode` at most `tol` (False where non-finite).
        finite: `(B,)` bool, whether the sample's state and output are finite.
        tol: the tolerance.
        stop_mode: `"rel"` or `"abs"`, which residual `tol` applies to.
        abs_trace: `(B, N)` absolute residual after each solver step (torchdeq's trace; empty when the
            solver keeps none).
        rel_trace: `(B, N)` relative residual after each solver step.
        fallback: None, or why the requested solver was replaced (e.g. a singular Anderson system).
        backward: statistics of the adjoint solve of the implicit backward, filled in when gradients
            flow back through the result (None before `backward()` and for phantom gradients).
        param_distance: `(B,)` size of the returned element, the mean of $|\\Phi - \\Phi_e|$ over its
            parameters ($\\Phi_e$ the identity's; `deqcanon.warp_stats`), or None when not measured.
        log_slope_mean: `(B,)` mean $|\\log s|$ over the element's local scale factors, for groups with
            `log_slopes` (None otherwise): 0 when the canonicalizer does not warp.
        log_slope_max: `(B,)` max $|\\log s|$ over the element's local scale factors (None likewise).
    """

    solver: str
    iterations: int
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    converged: torch.Tensor
    finite: torch.Tensor
    tol: float
    stop_mode: str
    abs_trace: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    rel_trace: torch.Tensor = field(default_factory=lambda: torch.empty(0, 0))
    fallback: str | None = None
    backward: SolverInfo | None = None
    param_distance: torch.Tensor | None = None
    log_slope_mean: torch.Tensor | None = None
    log_slope_max: torch.Tensor | None = None

    @property
    def all_converged(self) -> bool:
        """Whether every sample converged."""
        return bool(self.converged.all())

    def summary(self) -> dict[str, float]:
        """Batch summary as plain floats (for logging): iterations, mean/max residuals, fractions, and the
        warp's size when measured (`param_distance` and `log_slope_mean`: batch means; `log_slope_max`: batch
        max; over the finite samples).

        Examples:
            >>> ok = torch.ones(2, dtype=torch.bool)
            >>> info = SolverInfo("anderson", 3, torch.zeros(2), torch.zeros(2), ok, ok, 1e-3, "rel",
            ...                   log_slope_max=torch.tensor([0.25, 0.5]))
            >>> info.summary()["log_slope_max"], info.summary()["finite"]
            (0.5, 1.0)
        """
        residual = self.rel_residual if self.stop_mode == "rel" else self.abs_residual
        out = {
            "iterations": float(self.iterations),
            "residual_mean": _reduce(residual, "mean"),
            "residual_max": _reduce(residual, "max"),
            "converged": float(self.converged.float().mean()),
            "finite": float(self.finite.float().mean()),
        }
        for name, how in (("param_distance", "mean"), ("log_slope_mean", "mean"), ("log_slope_max", "max")):
            value = getattr(self, name)
            if value is not None:
                out[name] = _reduce(value, how)
        return out


@dataclass
class CanonicalizationResult:
    """Output of every canonicalizer's `forward`.

    Attributes:
        params: `(B, *group.param_shape)` parameters of the predicted element $\\tilde g$; differentiable.
        element: the group element built from `params` (`group.element(params)`, e.g. a
            `monowarp.MonotoneScale`).
        canonical: the canonical input $S^{-1}(x; \\tilde g)$ = `group.act_inverse(x, params)`, same shape as
            `x`.
        info: solver statistics (None for `DiscreteCanonicalizer`, which does not iterate).
        residual: DEC only: $f(z^*) - z^*$, `(B, *param_shape)`, differentiable through one evaluation of
            $f$ (not through the solver); used by `residual_loss`. None when no graph was built.
        jacobian_loss: DEC only, in training with `jac_reg_weight > 0`: the Hutchinson estimate of
            $\\lVert J_f \\rVert_F^2 / \\dim z$ at $z^*$, already multiplied by `jac_reg_weight`; add it to
            the loss. None otherwise.
    """

    params: torch.Tensor
    element: Any
    canonical: torch.Tensor
    info: SolverInfo | None = None
    residual: torch.Tensor | None = None
    jacobian_loss: torch.Tensor | None = None


def _reduce(values: torch.Tensor, how: str) -> float:
    finite = values[torch.isfinite(values)]
    if not finite.numel():
        return float("nan")
    return float(finite.mean() if how == "mean" else finite.max())
