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

The energy network `EnergyNet` is the 3-layer CNN of appendix A1. Its output layer starts at zero,
so a fresh baseline (like a fresh DEC) predicts the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import check_option, check_tensor, resize_to_fit
from .base import Canonicalizer
from .groups import Group
from .result import CanonicalizationResult, SolverInfo

__all__ = ["DiscreteCanonicalizer", "EnergyNet", "OptimCanonicalizer"]

_EPS = 1e-9


class EnergyNet(nn.Module):
    """A 3-layer CNN energy: `(B, C, H, W)` -> `(B,)` (appendix A1).

    Three 3x3 convolutions (reflect padding, softplus, 2x2 max-pooling after the first two), global
    average pooling and a linear read-out that starts at zero. Softplus keeps the energy twice
    differentiable, which the unrolled gradient steps of `OptimCanonicalizer` need.

    Args:
        in_channels: input channels.
        width: channels of the convolutions.
        view_size: longer side of the resized view of large inputs, or None for the full input.

    Examples:
        >>> EnergyNet(3, width=8)(torch.rand(2, 3, 20, 16)).shape
        torch.Size([2])
    """

    def __init__(self, in_channels: int = 3, *, width: int = 32, view_size: int | None = 64) -> None:
        super().__init__()
        check_option(in_channels, "in_channels", kind=int, low=1)
        check_option(width, "width", kind=int, low=1)
        check_option(view_size, "view_size", kind=int, low=8, allow_none=True)
        self.in_channels = in_channels
        self.view_size = view_size
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, padding_mode="reflect")
        self.conv3 = nn.Conv2d(width, width, 3, padding=1, padding_mode="reflect")
        self.readout = nn.Linear(width, 1)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The resized view the energy sees (longer side at most `view_size`)."""
        return resize_to_fit(x, self.view_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=4, shape="(B, C, H, W)", finite=False)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels (B, C, H, W), got {tuple(x.shape)}")
        x = self.view(x)
        if min(x.shape[-2:]) < 4:
            raise ValueError(f"x must be at least 4x4, got {tuple(x.shape)}")
        y = F.max_pool2d(F.softplus(self.conv1(x)), 2, ceil_mode=True)
        y = F.max_pool2d(F.softplus(self.conv2(y)), 2, ceil_mode=True)
        y = F.softplus(self.conv3(y)).mean(dim=(2, 3))
        return self.readout(y).squeeze(1)


def _energy_net(energy_net: nn.Module | None, in_channels: int | None) -> nn.Module:
    if energy_net is None:
        return EnergyNet(3 if in_channels is None else in_channels)
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

    Args:
        group: the group; without `elements` it must provide `sample_params(n, generator=...)`.
        energy_net: maps `(B, C, H, W)` to energies `(B,)`; default `EnergyNet(in_channels)`.
        in_channels: input channels of the default energy network (default 3).
        num_elements: K, the number of candidates including the identity (default 64).
        elements: `(K, *param_shape)` candidate parameters; must contain the identity. Default: the
            identity followed by K - 1 elements from `group.sample_params` (seeded by `seed`).
        sample_kwargs: extra keyword arguments for `group.sample_params`, e.g.
            `{"scale_range": (0.5, 2.0)}` for the shipped groups.
        temperature: temperature of the softmin behind the straight-through gradient.
        seed: seed of the candidate sampling.

    Raises:
        TypeError, ValueError: invalid options, or `elements` without the identity.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> canon = DiscreteCanonicalizer(GlobalScaleGroup(), in_channels=1, num_elements=8)
        >>> result = canon(torch.rand(2, 1, 24, 24))
        >>> result.params.tolist()       # a fresh energy is flat: the identity (index 0) wins
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
        sample_kwargs: dict | None = None,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(group)
        self.energy_net = _energy_net(energy_net, in_channels)
        check_option(temperature, "temperature", kind=(int, float), low=0.0, low_inclusive=False)
        self.temperature = float(temperature)
        identity = group.identity_params(1, dtype=torch.get_default_dtype())
        if elements is None:
            check_option(num_elements, "num_elements", kind=int, low=1)
            sample = getattr(group, "sample_params", None)
            if sample is None and num_elements > 1:
                raise TypeError(
                    f"{type(group).__name__} has no sample_params(n, generator=...); pass elements explicitly"
                )
            generator = torch.Generator().manual_seed(seed)
            others = (
                sample(num_elements - 1, generator=generator, **(sample_kwargs or {}))
                if num_elements > 1
                else identity[:0]
            )
            elements = torch.cat([identity, others.to(identity.dtype)], dim=0)
        else:
            check_tensor(elements, "elements", shape=f"(K, {', '.join(map(str, group.param_shape))})")
            if tuple(elements.shape[1:]) != tuple(group.param_shape):
                raise ValueError(
                    f"elements must have shape (K, {', '.join(map(str, group.param_shape))}), "
                    f"got {tuple(elements.shape)}"
                )
            is_identity = (elements - identity.to(elements)).flatten(1).abs().amax(dim=1) <= 1e-6
            if not bool(is_identity.any()):
                raise ValueError("elements must contain the identity parameters")
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
        return _energy(self.energy_net, self.group.act_inverse(rep, params)).view(b, k)

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
        check_option(optimizer, "optimizer", choices=("gd", "adam"))
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas must be a pair of floats in [0, 1), got {betas!r}")
        for b in betas:
            check_option(b, "betas entries", kind=(int, float), low=0.0, high=0.9999999)
        check_option(eps, "eps", kind=(int, float), low=0.0, low_inclusive=False)
        check_option(tol, "tol", kind=(int, float), low=0.0, low_inclusive=False)
        check_option(stop_mode, "stop_mode", choices=("rel", "abs"))
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
        return CanonicalizationResult(
            params=params,
            element=self.group.element(params),
            canonical=self.group.act_inverse(x, params),
            info=info,
        )
