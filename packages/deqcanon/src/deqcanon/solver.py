"""Fixed-point solvers by name, and a robust batched solve on top of torchdeq's solvers.

A solver finds $z^*$ with $z^* = f(z^*)$ for a batched map $f$ on `(B, ...)` tensors. The registry
maps names to torchdeq-compatible solver functions,
`solver(func, x0, *, max_iter, tol, stop_mode, **kwargs) -> (z, trajectory, stats)`:
`"anderson"` (Anderson acceleration, the paper's choice), `"broyden"` and `"fixed_point"` (plain
iteration $z \\leftarrow f(z)$) are torchdeq's.

`solve_fixed_point` wraps a registered solver with what training needs and torchdeq leaves out:

- the stop test is given explicitly to torchdeq (`stop_mode` is passed as the solver's own
  keyword, never as the DEQ core's silently ignored `stop_mode=`);
- the evaluations of $f$ are counted (torchdeq reports only the step of the best estimate);
- a singular Anderson system (`torch.linalg.solve` fails) or a non-finite estimate does not crash
  training: the solve is repeated with the fallback solver and the reason is returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._utils import check_choice, check_option

__all__ = [
    "FixedPointSolution",
    "check_solver_kwargs",
    "get_solver",
    "min_iterations",
    "register_solver",
    "solve_fixed_point",
    "solver_names",
]

logger = logging.getLogger(__name__)

SolverFn = Callable[..., tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]]

_SOLVERS: dict[str, SolverFn] = {}
# Fewest evaluations a solver needs to return anything but its initial guess (torchdeq's Anderson
# evaluates f twice before its first mixing step and returns x0 when max_iter < 3).
_MIN_ITER: dict[str, int] = {}
# Keyword options each solver understands (None: not checked). torchdeq's solvers swallow unknown
# keywords silently, so they are checked here.
_OPTIONS: dict[str, frozenset[str] | None] = {}


def register_solver(
    name: str,
    solver: SolverFn,
    *,
    min_iter: int = 1,
    options: set[str] | frozenset[str] | None = None,
    overwrite: bool = False,
) -> None:
    """Register a fixed-point solver under `name`.

    Args:
        name: the key users pass as `solver=`.
        solver: a torchdeq-compatible solver function (see the module docstring).
        min_iter: the smallest `max_iter` for which it returns more than its initial guess.
        options: the extra keyword options it accepts (checked in `solver_kwargs`); None accepts any.
        overwrite: allow replacing an existing entry.

    Raises:
        ValueError: `name` is taken and `overwrite` is False.
        TypeError: `solver` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(solver):
        raise TypeError(f"solver must be callable, got {type(solver).__name__}")
    if name in _SOLVERS and not overwrite:
        raise ValueError(f"a solver named {name!r} is already registered; pass overwrite=True to replace it")
    _SOLVERS[name] = solver
    _MIN_ITER[name] = int(min_iter)
    _OPTIONS[name] = None if options is None else frozenset(options)


def get_solver(name: str) -> SolverFn:
    """The solver registered as `name`.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    check_choice(name, "solver", solver_names())
    return _SOLVERS[name]


def solver_names() -> tuple[str, ...]:
    """Names of the registered solvers.

    Examples:
        >>> solver_names()
        ('anderson', 'broyden', 'fixed_point')
    """
    return tuple(_SOLVERS)


def check_solver_kwargs(name: str, solver_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Validate extra solver options against what the solver `name` accepts; returns a copy.

    Raises:
        TypeError: `solver_kwargs` is not a dict.
        ValueError: an option the solver does not know, or one of the named arguments.
    """
    get_solver(name)
    if solver_kwargs is None:
        return {}
    if not isinstance(solver_kwargs, dict):
        raise TypeError(f"solver_kwargs must be a dict, got {type(solver_kwargs).__name__}")
    kwargs = dict(solver_kwargs)
    reserved = {"max_iter", "tol", "stop_mode", "indexing", "x0", "func", "return_final"} & set(kwargs)
    if reserved:
        raise ValueError(f"solver_kwargs must not set {sorted(reserved)}; use the named arguments")
    known = _OPTIONS[name]
    if known is not None:
        unknown = set(kwargs) - known
        if unknown:
            raise ValueError(
                f"unknown option(s) {sorted(unknown)} for solver {name!r}; valid: {sorted(known)}"
            )
    return kwargs


def min_iterations(name: str) -> int:
    """Smallest useful `max_iter` of the solver `name`."""
    get_solver(name)
    return _MIN_ITER[name]


def rescaled(solver: SolverFn) -> SolverFn:
    """Wrap an Anderson-type solver so that it runs on the problem rescaled by each sample's first residual.

    torchdeq's Anderson regularises its mixing system with an absolute `lam` (default `1e-4`). When the
    residuals are small, as for a handful of group parameters or for an adjoint of small gradients, `lam`
    dominates and the mixing degenerates into slow averaging. The wrapper solves the equivalent problem
    $u = S^{-1} f(S u)$ with $S = \\mathrm{diag}(s_b)$, $s_b = \\lVert f(z_0)_b - z_{0,b} \\rVert$
    (same fixed points; every sample's residual starts at 1), reusing that first evaluation, and maps
    the estimate and the absolute residuals back. Relative residuals are unchanged; an absolute
    tolerance is applied conservatively (no sample stops above it). Unless the caller sets `lam`, it
    is $10\\,\\varepsilon$ of the dtype.

    Args:
        solver: a torchdeq-compatible solver whose first evaluation is at `x0`.
    """

    def solve(func, x0, *, max_iter, tol, stop_mode, **kwargs):
        f0 = func(x0)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        norm = (f0 - x0).flatten(1).norm(dim=1)
        floor = 1e-8 * (1.0 + f0.flatten(1).norm(dim=1))
        scale = torch.where(torch.isfinite(norm), torch.maximum(norm, floor), torch.ones_like(norm))
        scale_b = scale.view(shape)
        first = [f0 / scale_b]

        def scaled(u):
            if first:
                return first.pop()
            return func(u * scale_b) / scale_b

        kwargs.setdefault("lam", 10 * torch.finfo(x0.dtype).eps)
        stop_tol = tol / float(scale.max()) if stop_mode == "abs" else tol
        u, traj, stats = solver(
            scaled, x0 / scale_b, max_iter=max_iter, tol=stop_tol, stop_mode=stop_mode, **kwargs
        )
        stats = dict(stats)
        if torch.is_tensor(stats.get("abs_trace")) and stats["abs_trace"].dim() == 2:
            stats["abs_trace"] = stats["abs_trace"] * scale.to(stats["abs_trace"].dtype)[:, None]
        if torch.is_tensor(stats.get("abs_lowest")) and stats["abs_lowest"].shape == scale.shape:
            stats["abs_lowest"] = stats["abs_lowest"] * scale.to(stats["abs_lowest"].dtype)
        return u * scale_b, [t * scale_b for t in traj], stats

    solve.__doc__ = f"{getattr(solver, '__name__', 'solver')} on the problem rescaled by its first residuals."
    return solve


def _register_torchdeq_solvers() -> None:
    from torchdeq.solver import get_solver as torchdeq_solver

    register_solver(
        "anderson", rescaled(torchdeq_solver("anderson")), min_iter=3, options={"m", "lam", "tau"}
    )
    register_solver("broyden", torchdeq_solver("broyden"), options={"LBFGS_thres", "ls"})
    register_solver("fixed_point", torchdeq_solver("fixed_point_iter"), options={"tau"})


_register_torchdeq_solvers()


@dataclass
class FixedPointSolution:
    """What `solve_fixed_point` returns.

    Attributes:
        z: the solver's estimate, shape of `x0`, detached.
        solver: the solver that produced `z` (the fallback's name after a fallback).
        evaluations: evaluations of `f` by that solver (for a fallback, those of the fallback run).
        abs_trace: `(B, N)` absolute residual per solver step (empty if unavailable).
        rel_trace: `(B, N)` relative residual per solver step.
        fallback: None, or why the requested solver was replaced.
    """

    z: torch.Tensor
    solver: str
    evaluations: int
    abs_trace: torch.Tensor
    rel_trace: torch.Tensor
    fallback: str | None = None


def solve_fixed_point(
    func: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    *,
    solver: str = "anderson",
    max_iter: int = 10,
    tol: float = 1e-3,
    stop_mode: str = "rel",
    fallback: str | None = "broyden",
    solver_kwargs: dict[str, Any] | None = None,
) -> FixedPointSolution:
    """Solve $z = f(z)$ for a batch, without autograd, robust to singular Anderson steps.

    Args:
        func: the batched map, `(B, ...) -> (B, ...)`.
        x0: the initial estimate `(B, ...)`.
        solver: a registered solver name.
        max_iter: largest number of evaluations of `func`.
        tol: stop when the residual in `stop_mode` is below `tol` for every sample.
        stop_mode: `"rel"` ($\\lVert f(z) - z \\rVert / \\lVert f(z) \\rVert$) or `"abs"`.
        fallback: solver to rerun with when `solver` raises `torch.linalg.LinAlgError` (a singular
            Anderson system) or returns non-finite values; None to raise instead.
        solver_kwargs: extra keyword arguments for the solver (e.g. Anderson's `m`, `lam`, `tau`).

    Returns:
        A `FixedPointSolution`.

    Raises:
        ValueError: invalid options.
        torch.linalg.LinAlgError: the solve failed and `fallback` is None.

    Examples:
        >>> sol = solve_fixed_point(lambda z: 0.5 * z + 1.0, torch.zeros(2, 3), tol=1e-6, max_iter=30)
        >>> sol.z[0].tolist(), sol.solver
        ([2.0, 2.0, 2.0], 'anderson')
    """
    get_solver(solver)
    check_option(max_iter, "max_iter", kind=int, low=_MIN_ITER[solver])
    check_option(tol, "tol", kind=(int, float), low=0.0, low_inclusive=False)
    check_choice(stop_mode, "stop_mode", ("rel", "abs"))
    check_option(fallback, "fallback", choices=(*solver_names(), None))
    kwargs = check_solver_kwargs(solver, solver_kwargs)

    sol: FixedPointSolution | None = None
    try:
        sol = _run(func, x0, solver, max_iter, tol, stop_mode, kwargs)
        if bool(torch.isfinite(sol.z).all()):
            return sol
        reason = f"{solver} returned non-finite values"
    except torch.linalg.LinAlgError as err:
        reason = f"{solver} failed: {str(err).splitlines()[0]}"
    if fallback is None or fallback == solver:
        if sol is None:
            raise torch.linalg.LinAlgError(reason)
        return sol  # non-finite: reported by the caller
    logger.warning("fixed-point solve: %s; falling back to %s", reason, fallback)
    max_fb = max(max_iter, _MIN_ITER[fallback])
    sol = _run(func, x0, fallback, max_fb, tol, stop_mode, {})
    sol.fallback = f"{reason}; fell back to {fallback}"
    return sol


def _run(
    func: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    solver: str,
    max_iter: int,
    tol: float,
    stop_mode: str,
    kwargs: dict[str, Any],
) -> FixedPointSolution:
    count = 0

    def counted(z: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return func(z)

    with torch.no_grad():
        z, _, stats = _SOLVERS[solver](counted, x0, max_iter=max_iter, tol=tol, stop_mode=stop_mode, **kwargs)
    abs_trace = stats.get("abs_trace", torch.empty(0, 0))
    rel_trace = stats.get("rel_trace", torch.empty(0, 0))
    # torchdeq's traces start with a 1e8 placeholder (dropped here) and repeat the best value after an
    # early stop, up to max_iter entries.
    return FixedPointSolution(
        z=z.detach(),
        solver=solver,
        evaluations=count,
        abs_trace=abs_trace.detach()[:, 1:] if abs_trace.dim() == 2 else abs_trace,
        rel_trace=rel_trace.detach()[:, 1:] if rel_trace.dim() == 2 else rel_trace,
    )
