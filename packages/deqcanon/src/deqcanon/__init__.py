"""deqcanon: deep equilibrium canonicalizers (DEC) on torchdeq, with the Canon and Optim baselines.

A canonicalizer maps an input $I$ to a group element $\\tilde g = h(I)$ and returns the canonical
form $S^{-1}(I; \\tilde g)$ (eqs. 5-7). `DEQCanonicalizer` predicts the element as the fixed point
$\\Phi^* = H(S^{-1}(I; \\Phi^*))$ of a learned map (eqs. 14-16), solved with torchdeq's solvers and
trained by implicit differentiation; `SpatialTransformerCanonicalizer` is its ablation without the
equilibrium (the same $H$ applied once); `DiscreteCanonicalizer` and `OptimCanonicalizer` are the paper's
energy-based baselines. Every canonicalizer works for any group implementing `Group`;
`MonotoneScaleGroup` (local scaling, on monowarp) and `GlobalScaleGroup` are provided.

Examples:
    >>> import torch
    >>> from deqcanon import DEQCanonicalizer, MonotoneScaleGroup
    >>> dec = DEQCanonicalizer(MonotoneScaleGroup(grid=(4, 4)), in_channels=3)
    >>> result = dec(torch.rand(2, 3, 64, 48))
    >>> result.params.shape, result.canonical.shape
    (torch.Size([2, 40]), torch.Size([2, 3, 64, 48]))
"""

from .base import Canonicalizer, ParamNetCanonicalizer
from .baselines import DiscreteCanonicalizer, EnergyNet, OptimCanonicalizer
from .config import BackwardConfig, SolveConfig
from .deq import DEQCanonicalizer
from .functional import deq_canonicalize
from .groups import (
    GlobalScaleGroup,
    Group,
    MonotoneScaleGroup,
    content_weight,
    element_equivariance_error,
    field_shape_of,
    warp_stats,
)
from .param_net import ParamNet, ResidualBlock, bounded_slope_range
from .registry import (
    CanonicalizerEntry,
    canonicalizer_factory,
    canonicalizer_names,
    create_canonicalizer,
    get_canonicalizer,
    register_canonicalizer,
)
from .result import CanonicalizationResult, SolverInfo
from .solver import FixedPointSolution, get_solver, register_solver, solve_fixed_point, solver_names
from .stn import SpatialTransformerCanonicalizer, stn_canonicalize

__all__ = [
    "BackwardConfig",
    "CanonicalizationResult",
    "Canonicalizer",
    "CanonicalizerEntry",
    "DEQCanonicalizer",
    "DiscreteCanonicalizer",
    "EnergyNet",
    "FixedPointSolution",
    "GlobalScaleGroup",
    "Group",
    "MonotoneScaleGroup",
    "OptimCanonicalizer",
    "ParamNet",
    "ParamNetCanonicalizer",
    "ResidualBlock",
    "SolveConfig",
    "SolverInfo",
    "SpatialTransformerCanonicalizer",
    "bounded_slope_range",
    "canonicalizer_factory",
    "canonicalizer_names",
    "content_weight",
    "create_canonicalizer",
    "deq_canonicalize",
    "element_equivariance_error",
    "field_shape_of",
    "get_canonicalizer",
    "get_solver",
    "register_canonicalizer",
    "register_solver",
    "solve_fixed_point",
    "solver_names",
    "stn_canonicalize",
    "warp_stats",
]

__version__ = "0.1.0"
