"""Locally scaled multi-digit MNIST: three digits per image, each resized by its own factor.

Layout (a canvas of height H and width W, both >= 9 pixels; 224x224 by default, any H != W too, e.g. the
96x32 strip of the CPU demo):

- The canvas is cut into three vertical *slots* of width ``w = W // 3`` (centred; the ``W - 3w <= 2``
  leftover columns stay black). Digit ``k`` (k = 0, 1, 2, left to right) lives in slot ``k``.
- The *base digit size* is ``b = min(w, H) / 3`` pixels: a whole 28x28 MNIST image (its 4-pixel black
  margin included) resized by factor ``f`` becomes an ``n x n`` box with ``n = clip(round(f * b), 1, m)``,
  ``m = min(w, H)``. At 224x224, ``w = 74`` and ``b = 24.7`` (the paper's 28-pixel digits on a 210-224
  canvas, nearly); on a 32x96 strip, ``b = 10.7``.
- The box is placed at the digit's centre ``(x0_k + sx * w, sy * H)`` (``sx`` in slot widths, ``sy`` in
  canvas heights) and then shifted, if needed, to lie inside its slot: its top-left corner is
  ``x = clip(round(x0_k + sx * w - n / 2), x0_k, x0_k + w - n)``,
  ``y = clip(round(sy * H - n / 2), 0, H - n)``.

Why digits never overlap and never leave the canvas, for every factor up to ``MAX_FACTOR = 3``: for
``f <= 3``, ``f * b <= m``, so ``n <= m`` (rounding an at-most-``m`` number to an integer cannot exceed the
integer ``m``, and ``n`` is also clipped to ``m``); ``m <= w`` and ``m <= H``, so the clip ranges above are
never empty and the box ``[x, x + n) x [y, y + n)`` lies inside ``[x0_k, x0_k + w) x [0, H)``, i.e. inside
its own slot. The three slots are disjoint and inside the canvas. This holds for every canvas size.

Label: the three digits read left to right (slot order, which is also the order of their x ranges, since
the slots are disjoint): ``label = 100 * left + 10 * middle + right``, 1,000 classes from 000 to 999.

A scene is a small record: three digit indices into the split's pool, three factors, three centres.
`sample_scenes` draws scene ``i`` from random numbers that are a function of ``(seed, stream, i)``, so a
scene does not depend on the number of scenes, workers or batch size. Re-rendering the same scenes with
other factors (`SceneSpec.with_factors`) keeps the digits and their centres: each digit grows or
shrinks about its own centre (shifted only where its slot requires), which is what the invariance
protocol (the same digits at scale 1 and at random scales) and the per-scale buckets need.
Rendering is vectorised: all digits of a batch that share an output size are resized in one antialiased
bilinear `torch.nn.functional.interpolate` call on uint8 (torch's fast integer path) and pasted into the
uint8 canvases with one indexed assignment.
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
    "MAX_FACTOR",
    "NUM_DIGITS",
    "SceneSpec",
    "canvas_size",
    "digit_boxes",
    "render_scenes",
    "sample_factors",
    "sample_scenes",
    "slot_geometry",
]

MAX_FACTOR = 3.0
NUM_DIGITS = 3
MIN_CANVAS = 9


def canvas_size(canvas: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``(H, W)`` of a canvas given as a side ``S`` (square) or as ``(H, W)``.

    Raises:
        ValueError: a side below 9 pixels or not an int.
    """
    hw = (canvas, canvas) if isinstance(canvas, int) else tuple(canvas)
    if len(hw) != 2 or not all(isinstance(v, int | np.integer) and v >= MIN_CANVAS for v in hw):
        raise ValueError(f"canvas must be an int or (H, W) of ints >= {MIN_CANVAS}, got {canvas!r}")
    return int(hw[0]), int(hw[1])


def slot_geometry(canvas: int | tuple[int, int]) -> tuple[int, int, float]:
    """``(w, offset, b)``: slot width, left offset of slot 0 and base digit size for ``canvas``.

    Example:
        >>> slot_geometry(224)
        (74, 1, 24.666666666666668)
        >>> slot_geometry((32, 96))
        (32, 0, 10.666666666666666)
    """
    h, width = canvas_size(canvas)
    w = width // NUM_DIGITS
    return w, (width - NUM_DIGITS * w) // 2, min(w, h) / MAX_FACTOR


def _check_factors(factors: np.ndarray) -> np.ndarray:
    f = np.asarray(factors, dtype=np.float64)
    if not np.all(np.isfinite(f)) or np.any(f <= 0) or np.any(f > MAX_FACTOR + 1e-9):
        raise ValueError(
            f"digit factors must lie in (0, {MAX_FACTOR}], got range "
            f"[{np.nanmin(f) if f.size else 0:.3g}, {np.nanmax(f) if f.size else 0:.3g}]"
        )
    return f


def digit_boxes(factors: np.ndarray, centers: np.ndarray, canvas: int | tuple[int, int]) -> np.ndarray:
    """Top-left corners and sizes of the digit boxes: `(N, 3, 3)` int64 ``(x, y, n)``.

    Args:
        factors: `(N, 3)` in ``(0, 3]``.
        centers: `(N, 3, 2)` ``(sx, sy)``: x in slot widths, y in canvas heights.
        canvas: the side S, or ``(H, W)``.
    """
    f = _check_factors(factors)
    c = np.asarray(centers, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != NUM_DIGITS or c.shape != (*f.shape, 2):
        raise ValueError(f"factors must be (N, 3) and centers (N, 3, 2), got {f.shape} and {c.shape}")
    height, _ = canvas_size(canvas)
    w, off, b = slot_geometry(canvas)
    n = np.clip(np.rint(f * b), 1, min(w, height)).astype(np.int64)
    x0 = off + w * np.arange(NUM_DIGITS)[None, :]
    x = np.clip(np.rint(x0 + c[..., 0] * w - n / 2).astype(np.int64), x0, x0 + w - n)
    y = np.clip(np.rint(c[..., 1] * height - n / 2).astype(np.int64), 0, height - n)
    return np.stack([x, y, n], axis=-1)


@dataclass(frozen=True)
class SceneSpec:
    """``N`` scenes: which digits, how large, where.

    Attributes:
        digits: `(N, 3)` int64 indices into the digit pool (left, middle, right).
        factors: `(N, 3)` float32 scale factors of the digits.
        centers: `(N, 3, 2)` float32 digit centres ``(sx, sy)`` (see the module docstring).
        labels: `(N,)` int64 ``100 * left + 10 * middle + right``.
    """

    digits: np.ndarray
    factors: np.ndarray
    centers: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        n = self.labels.shape[0]
        shapes = (self.digits.shape, self.factors.shape, self.centers.shape)
        if shapes != ((n, NUM_DIGITS), (n, NUM_DIGITS), (n, NUM_DIGITS, 2)):
            raise ValueError(f"inconsistent scene arrays: {shapes} for {n} labels")
        _check_factors(self.factors)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, idx) -> SceneSpec:
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return SceneSpec(self.digits[idx], self.factors[idx], self.centers[idx], self.labels[idx])

    def with_factors(self, factors: np.ndarray | float) -> SceneSpec:
        """The same digits at the same centres, resized by ``factors`` (`(N, 3)`, or one number)."""
        f = np.broadcast_to(np.asarray(factors, dtype=np.float32), self.factors.shape).copy()
        return SceneSpec(self.digits, f, self.centers, self.labels)

    def save(self, path: str | Path) -> None:
        np.savez(path, digits=self.digits, factors=self.factors, centers=self.centers, labels=self.labels)

    @classmethod
    def load(cls, path: str | Path) -> SceneSpec:
        with np.load(path) as d:
            return cls(d["digits"], d["factors"], d["centers"], d["labels"])


def sample_scenes(
    pool_labels: np.ndarray,
    n: int,
    *,
    seed: int,
    stream: int,
    scale_range: tuple[float, float] = (0.4, 2.0),
) -> SceneSpec:
    """Draw ``n`` scenes whose digits come from a pool with labels ``pool_labels``.

    Scene ``i`` uses only its own numbers ``index_uniform(seed, stream, i, 12)``: three pool indices
    (uniform), three factors ``U[scale_range]``, then three centres, uniform over the positions where
    the box at that factor fits its slot.

    Args:
        pool_labels: `(P,)` digit labels of the pool.
        n: number of scenes.
        seed: the data set seed.
        stream: separates splits (train 0, val 1, test 2 in the app).
        scale_range: ``(low, high)`` with ``0 < low <= high <= 3``.

    Example:
        >>> spec = sample_scenes(np.arange(10), 4, seed=0, stream=0)
        >>> spec.labels.shape, bool(((spec.factors >= 0.4) & (spec.factors <= 2.0)).all())
        ((4,), True)
    """
    lo, hi = _check_range(scale_range)
    labels = np.asarray(pool_labels).astype(np.int64)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"pool_labels must be a non-empty (P,) array, got shape {labels.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    u = index_uniform(seed, stream, np.arange(n), 4 * NUM_DIGITS)
    digits = np.minimum((u[:, :NUM_DIGITS] * labels.size).astype(np.int64), labels.size - 1)
    f = lo + (hi - lo) * u[:, NUM_DIGITS : 2 * NUM_DIGITS]
    q = f / MAX_FACTOR  # box width in slot widths
    centers = np.stack(
        [
            q / 2 + (1 - q) * u[:, 2 * NUM_DIGITS : 3 * NUM_DIGITS],
            q / 6 + (1 - q / 3) * u[:, 3 * NUM_DIGITS :],
        ],
        axis=-1,
    ).astype(np.float32)
    factors = f.astype(np.float32)
    d = labels[digits]
    return SceneSpec(digits, factors, centers, 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2])


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
    boxes = digit_boxes(spec.factors, spec.centers, canvas)
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
