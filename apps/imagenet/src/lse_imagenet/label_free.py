"""A label-free tuning set: objects of unlabelled images rescaled at random factors and positions.

``lse-imagenet train --recipe.label_free true`` needs no label: it pairs each rescaled variant with its
original (`lse_imagenet.training.manifest_pairs`) and teaches the model to predict on the variant what the
frozen classifier predicts on the original. `write_tuning_set` makes such variants from any images whose
objects have masks (the output of ``lse-imagenet data`` with the factor 1 alone: originals and masks):
for every image, ``variants`` draws of a factor ``U[factor_range]`` and a fixed point of the scaling drawn
uniformly in the object's bounding box (so the object also moves: the paper's test scales about the box
centre, the tuning set must not teach that centre), rendered by `monowarp.rescale_object` on one
inpainted background per image. The output root has the layout of ``lse-imagenet data`` (a manifest with
the original at factor 1.00 and the variants at their factors), so training reads it like any other.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lse_common.checkpoint import atomic_path

from .manifest import VariantRecord, factor_key, group_by_image, read_manifest, write_manifest

__all__ = ["write_tuning_set"]

logger = logging.getLogger(__name__)


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_tuning_set(
    masks_root: str | Path,
    out_dir: str | Path,
    *,
    variants: int = 8,
    factor_range: tuple[float, float] = (0.7, 1.3),
    seed: int = 0,
    inpaint: str = "telea",
    progress: bool = False,
) -> Path:
    """Random object rescalings of the images of ``masks_root`` into ``out_dir`` (see the module docstring).

    Args:
        masks_root: a ``lse-imagenet data`` root whose factor-1.00 records give the originals and masks.
        out_dir: the tuning set's root (``manifest.jsonl``, ``images/``).
        variants: rescaled variants per image (factors are distinct at 2 decimals; a repeat is drawn again).
        factor_range: the range of the uniform factors.
        seed: seed of the factors and positions.
        inpaint: monowarp's inpainter for the background.
        progress: show a progress bar.

    Returns:
        The manifest's path.

    Raises:
        ValueError: a bad range or count, or no image with a mask in ``masks_root``.
    """
    import monowarp

    low, high = factor_range
    if not 0 < low < high:
        raise ValueError(f"factor_range must be (low, high) with 0 < low < high, got {factor_range}")
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    src, out = Path(masks_root), Path(out_dir)
    originals = [v[1.0] for v in group_by_image(read_manifest(src)).values() if 1.0 in v]
    if not originals:
        raise ValueError(f"{src} has no original (factor 1.00) with a mask")
    rng = np.random.default_rng(seed)
    records: list[VariantRecord] = []
    for rec in tqdm(originals, desc="tuning set", unit="img", disable=not progress):
        with Image.open(src / rec.path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(src / rec.mask_path) as im:
            mask = np.asarray(im.convert("L")) > 127
        ys, xs = np.nonzero(mask)
        background = monowarp.inpaint_background(image, mask, inpaint=inpaint)
        stem = Path(rec.path).with_suffix("").as_posix().removeprefix("images/").removesuffix("_s1.00")
        original = f"images/{stem}_s1.00.png"
        _save_png(image, out / original)
        _save_png((mask * 255).astype(np.uint8), out / rec.mask_path)
        fields = {"image_id": rec.image_id, "source": rec.source, "label": rec.label}
        fields |= {"class_name": rec.class_name, "mask_path": rec.mask_path, "mask_quality": rec.mask_quality}
        records.append(VariantRecord(factor=1.0, path=original, **fields))
        seen, tries = {1.0}, 0
        while len(seen) < variants + 1:
            tries += 1
            if tries > 100 * variants:
                raise ValueError(
                    f"factor_range {factor_range} has fewer than {variants} factors at 2 decimals"
                )
            factor = factor_key(rng.uniform(low, high))
            centre = (float(rng.uniform(xs.min(), xs.max())), float(rng.uniform(ys.min(), ys.max())))
            if factor in seen:
                continue
            seen.add(factor)
            variant = monowarp.rescale_object(image, mask, factor, center=centre, background=background)
            rel = f"images/{stem}_s{factor:.2f}.png"
            _save_png(np.asarray(variant), out / rel)
            records.append(VariantRecord(factor=factor, path=rel, **fields))
    path = write_manifest(out, records)
    logger.info("tuning set: %d images x %d variants -> %s", len(originals), variants, out)
    return path
