"""Locally scaled multi-digit MNIST: three digits per image, each resized by its own factor.

Layouts (a canvas of height H and width W; 224x224 by default, any H != W too, e.g. the 96x32 strip of the
CPU demo). The canvas holds three *cells*, digit ``k`` (k = 0, 1, 2) in cell ``k``:

- ``"horizontal"`` (the default): three columns of width ``w = W // 3`` and height ``H``, left to right;
- ``"vertical"``: three rows of height ``h = H // 3`` and width ``W``, top to bottom;
- ``"diagonal"``: the three cells on the main diagonal of a 3x3 grid of ``h x w`` cells, top-left to
  bottom-right (the authors' diagonal layout: a separable monotone warp, one function of x and one of y,
  can rescale each digit on its own);
- ``"all"`` (a data option, not a geometry): each scene draws one of the three, as the authors'
  ``concat_type: all``; `SceneSpec.layouts` records each scene's.

The cells are centred (the ``W - 3w <= 2`` and ``H - 3h <= 2`` leftover pixels stay black). A layout
needs cells of at least 3 pixels a side (`min_canvas`). In a cell of width ``cw`` and height ``ch``:

- the *base digit size* is ``b = m / 3`` pixels, ``m = min(cw, ch)``: a whole 28x28 MNIST image (its
  4-pixel black margin included) resized by factor ``f`` becomes an ``n x n`` box with
  ``n = clip(round(f * b), 1, m)``. At 224x224 (horizontal), ``w = 74`` and ``b = 24.7`` (the paper's
  28-pixel digits on a 210-224 canvas, nearly); on a 32x96 strip, ``b = 10.7``;
- the box is placed at the digit's centre ``(x0 + sx * cw, y0 + sy * ch)`` (``sx``, ``sy`` in cell
  units, ``(x0, y0)`` the cell's corner) and shifted, if needed, to lie inside its cell: its top-left
  corner is ``x = clip(round(x0 + sx * cw - n / 2), x0, x0 + cw - n)``,
  ``y = clip(round(y0 + sy * ch - n / 2), y0, y0 + ch - n)``.

Why digits never overlap and never leave the canvas, for every factor up to ``MAX_FACTOR = 3``: for
``f <= 3``, ``f * b <= m``, so ``n <= m`` (rounding an at-most-``m`` number to an integer cannot exceed the
integer ``m``, and ``n`` is also clipped to ``m``); ``m <= cw`` and ``m <= ch``, so the clip ranges above
are never empty and the box ``[x, x + n) x [y, y + n)`` lies inside its own cell. The three cells of a
layout are disjoint and inside the canvas. This holds for every canvas size and every layout.

Label: the three digits read in cell order (left to right, top to bottom, or along the diagonal; the
order of their x ranges, y ranges or both, since the cells are disjoint):
``label = 100 * first + 10 * second + third``, 1,000 classes from 000 to 999.

A scene is a small record: three digit indices into the split's pool, three factors, three centres and
its layout. `sample_scenes` draws scene ``i`` from random numbers that are a function of
``(seed, stream, i)``, so a scene does not depend on the number of scenes, workers or batch size; the
digits, factors and centres (in cell units) take the same draws in every layout. Re-rendering the same
scenes with other factors (`SceneSpec.with_factors`) keeps the digits and their centres: each digit grows
or shrinks about its own centre (shifted only where its cell requires), which is what the invariance
protocol (the same digits at scale 1 and at random scales) and the per-scale buckets need.
Rendering is vectorised: all digits of a batch that share an output size are resized in one antialiased
bilinear `torch.nn.functional.interpolate` call on uint8 (torch's fast integer path) and pasted into the
uint8 canvases with one indexed assignment, whatever the scenes' layouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lse_common import index_uniform

__all__ = [
    "LAYOUTS",
    "LAYOUT_CHOICES",
    "MAX_FACTOR",
    "NUM_DIGITS",
    "SceneSpec",
    "canvas_size",
    "cell_geometry",
    "check_canvas",
    "digit_boxes",
    "layout_codes",
    "min_canvas",
    "render_scenes",
    "sample_factors",
    "sample_scenes",
    "slot_geometry",
]

MAX_FACTOR = 3.0
NUM_DIGITS = 3
MIN_CELL = 3
LAYOUTS: tuple[str, ...] = ("horizontal", "vertical", "diagonal")
"""The fixed layouts; a scene's layout is stored as its index in this tuple."""
LAYOUT_CHOICES: tuple[str, ...] = (*LAYOUTS, "all")
"""What a data set may ask for: a fixed layout, or ``"all"`` (each scene draws one)."""

# (dx, dy): a cell's nominal width and height in thirds of a square canvas; `sample_scenes` keeps a box of
# nominal side f / 9 inside its nominal cell with centres in [q / (2 d), 1 - q / (2 d)], q = f / 3.
_NOMINAL_CELL = np.array([[1.0, 3.0], [3.0, 1.0], [1.0, 1.0]])


def canvas_size(canvas: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(H, W)`` of a canvas given as a side ``S`` (square) or as ``(H, W)``.

    Raises:
        ValueError: a side below 3 pixels or not an int (each layout needs more: `min_canvas`).
    """
    hw = (canvas, canvas) if isinstance(canvas, int) else tuple(canvas)
    if len(hw) != 2 or not all(isinstance(v, int | np.integer) and v >= MIN_CELL for v in hw):
        raise ValueError(f"canvas must be an int or (H, W) of ints >= {MIN_CELL}, got {canvas!r}")
    return int(hw[0]), int(hw[1])


def _check_layout(layout: str, *, allow_all: bool = False) -> str:
    choices = LAYOUT_CHOICES if allow_all else LAYOUTS
    if layout not in choices:
        raise ValueError(f"layout must be one of {', '.join(choices)}, got {layout!r}")
    return layout


def min_canvas(layout: str) -> tuple[int, int]:
    """The smallest ``(H, W)`` canvas of ``layout`` (``"all"``: of every layout): cells of 3 pixels a side.

    Example:
        >>> min_canvas("horizontal"), min_canvas("vertical"), min_canvas("all")
        ((3, 9), (9, 3), (9, 9))
    """
    _check_layout(layout, allow_all=True)
    across = NUM_DIGITS * MIN_CELL
    return {"horizontal": (MIN_CELL, across), "vertical": (across, MIN_CELL)}.get(layout, (across, across))


def check_canvas(canvas: int | tuple[int, int] | list[int], layout: str) -> tuple[int, int]:
    """``(H, W)`` of ``canvas`` if it fits ``layout`` (``"all"``: every layout).

    Raises:
        ValueError: an unknown layout, or a canvas smaller than `min_canvas` of the layout.

    Example:
        >>> check_canvas((32, 96), "all")
        (32, 96)
    """
    need = min_canvas(layout)
    h, width = canvas_size(canvas)
    if h < need[0] or width < need[1]:
        raise ValueError(
            f"a canvas of {h}x{width} (H x W) is too small for the {layout} layout: it needs at least "
            f"{need[0]}x{need[1]} (three cells of at least {MIN_CELL} pixels a side)"
        )
    return h, width


def cell_geometry(canvas: int | tuple[int, int], layout: str = "horizontal") -> tuple[np.ndarray, float]:
    """The three cells of ``layout`` on ``canvas`` and their base digit size (see the module docstring).

    Args:
        canvas: the side S, or ``(H, W)``.
        layout: ``"horizontal"``, ``"vertical"`` or ``"diagonal"``.

    Returns:
        `(3, 4)` int64 ``(x0, y0, cw, ch)`` per cell (corner, width, height), in cell order, and ``b``.

    Raises:
        ValueError: an unknown layout, or a canvas too small for it (cells under 3 pixels a side).

    Example:
        >>> cells, b = cell_geometry((32, 96), "diagonal")
        >>> cells.tolist(), round(b, 2)
        ([[0, 1, 32, 10], [32, 11, 32, 10], [64, 21, 32, 10]], 3.33)
    """
    _check_layout(layout)
    h, width = check_canvas(canvas, layout)
    k = np.arange(NUM_DIGITS)
    w, ch = width // NUM_DIGITS, h // NUM_DIGITS
    ox, oy = (width - NUM_DIGITS * w) // 2, (h - NUM_DIGITS * ch) // 2
    zero = np.zeros(NUM_DIGITS, dtype=np.int64)
    if layout == "horizontal":
        cells = [ox + w * k, zero, zero + w, zero + h]
    elif layout == "vertical":
        cells = [zero, oy + ch * k, zero + width, zero + ch]
    else:
        cells = [ox + w * k, oy + ch * k, zero + w, zero + ch]
    table = np.stack(cells, axis=-1).astype(np.int64)
    return table, float(min(table[0, 2], table[0, 3])) / MAX_FACTOR


def slot_geometry(canvas: int | tuple[int, int]) -> tuple[int, int, float]:
    """``(w, offset, b)``: slot width, left offset of slot 0 and base digit size of the horizontal layout.

    Example:
        >>> slot_geometry(224)
        (74, 1, 24.666666666666668)
        >>> slot_geometry((32, 96))
        (32, 0, 10.666666666666666)
    """
    cells, b = cell_geometry(canvas, "horizontal")
    return int(cells[0, 2]), int(cells[0, 0]), b


def layout_codes(layouts: str | np.ndarray, n: int) -> np.ndarray:
    """`(n,)` int64 indices into `LAYOUTS`, from one fixed layout's name or from codes (validated).

    Raises:
        ValueError: ``"all"`` or an unknown name (a geometry needs each scene's own layout), or codes of
            another shape or outside ``0..2``.
    """
    if isinstance(layouts, str):
        if layouts == "all":
            raise ValueError(
                "layouts 'all' names no geometry: pass each scene's layout (SceneSpec.layouts) instead"
            )
        return np.full(n, LAYOUTS.index(_check_layout(layouts)), dtype=np.int64)
    codes = np.asarray(layouts)
    if codes.shape != (n,) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"layouts must be a layout name or ({n},) integer codes, got {codes.dtype} {codes.shape}"
        )
    if codes.size and (codes.min() < 0 or codes.max() >= len(LAYOUTS)):
        raise ValueError(f"layout codes must lie in 0..{len(LAYOUTS) - 1}, got {codes.min()}..{codes.max()}")
    return codes.astype(np.int64)


def _check_factors(factors: np.ndarray) -> np.ndarray:
    f = np.asarray(factors, dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(f > MAX_FACTOR + 1e-9):
        raise ValueError(
            f"digit factors must lie in (0, {MAX_FACTOR}], got range "
            f"[{np.nanmin(f) if f.size else 0:.3g}, {np.nanmax(f) if f.size else 0:.3g}]"
        )
    return f


def digit_boxes(
    factors: np.ndarray,
    centers: np.ndarray,
    canvas: int | tuple[int, int],
    layouts: str | np.ndarray = "horizontal",
) -> np.ndarray:
    """Top-left corners and sizes of the digit boxes: `(N, 3, 3)` int64 ``(x, y, n)``.

    Args:
        factors: `(N, 3)` in ``(0, 3]``.
        centers: `(N, 3, 2)` ``(sx, sy)`` in cell units (fractions of the cell's width and height).
        canvas: the side S, or ``(H, W)``.
        layouts: one fixed layout for all scenes, or `(N,)` codes (indices into `LAYOUTS`).

    Example:
        >>> digit_boxes(np.ones((1, 3)), np.full((1, 3, 2), 0.5), 90, "diagonal")[0].tolist()
        [[10, 10, 10], [40, 40, 10], [70, 70, 10]]
    """
    f = _check_factors(factors)
    c = np.asarray(centers, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != NUM_DIGITS or c.shape != (*f.shape, 2):
        raise ValueError(f"factors must be (N, 3) and centers (N, 3, 2), got {f.shape} and {c.shape}")
    codes = layout_codes(layouts, f.shape[0])
    tables = np.zeros((len(LAYOUTS), NUM_DIGITS, 4), dtype=np.int64)
    base = np.zeros(len(LAYOUTS))
    for code in np.unique(codes):  # only the layouts present must fit the canvas
        tables[code], base[code] = cell_geometry(canvas, LAYOUTS[code])
    cells, b = tables[codes], base[codes][:, None]
    x0, y0, cw, ch = (cells[..., i] for i in range(4))
    m = np.minimum(cw, ch)
    n = np.clip(np.rint(f * b), 1, m).astype(np.int64)
    x = np.clip(np.rint(x0 + c[..., 0] * cw - n / 2).astype(np.int64), x0, x0 + cw - n)
    y = np.clip(np.rint(y0 + c[..., 1] * ch - n / 2).astype(np.int64), y0, y0 + ch - n)
    return np.stack([x, y, n], axis=-1)


@dataclass(frozen=True)
class SceneSpec:
    """``N`` scenes: which digits, how large, where, in which layout.

    Attributes:
        digits: `(N, 3)` int64 indices into the digit pool, in cell order.
        factors: `(N, 3)` float32 scale factors of the digits.
        centers: `(N, 3, 2)` float32 digit centres ``(sx, sy)`` in cell units (see the module docstring).
        labels: `(N,)` int64 ``100 * first + 10 * second + third``.
        layouts: `(N,)` int64 indices into `LAYOUTS` (``None``: all horizontal).
    """

    digits: np.ndarray
    factors: np.ndarray
    centers: np.ndarray
    labels: np.ndarray
    layouts: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        shapes = (self.digits.shape, self.factors.shape, self.centers.shape)
        if shapes != ((n, NUM_DIGITS), (n, NUM_DIGITS), (n, NUM_DIGITS, 2)):
            raise ValueError(f"inconsistent scene arrays: {shapes} for {n} labels")
        _check_factors(self.factors)
        codes = layout_codes("horizontal" if self.layouts is None else self.layouts, n)
        object.__setattr__(self, "layouts", codes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx) -> SceneSpec:
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return SceneSpec(
            self.digits[idx], self.factors[idx], self.centers[idx], self.labels[idx], self.layouts[idx]
        )

    def with_factors(self, factors: np.ndarray | float) -> SceneSpec:
        """The same digits at the same centres, resized by ``factors`` (`(N, 3)`, or one number)."""
        f = np.broadcast_to(np.asarray(factors, dtype=np.float32), self.factors.shape).copy()
        return SceneSpec(self.digits, f, self.centers, self.labels, self.layouts)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            digits=self.digits,
            factors=self.factors,
            centers=self.centers,
            labels=self.labels,
            layouts=self.layouts,
        )

    @classmethod
    def load(cls, path: str | Path) -> SceneSpec:
        with np.load(path) as d:
            layouts = d["layouts"] if "layouts" in d.files else None
            return cls(d["digits"], d["factors"], d["centers"], d["labels"], layouts)


def sample_scenes(
    pool_labels: np.ndarray,
    n: int,
    *,
    seed: int,
    stream: int,
    scale_range: tuple[float, float] = (0.4, 2.0),
    layout: str = "horizontal",
) -> SceneSpec:
    """Draw ``n`` scenes whose digits come from a pool with labels ``pool_labels``.

    Scene ``i`` uses only its own numbers ``index_uniform(seed, stream, i, 13)``: three pool indices
    (uniform), three factors ``U[scale_range]``, three centres, uniform over the positions where the box
    at that factor fits its cell on a square canvas, then (for ``layout="all"``) its layout. The first
    twelve numbers do not depend on the layout: the same seed gives the same digits and factors in every
    layout.

    Args:
        pool_labels: `(P,)` digit labels of the pool.
        n: number of scenes.
        seed: the data set seed.
        stream: separates splits (train 0, val 1, test 2 in the app).
        scale_range: ``(low, high)`` with ``0 < low <= high <= 3``.
        layout: ``"horizontal"``, ``"vertical"``, ``"diagonal"`` or ``"all"`` (each scene draws one of
            the three with equal probability).

    Example:
        >>> spec = sample_scenes(np.arange(10), 4, seed=0, stream=0, layout="diagonal")
        >>> spec.labels.shape, bool(((spec.factors >= 0.4) & (spec.factors <= 2.0)).all()), spec.layouts
        ((4,), True, array([2, 2, 2, 2]))
    """
    lo, hi = _check_range(scale_range)
    _check_layout(layout, allow_all=True)
    labels = np.asarray(pool_labels).astype(np.int64)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"pool_labels must be a non-empty (P,) array, got shape {labels.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    u = index_uniform(seed, stream, np.arange(n), 4 * NUM_DIGITS + 1)
    if layout == "all":
        codes = np.minimum((u[:, -1] * len(LAYOUTS)).astype(np.int64), len(LAYOUTS) - 1)
    else:
        codes = np.full(n, LAYOUTS.index(layout), dtype=np.int64)
    digits = np.minimum((u[:, :NUM_DIGITS] * labels.size).astype(np.int64), labels.size - 1)
    f = lo + (hi - lo) * u[:, NUM_DIGITS : 2 * NUM_DIGITS]
    q = f / MAX_FACTOR  # the box side in thirds of the canvas side
    dx, dy = _NOMINAL_CELL[codes, 0, None], _NOMINAL_CELL[codes, 1, None]
    centers = np.stack(
        [
            q / (2 * dx) + (1 - q / dx) * u[:, 2 * NUM_DIGITS : 3 * NUM_DIGITS],
            q / (2 * dy) + (1 - q / dy) * u[:, 3 * NUM_DIGITS : 4 * NUM_DIGITS],
        ],
        axis=-1,
    ).astype(np.float32)
    factors = f.astype(np.float32)
    d = labels[digits]
    return SceneSpec(digits, factors, centers, 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2], codes)


def _check_range(scale_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in scale_range)
    if not (0 < lo <= hi <= MAX_FACTOR) or not math.isfinite(lo + hi):
        raise ValueError(f"scale_range must satisfy 0 < low <= high <= {MAX_FACTOR}, got {scale_range}")
    return lo, hi


def sample_factors(
    n: int, k: int, *, seed: int, stream: int, scale_range: tuple[float, float] = (0.4, 2.0)
) -> np.ndarray:
    """`(n, k, 3)` factors ``U[scale_range]``: ``k`` re-scalings of each of ``n`` scenes (per index)."""
    lo, hi = _check_range(scale_range)
    u = index_uniform(seed, stream, np.arange(n), k * NUM_DIGITS).reshape(n, k, NUM_DIGITS)
    return (lo + (hi - lo) * u).astype(np.float32)


def render_scenes(
    pool: np.ndarray | torch.Tensor,
    spec: SceneSpec,
    canvas: int | tuple[int, int],
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Render scenes into uint8 images `(N, H, W)` (white digits on black).

    Args:
        pool: `(P, 28, 28)` uint8 digit images that ``spec.digits`` index.
        spec: the scenes.
        canvas: the side S, or ``(H, W)``.
        out: an optional `(N, H, W)` uint8 array (e.g. a slice of a memory map) to render into.

    Example:
        >>> pool = np.full((1, 28, 28), 255, np.uint8)
        >>> spec = sample_scenes(np.zeros(1, np.int64), 2, seed=0, stream=0)
        >>> render_scenes(pool, spec.with_factors(3.0), 30).reshape(2, -1).mean(1) / 255
        array([1., 1.])
    """
    src = torch.as_tensor(np.asarray(pool)) if not isinstance(pool, torch.Tensor) else pool
    if src.ndim != 3 or src.dtype != torch.uint8:
        raise ValueError(f"pool must be a (P, H, W) uint8 array, got {tuple(src.shape)} {src.dtype}")
    n_scenes = len(spec)
    boxes = digit_boxes(spec.factors, spec.centers, canvas, spec.layouts)
    if out is None:
        out = np.zeros((n_scenes, *canvas_size(canvas)), dtype=np.uint8)
    else:
        if out.shape != (n_scenes, *canvas_size(canvas)) or out.dtype != np.uint8:
            raise ValueError(
                f"out must be ({n_scenes}, {canvas_size(canvas)}) uint8, got {out.shape} {out.dtype}"
            )
        out[...] = 0
    if n_scenes == 0:
        return out
    flat_digits = spec.digits.reshape(-1)
    flat_boxes = boxes.reshape(-1, 3)
    sizes = flat_boxes[:, 2]
    order = np.argsort(sizes, kind="stable")
    sorted_sizes = sizes[order]
    starts = np.flatnonzero(np.r_[True, sorted_sizes[1:] != sorted_sizes[:-1]])
    ends = np.r_[starts[1:], sorted_sizes.size]
    for s, e in zip(starts, ends, strict=True):
        idx = order[s:e]
        size = int(sorted_sizes[s])
        tiles = src[torch.from_numpy(flat_digits[idx])]
        if size != tiles.shape[-1]:
            tiles = F.interpolate(
                tiles.unsqueeze(1), size=(size, size), mode="bilinear", antialias=True, align_corners=False
            ).squeeze(1)
        ar = np.arange(size)
        x, y = flat_boxes[idx, 0], flat_boxes[idx, 1]
        out[
            (idx // NUM_DIGITS)[:, None, None], (y[:, None] + ar)[:, :, None], (x[:, None] + ar)[:, None, :]
        ] = tiles.numpy()
    return out
