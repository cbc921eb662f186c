"""Random monotone scaling as a kornia augmentation.

Each sample of a batch draws its own element $l$ of the monotone scaling group from
`monowarp.sample_monotone_scale` (every local scale factor within ``scale_range``) and is scaled by it in one
of two directions (``direction``):

* ``"unwarp"`` (default): $S^{-1}(I; l)(p) = I(l(p)) = S(I; l^{-1})(p)$, the content at $q$ moves to
  $l^{-1}(q)$. It needs only the forward map at the pixels, and it is the direction of the authors' Aug
  baseline (their code samples the image at $l(p)$);
* ``"warp"``: $S(I; l)(p) = I(l^{-1}(p))$ (eq. 13 of the paper), the content at $q$ moves to $l(q)$; it needs
  the exact inverse $l^{-1}$ at every pixel.

Images are resampled bilinearly, masks with nearest neighbour on the same map, keypoints are moved exactly
(by $l^{-1}$ or $l$, to float precision), and `RandomMonotoneScale.inverse` applies the other direction.

The warp is not affine, so kornia's $3 \\times 3$ matrix machinery only ever sees identity matrices; every
data type is transformed and inverted by this class's own handlers, which read the knots stored in the
parameters (``knots_x``, ``knots_y``). Replaying the parameters (``aug(x, params=aug._params)``) reproduces
the output exactly, also inside `kornia.augmentation.AugmentationSequential`.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch
from kornia.augmentation import GeometricAugmentationBase2D
from kornia.augmentation.random_generator import RandomGeneratorBase
from kornia.constants import Resample
from kornia.geometry.boxes import Boxes
from kornia.geometry.keypoints import Keypoints

from ._utils import PADDING_MODES, PaddingMode, check_choice, check_grid, check_scale_range
from .functional import pixels_to_points, points_to_pixels, unwarp, warp
from .maps import MonotoneScale
from .sampling import sample_monotone_scale

__all__ = ["MonotoneScaleGenerator", "RandomMonotoneScale"]

AugmentationMode = Literal["bilinear", "nearest"]
Direction = Literal["unwarp", "warp"]
_MODES: tuple[str, ...] = get_args(AugmentationMode)
_DIRECTIONS: tuple[str, ...] = get_args(Direction)


class MonotoneScaleGenerator(RandomGeneratorBase):
    """Parameter generator of `RandomMonotoneScale` (kornia's ``RandomGeneratorBase`` protocol).

    Draws the knots of one element per sample with `monowarp.sample_monotone_scale` from torch's
    global generator on the augmentation's random-number device and dtype, so ``torch.manual_seed``
    reproduces a draw, as for every kornia augmentation.

    Args:
        scale_range: `(low, high)` bounds of every local scale factor.
        grid: `(N, M)` knot intervals along x and y.
    """

    def __init__(self, scale_range: tuple[float, float], grid: tuple[int, int]) -> None:
        super().__init__()
        self.scale_range = scale_range
        self.grid = grid

    def __repr__(self) -> str:
        return f"scale_range={self.scale_range}, grid={self.grid}"

    def make_samplers(self, device: torch.device, dtype: torch.dtype) -> None:
        # The knots come from ``sample_monotone_scale`` on ``self.device``/``self.dtype``: no sampler objects.
        return None

    def forward(self, batch_shape: tuple[int, ...], same_on_batch: bool = False) -> dict[str, torch.Tensor]:
        """Draw ``knots_x`` `(B, M+1, N+1)` and ``knots_y`` `(B, N+1, M+1)` for a batch `(B, ...)`."""
        batch = int(batch_shape[0])
        n, m = self.grid
        if batch == 0:
            return {
                "knots_x": torch.zeros(0, m + 1, n + 1, device=self.device, dtype=self.dtype),
                "knots_y": torch.zeros(0, n + 1, m + 1, device=self.device, dtype=self.dtype),
            }
        draws = 1 if same_on_batch else batch
        g = sample_monotone_scale(
            draws, grid=self.grid, scale_range=self.scale_range, device=self.device, dtype=self.dtype
        )
        knots_x, knots_y = g.knots_x.detach(), g.knots_y.detach()
        if same_on_batch:
            knots_x = knots_x.repeat(batch, 1, 1)
            knots_y = knots_y.repeat(batch, 1, 1)
        return {"knots_x": knots_x.contiguous(), "knots_y": knots_y.contiguous()}


class RandomMonotoneScale(GeometricAugmentationBase2D):
    r"""Randomly scale each image locally by a monotone scaling $l$ (eq. 13), with an exact inverse.

    A kornia augmentation: images `(B, C, H, W)` (or `(C, H, W)`, `(H, W)`) are resampled by
    $S^{-1}(I; l)(p) = I(l(p))$ (``direction="unwarp"``, the default: the content at $q$ moves to $l^{-1}(q)$)
    or by $S(I; l)(p) = I(l^{-1}(p))$ (``direction="warp"``: the content at $q$ moves to $l(q)$); inside
    `kornia.augmentation.AugmentationSequential` masks follow with nearest-neighbour resampling on the
    same map and the same ``align_corners``, and keypoints (pixel coordinates, kornia's convention: pixel
    centres at integers, corners at `(0, 0)` and `(W - 1, H - 1)`) are moved exactly, to $l^{-1}(q)$ or
    $l(q)$. ``inverse`` (of the module or of the container) applies the other direction to images and masks
    and the other map to keypoints. The parameters of the last call are kept in ``_params`` as the tensors
    ``knots_x`` `(B, M+1, N+1)` and ``knots_y`` `(B, N+1, M+1)` (see `monowarp.MonotoneScale`);
    ``aug(x, params=aug._params)`` replays them exactly.

    Skipped samples (probability ``1 - p``) come back unchanged, in every data type and in ``inverse``.
    Keypoints outside the image (e.g. pushed out by an earlier augmentation) move with their nearest border
    point, $p \mapsto l(c) + (p - c)$ with $c$ the point clamped to the image, which inverts exactly too.
    Bounding boxes are not supported (the image of a box is not a box); pass their corners as keypoints.
    ``transform_matrix`` is the identity: the warp is not a matrix, so do not compose it with kornia's
    matrices.

    Args:
        scale_range: `(low, high)` with ``0 < low <= 1 <= high``: every local scale factor (the slope of every
            row and column function) of a drawn element lies in this range.
        grid: `(N, M)` knot intervals along x and y of the drawn elements.
        p: probability of warping each sample.
        same_on_batch: draw one element and apply it to the whole batch.
        keepdim: keep the input's rank in the output (kornia's convention).
        align_corners: pixel convention of the warp, ``True``: pixel column $c$ of $W$ sits at
            $x = c / (W - 1)$; ``False``: at $(c + 1/2) / W$. Used for images, masks and keypoints alike.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``, as in ``grid_sample`` (the map keeps the
            image in place, so it only matters for rounding at the border).
        mode: ``"bilinear"`` or ``"nearest"`` resampling of images (kornia's ``resample`` flag; masks always
            use nearest unless ``resample`` is overridden for them explicitly).
        direction: ``"unwarp"`` applies $S^{-1}(\cdot; l) = S(\cdot; l^{-1})$, ``"warp"`` applies
            $S(\cdot; l)$. Both draw $l$ from the same distribution; they differ in the element applied
            ($l^{-1}$ or $l$, see the augmentation guide for what that changes) and in cost: ``"unwarp"``
            needs only the forward map, ``"warp"`` the exact inverse at every pixel.

    Raises:
        ValueError: a bad ``scale_range``, ``grid``, ``p``, ``padding_mode``, ``mode`` or ``direction``.

    Examples:
        >>> import torch
        >>> import monowarp
        >>> aug = monowarp.RandomMonotoneScale(scale_range=(0.5, 2.0), p=1.0)
        >>> x = torch.rand(2, 3, 32, 48)
        >>> y = aug(x)
        >>> y.shape
        torch.Size([2, 3, 32, 48])
        >>> bool((aug(x, params=aug._params) == y).all())
        True
        >>> aug.inverse(y).shape
        torch.Size([2, 3, 32, 48])
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.5, 2.0),
        grid: tuple[int, int] = (4, 4),
        p: float = 0.5,
        same_on_batch: bool = False,
        keepdim: bool = False,
        align_corners: bool = True,
        padding_mode: PaddingMode = "border",
        mode: AugmentationMode = "bilinear",
        direction: Direction = "unwarp",
    ) -> None:
        scale_range = check_scale_range(scale_range)
        grid = check_grid(grid)
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        check_choice(padding_mode, "padding_mode", PADDING_MODES)
        check_choice(mode, "mode", _MODES)
        check_choice(direction, "direction", _DIRECTIONS)
        if not isinstance(align_corners, bool):
            raise TypeError(f"align_corners must be a bool, got {type(align_corners).__name__}")
        super().__init__(p=float(p), same_on_batch=same_on_batch, p_batch=1.0, keepdim=keepdim)
        self.scale_range = scale_range
        self.grid = grid
        self.direction = direction
        self._param_generator = MonotoneScaleGenerator(scale_range, grid)
        self._param_generator.set_rng_device_and_dtype(self.device, self.dtype)
        self.flags = {
            "resample": Resample.get(mode),
            "align_corners": align_corners,
            "padding_mode": padding_mode,
        }

    # ------------------------------------------------------------------------------------------------
    # kornia's matrix machinery: the warp is not a matrix, every matrix kornia asks for is the identity.

    def compute_transformation(
        self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any]
    ) -> torch.Tensor:
        """Identity matrices `(B, 3, 3)`: the monotone scaling has no matrix form."""
        return torch.eye(3, device=input.device, dtype=input.dtype).repeat(input.shape[0], 1, 1)

    def compute_inverse_transformation(self, transform: torch.Tensor) -> torch.Tensor:
        """The inverse of the identity matrices of `compute_transformation` (themselves)."""
        return transform

    # ------------------------------------------------------------------------------------------------
    # Forward handlers.

    def apply_transform(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Resample images (or masks) `(B, C, H, W)` by each sample's element, in ``direction``."""
        return self._resample(input, params, flags, inverse=False)

    def apply_non_transform_mask(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return input

    def apply_transform_mask(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Resample masks `(B, C, H, W)` on the images' map (``transform_masks`` sets nearest resampling)."""
        return self._resample(input, params, flags, inverse=False)

    def apply_transform_keypoint(
        self,
        input: Keypoints,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> Keypoints:
        """Move keypoints `(B, K, 2)` (pixels) exactly: a point at $q$ goes to $l^{-1}(q)$ (``"unwarp"``) or
        $l(q)$ (``"warp"``)."""
        return self._map_keypoints(input, params, flags, inverse=False)

    def apply_transform_box(
        self,
        input: Boxes,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
    ) -> Boxes:
        raise NotImplementedError(
            "RandomMonotoneScale does not transform bounding boxes: the image of a box under a monotone "
            "scaling is not a box. Pass the box corners as data key 'keypoints' (or the box as a 'mask')."
        )

    # ------------------------------------------------------------------------------------------------
    # Inverse handlers: kornia's inverse path goes through matrices; these go through the knots.

    def inverse_transform(
        self,
        input: torch.Tensor,
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Undo the last call's warp on every sample of ``input`` (kornia hook; prefer `inverse`).

        kornia passes no parameters to this hook, so it reads the last call's ``_params``; every sample is
        unwarped whatever the gate drew.
        """
        params = dict(self._params)
        params.pop("batch_prob", None)
        return self._resample(input, params, flags, inverse=True, gate=False)

    def inverse_inputs(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Undo the resampling of images (and, through ``inverse_masks``, of masks): the other direction."""
        in_tensor = self.transform_tensor(input)
        params, flags = self._process_kwargs_to_params_and_flags(
            self._params if params is None else params, flags, **kwargs
        )
        return self._resample(in_tensor, params, flags, inverse=True)

    def inverse_keypoints(
        self,
        input: Keypoints,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Keypoints:
        """Move keypoints back exactly, by the other map (skipped samples unchanged)."""
        params, flags = self._process_kwargs_to_params_and_flags(
            self._params if params is None else params, flags, **kwargs
        )
        mapped = self._map_keypoints(input, params, flags, inverse=True)
        rows = self._applied_rows(params, _keypoint_batch(input))
        if rows is None:
            return mapped
        data = input.data
        keep = rows.to(data.device).view(-1, *([1] * (data.dim() - 1)))
        if data.dim() == 2:
            keep = keep.view(())
        return Keypoints(torch.where(keep, mapped.data, data), False)

    def inverse_boxes(
        self,
        input: Boxes,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        transform: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Boxes:
        raise NotImplementedError(
            "RandomMonotoneScale does not invert bounding boxes; pass the box corners as keypoints instead."
        )

    # ------------------------------------------------------------------------------------------------
    # Private helpers.

    def _applied_rows(self, params: dict[str, torch.Tensor], batch: int) -> torch.Tensor | None:
        """Bool `(B,)` of the samples the gate warped, or ``None`` when every sample was warped."""
        if self.p == 1.0 and self.p_batch == 1.0:
            return None  # kornia's static fast path: the gate is not consulted
        batch_prob = params.get("batch_prob")
        if batch_prob is None:
            return None
        rows = torch.atleast_1d(batch_prob > 0.5).reshape(-1)
        if rows.numel() != batch:
            rows = rows.expand(batch) if rows.numel() == 1 else rows
        if rows.numel() != batch:
            raise ValueError(
                f"params['batch_prob'] must have one entry per sample ({batch}), "
                f"got {tuple(batch_prob.shape)}"
            )
        if bool(rows.all()):
            return None
        return rows

    def _element(
        self,
        params: dict[str, torch.Tensor],
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        rows: torch.Tensor | None = None,
    ) -> MonotoneScale:
        """The element of each (selected) sample, built from the stored knots on ``device``/``dtype``."""
        try:
            knots_x, knots_y = params["knots_x"], params["knots_y"]
        except KeyError as err:
            raise ValueError(
                "params must hold the tensors 'knots_x' (B, M+1, N+1) and 'knots_y' (B, N+1, M+1) that "
                f"RandomMonotoneScale draws; got keys {sorted(params)}"
            ) from err
        for name, t in (("knots_x", knots_x), ("knots_y", knots_y)):
            if not isinstance(t, torch.Tensor) or t.dim() != 3 or t.shape[0] != batch:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"params['{name}'] must be a (B, ., .) tensor with B = {batch}, got {shape}")
        if rows is not None:
            rows = rows.to(knots_x.device)
            knots_x, knots_y = knots_x[rows], knots_y[rows]
        return MonotoneScale.from_knots(knots_x.to(device, dtype), knots_y.to(device, dtype))

    def _resample(
        self,
        input: torch.Tensor,
        params: dict[str, torch.Tensor],
        flags: dict[str, Any],
        *,
        inverse: bool,
        gate: bool = True,
    ) -> torch.Tensor:
        """Resample the gated samples of `(B, C, H, W)` in ``direction`` (``inverse=True``: the other
        direction); the others stay unchanged."""
        batch = input.shape[0]
        if batch == 0:
            return input
        rows = self._applied_rows(params, batch) if gate else None
        if rows is not None and not bool(rows.any()):
            return input
        mode = _mode_name(flags.get("resample", self.flags["resample"]))
        align_corners = flags.get("align_corners")
        if align_corners is None:
            align_corners = self.flags["align_corners"]
        padding_mode = flags.get("padding_mode", self.flags["padding_mode"])
        work_dtype = input.dtype if input.dtype in (torch.float32, torch.float64) else torch.float32
        g = self._element(params, batch, input.device, work_dtype, rows)
        fn = warp if (self.direction == "warp") != inverse else unwarp
        x = input if rows is None else input[rows.to(input.device)]
        out = fn(x.to(work_dtype), g, mode=mode, padding_mode=padding_mode, align_corners=align_corners)
        out = out.to(input.dtype)
        if rows is None:
            return out
        full = input.clone()
        full[rows.to(input.device)] = out
        return full

    def _map_keypoints(
        self, input: Keypoints, params: dict[str, torch.Tensor], flags: dict[str, Any], *, inverse: bool
    ) -> Keypoints:
        """Map keypoints (pixels) of every sample through $l^{-1}$ (``"unwarp"``) or $l$ (``"warp"``) of that
        sample; ``inverse=True``: through the other one."""
        if not isinstance(input, Keypoints):
            raise TypeError(f"input must be kornia Keypoints, got {type(input).__name__}")
        data = input.data
        points = data if data.dim() == 3 else data[None]
        batch = points.shape[0]
        if batch == 0 or points.shape[1] == 0:
            return Keypoints(data.clone(), False)
        shape = params.get("forward_input_shape")
        if shape is None:
            raise ValueError("params must hold 'forward_input_shape' (the image shape) to map keypoints")
        height, width = (int(s) for s in shape.tolist()[-2:])
        align_corners = flags.get("align_corners")
        if align_corners is None:
            align_corners = self.flags["align_corners"]
        work_dtype = points.dtype if points.dtype in (torch.float32, torch.float64) else torch.float32
        unit = pixels_to_points(points.to(work_dtype), (height, width), align_corners=align_corners)
        g = self._element(params, batch, unit.device, work_dtype)
        # Outside the image a point moves with its nearest border point: l(c) + (p - c), c = clamp(p).
        # The border maps onto itself, so this extension is a bijection of the plane, inverted the same way.
        inside = unit.clamp(0, 1)
        use_inverse = (self.direction == "unwarp") != inverse
        moved = (g.inverse_map(inside) if use_inverse else g.forward_map(inside)) + (unit - inside)
        back = points_to_pixels(moved, (height, width), align_corners=align_corners).to(data.dtype)
        return Keypoints(back if data.dim() == 3 else back[0], False)


def _keypoint_batch(input: Keypoints) -> int:
    data = input.data
    return data.shape[0] if data.dim() == 3 else 1


def _mode_name(resample: Any) -> str:
    name = Resample.get(resample).name.lower() if not isinstance(resample, str) else resample.lower()
    return check_choice(name, "resample (RandomMonotoneScale)", _MODES)
