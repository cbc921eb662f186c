"""Pictures of monotone scalings: the warped grid of the paper's Fig. 4, round trips, local scale maps.

A monotone scaling $l$ moves the content at $q$ to $l(q)$ (eq. 13, $S(I; l)(p) = I(l^{-1}(p))$). A regular
grid painted on the original image therefore appears in $S(I; l)$ as the image of the grid under $l$:
`draw_grid` draws it over the warped image, `plot_warp` puts the original, $S(I; l)$, the round
trip $S^{-1}(S(I; l); l)$ and a heat map of the local scale side by side, and `local_scale_map`
computes that heat map: the Jacobian determinant (area factor) or a diagonal entry of
$\\partial l / \\partial p$ at every pixel.

matplotlib is an optional dependency (``pip install "monowarp[plot]"``); it is imported only when a
function here draws, and never through ``pyplot``, so no window or global figure state is involved.
`local_scale_map` needs only torch.

`plot_canonicalization` draws what a canonicalizer found (the paper's Fig. A2): the inputs $I$ with a regular
grid on top, their canonical forms $S^{-1}(I; l) = I \\circ l$ below with that grid where it lands
($l^{-1}$ of the grid: content at $q$ appears at $l^{-1}(q)$), and optionally the local zoom of the
canonicalization.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from ._utils import check_choice, check_size, check_tensor
from .functional import pixel_grid, points_to_pixels, unwarp, warp
from .maps import MonotoneScale, ScalingMap

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["draw_grid", "local_scale_map", "plot_canonicalization", "plot_warp"]

ScaleKind = Literal["det", "x", "y"]
Frame = Literal["output", "source"]
_KINDS: tuple[str, ...] = get_args(ScaleKind)
_FRAMES: tuple[str, ...] = get_args(Frame)
_PANELS = ("original", "warped", "round_trip", "scale")


def local_scale_map(
    element: ScalingMap,
    size: Sequence[int],
    *,
    kind: ScaleKind = "det",
    frame: Frame = "output",
    align_corners: bool = True,
) -> torch.Tensor:
    """Local scale factor of ``element`` at every pixel of an image of ``size`` $(H, W)$.

    Args:
        element: a batch of ``B`` monotone scalings.
        size: `(H, W)` of the image.
        kind: ``"det"``: $\\det \\partial l / \\partial p$, the factor by which areas grow; ``"x"``:
            $\\partial l_X / \\partial x$; ``"y"``: $\\partial l_Y / \\partial y$ (the diagonal of
            `monowarp.MonotoneScale.local_scale`).
        frame: ``"output"``: the value at pixel $p$ of the warped image $S(I; l)$ is the scale factor of the
            content that landed there, evaluated at $l^{-1}(p)$ (aligned with the warped image);
            ``"source"``: the factor at pixel $q$ of the original image (aligned with the original).
        align_corners: pixel convention (see `monowarp.warp`).

    Returns:
        `(B, H, W)` tensor; 1 means unscaled, above 1 magnified, below 1 shrunk.

    Raises:
        ValueError: unknown ``kind`` or ``frame``, or a bad ``size``.

    Examples:
        >>> import torch
        >>> from monowarp import MonotoneScale
        >>> g = MonotoneScale.identity(2, grid=(4, 4))
        >>> m = local_scale_map(g, (8, 12))
        >>> m.shape, round(float(m.mean()), 4)
        (torch.Size([2, 8, 12]), 1.0)
    """
    check_choice(kind, "kind", _KINDS)
    check_choice(frame, "frame", _FRAMES)
    if not isinstance(element, ScalingMap):
        raise TypeError(f"element must be a ScalingMap (e.g. a MonotoneScale), got {type(element).__name__}")
    h, w = check_size(size)
    pts = pixel_grid((h, w), align_corners=align_corners, device=element.device, dtype=element.dtype)
    pts = pts.reshape(1, h * w, 2).expand(element.batch_size, h * w, 2)
    if frame == "output":
        pts = element.inverse_map(pts)
    jac = element.local_scale(pts)
    if kind == "det":
        out = jac[..., 0, 0] * jac[..., 1, 1] - jac[..., 0, 1] * jac[..., 1, 0]
    elif kind == "x":
        out = jac[..., 0, 0]
    else:
        out = jac[..., 1, 1]
    return out.reshape(element.batch_size, h, w)


def draw_grid(
    ax: Axes,
    element: ScalingMap,
    size: Sequence[int],
    *,
    index: int = 0,
    lines: int | tuple[int, int] = 9,
    warped: bool = True,
    samples: int = 65,
    align_corners: bool = True,
    **line_kwargs: Any,
) -> list[Any]:
    """Draw a regular grid, or its image under ``element`` (the warped grid of Fig. 4), on matplotlib axes.

    Coordinates are pixels of an image of ``size`` (as ``imshow`` places them), so the grid lies on top of an
    image drawn with ``ax.imshow``. With ``warped=True`` each grid line $\\{x = c\\}$ / $\\{y = c\\}$ is drawn
    where $l$ moves it, which is where a grid painted on the original image appears in $S(I; l)$.

    Args:
        ax: matplotlib ``Axes``.
        element: the scaling; sample ``index`` of its batch is drawn.
        size: `(H, W)` of the image the grid lies on.
        index: which element of the batch.
        lines: number of grid lines per axis (borders included), an int or `(along x, along y)`.
        warped: draw $l(\\text{grid})$ instead of the regular grid.
        samples: points per line (the knot positions of a `monowarp.MonotoneScale` are added, so the
            piecewise-linear image of a line is drawn exactly).
        align_corners: pixel convention (see `monowarp.warp`).
        **line_kwargs: passed to ``ax.plot`` (default: white, linewidth 0.8).

    Returns:
        The ``Line2D`` objects drawn.
    """
    h, w = check_size(size)
    nx, ny = (lines, lines) if isinstance(lines, int) else lines
    if nx < 2 or ny < 2 or samples < 2:
        raise ValueError(f"lines and samples must be at least 2, got lines={lines!r}, samples={samples}")
    g = element[index]
    dev, dt = g.device, g.dtype
    t = torch.linspace(0, 1, samples, device=dev, dtype=dt)
    if isinstance(g, MonotoneScale):
        n, m = g.grid
        knots = torch.cat(
            [
                torch.linspace(0, 1, n + 1, device=dev, dtype=dt),
                torch.linspace(0, 1, m + 1, device=dev, dtype=dt),
            ]
        )
        t = torch.unique(torch.cat([t, knots]))
    segments = []
    for c in torch.linspace(0, 1, nx, device=dev, dtype=dt):  # vertical lines x = c
        segments.append(torch.stack([torch.full_like(t, float(c)), t], -1))
    for c in torch.linspace(0, 1, ny, device=dev, dtype=dt):  # horizontal lines y = c
        segments.append(torch.stack([t, torch.full_like(t, float(c))], -1))
    pts = torch.stack(segments)  # (lines, T, 2)
    flat = pts.reshape(1, -1, 2)
    if warped:
        with torch.no_grad():
            flat = g.forward_map(flat)
    pix = points_to_pixels(flat.reshape(pts.shape), (h, w), align_corners=align_corners).detach().cpu()
    style = {"color": "white", "linewidth": 0.8} | line_kwargs
    drawn = []
    for line in pix:
        drawn.extend(ax.plot(line[:, 0].numpy(), line[:, 1].numpy(), **style))
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    return drawn


def plot_warp(
    image: torch.Tensor,
    element: ScalingMap,
    *,
    index: int = 0,
    panels: Sequence[str] = _PANELS,
    lines: int | tuple[int, int] = 9,
    kind: ScaleKind = "det",
    align_corners: bool = True,
    title: str | None = None,
    path: str | Path | None = None,
    dpi: int = 100,
    panel_size: float = 3.0,
) -> Figure:
    """Side-by-side picture of a monotone scaling of an image, in the style of the paper's Fig. 4.

    Panels (any subset, in the given order): ``"original"`` (with a regular grid), ``"warped"``
    ($S(I; l)$ with the grid moved by $l$), ``"round_trip"`` ($S^{-1}(S(I; l); l)$ with its mean absolute
    error against the original) and ``"scale"`` (`local_scale_map` in the output frame, a diverging
    colour map centred on 1).

    Args:
        image: `(C, H, W)`, `(1, C, H, W)` or `(H, W)` image with values in $[0, 1]$; ``C`` = 1 or 3.
        element: the scaling; sample ``index`` of its batch is used.
        index: which element of the batch.
        panels: which panels to draw.
        lines: grid lines per axis (see `draw_grid`).
        kind: local scale shown in the ``"scale"`` panel (see `local_scale_map`).
        align_corners: pixel convention (see `monowarp.warp`).
        title: optional figure title.
        path: if given, the figure is also saved there (format from the suffix).
        dpi: resolution of the saved file.
        panel_size: width of one panel in inches.

    Returns:
        The matplotlib ``Figure`` (not attached to ``pyplot``).

    Raises:
        ImportError: matplotlib is not installed.
        ValueError: a bad image shape or an unknown panel.
    """
    figure_cls, norm_cls = _matplotlib()
    unknown = [p for p in panels if p not in _PANELS]
    if unknown or not panels:
        raise ValueError(f"panels must be a non-empty subset of {_PANELS}, got {tuple(panels)!r}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor of shape (C, H, W), got {type(image).__name__}")
    img = image.detach()
    if img.dim() == 2:
        img = img[None]
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(
            "image must have shape (C, H, W), (1, C, H, W) or (H, W) with C in (1, 3), "
            f"got {tuple(image.shape)}"
        )
    g = element[index]
    x = img[None].to(device=g.device, dtype=g.dtype)
    h, w = x.shape[-2:]
    with torch.no_grad():
        warped = warp(x, g, align_corners=align_corners)
        back = unwarp(warped, g, align_corners=align_corners)
        scale = local_scale_map(g, (h, w), kind=kind, align_corners=align_corners)[0]

    fig = figure_cls(figsize=(panel_size * len(panels), panel_size * h / w + 0.5 * (title is not None) + 0.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_axis_off()
        if panel == "original":
            _show(ax, x[0])
            draw_grid(ax, g, (h, w), lines=lines, warped=False, align_corners=align_corners)
            ax.set_title("original $I$", fontsize=9)
        elif panel == "warped":
            _show(ax, warped[0])
            draw_grid(ax, g, (h, w), lines=lines, warped=True, align_corners=align_corners)
            ax.set_title("$S(I; l)$, grid moved by $l$", fontsize=9)
        elif panel == "round_trip":
            _show(ax, back[0])
            err = float((back - x).abs().mean())
            ax.set_title(f"$S^{{-1}}(S(I))$, MAE {err:.1e}", fontsize=9)
        else:
            s = scale.cpu().float()
            lo, hi = min(float(s.min()), 0.999), max(float(s.max()), 1.001)
            im = ax.imshow(s.numpy(), cmap="coolwarm", norm=norm_cls(vmin=lo, vcenter=1.0, vmax=hi))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            label = {"det": "det", "x": r"$\partial l_X/\partial x$", "y": r"$\partial l_Y/\partial y$"}[kind]
            ax.set_title(f"local scale ({label})", fontsize=9)
    if title is not None:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def plot_canonicalization(
    images: torch.Tensor,
    element: ScalingMap,
    *,
    canonical: torch.Tensor | None = None,
    titles: Sequence[str] | None = None,
    scale: bool = False,
    kind: ScaleKind = "det",
    lines: int | tuple[int, int] = 7,
    labels: tuple[str, str] = ("input", "canonical"),
    colors: tuple[str, str] = ("tab:cyan", "tab:orange"),
    align_corners: bool = True,
    title: str | None = None,
    path: str | Path | None = None,
    dpi: int = 110,
    panel_size: float = 2.2,
) -> Figure:
    """The learned-warp figure (the paper's Fig. A2): inputs and their canonical forms, with the moved grid.

    Column `b` shows image `b`: on top the input $I_b$ with a regular grid, below its canonical form
    $S^{-1}(I_b; l_b)(p) = I_b(l_b(p))$ with the same grid where it lands, $l_b^{-1}(\text{grid})$, so the
    bending of the grid shows where the canonicalizer enlarged or shrank the content. With `scale=True` a
    third row shows the local zoom of the canonicalization at every pixel of the canonical image,
    `local_scale_map(element.inverse(), frame="output")` (above 1: content enlarged there, below 1: shrunk).

    Args:
        images: `(B, C, H, W)` inputs with values in $[0, 1]$, `C` = 1 (grey) or 3 (RGB).
        element: the `B` elements the canonicalizer found (e.g. `result.element` of a `deqcanon`
            canonicalizer, a `monowarp.MonotoneScale` of batch size `B`).
        canonical: `(B, C, H, W)` canonical forms if already computed (e.g. `result.canonical`); default
            `monowarp.unwarp(images, element)`.
        titles: one title per column (e.g. the labels), or None.
        scale: add the row of local zoom factors.
        kind: which local scale the third row shows (`"det"`, `"x"` or `"y"`, see `local_scale_map`).
        lines: grid lines per axis (see `draw_grid`).
        labels: the row labels of the inputs and the canonical forms.
        colors: the grid colours on the inputs and on the canonical forms.
        align_corners: pixel convention (see `monowarp.warp`).
        title: optional figure title.
        path: if given, the figure is also saved there (format from the suffix).
        dpi: resolution of the saved file.
        panel_size: width of one panel in inches.

    Returns:
        The matplotlib ``Figure`` (not attached to ``pyplot``).

    Raises:
        ImportError: matplotlib is not installed.
        TypeError: `images`/`canonical` are not tensors or `element` is not a `ScalingMap`.
        ValueError: bad shapes, a batch size of `element` other than `B`, non-finite images, a wrong number
            of `titles`, or an unknown `kind`.

    Examples:
        >>> from monowarp import sample_monotone_scale
        >>> g = sample_monotone_scale(3, (4, 4), generator=torch.Generator().manual_seed(0))
        >>> fig = plot_canonicalization(torch.rand(3, 1, 32, 48), g, titles=["a", "b", "c"], scale=True)
        >>> len(fig.axes) >= 9
        True
    """
    figure_cls, norm_cls = _matplotlib()
    if not isinstance(element, ScalingMap):
        raise TypeError(f"element must be a ScalingMap (e.g. a MonotoneScale), got {type(element).__name__}")
    x = _check_images(images, "images")
    b, _, h, w = x.shape
    if element.batch_size != b:
        raise ValueError(
            f"element must hold one scaling per image ({b}), got a batch of {element.batch_size}"
        )
    check_choice(kind, "kind", _KINDS)
    if titles is not None and (isinstance(titles, str) or len(titles) != b):
        raise ValueError(f"titles must be a sequence of {b} strings (one per image), got {titles!r}")
    x = x.detach().to(device=element.device, dtype=element.dtype)
    with torch.no_grad():
        if canonical is None:
            canon = unwarp(x, element, align_corners=align_corners)
        else:
            canon = _check_images(canonical, "canonical").detach()
            if canon.shape != x.shape:
                raise ValueError(
                    f"canonical must have the shape of images {tuple(x.shape)}, got {tuple(canon.shape)}"
                )
        inverse = element.inverse()
        zoom = local_scale_map(inverse, (h, w), kind=kind, align_corners=align_corners) if scale else None

    rows = 3 if scale else 2
    fig = figure_cls(figsize=(panel_size * b, panel_size * h / w * rows + 0.4 + 0.3 * (title is not None)))
    axes = fig.subplots(rows, b, squeeze=False)
    for i in range(b):
        top, bottom = axes[0, i], axes[1, i]
        _show(top, x[i])
        draw_grid(top, element, (h, w), index=i, warped=False, lines=lines, color=colors[0], linewidth=0.6)
        _show(bottom, canon[i])
        draw_grid(bottom, inverse, (h, w), index=i, warped=True, lines=lines, color=colors[1], linewidth=0.6)
        if titles is not None:
            top.set_title(str(titles[i]), fontsize=9)
        if zoom is not None:
            z = zoom[i].detach().cpu().float()
            lo, hi = min(float(z.min()), 0.999), max(float(z.max()), 1.001)
            image = axes[2, i].imshow(
                z.numpy(), cmap="coolwarm", norm=norm_cls(vmin=lo, vcenter=1.0, vmax=hi)
            )
            fig.colorbar(image, ax=axes[2, i], fraction=0.046, pad=0.03)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    # on panels wider than tall a vertical row label would run into the next row: write it across
    across = {"rotation": 0, "ha": "right", "va": "center"} if h < 0.75 * w else {}
    axes[0, 0].set_ylabel(labels[0], **across)
    axes[1, 0].set_ylabel(labels[1], **across)
    if scale:
        axes[2, 0].set_ylabel(f"zoom ({kind})", **across)
    if title is not None:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


# ------------------------------------------------------------------------------------------------- private
def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.colors import TwoSlopeNorm
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'monowarp.viz needs matplotlib for drawing; install it with: pip install "monowarp[plot]"'
        ) from err
    return Figure, TwoSlopeNorm


def _show(ax: Axes, img: torch.Tensor) -> None:
    """``imshow`` of a `(C, H, W)` tensor with values in [0, 1]."""
    arr = img.detach().clamp(0, 1).cpu().float()
    if arr.shape[0] == 1:
        ax.imshow(arr[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(arr.permute(1, 2, 0).numpy())


def _check_images(images: object, name: str) -> torch.Tensor:
    """A `(B, C, H, W)` floating tensor with C in (1, 3) and finite values, else a clear error."""
    return check_tensor(images, name, [("B", 1, "H", "W"), ("B", 3, "H", "W")])
