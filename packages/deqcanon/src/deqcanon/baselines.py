"""The paper's baseline canonicalizers, both built on a learned energy $E(S^{-1}(I; g))$ (eq. 7).

- `DiscreteCanonicalizer` (the paper's "Canon"): scores K fixed group elements (the identity
  always among them) with an energy network and takes the lowest,
  $\\tilde g = \\arg\\min_k E(S^{-1}(I; g_k))$, trained through a straight-through estimator:
  the forward uses the argmin element; in the backward, `canonical` carries the gradient of the
  softmin-weighted mixture of all K canonical candidates (as equiadapt's discrete canonicalizers
  do; it compares the candidates themselves, which a linearisation in the parameters cannot when
  the candidates are far apart), and `params` that of the softmin-weighted mean of the parameters.
- `OptimCanonicalizer` (the paper's "Optim"): T steps of differentiable gradient descent (or Adam)
  on the energy, $\\Phi_{t+1} = \\Phi_t - \\eta \\nabla_\\Phi E(S^{-1}(I; \\Phi_t))$ from the identity,
  unrolled with `create_graph=True` so the energy is trained through the steps. Its memory grows
  with T, which is what the DEC avoids; it is the memory and time baseline for DEC.

The energy network `EnergyNet` is the 3-layer CNN of appendix A1. Its read-out starts at zero for
Optim (a fresh Optim stays at the identity, and the read-out still gets gradient through the steps) and
at random for Canon (see below).

Canon as the paper reports it (above Aug in its Table 2) needs three things that a flat energy over
K uniformly random candidates lacks; `DiscreteCanonicalizer` has them by default:

- a structured candidate set (`candidates="structured"`): the identity first, then mostly mild warps
  (a fraction `mild_fraction` = 3/4 of the others, local scales in `mild_range` = (0.8, 1.25)) and a few
  wide ones (local scales in `sample_kwargs["scale_range"]`, default (0.5, 2.0)), deterministic given
  `seed`: most choices lie near the identity, where a scale-augmented backbone still works;
- a random read-out of the energy (`readout_init="random"`): with a zero read-out every candidate has the
  same energy and the same softmin weight, so the straight-through gradient prefers no candidate at
  step 0;
- an energy bias toward the identity (`identity_bias` = 1.0 subtracted from the identity's energy): the
  untrained Canon returns the identity (at random initialisation the identity's energy was at most 0.2
  above the lowest candidate's, over 90 draws of networks and inputs), and a learned energy must beat that
  margin before Canon warps.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import check_choice, check_option, check_tensor, resize_to_fit
from .base import Canonicalizer
from .groups import Group, warp_stats
from .result import CanonicalizationResult, SolverInfo

__all__ = ["DiscreteCanonicalizer", "EnergyNet", "OptimCanonicalizer"]

_EPS = 1e-9


class EnergyNet(nn.Module):
    """A 3-layer CNN energy: `(B, C, H, W)` -> `(B,)` (appendix A1).

    Three 3x3 convolutions (reflect padding, softplus, 2x2 max-pooling after the first two), global
    average pooling and a linear read-out. Softplus keeps the energy twice differentiable, which the
    unrolled gradient steps of `OptimCanonicalizer` need.

    Args:
        in_channels: input channels.
        width: channels of the convolutions.
        view_size: longer side of the resized view of large inputs, or None for the full input.
        readout_init: `"zero"` (default; a flat energy) or `"random"` (PyTorch's default init of the
            linear read-out; `DiscreteCanonicalizer`'s default energy uses it).

    Examples:
        >>> EnergyNet(3, width=8)(torch.rand(2, 3, 20, 16)).shape
        torch.Size([2])
    """

    def __init__(
        self, in_channels: int = 3, *, width: int = 32, view_size: int | None = 64, readout_init: str = "zero"
    ) -> None:
        super().__init__()
        check_option(in_channels, "in_channels", kind=int, low=1)
        check_option(width, "width", kind=int, low=1)
        check_option(view_size, "view_size", kind=int, low=8, allow_none=True)
        check_choice(readout_init, "readout_init", ("zero", "random"))
        self.in_channels = in_channels
        self.readout_init = readout_init
        self.view_size = view_size
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, padding_mode="reflect")
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, padding_mode="reflect")
        self.readout = nn.Linear(width, 1)
        if readout_init == "zero":
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The resized view the energy sees (longer side at most `view_size`)."""
        return resize_to_fit(x, self.view_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", [("B", "C", "H", "W")], finite=False)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels (B, C, H, W), got {tuple(x.shape)}")
        x = self.view(x)
        if min(x.shape[-2:]) < 4:
            raise ValueError(f"x must be at least 4x4, got {tuple(x.shape)}")
        y = F.max_pool2d(F.softplus(self.conv1(x)), 2, ceil_mode=True)
        y = F.max_pool2d(F.softplus(self.conv2(y)), 2, ceil_mode=True)
        y = F.softplus(self.conv3(y)).mean(dim=(2, 3))
        return self.readout(y).squeeze(1)


def _energy_net(
    energy_net: nn.Module | None, in_channels: int | None, readout_init: str = "zero"
) -> nn.Module:
    if energy_net is None:
        return EnergyNet(3 if in_channels is None else in_channels, readout_init=readout_init)
    if in_channels is not None:
        raise ValueError("in_channels configures the default EnergyNet; do not pass it with energy_net")
    if not isinstance(energy_net, nn.Module):
        raise TypeError(f"energy_net must be an nn.Module, got {type(energy_net).__name__}")
    return energy_net


def _view(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    view = getattr(net, "view", None)
    return view(x) if callable(view) else x


def _energy(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    e = net(x)
    if e.dim() == 2 and e.shape[1] == 1:
        e = e[:, 0]
    if e.shape != (x.shape[0],):
        raise ValueError(f"energy_net must return (B,) or (B, 1) energies, got {tuple(e.shape)}")
    return e


class DiscreteCanonicalizer(Canonicalizer):
    """Canonicalization by the lowest learned energy among K fixed group elements ("Canon").

    The energy of candidate $k$ is $E(S^{-1}(I; g_k)) - b\\,[g_k = e]$, with $b$ = `identity_bias`.

    Args:
        group: the group; without `elements` it must provide `sample_params(n, generator=...)`.
        energy_net: maps `(B, C, H, W)` to energies `(B,)`; default
            `EnergyNet(in_channels, readout_init="random")`.
        in_channels: input channels of the default energy network (default 3).
        num_elements: K, the number of candidates including the identity (default 64).
        elements: `(K, *param_shape)` candidate parameters; must contain the identity. Default: built
            by `candidates`.
        candidates: how the default candidates are drawn with `group.sample_params` (seeded by `seed`),
            the identity always first. `"structured"` (default): round(`mild_fraction` (K - 1)) mild
            elements (`scale_range=mild_range`), then the rest wide (`sample_kwargs["scale_range"]`, the
            group's default (0.5, 2.0) if not given). `"random"`: K - 1 elements with `sample_kwargs`.
            A group whose `sample_params` takes no `scale_range` gets the `"random"` set.
        mild_range: `(low, high)` local scale range of the mild candidates, `low <= 1 <= high`
            (default (0.8, 1.25)).
        mild_fraction: share of the non-identity candidates that are mild, in [0, 1] (default 0.75).
        sample_kwargs: extra keyword arguments for `group.sample_params`, e.g.
            `{"scale_range": (0.5, 2.0)}` for the shipped groups.
        temperature: temperature of the softmin behind the straight-through gradient.
        seed: seed of the candidate sampling.
        identity_bias: $b \\geq 0$ subtracted from the identity's energy (default 1.0): an untrained Canon
            returns the identity, and a learned energy has to beat the identity by $b$ to warp.

    Raises:
        TypeError, ValueError: invalid options, or `elements` without the identity.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> canon = DiscreteCanonicalizer(GlobalScaleGroup(), in_channels=1, num_elements=8)
        >>> result = canon(torch.rand(2, 1, 24, 24))
        >>> result.params.tolist()       # the identity (index 0) is favoured by identity_bias
        [[0.0], [0.0]]
    """

    def __init__(
        self,
        group: Group,
        energy_net: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        num_elements: int = 64,
        elements: torch.Tensor | None = None,
        candidates: str = "structured",
        mild_range: tuple[float, float] = (0.8, 1.25),
        mild_fraction: float = 0.75,
        sample_kwargs: dict | None = None,
        temperature: float = 1.0,
        seed: int = 0,
        identity_bias: float = 1.0,
    ) -> None:
        super().__init__(group)
        self.energy_net = _energy_net(energy_net, in_channels, readout_init="random")
        check_option(temperature, "temperature", kind=(int, float), low=0.0, low_inclusive=False)
        check_choice(candidates, "candidates", ("structured", "random"))
        check_option(mild_fraction, "mild_fraction", kind=(int, float), low=0.0, high=1.0)
        check_option(identity_bias, "identity_bias", kind=(int, float), low=0.0)
        check_option(seed, "seed", kind=int)
        mild_range = _check_mild_range(mild_range)
        if sample_kwargs is not None and not isinstance(sample_kwargs, dict):
            raise TypeError(f"sample_kwargs must be a dict or None, got {type(sample_kwargs).__name__}")
        self.temperature = float(temperature)
        self.identity_bias = float(identity_bias)
        identity = group.identity_params(1, dtype=torch.get_default_dtype())
        if elements is None:
            check_option(num_elements, "num_elements", kind=int, low=1)
            sample = getattr(group, "sample_params", None)
            if sample is None and num_elements > 1:
                raise TypeError(
                    f"{type(group).__name__} has no sample_params(n, generator=...); pass elements explicitly"
                )
            generator = torch.Generator().manual_seed(seed)
            kwargs = dict(sample_kwargs or {})
            structured = candidates == "structured" and _takes_scale_range(sample)
            n_mild = round(mild_fraction * (num_elements - 1)) if structured else 0
            parts = [identity]
            if n_mild:
                parts.append(sample(n_mild, generator=generator, **{**kwargs, "scale_range": mild_range}))
            if num_elements - 1 - n_mild:
                parts.append(sample(num_elements - 1 - n_mild, generator=generator, **kwargs))
            elements = torch.cat([p.to(identity.dtype) for p in parts], dim=0)
        else:
            check_tensor(elements, "elements", [("K", *group.param_shape)])
        is_identity = (elements - identity.to(elements)).flatten(1).abs().amax(dim=1) <= 1e-6
        if not bool(is_identity.any()):
            raise ValueError("elements must contain the identity parameters")
        self.identity_index = int(is_identity.nonzero()[0, 0])
        self.register_buffer("elements", elements.detach().clone())

    @property
    def num_elements(self) -> int:
        """K, the number of candidate elements."""
        return self.elements.shape[0]

    def energies(self, x: torch.Tensor) -> torch.Tensor:
        """Energies of every candidate for `x` `(B, C, H, W)`: `(B, K)`."""
        view = _view(self.energy_net, x)
        b, k = view.shape[0], self.num_elements
        cand = self.elements.to(view.dtype)
        rep = view.repeat_interleave(k, dim=0)
        params = cand.repeat(b, *([1] * (cand.dim() - 1)))
        energies = _energy(self.energy_net, self.group.act_inverse(rep, params)).view(b, k)
        if self.identity_bias:
            bias = torch.zeros(k, device=energies.device, dtype=energies.dtype)
            bias[self.identity_index] = self.identity_bias
            energies = energies - bias
        return energies

    def forward(self, x: torch.Tensor, *, source: torch.Tensor | None = None) -> CanonicalizationResult:
        """Canonicalize `x` `(B, C, H, W)` with the lowest-energy candidate (predicted from `source`)."""
        x, src = self._inputs(x, source)
        energies = self.energies(src)
        cand = self.elements.to(x.dtype)
        hard = cand[energies.argmin(dim=1)]
        canonical = self.group.act_inverse(x, hard)
        if energies.requires_grad:
            # Straight-through: the values of the argmin element, the gradients of the softmin weights.
            weights = torch.softmax(-energies / self.temperature, dim=1)
            soft = (weights @ cand.flatten(1)).view_as(hard)
            params = hard + (soft - soft.detach())
            b, k = energies.shape
            every = self.group.act_inverse(
                x.repeat_interleave(k, dim=0), cand.repeat(b, *([1] * (cand.dim() - 1)))
            ).view(b, k, *x.shape[1:])
            zero = (weights - weights.detach()).view(b, k, *([1] * (x.dim() - 1)))
            canonical = canonical + (zero * every).sum(dim=1)
        else:
            params = hard
        return CanonicalizationResult(
            params=params,
            element=self.group.element(params),
            canonical=canonical,
            info=None,
        )

    def extra_repr(self) -> str:
        return f"num_elements={self.num_elements}, identity_bias={self.identity_bias}"


def _takes_scale_range(sample: object) -> bool:
    try:
        params = inspect.signature(sample).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "scale_range" or p.kind is p.VAR_KEYWORD for p in params)


def _check_mild_range(mild_range: object) -> tuple[float, float]:
    ok = isinstance(mild_range, (tuple, list)) and len(mild_range) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mild_range)
    if not ok or not 0 < mild_range[0] <= 1 <= mild_range[1]:
        raise ValueError(
            f"mild_range must be a pair (low, high) with 0 < low <= 1 <= high, got {mild_range!r}"
        )
    return float(mild_range[0]), float(mild_range[1])


class OptimCanonicalizer(Canonicalizer):
    """Canonicalization by T unrolled, differentiable descent steps on a learned energy ("Optim").

    $\\Phi_0$ is the identity; each step evaluates $E(S^{-1}(I; \\Phi_t))$, takes its gradient with
    `create_graph=True` and moves $\\Phi$ (plain gradient descent, or Adam with bias correction). The
    whole trajectory is backpropagated through, so memory and time grow with `steps`.

    Args:
        group: the group.
        energy_net: maps `(B, C, H, W)` to energies `(B,)`; default `EnergyNet(in_channels)`.
        in_channels: input channels of the default energy network (default 3).
        steps: T, the number of unrolled steps.
        step_size: learning rate $\\eta$ of the inner optimiser.
        optimizer: `"gd"` (default) or `"adam"`.
        betas: Adam's moment decay rates.
        eps: Adam's denominator term; the normalised step has sensitivity up to $1/\\epsilon$ near zero
            gradients, so it is larger than torch's default.
        tol: tolerance for `info.converged` on the last step's length.
        stop_mode: `"rel"` or `"abs"` for that test (the steps never stop early; the unroll is fixed).

    `info` reports the last step $\\lVert \\Phi_T - \\Phi_{T-1} \\rVert$ as the residual: it is the
    fixed-point residual of the descent map of eq. 16.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> optim = OptimCanonicalizer(GlobalScaleGroup(), in_channels=1, steps=3)
        >>> result = optim(torch.rand(2, 1, 24, 24))
        >>> result.params.shape, result.info.iterations
        (torch.Size([2, 1]), 3)
    """

    def __init__(
        self,
        group: Group,
        energy_net: nn.Module | None = None,
        *,
        in_channels: int | None = None,
        steps: int = 5,
        step_size: float = 0.1,
        optimizer: str = "gd",
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-4,
        tol: float = 1e-3,
        stop_mode: str = "rel",
    ) -> None:
        super().__init__(group)
        self.energy_net = _energy_net(energy_net, in_channels)
        check_option(steps, "steps", kind=int, low=1)
        check_option(step_size, "step_size", kind=(int, float), low=0.0, low_inclusive=False)
        check_choice(optimizer, "optimizer", ("gd", "adam"))
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair of floats in [0, 1), got {betas!r}")
        for b in betas:
            check_option(b, "betas entries", kind=(int, float), low=0.0, high=0.9999999)
        check_option(eps, "eps", kind=(int, float), low=0.0, low_inclusive=False)
        check_option(tol, "tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_choice(stop_mode, "stop_mode", ("rel", "abs"))
        self.steps = steps
        self.step_size = float(step_size)
        self.optimizer = optimizer
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.tol = float(tol)
        self.stop_mode = stop_mode

    def extra_repr(self) -> str:
        return f"steps={self.steps}, step_size={self.step_size}, optimizer={self.optimizer!r}"

    def forward(self, x: torch.Tensor, *, source: torch.Tensor | None = None) -> CanonicalizationResult:
        """Canonicalize `x` `(B, C, H, W)` after `steps` descent steps on the energy of `source` (or `x`)."""
        x, src = self._inputs(x, source)
        view = _view(self.energy_net, src)
        graph = torch.is_grad_enabled() and (
            src.requires_grad or any(p.requires_grad for p in self.energy_net.parameters())
        )
        z = self.group.identity_params(x.shape[0], device=x.device, dtype=x.dtype)
        m = v = torch.zeros_like(z)
        b1, b2 = self.betas
        steps: list[torch.Tensor] = []
        with torch.enable_grad():
            for t in range(1, self.steps + 1):
                if not z.requires_grad:
                    z = z.detach().requires_grad_(True)
                energy = _energy(self.energy_net, self.group.act_inverse(view, z)).sum()
                (g,) = torch.autograd.grad(energy, z, create_graph=graph)
                if self.optimizer == "gd":
                    step = self.step_size * g
                else:
                    m = b1 * m + (1 - b1) * g
                    v = b2 * v + (1 - b2) * g * g
                    m_hat = m / (1 - b1**t)
                    v_hat = v / (1 - b2**t)
                    step = self.step_size * m_hat / torch.sqrt(v_hat + self.eps**2)
                z = z - step
                if not graph:
                    z, m, v = z.detach(), m.detach(), v.detach()
                with torch.no_grad():
                    length = step.flatten(1).norm(dim=1)
                    steps.append(torch.stack([length, length / (z.flatten(1).norm(dim=1) + _EPS)], dim=1))
        params = z if graph else z.detach()

        with torch.no_grad():
            trace = torch.stack(steps, dim=2)
            abs_trace, rel_trace = trace[:, 0], trace[:, 1]
            finite = torch.isfinite(params).flatten(1).all(dim=1)
            measured = rel_trace[:, -1] if self.stop_mode == "rel" else abs_trace[:, -1]
        info = SolverInfo(
            solver=self.optimizer,
            iterations=self.steps,
            abs_residual=abs_trace[:, -1],
            rel_residual=rel_trace[:, -1],
            converged=(measured <= self.tol) & finite,
            finite=finite,
            tol=self.tol,
            stop_mode=self.stop_mode,
            abs_trace=abs_trace,
            rel_trace=rel_trace,
        )
        stats = warp_stats(self.group, params)
        info.param_distance = stats["param_distance"]
        info.log_slope_mean = stats.get("log_slope_mean")
        info.log_slope_max = stats.get("log_slope_max")
        return CanonicalizationResult(
            params=params,
            element=self.group.element(params),
            canonical=self.group.act_inverse(x, params),
            info=info,
        )
