"""The data sets of the app: rendered once, cached on disk, read back memory-mapped.

A split (``train``, ``val`` or ``test``) lives in ``<data.dir>/<split>-<key>/``, where ``key`` is a hash of
everything its pixels depend on (the split's size and every `SegData` option but ``dir`` and ``workers``, the
class list and the background files), so a changed option never reads a stale cache and caches of several
settings live side by side:

- ``images.npy``: `(N, H, W, 3)` uint8; ``masks.npy``: `(N, H, W)` uint8 class labels, 0 = background;
- test split: ``variant_images.npy`` `(N, V, H, W, 3)` and ``variant_masks.npy`` `(N, V, H, W)`, the same
  scenes with only the objects' distances changed;
- ``scenes.npz``: per scene the classes, scales, image centres and orientations (quaternions) of the objects,
  their visible pixels, the background index, crop and flip, the light, and the variants' scales;
- ``manifest.json``, written last: the options, the seed, the class and background names and one record per
  scene (classes, scales, centres, orientations, background); a folder without it is unfinished.

At the paper's settings the training split takes 1.6 GB (images and masks), the test split with 4
variants per scene 2.6 GB; the small data set (`lse_segmentation.options.SMALL_DATA`) 11 MB. Every file is
written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from lse_common import atomic_path
from lse_common.cache import read_meta, write_meta

from .backgrounds import background_sources
from .options import SegData
from .render import RenderConfig, load_classes, render_scenes

__all__ = [
    "FORMAT_VERSION",
    "STREAMS",
    "SegSplit",
    "SegmentationDataset",
    "mask_colors",
    "overlay_mask",
    "prepare_split",
    "preview_grid",
    "render_config",
    "save_preview",
    "split_key",
]

logger = logging.getLogger(__name__)

STREAMS = {"train": 0, "val": 1, "test": 2}
FORMAT_VERSION = 1
SCENE_FIELDS = (
    "classes",
    "scales",
    "centers",
    "orientations",
    "visible",
    "background",
    "crop",
    "flip",
    "light",
)


@dataclass
class SegSplit:
    """A split: images, masks and what each scene holds (arrays memory-mapped from the cache).

    Args:
        split: ``train``, ``val`` or ``test``.
        images: `(N, H, W, 3)` uint8.
        masks: `(N, H, W)` uint8 class labels, 0 = background, ``1..num_classes`` the objects.
        classes: `(N, K)` the objects' labels.
        scales: `(N, K)` the objects' apparent scales (relative to the reference distance).
        centers: `(N, K, 2)` the objects' image centres ``(u, v)``, fractions of width and height.
        orientations: `(N, K, 4)` the objects' quaternions ``(x, y, z, w)``.
        backgrounds: `(N,)` index into ``background_names``.
        variant_images: `(N, V, H, W, 3)` uint8 distance variants (test split; ``None`` otherwise).
        variant_masks: `(N, V, H, W)` uint8.
        variant_scales: `(N, V, K)`.
        class_names: ``num_classes + 1`` names, ``"background"`` first.
        background_names: the background pool.
        folder: the cache folder.
        manifest: the split's ``manifest.json`` (options, key, per-scene records).
    """

    split: str
    images: np.ndarray
    masks: np.ndarray
    classes: np.ndarray
    scales: np.ndarray
    centers: np.ndarray
    orientations: np.ndarray
    backgrounds: np.ndarray
    variant_images: np.ndarray | None
    variant_masks: np.ndarray | None
    variant_scales: np.ndarray | None
    class_names: tuple[str, ...]
    background_names: tuple[str, ...]
    folder: Path
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """Object classes (labels ``1..num_classes``; with the background ``num_classes + 1`` labels)."""
        return len(self.class_names) - 1

    @property
    def num_variants(self) -> int:
        """Distance variants per scene (0 outside the test split)."""
        return 0 if self.variant_images is None else self.variant_images.shape[1]


def _split_size(data: SegData, split: str) -> int:
    sizes = {"train": data.train_size, "val": data.val_size, "test": data.test_size}
    if split not in sizes:
        raise ValueError(f"split must be one of {tuple(sizes)}, got {split!r}")
    return sizes[split]


def render_config(data: SegData, split: str) -> RenderConfig:
    """The `RenderConfig` of a split of ``data`` (variants only for the test split)."""
    _split_size(data, split)
    return RenderConfig(
        size=data.size,
        num_classes=data.num_classes,
        objects=data.objects_per_image,
        scale_range=(float(data.scale_range[0]), float(data.scale_range[1])),
        object_size=float(data.object_size),
        fov=float(data.fov),
        variants=data.variants if split == "test" else 0,
        settle=data.settle,
        min_visible=float(data.min_visible),
        backgrounds=data.backgrounds,
        seed=data.seed,
        stream=STREAMS[split],
    )


def _key_fields(data: SegData, split: str) -> dict[str, Any]:
    config = render_config(data, split)
    backgrounds = background_sources(data.backgrounds)
    return {
        "version": FORMAT_VERSION,
        "split": split,
        "count": _split_size(data, split),
        "render": {**config.__dict__, "scale_range": list(config.scale_range), "backgrounds": None},
        "classes": [c.__dict__ for c in load_classes(data.num_classes)],
        "backgrounds": [
            [name, path.stat().st_size] if data.backgrounds else name for name, path in backgrounds
        ],
    }


def split_key(data: SegData, split: str) -> str:
    """The hash (12 hex digits) of everything the split's pixels depend on."""
    blob = json.dumps(_key_fields(data, split), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _folder(data: SegData, split: str) -> Path:
    return Path(data.dir) / f"{split}-{split_key(data, split)}"


def _load(folder: Path, key: str, n: int, h: int, v: int) -> SegSplit | None:
    manifest = read_meta(folder / "manifest.json")
    if manifest is None or manifest.get("key") != key:
        return None
    try:
        images = np.load(folder / "images.npy", mmap_mode="r")
        masks = np.load(folder / "masks.npy", mmap_mode="r")
        with np.load(folder / "scenes.npz") as z:
            scenes = {k: z[k] for k in z.files}
        vi = vm = None
        if v:
            vi = np.load(folder / "variant_images.npy", mmap_mode="r")
            vm = np.load(folder / "variant_masks.npy", mmap_mode="r")
    except (OSError, ValueError, KeyError) as err:
        logger.warning("cache %s is unreadable (%s): rebuilding it", folder, err)
        return None
    if images.shape != (n, h, h, 3) or masks.shape != (n, h, h) or (v and vi.shape != (n, v, h, h, 3)):
        logger.warning("cache %s has other shapes than its manifest: rebuilding it", folder)
        return None
    return SegSplit(
        split=manifest["split"],
        images=images,
        masks=masks,
        classes=scenes["classes"],
        scales=scenes["scales"],
        centers=scenes["centers"],
        orientations=scenes["orientations"],
        backgrounds=scenes["background"],
        variant_images=vi,
        variant_masks=vm,
        variant_scales=scenes["variant_scales"] if v else None,
        class_names=tuple(manifest["class_names"]),
        background_names=tuple(manifest["background_names"]),
        folder=folder,
        manifest=manifest,
    )


def _workers(requested: int, n: int) -> int:
    w = requested or (os.cpu_count() or 1)
    return max(1, min(w, n // 8 or 1))


def prepare_split(data: SegData, split: str, *, progress: bool = True) -> SegSplit:
    """Load a split from the cache, or render it (in ``data.workers`` processes) and cache it.

    Args:
        data: the data options.
        split: ``"train"``, ``"val"`` or ``"test"``.
        progress: show a progress bar while rendering.

    Raises:
        ValueError: for an unknown split or an empty one (``val_size`` 0).
    """
    n = _split_size(data, split)
    if n < 1:
        raise ValueError(f"the {split} split is empty (data.{split}_size is 0)")
    key = split_key(data, split)
    folder = Path(data.dir) / f"{split}-{key}"
    config = render_config(data, split)
    s, v, k = data.size, config.variants, data.objects_per_image
    cached = _load(folder, key, n, s, v)
    if cached is not None:
        return cached
    workers = _workers(data.workers, n)
    logger.info(
        "rendering the %s split: %d scenes at %dx%d, %d process(es) -> %s", split, n, s, s, workers, folder
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").unlink(missing_ok=True)
    scenes: dict[str, np.ndarray] = {
        "classes": np.zeros((n, k), np.uint8),
        "scales": np.zeros((n, k), np.float32),
        "centers": np.zeros((n, k, 2), np.float32),
        "orientations": np.zeros((n, k, 4), np.float32),
        "visible": np.zeros((n, k), np.int32),
        "background": np.zeros(n, np.int32),
        "crop": np.zeros((n, 3), np.float32),
        "flip": np.zeros(n, bool),
        "light": np.zeros((n, 6), np.float32),
        "variant_scales": np.zeros((n, v, k), np.float32),
    }
    shapes = {"images": (n, s, s, 3), "masks": (n, s, s)}
    if v:
        shapes |= {"variant_images": (n, v, s, s, 3), "variant_masks": (n, v, s, s)}
    redraws = 0
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_path(folder / f"{name}.npy")) for name in shapes}
        out = {
            name: np.lib.format.open_memmap(tmp[name], mode="w+", dtype=np.uint8, shape=shape)
            for name, shape in shapes.items()
        }
        bar = stack.enter_context(tqdm(total=n, desc=f"render {split}", unit="scene", disable=not progress))
        for r in render_scenes(config, range(n), workers=workers):
            i = r.index
            out["images"][i], out["masks"][i] = r.image, r.mask
            if v:
                out["variant_images"][i], out["variant_masks"][i] = r.variant_images, r.variant_masks
            sc = r.scene
            for name, value in (
                ("classes", sc.classes),
                ("scales", sc.scales),
                ("centers", sc.centers),
                ("orientations", sc.orientations),
                ("visible", r.visible),
                ("background", sc.background),
                ("crop", sc.crop),
                ("flip", sc.flip),
                ("light", sc.light),
                ("variant_scales", r.variant_scales),
            ):
                scenes[name][i] = value
            redraws += r.redraws
            bar.update(1)
        for name in list(out):
            out.pop(name).flush()
    elapsed = time.perf_counter() - start
    with atomic_path(folder / "scenes.npz") as tmp_npz, open(tmp_npz, "wb") as fh:
        np.savez(fh, **scenes)
    names = background_sources(data.backgrounds)
    classes = load_classes(data.num_classes)
    manifest = {
        "key": key,
        "split": split,
        "format_version": FORMAT_VERSION,
        "options": {
            name: (list(value) if isinstance(value, tuple) else value)
            for name, value in data.__dict__.items()
            if name not in ("dir", "workers")
        },
        "seed": data.seed,
        "count": n,
        "variants": v,
        "class_names": ["background", *(c.name for c in classes)],
        "class_meshes": [c.path for c in classes],
        "background_names": [name for name, _ in names],
        "render_seconds": round(elapsed, 2),
        "redraws": redraws,
        "scenes": [
            {
                "classes": scenes["classes"][i].tolist(),
                "scales": np.round(scenes["scales"][i], 5).tolist(),
                "centers": np.round(scenes["centers"][i], 5).tolist(),
                "orientations": np.round(scenes["orientations"][i], 5).tolist(),
                "background": int(scenes["background"][i]),
                **({"variant_scales": np.round(scenes["variant_scales"][i], 5).tolist()} if v else {}),
            }
            for i in range(n)
        ],
    }
    write_meta(folder / "manifest.json", manifest)
    logger.info("%s split: %d scenes in %.1f s (%.1f scenes/s)", split, n, elapsed, n / max(elapsed, 1e-9))
    loaded = _load(folder, key, n, s, v)
    if loaded is None:
        raise RuntimeError(f"the {split} split just written to {folder} does not read back")
    return loaded


class SegmentationDataset(Dataset):
    """A split as a torch dataset: ``(image, mask)`` with image `(3, H, W)` float in ``[0, 1]`` and mask
    `(H, W)` int64 class labels.

    Args:
        split: the split.
        variant: ``None`` for the scenes themselves, ``v`` for their ``v``-th distance variant (test split).

    Example:
        >>> ds = SegmentationDataset(prepare_split(SegData.small(), "test"))  # doctest: +SKIP
        >>> image, mask = ds[0]; images, masks, scales = ds.variants(0)  # doctest: +SKIP
    """

    def __init__(self, split: SegSplit, variant: int | None = None) -> None:
        if variant is not None and not 0 <= variant < split.num_variants:
            raise ValueError(
                f"variant must be None or in [0, {split.num_variants}) for the {split.split} split, "
                f"got {variant}"
            )
        self.split = split
        self.variant = variant

    def __len__(self) -> int:
        return len(self.split)

    @staticmethod
    def _tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(image, dtype=np.float32)).movedim(-1, -3) / 255.0
        return x, torch.from_numpy(np.array(mask, dtype=np.int64))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.variant is None:
            return self._tensors(self.split.images[i], self.split.masks[i])
        return self._tensors(
            self.split.variant_images[i, self.variant], self.split.variant_masks[i, self.variant]
        )

    def variants(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scene ``i`` and its distance variants: images `(1 + V, 3, H, W)`, masks `(1 + V, H, W)` and the
        objects' scales `(1 + V, K)` (the scene first)."""
        s = self.split
        if s.variant_images is None:
            raise ValueError(f"the {s.split} split has no distance variants (only the test split has)")
        images = np.concatenate([s.images[i : i + 1], s.variant_images[i]])
        masks = np.concatenate([s.masks[i : i + 1], s.variant_masks[i]])
        scales = np.concatenate([s.scales[i : i + 1], s.variant_scales[i]])
        x, m = self._tensors(images, masks)
        return x, m, torch.from_numpy(np.asarray(scales, dtype=np.float32))


def mask_colors(num_classes: int) -> np.ndarray:
    """`(num_classes + 1, 3)` uint8 colours of the labels: black for the background, then hues spaced by the
    golden ratio (neighbouring labels far apart on the colour wheel)."""
    from matplotlib.colors import hsv_to_rgb

    i = np.arange(num_classes, dtype=np.float64)
    hsv = np.stack([(i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.75 + 0.25 * ((i // 2) % 2)], axis=-1)
    rgb = np.concatenate([np.zeros((1, 3)), hsv_to_rgb(hsv)])
    return (rgb * 255 + 0.5).astype(np.uint8)


def overlay_mask(image: np.ndarray, mask: np.ndarray, num_classes: int, alpha: float = 0.6) -> np.ndarray:
    """`(H, W, 3)` uint8: ``image`` with the object pixels of ``mask`` `(H, W)` tinted by their colour."""
    colors = mask_colors(num_classes)[np.asarray(mask)]
    tinted = (1 - alpha) * np.asarray(image, np.float32) + alpha * colors.astype(np.float32)
    return np.where(np.asarray(mask)[..., None] > 0, tinted, image).astype(np.uint8)


def preview_grid(split: SegSplit, n: int = 6, *, gap: int = 2) -> np.ndarray:
    """A grid of ``n`` scenes, one a row: the image, its mask over it, and (test split) its distance
    variants.

    Returns:
        `(rows, cols, 3)` uint8.
    """
    n = max(1, min(n, len(split)))
    c = split.num_classes
    rows = []
    for i in range(n):
        tiles = [np.asarray(split.images[i]), overlay_mask(split.images[i], split.masks[i], c)]
        for v in range(split.num_variants):
            tiles.append(np.asarray(split.variant_images[i, v]))
        h = tiles[0].shape[0]
        sep = np.full((h, gap, 3), 255, np.uint8)
        row = [t for tile in tiles for t in (tile, sep)][:-1]
        rows.append(np.concatenate(row, axis=1))
        rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def save_preview(split: SegSplit, path: str | os.PathLike, n: int = 6) -> Path:
    """Save `preview_grid` of ``split`` as a PNG (atomically) and return its path."""
    from PIL import Image

    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "wb") as fh:
        Image.fromarray(preview_grid(split, n)).save(fh, format="PNG", optimize=True)
    return p
