"""Groups that a canonicalizer acts with: the `Group` protocol, monotone scaling, global scaling.

A canonicalizer predicts parameters $\\Phi$ of a group element $g$ and canonicalizes the input with
the inverse action $S^{-1}(I; g)$ (eq. 6). The canonicalizers only need four things from a group
(`Group`): the per-sample parameter shape, the identity parameters, and the two actions

$$S(I; g)(p) = I(l_g^{-1}(p)) \\quad (\\texttt{act}), \\qquad
  S^{-1}(I; g)(p) = I(l_g(p)) \\quad (\\texttt{act\\_inverse}),$$

both differentiable in the input and in the parameters (eq. 13: content at $q$ moves to $l_g(q)$).
Points are normalised to $[0, 1]^2$ with x horizontal and y vertical.

Two optional hooks make a group fit the default networks better:

- `field_shape`, `params_from_field(field)`, `field_from_params(params)`: a spatial layout
  `(C, h, w)` of the parameters, so that `ParamNet` can pool its feature map to the field and keep
  the parameters where they act (the monotone scaling logits of a knot row live in that row).
  Without them the parameters are treated as a `(D, 1, 1)` field (global pooling).
- `sample_params(n, *, generator, device, dtype)`: random elements, used by `DiscreteCanonicalizer`
  to build its candidate set.
- `log_slopes(params)`: `(B, P)` log local scale factors of the elements (gauge invariant, 0 at the
  identity up to rounding), used by `warp_stats` to report how far the canonicalizer warps.
- `center_params(params)`: the same elements with the parameters' gauge fixed (the monotone group's
  logits are defined up to a shift per knot function), used by the residual DEC update (`deq_map`) so that
  its state does not drift along the gauge.

`MonotoneScaleGroup` (on `monowarp`) is the group of the paper (Sec. 4.1); `GlobalScaleGroup`
(isotropic scaling about the image centre, one log-scale parameter) is a minimal second group that
shows the canonicalizers are not tied to one group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

import monowarp

from ._utils import check_choice, check_option, check_tensor

__all__ = [
    "GlobalScaleGroup",
    "Group",
    "MonotoneScaleGroup",
    "content_weight",
    "element_equivariance_error",
    "field_shape_of",
    "warp_stats",
]


@runtime_checkable
class Group(Protocol):
    """What a canonicalizer needs from a group acting on `(B, C, H, W)` tensors.

    Attributes:
        param_shape: shape of one sample's parameters, e.g. `(D,)`.

    Any object with these members works (structural typing); `isinstance(obj, Group)` checks that
    they exist.
    """

    param_shape: tuple[int, ...]

    def identity_params(
        self, batch: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Parameters of the identity element, `(batch, *param_shape)`."""
        ...

    def act(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """$S(x; g)$ for `x` `(B, C, H, W)` and `params` `(B, *param_shape)`."""
        ...

    def act_inverse(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """$S^{-1}(x; g)$ for `x` `(B, C, H, W)` and `params` `(B, *param_shape)`."""
        ...

    def element(self, params: torch.Tensor) -> Any:
        """The group element object built from `params` (for example a `monowarp.MonotoneScale`)."""
        ...


def field_shape_of(group: Group) -> tuple[int, int, int]:
    """The spatial parameter layout `(C, h, w)` of a group: its `field_shape`, else `(D, 1, 1)`.

    Examples:
        >>> field_shape_of(MonotoneScaleGroup(grid=(4, 3)))
        (2, 4, 5)
        >>> field_shape_of(GlobalScaleGroup())
        (1, 1, 1)
    """
    shape = getattr(group, "field_shape", None)
    if shape is None:
        return (math.prod(group.param_shape), 1, 1)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"group.field_shape must be (C, h, w) with positive sizes, got {shape}")
    return shape


def warp_stats(group: Group, params: torch.Tensor) -> dict[str, torch.Tensor]:
    """How far the elements of `params` `(B, *param_shape)` are from the identity, per sample; detached.

    Returns a dict of `(B,)` tensors: `param_distance`, the mean of $|\\Phi - \\Phi_e|$ over the parameters
    ($\\Phi_e$ the identity parameters; cheap and group agnostic, but not gauge invariant: for the monotone
    group a uniform shift of one knot function's logits changes it and not the element), and, when the
    group has `log_slopes`, `log_slope_mean` and `log_slope_max`, the mean and max of $|\\log s|$ over the
    element's local scale factors $s$ (0 at the identity, up to rounding). Non-finite samples give NaN.

    Example:
        >>> group = MonotoneScaleGroup(grid=(2, 2))
        >>> stats = warp_stats(group, group.identity_params(3))
        >>> stats["param_distance"].tolist(), bool((stats["log_slope_max"] < 1e-6).all())
        ([0.0, 0.0, 0.0], True)
    """
    with torch.no_grad():
        params = params.detach()
        identity = group.identity_params(params.shape[0], device=params.device, dtype=params.dtype)
        finite = torch.isfinite(params).flatten(1).all(dim=1)
        safe = torch.where(finite.view(-1, *([1] * (params.dim() - 1))), params, identity)
        stats = {"param_distance": (params - identity).abs().flatten(1).mean(dim=1)}
        log_slopes = getattr(group, "log_slopes", None)
        if log_slopes is not None:
            a = log_slopes(safe).abs()
            nan = torch.full_like(a[:, 0], float("nan"))
            stats["log_slope_mean"] = torch.where(finite, a.mean(dim=1), nan)
            stats["log_slope_max"] = torch.where(finite, a.amax(dim=1), nan)
    return stats


def element_equivariance_error(
    phi: monowarp.ScalingMap,
    phi_transformed: monowarp.ScalingMap,
    transform: monowarp.ScalingMap,
    *,
    points: int = 9,
    normalize: bool = True,
    weight: torch.Tensor | None = None,
    reduction: str = "pooled",
) -> torch.Tensor:
    r"""How far predicted elements are from the defining property of a canonicalizer, eq. 5.

    A canonicalizer $h$ is equivariant, $h(S(I; l)) = l \cdot h(I)$ for every $l$ (eq. 5 with the product of
    eq. 9), exactly when its canonical form $S^{-1}(I; h(I))$ is invariant. Given the elements predicted for
    images $I$ (``phi``) and for $S(I; l)$ (``phi_transformed``), this is the mean squared distance between
    the maps $h(S(I; l))$ and $l \circ h(I)$ on a ``points`` x ``points`` grid inside the image (normalised
    coordinates), evaluated with the exact composition of the group; no image is warped.

    With ``normalize`` the error is divided by the mean squared displacement $|l(q) - q|^2$ at the points
    $q = h(I)(p)$ compared: 0 is an equivariant canonicalizer, about 1 one that ignores the transformation
    (a constant prediction, the identity included), so the number reads the same for any range of $l$.
    Both sides carry gradients: as a training term it rewards canonicalizing itself, which the task loss
    of a backbone trained on uncanonicalized images does not (the numerator and the denominator shrink
    together as the compared points move to the border, where $l$ moves nothing, so that is no way out).

    On a uniform grid the error has a floor above 0 wherever the images are flat (the background of a
    sparse scene): there a warp changes no pixel, so no canonicalizer can read $l$ from $S(I; l)$. A
    ``weight`` map over the images $I$ (`content_weight`: where a warp is visible) weighs each compared point
    $p$ by the content at $q = h(I)(p)$, the pixel of $I$ that the canonical form shows at $p$ (sampled
    without gradient, so that moving $q$ to empty regions is no way out either).

    Args:
        phi: `monowarp.ScalingMap` of batch `B`, the elements predicted for the images $I$.
        phi_transformed: the elements predicted for $S(I; l)$, batch `B`.
        transform: the elements $l$ that transformed the images, batch `B` (for images transformed by
            $S^{-1}(I; g)$, pass ``phi`` and ``phi_transformed`` swapped with ``transform=g``).
        points: points per side of the grid, in $[0.05, 0.95]$.
        normalize: divide by the displacement of ``transform`` (see above).
        weight: optional non-negative `(B, 1, H, W)` map over the images whose elements are ``phi`` (see
            above); the sums over the batch and the points are weighted by it (a constant: no gradient).
        reduction: ``"pooled"``: one number, the sums taken over the batch and the points together;
            ``"none"``: one per image, `(B,)`, its own points' sums (an image without weight gives 0).

    Returns:
        A scalar tensor, or `(B,)` with ``reduction="none"``.

    Raises:
        TypeError: an argument is not a `monowarp.ScalingMap`.
        ValueError: ``points < 2``, the batch sizes differ, ``weight`` is not a non-negative
            `(B, 1, H, W)` map, or an unknown ``reduction``.

    Example:
        >>> import monowarp
        >>> g = monowarp.MonotoneScale.identity(2, grid=(3, 3))
        >>> gen = torch.Generator().manual_seed(0)
        >>> l = monowarp.sample_monotone_scale(2, (3, 3), (0.5, 2.0), generator=gen)
        >>> float(element_equivariance_error(g, l.compose(g), l))  # equivariant
        0.0
        >>> round(float(element_equivariance_error(g, g, l)), 6)  # stays put: 1 by definition
        1.0
        >>> images = torch.zeros(2, 1, 16, 16)
        >>> images[:, :, 4:8, 4:8] = 1.0  # content in one corner only
        >>> w = content_weight(images)
        >>> round(float(element_equivariance_error(g, g, l, weight=w)), 6)
        1.0
    """
    for name, value in (("phi", phi), ("phi_transformed", phi_transformed), ("transform", transform)):
        if not isinstance(value, monowarp.ScalingMap):
            raise TypeError(f"{name} must be a monowarp.ScalingMap, got {type(value).__name__}")
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    check_choice(reduction, "reduction", ("pooled", "none"))
    b = phi.batch_size
    if phi_transformed.batch_size != b or transform.batch_size != b:
        raise ValueError(
            "phi, phi_transformed and transform must have one batch size, got "
            f"{b}, {phi_transformed.batch_size} and {transform.batch_size}"
        )
    if weight is not None:
        weight = check_tensor(weight, "weight", [(b, 1, "H", "W")])
        if bool((weight < 0).any()):
            raise ValueError("weight must be non-negative")
    t = torch.linspace(0.05, 0.95, points, device=phi.device, dtype=phi.dtype)
    grid = torch.stack(torch.meshgrid(t, t, indexing="xy"), dim=-1).reshape(1, -1, 2).expand(b, -1, -1)
    q = phi.forward_map(grid)
    expected = transform.forward_map(q)
    error = (phi_transformed.forward_map(grid) - expected).square().sum(-1)  # (B, P)
    if weight is None:
        w = torch.ones_like(error)
    else:  # the content that the canonical form shows at each compared point, no gradient through q
        at = q.detach().to(weight.dtype).mul(2).sub(1).unsqueeze(1)  # (B, 1, P, 2) in [-1, 1]
        w = F.grid_sample(weight.detach(), at, mode="bilinear", padding_mode="border", align_corners=True)
        w = w.reshape(b, -1).to(error.dtype)
    tiny = torch.finfo(error.dtype).tiny
    dims = (0, 1) if reduction == "pooled" else (1,)
    total = (w * error).sum(dims)
    if not normalize:
        return total / w.sum(dims).clamp_min(tiny)
    return total / (w * (expected - q).square().sum(-1)).sum(dims).clamp_min(tiny)


def content_weight(images: torch.Tensor, radius: int = 2) -> torch.Tensor:
    r"""Where a warp of the images is visible: the gradient magnitude, spread by ``radius`` pixels and scaled
    to a maximum of 1 per image, for `element_equivariance_error`'s ``weight``.

    A monotone scaling moves content; on a flat region (the empty background of a sparse scene) it changes
    no pixel, so the transformation $l$ in eq. 5 cannot be read there. The map is
    $\max_{|d| \le r} \sum_c (|\partial_x I_c| + |\partial_y I_c|)$ at each pixel (finite differences,
    a max-pool of window $2r + 1$), divided by its largest value (an image without any edge gives zeros).

    Args:
        images: `(B, C, H, W)` images.
        radius: how far an edge spreads its weight, in pixels (0: the edges alone).

    Returns:
        `(B, 1, H, W)` weights in $[0, 1]$, without gradient.

    Raises:
        ValueError: a wrong shape, non-finite values or a negative radius.

    Example:
        >>> x = torch.zeros(1, 1, 8, 8)
        >>> x[..., 3:5, 3:5] = 1.0
        >>> w = content_weight(x, radius=1)
        >>> float(w[0, 0, 0, 0]), float(w[0, 0, 3, 3])
        (0.0, 1.0)
    """
    check_tensor(images, "images", [("B", "C", "H", "W")])
    check_option(radius, "radius", kind=int, low=0)
    with torch.no_grad():
        x = images.float()
        dx = F.pad((x[..., :, 1:] - x[..., :, :-1]).abs(), (0, 1, 0, 0))
        dy = F.pad((x[..., 1:, :] - x[..., :-1, :]).abs(), (0, 0, 0, 1))
        edges = (dx + dy).sum(1, keepdim=True)
        edges = edges + F.pad(dx, (1, 0, 0, 0))[..., :, :-1].sum(1, keepdim=True)  # both sides of a step
        edges = edges + F.pad(dy, (0, 0, 1, 0))[..., :-1, :].sum(1, keepdim=True)
        if radius:
            edges = F.max_pool2d(edges, 2 * radius + 1, stride=1, padding=radius)
        peak = edges.flatten(1).amax(1).clamp_min(torch.finfo(edges.dtype).tiny)
        return (edges / peak[:, None, None, None]).to(images.dtype)


def _check_params(params: Any, group: Group) -> torch.Tensor:
    return check_tensor(params, "params", [("B", *group.param_shape)], finite=False)


def _check_image(x: Any, params: torch.Tensor) -> torch.Tensor:
    check_tensor(x, "x", [("B", "C", "H", "W")], finite=False)
    if x.shape[0] != params.shape[0]:
        raise ValueError(
            f"x and params must have the same batch size, got {x.shape[0]} and {params.shape[0]}"
        )
    return x


@dataclass(frozen=True)
class MonotoneScaleGroup:
    """The monotone scaling group of the paper (Sec. 4.1, appendix A2.2) on `monowarp`.

    Parameters are the flat logits of `monowarp.MonotoneScale.from_params` on an `(N, M)` knot grid:
    `(B, D)` with $D = (M + 1) N + (N + 1) M$ (first the row functions' logits `(M+1, N)`, then the
    column functions' `(N+1, M)`); zeros are the identity and any finite tensor is a valid element.
    `act` is `monowarp.warp` (S, eq. 13) and `act_inverse` is `monowarp.unwarp` ($S^{-1}$).

    Field layout for `ParamNet` (`field_shape = (2, M+1, N+1)`, rows along y, columns along x):
    channel 0 holds the row functions' logits `(M+1, N)` in its first N columns (the logit of the
    interval between knots $x_i$ and $x_{i+1}$ of row $j$ sits at `[0, j, i]`), channel 1 holds the column
    functions' logits transposed, `(M, N+1)`, in its first M rows; the last column of channel 0 and
    the last row of channel 1 are unused, as in the authors' implementation.

    Args:
        grid: `(N, M)` knot intervals along x and y.
        mode: interpolation of the warps, `"bilinear"` or `"nearest"`.
        padding_mode: `"border"`, `"zeros"` or `"reflection"`.
        align_corners: pixel-centre convention of the warps (True: pixel `c` of `W` at `c / (W - 1)`).

    Examples:
        >>> group = MonotoneScaleGroup(grid=(4, 4))
        >>> group.param_shape, group.field_shape
        ((40,), (2, 5, 5))
        >>> x = torch.rand(2, 3, 16, 12)
        >>> bool(torch.allclose(group.act_inverse(x, group.identity_params(2)), x, atol=1e-5))
        True
    """

    grid: tuple[int, int] = (4, 4)
    mode: str = "bilinear"
    padding_mode: str = "border"
    align_corners: bool = True

    def __post_init__(self) -> None:
        grid = tuple(self.grid) if isinstance(self.grid, (tuple, list)) else self.grid
        if (
            not isinstance(grid, tuple)
            or len(grid) != 2
            or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)
        ):
            raise ValueError(f"grid must be a pair of positive ints (N, M), got {self.grid!r}")
        object.__setattr__(self, "grid", grid)
        check_choice(self.mode, "mode", ("bilinear", "nearest"))
        check_choice(self.padding_mode, "padding_mode", ("border", "zeros", "reflection"))
        check_option(self.align_corners, "align_corners", kind=bool)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """`(D,)` with $D = (M + 1) N + (N + 1) M$."""
        n, m = self.grid
        return ((m + 1) * n + (n + 1) * m,)

    @property
    def field_shape(self) -> tuple[int, int, int]:
        """`(2, M+1, N+1)`."""
        n, m = self.grid
        return (2, m + 1, n + 1)

    def identity_params(
        self, batch: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Zeros `(batch, D)`."""
        return torch.zeros(batch, *self.param_shape, device=device, dtype=dtype)

    def element(self, params: torch.Tensor) -> monowarp.MonotoneScale:
        """`monowarp.MonotoneScale.from_params(params, grid)`."""
        _check_params(params, self)
        return monowarp.MonotoneScale.from_params(params, self.grid)

    def act(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """$S(x; g)$ = `monowarp.warp(x, g)`."""
        g = self.element(params)
        _check_image(x, params)
        return monowarp.warp(
            x, g, mode=self.mode, padding_mode=self.padding_mode, align_corners=self.align_corners
        )

    def act_inverse(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """$S^{-1}(x; g)$ = `monowarp.unwarp(x, g)`."""
        g = self.element(params)
        _check_image(x, params)
        return monowarp.unwarp(
            x, g, mode=self.mode, padding_mode=self.padding_mode, align_corners=self.align_corners
        )

    def center_params(self, params: torch.Tensor) -> torch.Tensor:
        """The same elements with each knot function's logits shifted to mean zero, `(B, D)`.

        A shift of one function's logits leaves its softmax, and so the element, unchanged; centring fixes
        that gauge (the identity is all zeros, as `identity_params`).

        Examples:
            >>> group = MonotoneScaleGroup(grid=(2, 1))
            >>> group.center_params(torch.tensor([[1.0, 3.0, 0.0, 4.0, 5.0, 7.0, 9.0]]))
            tensor([[-1.,  1., -2.,  2.,  0.,  0.,  0.]])
        """
        _check_params(params, self)
        n, m = self.grid
        b = params.shape[0]
        fx = params[:, : (m + 1) * n].reshape(b, m + 1, n)
        fy = params[:, (m + 1) * n :].reshape(b, n + 1, m)
        fx = fx - fx.mean(dim=-1, keepdim=True)
        fy = fy - fy.mean(dim=-1, keepdim=True)
        return torch.cat([fx.reshape(b, -1), fy.reshape(b, -1)], dim=1)

    def log_slopes(self, params: torch.Tensor) -> torch.Tensor:
        """`(B, D)` log slopes of every interval of every row and column function (~0 at the identity).

        The slope of an interval is its share of the unit interval times the number of intervals; the 2-D
        local scales (`monowarp.MonotoneScale.local_scale`) are convex combinations of these slopes.
        """
        g = self.element(params)
        n, m = self.grid
        sx = torch.diff(g.knots_x, dim=-1).flatten(1) * n
        sy = torch.diff(g.knots_y, dim=-1).flatten(1) * m
        return torch.cat([sx, sy], dim=1).log()

    def params_from_field(self, field: torch.Tensor) -> torch.Tensor:
        """`(B, 2, M+1, N+1)` field -> `(B, D)` logits (see the class docstring for the layout)."""
        n, m = self.grid
        b = field.shape[0]
        zx = field[:, 0, :, :n].reshape(b, -1)
        zy = field[:, 1, :m, :].transpose(1, 2).reshape(b, -1)
        return torch.cat([zx, zy], dim=1)

    def field_from_params(self, params: torch.Tensor) -> torch.Tensor:
        """`(B, D)` logits -> `(B, 2, M+1, N+1)` field with zeros in the unused entries."""
        _check_params(params, self)
        n, m = self.grid
        b = params.shape[0]
        field = params.new_zeros(b, 2, m + 1, n + 1)
        field[:, 0, :, :n] = params[:, : (m + 1) * n].reshape(b, m + 1, n)
        field[:, 1, :m, :] = params[:, (m + 1) * n :].reshape(b, n + 1, m).transpose(1, 2)
        return field

    def sample_params(
        self,
        n: int,
        *,
        scale_range: tuple[float, float] = (0.5, 2.0),
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Parameters of `n` random elements (`monowarp.sample_monotone_scale`), `(n, D)`."""
        g = monowarp.sample_monotone_scale(
            n, self.grid, scale_range, generator=generator, device=device, dtype=dtype
        )
        return g.to_params()


@dataclass(frozen=True)
class GlobalScaleGroup:
    """Isotropic scaling about the image centre; one parameter, the log scale factor $a = \\log s$.

    $l(p) = c + s (p - c)$ with $c = (1/2, 1/2)$, so `act` magnifies the content by $s$ (content at
    $q$ moves to $l(q)$) and `act_inverse` samples $I(l(p))$. Both are one `affine_grid`/`grid_sample`;
    the inverse element is $-a$. A worked example of a custom group (see the how-to).

    Args:
        mode: `"bilinear"` or `"nearest"`.
        padding_mode: `"zeros"` (default: content shrunk below the frame leaves a black border),
            `"border"` or `"reflection"`.
        align_corners: pixel-centre convention (True: pixel `c` of `W` at `c / (W - 1)`).

    Examples:
        >>> group = GlobalScaleGroup()
        >>> x = torch.rand(1, 1, 9, 9)
        >>> params = torch.tensor([[math.log(2.0)]])
        >>> zoomed = group.act(x, params)            # magnified 2x about the centre
        >>> bool(torch.allclose(zoomed[0, 0, 4, 4], x[0, 0, 4, 4]))
        True
        >>> group.element(params)
        tensor([[2.]])
    """

    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = True

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", ("bilinear", "nearest"))
        check_choice(self.padding_mode, "padding_mode", ("border", "zeros", "reflection"))
        check_option(self.align_corners, "align_corners", kind=bool)

    @property
    def param_shape(self) -> tuple[int, ...]:
        """`(1,)`: the log scale factor."""
        return (1,)

    def identity_params(
        self, batch: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Zeros `(batch, 1)`."""
        return torch.zeros(batch, 1, device=device, dtype=dtype)

    def element(self, params: torch.Tensor) -> torch.Tensor:
        """The scale factors $s = e^a$, `(B, 1)`."""
        return _check_params(params, self).exp()

    def log_slopes(self, params: torch.Tensor) -> torch.Tensor:
        """`(B, 1)`: the log scale factor itself."""
        return _check_params(params, self)

    def act(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """$S(x; s)(p) = x(c + (p - c) / s)$."""
        return self.act_inverse(x, -_check_params(params, self))

    def act_inverse(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """$S^{-1}(x; s)(p) = x(c + s (p - c))$."""
        s = self.element(params)[:, 0]
        _check_image(x, params)
        zero = torch.zeros_like(s)
        theta = torch.stack([torch.stack([s, zero, zero], -1), torch.stack([zero, s, zero], -1)], 1)
        theta = theta.to(x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=self.align_corners)
        return F.grid_sample(
            x, grid, mode=self.mode, padding_mode=self.padding_mode, align_corners=self.align_corners
        )

    def sample_params(
        self,
        n: int,
        *,
        scale_range: tuple[float, float] = (0.5, 2.0),
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Log scales of `n` random elements, uniform in log space over `scale_range`, `(n, 1)`."""
        lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
        u = torch.rand(n, 1, generator=generator, device=device, dtype=dtype)
        return lo + (hi - lo) * u
