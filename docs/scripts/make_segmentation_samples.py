"""Render the sample figures of the segmentation data page into docs/assets/segmentation/.

Everything is rendered here with `lse_segmentation.render` (pybullet on the CPU, backgrounds that ship in
packages: no download). PNGs are palette-quantised so that all of them together stay under 300 KB.
Deterministic: the figures are the scenes of a fixed seed.

Usage: ``python docs/scripts/make_segmentation_samples.py [--out docs/assets/segmentation]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from lse_segmentation.data import mask_colors, overlay_mask
from lse_segmentation.render import RenderConfig, Renderer, generate_scene, load_classes
from lse_segmentation.scenes import Scene
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "assets" / "segmentation"
MAX_BYTES = 300_000


def _grid(rows: list[list[np.ndarray]], gap: int = 3) -> np.ndarray:
    h, w = rows[0][0].shape[:2]
    sep_v = np.full((h, gap, 3), 255, np.uint8)
    lines = []
    for row in rows:
        cells = [c for tile in row for c in (tile, sep_v)][:-1]
        lines += [np.concatenate(cells, axis=1), np.full((gap, len(row) * (w + gap) - gap, 3), 255, np.uint8)]
    return np.concatenate(lines[:-1], axis=0)


def _save(img: np.ndarray, path: Path) -> int:
    Image.fromarray(img).quantize(colors=256, dither=Image.Dither.NONE).save(
        path, format="PNG", optimize=True
    )
    return path.stat().st_size


def samples(out: Path) -> Path:
    """Scenes of the paper's setting (256x256, 100 classes): image, mask over it, three distance variants."""
    cfg = RenderConfig(size=256, num_classes=100, variants=3, seed=0, stream=2)
    rows = []
    with Renderer(cfg) as r:
        for i in range(4):
            s = generate_scene(r, i)
            rows.append([s.image, overlay_mask(s.image, s.mask, 100), *s.variant_images])
    path = out / "samples.png"
    small = [[np.asarray(Image.fromarray(t).resize((160, 160), Image.BILINEAR)) for t in row] for row in rows]
    _save(_grid(small), path)
    return path


def scale_sweep(out: Path) -> Path:
    """One scene, the left object's scale swept from 0.5 to 2 while the right one stays at 1."""
    cfg = RenderConfig(size=160, num_classes=100, seed=4)
    with Renderer(cfg) as r:
        base = generate_scene(r, 0).scene
        scene = Scene(**{**base.__dict__, "centers": np.array([[0.3, 0.5], [0.72, 0.5]])})
        tiles = [r.render(scene.with_scales(np.array([s, 1.0]))).image for s in (0.5, 0.8, 1.25, 2.0)]
    path = out / "scale_sweep.png"
    _save(_grid([tiles]), path)
    return path


def classes(out: Path) -> Path:
    """All 100 classes at scale 1, in class order, on a grey background with their mask colour as a frame."""
    cfg = RenderConfig(size=64, num_classes=100, object_size=0.75, objects=1, seed=0)
    colors = mask_colors(100)
    tiles = []
    with Renderer(cfg) as r:
        grey = np.full((64, 64, 3), 200, np.uint8)
        for c in load_classes():
            scene = Scene(
                classes=np.array([c.id]),
                scales=np.array([1.0]),
                centers=np.array([[0.5, 0.5]]),
                orientations=np.array([[0.3, 0.2, 0.1, 0.927]]) / np.linalg.norm([0.3, 0.2, 0.1, 0.927]),
                background=0,
                crop=np.array([0.0, 0.0, 1.0]),
                flip=False,
                light=np.array([0.3, -0.6, 0.75, 0.6, 0.5, 0.2]),
            )
            shot = r.render(scene)
            tile = np.where(shot.mask[..., None] > 0, shot.image, grey)
            tile[:2], tile[-2:], tile[:, :2], tile[:, -2:] = (
                colors[c.id],
                colors[c.id],
                colors[c.id],
                colors[c.id],
            )
            tiles.append(tile)
    path = out / "classes.png"
    _save(_grid([tiles[i : i + 10] for i in range(0, 100, 10)], gap=2), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [samples(args.out), scale_sweep(args.out), classes(args.out)]
    total = sum(p.stat().st_size for p in paths)
    for p in paths:
        print(f"{p}: {p.stat().st_size / 1000:.0f} KB")
    if total > MAX_BYTES:
        raise RuntimeError(f"the figures take {total} bytes, over the {MAX_BYTES} byte budget")


if __name__ == "__main__":
    main()
