r"""Object-level rescaling: cut an object out with its mask, fill the hole, paste it back scaled by $s$.

This is how the paper builds its locally scaled ImageNet (sec. 5.3, Table 4): only the labelled object
changes size, the rest of the picture stays where it was. For an image $I$, an object mask $M$, a centre
$c$ and a factor $s$:

1. the background $B$ is $I$ with the dilated mask $M \oplus D$ filled by an inpainter (`inpaint_background`;
   default OpenCV's Telea method, offline; a learned model such as LaMa plugs in as any callable);
2. the object layer is $I$ scaled by $s$ about $c$: $O_s(p) = I(c + (p - c) / s)$, and likewise the mask
   $M_s(p) = M(c + (p - c) / s)$ (bilinear; for $s < 1$ the image is low-pass filtered first with a
   Gaussian of $\sigma = (1/s - 1) / 2$ pixels, as an area reduction would);
3. the variant is $I_s = B\,(1 - A_s) + O_s A_s$ with the feathered mask $A_s = G_\sigma * M_s$.

Every factor of a call shares one background (the inpainting runs once per image), and all factors and
images are warped in one batched `torch.nn.functional.grid_sample`. Pixels farther than the dilation or
the feathering from the object and its scaled copy are returned unchanged, bit for bit; the object's area
grows as $s^2$.

Inpainters take and return ``uint8`` pictures in OpenCV's layout, ``inpaint(image, hole) -> image`` with
``image`` `(H, W, 3)` (or `(H, W)`) and ``hole`` `(H, W)` ``uint8`` (255 in the hole); only the hole of
the result is used. They are chosen by name (`get_inpainter`; ``"telea"``, ``"ns"``) or passed as callables;
`register_inpainter` adds one under a name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "Inpainter",
    "get_inpainter",
    "inpaint_background",
    "inpainter_names",
    "register_inpainter",
    "rescale_object",
]

Inpainter = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``inpaint(image, hole) -> image`` on uint8 arrays: `(H, W, 3)` or `(H, W)`; hole `(H, W)`, 255 in it."""

_INPAINTERS: dict[str, Callable[..., Inpainter]] = {}


def register_inpainter(name: str) -> Callable[[Callable[..., Inpainter]], Callable[..., Inpainter]]:
    """Register a factory of inpainters under ``name`` (a decorator).

    The factory is called with the keyword arguments given to `get_inpainter` and returns the inpainter.

    Raises:
        ValueError: if ``name`` is taken.
    """

    def add(factory: Callable[..., Inpainter]) -> Callable[..., Inpainter]:
        if name in _INPAINTERS:
            raise ValueError(f"an inpainter named {name!r} is already registered")
        _INPAINTERS[name] = factory
        return factory

    return add


def inpainter_names() -> list[str]:
    """The names `get_inpainter` knows."""
    return sorted(_INPAINTERS)


def get_inpainter(inpaint: str | Inpainter, **kwargs: Any) -> Inpainter:
    """The inpainter called ``inpaint`` (built with ``kwargs``), or ``inpaint`` itself if it is a callable.

    Raises:
        ValueError: for an unknown name (the message lists the registered ones).
        TypeError: if ``inpaint`` is neither a name nor a callable.
    """
    if callable(inpaint):
        return inpaint
    if not isinstance(inpaint, str):
        raise TypeError(f"inpaint must be a name or a callable, got {type(inpaint).__name__}")
    if inpaint not in _INPAINTERS:
        valid = ", ".join(repr(n) for n in inpainter_names())
        raise ValueError(f"inpaint must be one of {valid} or a callable, got {inpaint!r}")
    return _INPAINTERS[inpaint](**kwargs)


def _opencv(flag_name: str, radius: int) -> Inpainter:
    try:
        import cv2
    except ModuleNotFoundError as err:  # pragma: no cover - depends on the installation
        raise ModuleNotFoundError(
            "the OpenCV inpainters need opencv: pip install 'monowarp[objects]'"
        ) from err
    flag = getattr(cv2, flag_name)

    def inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
        return cv2.inpaint(np.ascontiguousarray(image), np.ascontiguousarray(hole), radius, flag)

    return inpaint


@register_inpainter("telea")
def _telea(radius: int = 5) -> Inpainter:
    """OpenCV's fast marching method (Telea 2004)."""
    return _opencv("INPAINT_TELEA", radius)


@register_inpainter("ns")
def _navier_stokes(radius: int = 5) -> Inpainter:
    """OpenCV's Navier-Stokes method (Bertalmio et al. 2001)."""
    return _opencv("INPAINT_NS", radius)


# -- inputs ---------------------------------------------------------------------------------------------
class _Layout:
    """How to turn the caller's image back into its own type, shape and value range."""

    def __init__(self, image: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor) -> None:
        self.numpy = isinstance(image, np.ndarray)
        if self.numpy:
            if not isinstance(mask, np.ndarray):
                raise TypeError(f"mask must be a numpy array like image, got {type(mask).__name__}")
            if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
                raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
            self.dtype = image.dtype
            self.integer = image.dtype in (np.uint8, np.uint16)
            if not (self.integer or np.issubdtype(image.dtype, np.floating)):
                raise TypeError(f"image must be uint8, uint16 or floating point, got {image.dtype}")
            self.gray = image.ndim == 2
            self.batched = False
            arr = np.ascontiguousarray(image) if image.flags.writeable else np.array(image, order="C")
            t = torch.from_numpy(arr).to(torch.float32)
            self.x = (t[None, None] if self.gray else t.permute(2, 0, 1)[None]).contiguous()
            m = torch.from_numpy(np.array(mask, copy=True, order="C"))
            if m.shape != image.shape[:2]:
                raise ValueError(f"mask must have shape {image.shape[:2]} (H, W), got {tuple(m.shape)}")
            self.m = m[None, None]
            self.scale = float(np.iinfo(image.dtype).max) if self.integer else 1.0
        elif isinstance(image, torch.Tensor):
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"mask must be a tensor like image, got {type(mask).__name__}")
            if image.ndim not in (3, 4):
                raise ValueError(f"image must have shape (C, H, W) or (B, C, H, W), got {tuple(image.shape)}")
            if not image.dtype.is_floating_point:
                raise TypeError(
                    f"image must have a floating point dtype (values in [0, 1]), got {image.dtype}"
                )
            self.batched = image.ndim == 4
            self.x = image if self.batched else image[None]
            b, _, h, w = self.x.shape
            m = mask
            if m.ndim == 2:
                m = m[None, None].expand(b, 1, h, w)
            elif m.ndim == 3:
                m = m[:, None] if self.batched and m.shape[0] == b and b != 1 else m[None]
            if m.ndim != 4 or m.shape[1] != 1 or m.shape[2:] != (h, w) or m.shape[0] not in (1, b):
                raise ValueError(
                    f"mask must have shape (H, W), (1, H, W), (B, H, W) or (B, 1, H, W) with "
                    f"(H, W) = {(h, w)}, B = {b}, got {tuple(mask.shape)}"
                )
            self.m = m.expand(b, 1, h, w).to(image.device)
            self.scale = 1.0
        else:
            raise TypeError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")
        if not bool(torch.isfinite(self.x).all()):
            raise ValueError("image contains NaN or infinite values")
        m = self.m
        if m.dtype.is_complex:
            raise TypeError(f"mask must be bool, integer or float, got {m.dtype}")
        on = m if m.dtype == torch.bool else (m > 0.5 if m.dtype.is_floating_point else m > 0)
        self.m = on.to(self.x.dtype)

    def to_uint8(self, x: torch.Tensor) -> np.ndarray:
        """`(C, H, W)` -> ``uint8`` `(H, W, C)` or `(H, W)` for an inpainter."""
        y = (x / self.scale * 255.0).round().clamp(0, 255).to(torch.uint8).cpu()
        y = y[0] if y.shape[0] == 1 else y.permute(1, 2, 0)
        return np.ascontiguousarray(y[..., :3].numpy()) if y.ndim == 3 else y.numpy()

    def from_uint8(self, y: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(y)).to(like.device, like.dtype)
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        if t.shape[0] < like.shape[0]:  # an alpha channel passed through
            t = torch.cat([t, like[t.shape[0] :] * 255.0 / self.scale], dim=0)
        return t * (self.scale / 255.0)

    def restore(self, y: torch.Tensor, factors: int | None) -> np.ndarray | torch.Tensor:
        """`(B, F, C, H, W)` -> the caller's layout (``F`` dropped for one scalar factor)."""
        if not self.numpy:
            y = y if self.batched else y[0]
            return y[..., 0, :, :, :] if factors is None else y
        y = y[0]  # (F, C, H, W)
        if self.integer:
            info = np.iinfo(self.dtype)
            y = y.round().clamp(info.min, info.max)
        arr = y.cpu().numpy()
        arr = arr[:, 0] if self.gray else arr.transpose(0, 2, 3, 1)
        arr = np.ascontiguousarray(arr, dtype=self.dtype)  # OpenCV and torch.from_numpy want C order
        return arr[0] if factors is None else arr


def _dilate(m: torch.Tensor, radius: int) -> torch.Tensor:
    if radius <= 0:
        return m
    return F.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of `(N, C, H, W)` ``x`` with its own Gaussian ``sigma`` `(N,)` (0: unchanged)."""
    if not bool((sigma > 0).any()):
        return x
    radius = max(1, math.ceil(3.0 * float(sigma.max())))
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (r[None] / s) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (r[None] == 0).to(x.dtype))
    k = k / k.sum(dim=1, keepdim=True)  # (N, K)
    n, c, h, w = x.shape
    # one depthwise convolution per axis over all images at once: groups = N * C
    kk = k.repeat_interleave(c, dim=0)  # (N*C, K)
    y = x.reshape(1, n * c, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode="replicate")
    y = F.conv2d(y, kk[:, None, None, :], groups=n * c)
    y = F.pad(y, (0, 0, radius, radius), mode="replicate")
    y = F.conv2d(y, kk[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _default_sizes(h: int, w: int, dilation: int | None, feather: float | None) -> tuple[int, float]:
    d = max(2, round(0.015 * max(h, w))) if dilation is None else int(dilation)
    f = max(0.5, 0.005 * max(h, w)) if feather is None else float(feather)
    if d < 0:
        raise ValueError(f"dilation must be >= 0 pixels, got {dilation}")
    if f < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    return d, f


def _background(
    lay: _Layout, inpaint: str | Inpainter, dilation: int, inpaint_kwargs: dict[str, Any]
) -> torch.Tensor:
    fill = get_inpainter(inpaint, **inpaint_kwargs)
    hole = _dilate(lay.m, dilation) > 0.5  # (B, 1, H, W)
    out = []
    for x, h in zip(lay.x, hole, strict=True):  # OpenCV and learned inpainters take one picture at a time
        if not bool(h.any()):
            out.append(x)
            continue
        filled = fill(lay.to_uint8(x), h[0].to(torch.uint8).mul(255).cpu().numpy())
        filled = np.asarray(filled)
        if filled.shape[:2] != tuple(x.shape[1:]):
            raise ValueError(
                f"the inpainter returned shape {filled.shape}, expected {tuple(x.shape[1:])} first"
            )
        out.append(torch.where(h, lay.from_uint8(filled, x), x))  # outside the hole: the input, bit for bit
    return torch.stack(out)


def inpaint_background(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    *,
    inpaint: str | Inpainter = "telea",
    dilation: int | None = None,
    **inpaint_kwargs: Any,
) -> np.ndarray | torch.Tensor:
    """The image with the object removed: the dilated mask filled by an inpainter (step 1 of the module).

    Args:
        image: ``uint8``, ``uint16`` or float (values in ``[0, 1]``) array `(H, W)` or `(H, W, C)`, or a
            float tensor `(C, H, W)` or `(B, C, H, W)` with values in ``[0, 1]``.
        mask: the object, bool or 0/1 (or 0/255 ``uint8``): `(H, W)` for an array; `(H, W)`, `(B, H, W)` or
            `(B, 1, H, W)` for a tensor.
        inpaint: an inpainter's name (`inpainter_names`) or a callable (see the module docstring).
        dilation: the mask is grown by this many pixels (a square) before filling, so that the object's
            fringe goes too (default: 1.5 % of the longer side, at least 2).
        inpaint_kwargs: passed to the named inpainter's factory (e.g. ``radius=5`` for OpenCV's).

    Returns:
        The background, of ``image``'s type, shape and dtype; equal to ``image`` outside the dilated mask.

    Raises:
        TypeError: for an image or mask of the wrong type or dtype.
        ValueError: for mismatched shapes, a negative dilation or an unknown inpainter name.
    """
    lay = _Layout(image, mask)
    d, _ = _default_sizes(lay.x.shape[-2], lay.x.shape[-1], dilation, 0.0)
    bg = _background(lay, inpaint, d, inpaint_kwargs)
    return lay.restore(bg[:, None], None)


def _factors(factor: float | Sequence[float] | torch.Tensor) -> tuple[list[float], bool]:
    if isinstance(factor, torch.Tensor):
        values = factor.detach().reshape(-1).tolist()
        scalar = factor.ndim == 0
    elif isinstance(factor, (int, float, np.integer, np.floating)):
        values, scalar = [float(factor)], True
    else:
        values, scalar = [float(f) for f in factor], False
    if not values:
        raise ValueError("factor must not be empty")
    if not all(math.isfinite(f) and f > 0 for f in values):
        raise ValueError(f"factor must be finite and > 0, got {values}")
    return values, scalar


def rescale_object(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor,
    factor: float | Sequence[float] | torch.Tensor,
    *,
    inpaint: str | Inpainter = "telea",
    center: tuple[float, float] | torch.Tensor | None = None,
    dilation: int | None = None,
    feather: float | None = None,
    background: np.ndarray | torch.Tensor | None = None,
    return_masks: bool = False,
    **inpaint_kwargs: Any,
) -> np.ndarray | torch.Tensor | tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor]:
    """Scale the object under ``mask`` by ``factor`` about its centre and paste it on the filled background.

    See the module docstring for the three steps. The background is inpainted once and shared by every
    factor; the factors (and the images of a batch) are warped together.

    Args:
        image: ``uint8``, ``uint16`` or float (values in ``[0, 1]``) array `(H, W)` or `(H, W, C)`, or a
            float tensor `(C, H, W)` or `(B, C, H, W)` with values in ``[0, 1]``.
        mask: the object, bool or 0/1 (or 0/255 ``uint8``): `(H, W)` for an array; `(H, W)`, `(B, H, W)` or
            `(B, 1, H, W)` for a tensor.
        factor: one scale factor $s > 0$, or ``F`` of them (a sequence or a `(F,)` tensor).
        inpaint: an inpainter's name (`inpainter_names`: ``"telea"``, ``"ns"``) or a callable
            ``inpaint(image, hole) -> image`` on ``uint8`` arrays (a LaMa model, for instance).
        center: the fixed point of the scaling, ``(x, y)`` in pixels (column, row; pixel centres at
            integers), one pair or a `(B, 2)` tensor; default: the centre of the mask's bounding box (the
            paper pastes at the box centre).
        dilation: pixels by which the mask is grown before inpainting (default: 1.5 % of the longer side,
            at least 2).
        feather: standard deviation in pixels of the Gaussian that softens the pasted mask (default: 0.5 %
            of the longer side, at least 0.5; 0: a hard edge).
        background: a background already made by `inpaint_background` (same layout as ``image``); skips
            the inpainting.
        return_masks: also return the scaled masks $M_s$ (before feathering; float in ``[0, 1]``).
        inpaint_kwargs: passed to the named inpainter's factory (e.g. ``radius=5``).

    Returns:
        The variants in ``image``'s type and dtype: for one scalar factor, ``image``'s shape; for ``F``
        factors, `(F, H, W[, C])` for an array, `(F, C, H, W)` for a `(C, H, W)` tensor and
        `(B, F, C, H, W)` for a batch. With ``return_masks``, also the scaled masks: `(F, H, W)` float32
        arrays, or tensors `(F, 1, H, W)` / `(B, F, 1, H, W)` (no ``F`` for a scalar factor).

    Raises:
        TypeError: for an image or mask of the wrong type or dtype.
        ValueError: for mismatched shapes, a factor that is not positive, an empty mask with no ``center``,
            a negative ``dilation`` or ``feather``, or an unknown inpainter name.

    Example:
        >>> import numpy as np, monowarp
        >>> img = np.zeros((64, 64, 3), np.uint8); mask = np.zeros((64, 64), bool)
        >>> mask[24:40, 24:40] = True; img[mask] = 255
        >>> out = monowarp.rescale_object(img, mask, [0.5, 1.0, 2.0], feather=0)
        >>> out.shape, [round(int((o[..., 0] > 127).sum()) / int(mask.sum()), 2) for o in out]  # area ~ s**2
        ((3, 64, 64, 3), [0.25, 1.0, 3.98])
    """
    lay = _Layout(image, mask)
    values, scalar = _factors(factor)
    x, m = lay.x, lay.m
    b, c, h, w = x.shape
    n_f = len(values)
    d, fe = _default_sizes(h, w, dilation, feather)
    if background is None:
        bg = _background(lay, inpaint, d, inpaint_kwargs)
    else:
        bg = _Layout(background, mask).x.to(x.device, x.dtype)
        if bg.shape != x.shape:
            raise ValueError(f"background must have the shape of image, got {tuple(bg.shape)}")

    # the centre of each image: given, or that of the mask's bounding box (pixel coordinates)
    if center is None:
        rows, cols = m[:, 0].amax(dim=2) > 0.5, m[:, 0].amax(dim=1) > 0.5  # (B, H), (B, W)
        if not bool(rows.any(dim=1).all()):
            raise ValueError("mask is empty: there is no object to rescale (give center= to scale anyway)")
        ar_h = torch.arange(h, device=x.device, dtype=x.dtype)
        ar_w = torch.arange(w, device=x.device, dtype=x.dtype)
        y0 = torch.where(rows, ar_h, torch.inf).amin(dim=1)
        y1 = torch.where(rows, ar_h, -torch.inf).amax(dim=1)
        x0 = torch.where(cols, ar_w, torch.inf).amin(dim=1)
        x1 = torch.where(cols, ar_w, -torch.inf).amax(dim=1)
        ctr = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2], dim=1)  # (B, 2)
    else:
        ctr = torch.as_tensor(center, dtype=x.dtype, device=x.device).reshape(-1, 2).expand(b, 2)

    s = torch.tensor(values, dtype=x.dtype, device=x.device)  # (F,)
    # output pixel p samples the input at c + (p - c) / s, in grid_sample's [-1, 1] (align_corners=False)
    px = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w * 2 - 1
    py = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h * 2 - 1
    cx = ((ctr[:, 0] + 0.5) / w * 2 - 1)[:, None, None, None]  # (B, 1, 1, 1)
    cy = ((ctr[:, 1] + 0.5) / h * 2 - 1)[:, None, None, None]
    inv = (1.0 / s)[None, :, None, None]  # (1, F, 1, 1)
    gx = (cx + (px[None, None, None, :] - cx) * inv).expand(b, n_f, h, w)
    gy = (cy + (py[None, None, :, None] - cy) * inv).expand(b, n_f, h, w)
    grid = torch.stack([gx, gy], dim=-1).reshape(b * n_f, h, w, 2)

    # low-pass before shrinking (sigma = (1/s - 1) / 2 pixels), then warp image and mask together
    src = torch.cat([x, m], dim=1)[:, None].expand(b, n_f, c + 1, h, w).reshape(b * n_f, c + 1, h, w)
    sigma_aa = ((1.0 / s - 1.0) / 2.0).clamp_min(0.0).repeat(b)
    src = _gaussian_blur(src, sigma_aa)
    warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    obj, m_s = warped[:, :c], warped[:, c:]
    # outside the image the border padding would smear the mask: nothing comes from there
    inside = (grid.abs() <= 1).all(dim=-1)[:, None].to(x.dtype)
    m_s = (m_s * inside).clamp(0, 1)
    alpha = _gaussian_blur(m_s, torch.full((b * n_f,), fe, device=x.device)) if fe > 0 else m_s
    base = bg[:, None].expand(b, n_f, c, h, w).reshape(b * n_f, c, h, w)
    out = base * (1 - alpha) + obj * alpha
    out = torch.where(alpha > 0, out, base).reshape(b, n_f, c, h, w)
    result = lay.restore(out, None if scalar else n_f)
    if not return_masks:
        return result
    m_s = m_s.reshape(b, n_f, 1, h, w)
    if lay.numpy:
        masks = m_s[0, :, 0].cpu().numpy().astype(np.float32)
        return result, (masks[0] if scalar else masks)
    masks = m_s if lay.batched else m_s[0]
    return result, (masks[..., 0, :, :, :] if scalar else masks)
