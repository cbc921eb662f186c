"""Settings of the DEC's two solves: the forward fixed point (eqs. 14-16) and the adjoint of its gradient.

The forward solve finds $\\Phi^* = f(\\Phi^*)$ from the identity; `SolveConfig` holds its solver and stopping
rule. The backward differentiates through $\\Phi^*$ either implicitly, by solving the adjoint fixed point
$y = J^\\top y + \\partial \\ell / \\partial \\Phi^*$, or by a few damped "phantom" iterations;
`BackwardConfig` holds that choice and its settings. Both are frozen dataclasses, validated on creation, so
one instance can be shared between canonicalizers and compared or printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ._utils import check_choice, check_option
from .solver import check_solver_kwargs, min_iterations, solver_names

__all__ = ["BackwardConfig", "SolveConfig"]


@dataclass(frozen=True)
class SolveConfig:
    """The forward fixed-point solve $\\Phi^* = f(\\Phi^*)$ of the DEC (eqs. 14-16).

    Args:
        solver: `"anderson"` (default), `"broyden"`, `"fixed_point"` or any registered name.
        max_iter: most evaluations of $f$ in the solve (Anderson needs at least 3).
        tol: the solve stops when every sample's residual (in `stop_mode`) is below `tol`.
        stop_mode: `"rel"` (default): $\\lVert f(z) - z \\rVert / \\lVert f(z) \\rVert$; `"abs"`:
            $\\lVert f(z) - z \\rVert$. Relative residuals are large near the zero vector, so prefer `"abs"`
            when the parameters of the identity are zeros and the elements stay close to it.
        solver_kwargs: extra options of the solver (Anderson: `m`, `lam`, `tau`; Broyden: `LBFGS_thres`,
            `ls`; fixed point: `tau`), checked. Anderson's `lam` applies to the problem rescaled by each
            sample's first residual (see `deqcanon.solver.rescaled`).
        fallback: solver used when the forward or adjoint solve raises (singular Anderson system) or
            returns non-finite values; None raises instead. Recorded in `info.fallback`.
        eval_max_iter: `max_iter` in eval mode (None: the same).

    Raises:
        TypeError, ValueError: an invalid setting (the message names it and its valid values).

    Examples:
        >>> SolveConfig(max_iter=6, stop_mode="abs").iterations(training=False)
        6
        >>> SolveConfig(max_iter=20, eval_max_iter=8).iterations(training=False)
        8
    """

    solver: str = "anderson"
    max_iter: int = 10
    tol: float = 1e-3
    stop_mode: Literal["rel", "abs"] = "rel"
    solver_kwargs: dict[str, Any] = field(default_factory=dict)
    fallback: str | None = "broyden"
    eval_max_iter: int | None = None

    def __post_init__(self) -> None:
        check_choice(self.solver, "solver", solver_names())
        check_option(self.max_iter, "max_iter", kind=int, low=min_iterations(self.solver))
        check_option(self.tol, "tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_choice(self.stop_mode, "stop_mode", ("rel", "abs"))
        object.__setattr__(self, "solver_kwargs", check_solver_kwargs(self.solver, self.solver_kwargs))
        check_option(self.fallback, "fallback", choices=(*solver_names(), None))
        check_option(
            self.eval_max_iter, "eval_max_iter", kind=int, low=min_iterations(self.solver), allow_none=True
        )
        object.__setattr__(self, "tol", float(self.tol))

    def iterations(self, *, training: bool) -> int:
        """The iteration budget in training (`max_iter`) or in eval mode (`eval_max_iter` if set)."""
        return self.max_iter if training or self.eval_max_iter is None else self.eval_max_iter


@dataclass(frozen=True)
class BackwardConfig:
    """How gradients flow back through the fixed point $\\Phi^*$.

    Args:
        kind: `"implicit"` (default): implicit differentiation, the adjoint fixed point
            $y = J^\\top y + \\partial \\ell / \\partial \\Phi^*$ solved with `solver`; `"phantom"`:
            backpropagate through `phantom_steps` damped iterations
            $\\Phi \\leftarrow \\lambda f(\\Phi) + (1 - \\lambda) \\Phi$ from $\\Phi^*$ (torchdeq's phantom
            gradient; the authors' code used 1 step).
        solver: solver of the implicit backward's adjoint fixed point.
        max_iter: most iterations of the adjoint solve.
        tol: tolerance of the adjoint solve on its relative residual (gradients have no natural scale, so
            the adjoint always stops in relative mode).
        phantom_steps: damped iterations differentiated through in `"phantom"` mode.
        phantom_damping: damping $\\lambda \\in (0, 1]$ of those iterations.

    Raises:
        TypeError, ValueError: an invalid setting (the message names it as `backward.<field>`, except
            `kind`, named `backward`, and the phantom settings).

    Examples:
        >>> BackwardConfig("phantom", phantom_steps=2).kind
        'phantom'
        >>> BackwardConfig.of("implicit") == BackwardConfig()
        True
    """

    kind: Literal["implicit", "phantom"] = "implicit"
    solver: str = "anderson"
    max_iter: int = 20
    tol: float = 1e-3
    phantom_steps: int = 1
    phantom_damping: float = 1.0

    def __post_init__(self) -> None:
        check_choice(self.kind, "backward", ("implicit", "phantom"))
        check_choice(self.solver, "backward.solver", solver_names())
        check_option(self.max_iter, "backward.max_iter", kind=int, low=min_iterations(self.solver))
        check_option(self.tol, "backward.tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_option(self.phantom_steps, "phantom_steps", kind=int, low=1)
        check_option(
            self.phantom_damping, "phantom_damping", kind=(int, float), low=0.0, low_inclusive=False, high=1.0
        )
        object.__setattr__(self, "tol", float(self.tol))
        object.__setattr__(self, "phantom_damping", float(self.phantom_damping))

    @classmethod
    def of(cls, value: BackwardConfig | str) -> BackwardConfig:
        """A `BackwardConfig` from itself or from a kind (`"implicit"` or `"phantom"`, default settings)."""
        if isinstance(value, BackwardConfig):
            return value
        if isinstance(value, str):
            return cls(kind=value)  # type: ignore[arg-type]
        raise TypeError(f"backward must be a BackwardConfig or a string, got {type(value).__name__}")


# The flat keyword names of each setting, as the registry's "dec" entry and the apps spell them.
SOLVE_OPTIONS = {
    "solver": "solver",
    "max_iter": "max_iter",
    "tol": "tol",
    "stop_mode": "stop_mode",
    "solver_kwargs": "solver_kwargs",
    "fallback": "fallback",
    "eval_max_iter": "eval_max_iter",
}
BACKWARD_OPTIONS = {
    "backward": "kind",
    "backward_solver": "solver",
    "backward_max_iter": "max_iter",
    "backward_tol": "tol",
    "phantom_steps": "phantom_steps",
    "phantom_damping": "phantom_damping",
}


def configs_from_flat(options: dict[str, Any]) -> tuple[SolveConfig, BackwardConfig, dict[str, Any]]:
    """Split flat keyword options (`max_iter=`, `backward_tol=`, ...) into the two configs and the rest."""
    rest = dict(options)
    solve = {SOLVE_OPTIONS[k]: rest.pop(k) for k in list(rest) if k in SOLVE_OPTIONS}
    backward = {BACKWARD_OPTIONS[k]: rest.pop(k) for k in list(rest) if k in BACKWARD_OPTIONS}
    if solve.get("solver_kwargs") is None:
        solve.pop("solver_kwargs", None)
    kind = backward.pop("kind", "implicit")
    if isinstance(kind, BackwardConfig):
        return SolveConfig(**solve), replace(kind, **backward), rest
    return SolveConfig(**solve), BackwardConfig(kind=kind, **backward), rest
