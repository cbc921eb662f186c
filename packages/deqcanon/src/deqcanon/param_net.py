"""The parameter network H of the DEC (appendix A1): a small residual CNN pooled to the group's parameters.

One DEC iteration is $\\Phi^{(i+1)} = H_\\psi(S^{-1}(I; \\Phi^{(i)}))$ (Sec. 4.2): H looks at the
currently canonicalized input and predicts the parameters. `ParamNet` is the network of appendix A1
(two stages with 64 and 128 channels by default): residual blocks of 3x3 convolutions with reflect
padding, instance normalisation and softplus, 2x2 max-pooling between stages, a 1x1 convolution to
the channels of the group's parameter field and adaptive average pooling to its `(h, w)`
(`deqcanon.field_shape_of`). The field is mapped to parameters by the group
(`params_from_field`, or a reshape for groups without a spatial layout).

Two choices keep it cheap and well behaved:

- Large inputs are seen through a resized view (`view_size`, longer side, antialiased), so the
  cost of an iteration does not grow with the image; the group acts in normalised coordinates, so
  parameters predicted on the view apply to the full input.
- The output head is an option (`head`):

  - `"identity_init"` (default): a 1x1 convolution whose weights start at `init_scale` (default 0:
    zero weights and bias) plus the identity field, so a fresh network predicts exactly the identity
    parameters for every input and a fresh DEC starts (and, without other signal, stays) at the
    identity. With a zero last layer the body gets no gradient at step 0, and the logits are unbounded.
  - `"bounded"` (the authors' head):
    $\\Phi = T\\,(\\sigma(\\mathrm{IN}(\\mathrm{conv}(\\cdot))) - 1/2)$ pooled to the field,
    plus the identity field: every parameter lies in $(-T/2, T/2)$ around the identity.
    For the monotone group (a softmax over each knot function's logits, `monowarp.MonotoneScale.from_params`)
    this is the authors' $\\mathrm{softmax}(T \\sigma(\\cdot))$ with $T = 3$: equal sigmoid outputs give the
    identity, and every local slope of an axis with $K$ intervals lies in
    $(K / (1 + (K - 1) e^T),\\; K e^T / (e^T + K - 1))$ (`bounded_slope_range`). The instance norm is
    scale invariant, so the initial size of the warp is set by its affine weight, which starts at
    `init_scale` (default $10^{-2}$): the warp starts close to, but not at, the identity, and the body
    gets gradient from step 0.

  The default stays `"identity_init"` with a zero last layer: it is the behaviour every existing
  configuration was trained and measured with; the bounded head is opt-in until it is measured against it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import check_choice, check_option, check_tensor, detach_norm_weights, resize_to_fit
from .groups import Group, field_shape_of

__all__ = ["ParamNet", "ResidualBlock", "bounded_slope_range"]

HEADS = ("identity_init", "bounded")
#: Default temperature of the bounded head (the authors' softmax(3 * .)).
BOUNDED_TEMPERATURE = 3.0
#: Default initial scale of the last layer per head.
DEFAULT_INIT_SCALE = {"identity_init": 0.0, "bounded": 1e-2}


def bounded_slope_range(temperature: float = BOUNDED_TEMPERATURE, intervals: int = 4) -> tuple[float, float]:
    """Open interval of the local slopes of a knot function under the bounded head.

    With logits in $(-T/2, T/2)$ and $K$ intervals, a softmax share lies in
    $(1 / (1 + (K - 1) e^T),\\; e^T / (e^T + K - 1))$ and the slope of an interval is $K$ times its share.
    The 2-D local scales of `monowarp.MonotoneScale` (the diagonal of its Jacobian) are convex combinations
    of these slopes, so they lie in the same interval.

    Args:
        temperature: $T > 0$.
        intervals: $K \\geq 1$, the intervals of the knot function (the grid's N for x, M for y).

    Example:
        >>> lo, hi = bounded_slope_range(3.0, 4)
        >>> round(lo, 3), round(hi, 3)
        (0.065, 3.481)
    """
    check_option(temperature, "temperature", kind=(int, float), low=0.0, low_inclusive=False)
    check_option(intervals, "intervals", kind=int, low=1)
    e = math.exp(temperature)
    return intervals / (1 + (intervals - 1) * e), intervals * e / (e + intervals - 1)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions (reflect padding) with instance norm and softplus, plus a skip connection.

    `y = softplus(IN(conv(softplus(IN(conv(x))))) + skip(x))`, `skip` a 1x1 convolution when the channel
    count changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, padding_mode="reflect")
        self.norm1 = nn.InstanceNorm2d(out_channels, affine=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, padding_mode="reflect")
        self.norm2 = nn.InstanceNorm2d(out_channels, affine=True)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.softplus(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return F.softplus(y + self.skip(x))


class _HeadNorm(nn.Module):
    """Instance normalisation of the head's output with a per-channel affine map (weight, bias).

    `normalize=False` (a field with one spatial cell, where the normalised map would pool to its bias and lose
    every input dependence) keeps only the affine map.
    """

    def __init__(self, channels: int, init_scale: float, *, normalize: bool) -> None:
        super().__init__()
        self.normalize = normalize
        self.weight = nn.Parameter(torch.full((channels,), float(init_scale)))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            y = F.instance_norm(y, eps=1e-5)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class ParamNet(nn.Module):
    """The DEC's parameter network H: canonicalized input `(B, C, H, W)` -> parameters `(B, *param_shape)`.

    Args:
        group: the group whose parameters are predicted (its `param_shape` and optional field layout).
        in_channels: channels of the input (3 for RGB, or a latent feature map's channel count).
        widths: channels of the stages; its length is the depth (appendix A1: `(64, 128)`).
        view_size: longer side of the resized view of large inputs, or None to always use the full input.
        weight_norm: apply torchdeq's weight normalisation to the convolutions. torchdeq computes the
            normalised weights once and reuses them, so they must be recomputed with
            `torchdeq.norm.reset_norm(net)` before every forward; `DEQCanonicalizer` does that, call it
            yourself when you use the network on its own.
        head: `"identity_init"` (default: a 1x1 convolution, unbounded, exactly the identity at step 0
            with the default `init_scale`) or `"bounded"` (the authors' head,
            $T(\\sigma(\\mathrm{IN}(\\mathrm{conv})) - 1/2)$; see the module docstring).
        temperature: $T$ of the bounded head (default 3.0, the authors' softmax temperature); an error with
            `head="identity_init"`.
        init_scale: initial scale of the last layer; None picks the head's default. `"identity_init"`:
            standard deviation of the 1x1 convolution's initial weights (default 0.0: zero weights, the
            exact identity, no gradient to the body at step 0). `"bounded"`: initial weight of the instance
            norm's affine map, the standard deviation of the pre-sigmoid map (default 0.01: close to the
            identity, gradient to the body from step 0).

    Raises:
        ValueError: invalid widths, view size, channel count, head, temperature or init scale.

    Examples:
        >>> from deqcanon import GlobalScaleGroup
        >>> net = ParamNet(GlobalScaleGroup(), in_channels=3, widths=(8, 16))
        >>> net(torch.rand(2, 3, 32, 24)).shape
        torch.Size([2, 1])
        >>> float(net(torch.rand(2, 3, 32, 24)).detach().abs().max())    # starts at the identity parameters
        0.0
        >>> bounded = ParamNet(GlobalScaleGroup(), 3, widths=(8, 16), head="bounded", temperature=2.0)
        >>> bool(bounded(torch.rand(2, 3, 32, 24)).abs().max() < 1.0)     # log scales within (-T/2, T/2)
        True
    """

    def __init__(
        self,
        group: Group,
        in_channels: int = 3,
        *,
        widths: Sequence[int] = (64, 128),
        view_size: int | None = 64,
        weight_norm: bool = False,
        head: str = "identity_init",
        temperature: float | None = None,
        init_scale: float | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(group, Group):
            raise TypeError(f"group must implement the deqcanon.Group protocol, got {type(group).__name__}")
        check_option(in_channels, "in_channels", kind=int, low=1)
        widths = tuple(widths)
        if not widths:
            raise ValueError("widths must name at least one stage, got ()")
        for w in widths:
            check_option(w, "widths entries", kind=int, low=1)
        check_option(view_size, "view_size", kind=int, low=4, allow_none=True)
        check_option(weight_norm, "weight_norm", kind=bool)
        check_choice(head, "head", HEADS)
        if temperature is not None and head != "bounded":
            raise ValueError(f"temperature applies to head='bounded' only, got head={head!r}")
        temperature = BOUNDED_TEMPERATURE if temperature is None else temperature
        check_option(temperature, "temperature", kind=(int, float), low=0.0, low_inclusive=False)
        init_scale = DEFAULT_INIT_SCALE[head] if init_scale is None else init_scale
        check_option(init_scale, "init_scale", kind=(int, float), low=0.0)
        if not math.isfinite(init_scale):
            raise ValueError(f"init_scale must be finite, got {init_scale!r}")
        self.head_kind = head
        self.temperature = float(temperature) if head == "bounded" else None
        self.init_scale = float(init_scale)
        self.group = group
        self.in_channels = in_channels
        self.widths = widths
        self.view_size = view_size
        self.field_shape = field_shape_of(group)

        stages: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            stages.append(ResidualBlock(c, w))
            if i < len(widths) - 1:
                stages.append(nn.MaxPool2d(2, ceil_mode=True))
            c = w
        self.body = nn.Sequential(*stages)
        self.head = nn.Conv2d(c, self.field_shape[0], 1)
        self.head_norm: _HeadNorm | None = None
        if head == "identity_init":
            if init_scale > 0:
                nn.init.normal_(self.head.weight, std=init_scale)
            else:
                nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        else:
            spatial = self.field_shape[1] * self.field_shape[2] > 1
            self.head_norm = _HeadNorm(self.field_shape[0], init_scale, normalize=spatial)
        identity = group.identity_params(1, dtype=torch.get_default_dtype())
        self.register_buffer("identity_field", self._to_field(identity), persistent=False)
        if weight_norm:
            from torchdeq.norm import apply_norm, reset_norm

            apply_norm(self, "weight_norm")
            if head == "identity_init" and init_scale == 0:
                with torch.no_grad():  # zero scale, non-zero direction: still the identity, no 0/0
                    self.head.weight_v.copy_(torch.randn_like(self.head.weight_v))
                    self.head.weight_g.zero_()
            reset_norm(self)

    def extra_repr(self) -> str:
        extra = f", temperature={self.temperature}" if self.temperature is not None else ""
        return f"head={self.head_kind!r}{extra}, init_scale={self.init_scale}"

    @property
    def min_size(self) -> int:
        """Smallest input side the network accepts (reflect padding needs 2 pixels in every stage)."""
        return 2 ** len(self.widths)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The resized view H sees: `x` downsampled so that its longer side is at most `view_size`."""
        return resize_to_fit(x, self.view_size)

    def field(self, x: torch.Tensor) -> torch.Tensor:
        """The parameter field `(B, *field_shape)` predicted for `x` `(B, C, H, W)`."""
        check_tensor(x, "x", [("B", "C", "H", "W")], finite=False)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x must have {self.in_channels} channels (B, C, H, W), got {tuple(x.shape)}")
        x = self.view(x)
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"x must be at least {self.min_size}x{self.min_size} for {len(self.widths)} stages, "
                f"got {tuple(x.shape)}"
            )
        y = self.head(self.body(x))
        if self.head_norm is not None:
            y = self.head_norm(y)
        y = F.adaptive_avg_pool2d(y, self.field_shape[1:])
        if self.head_norm is not None:
            y = self.temperature * (torch.sigmoid(y) - 0.5)
        return y + self.identity_field.to(y.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Parameters `(B, *param_shape)` for the input `x` `(B, C, H, W)`."""
        return self._from_field(self.field(x))

    def _to_field(self, params: torch.Tensor) -> torch.Tensor:
        to_field = getattr(self.group, "field_from_params", None)
        if to_field is not None:
            return to_field(params)
        return params.reshape(params.shape[0], *self.field_shape)

    def _from_field(self, field: torch.Tensor) -> torch.Tensor:
        from_field = getattr(self.group, "params_from_field", None)
        if from_field is not None:
            return from_field(field)
        return field.reshape(field.shape[0], *self.group.param_shape)

    def __getstate__(self) -> dict:
        detach_norm_weights(self)
        return super().__getstate__()
