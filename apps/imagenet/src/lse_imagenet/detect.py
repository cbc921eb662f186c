"""Object boxes for the data pipeline: pluggable detectors, chosen by name.

A detector is called as ``detector(image, prompt, source=...) -> box``: ``image`` is an RGB ``uint8`` array
`(H, W, 3)`, ``prompt`` the class's name in words (`class_prompt`), ``source`` the image's path relative to
the input folder; it returns the box ``(x0, y0, x1, y1)`` in pixels (exclusive ends) of the labelled object,
or None when it finds none (the image is then skipped as ``no_object``).

Registered detectors (`get_detector`, `detector_names`):

- ``"grounding-dino"`` (`GroundingDino`): the paper's detector, Grounding DINO through ``transformers``
  (``pip install 'lse-imagenet[models]'``) from a local folder of weights (e.g. a copy of
  ``IDEA-Research/grounding-dino-tiny``), prompted with the class name; the highest-scoring box above the
  thresholds wins. Nothing is downloaded.
- ``"salient"`` (`SalientBox`, the offline default when there are no detector weights): the box of the most
  salient region that U^2-Net-p finds (with 2 % margin). It does not read the label: it assumes, as
  ImageNet's photos mostly allow, that the labelled object is the salient one; with it, the mask-quality
  test only rejects masks that spill outside that region.
- ``"whole"`` (`WholeImage`): the whole image is the box (the mask-quality test then never rejects).
- ``"boxes"`` (`GivenBoxes`): boxes you already have (ImageNet's own localisation boxes, for instance),
  a JSON file mapping each source path to ``[x0, y0, x1, y1]``; an image without an entry has no object.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .segment import Box, U2NetP, best_component, box_of

__all__ = [
    "Detector",
    "GivenBoxes",
    "GroundingDino",
    "SalientBox",
    "WholeImage",
    "class_prompt",
    "detector_names",
    "get_detector",
    "register_detector",
]

logger = logging.getLogger(__name__)


class Detector(Protocol):
    """``detector(image, prompt, source="") -> box or None`` (see the module docstring)."""

    def __call__(self, image: np.ndarray, prompt: str, *, source: str = "") -> Box | None: ...


_DETECTORS: dict[str, Callable[..., Detector]] = {}


def register_detector(name: str) -> Callable[[Callable[..., Detector]], Callable[..., Detector]]:
    """Register a detector factory (a class or function taking keyword options) under ``name``.

    Raises:
        ValueError: if ``name`` is taken.
    """

    def add(factory: Callable[..., Detector]) -> Callable[..., Detector]:
        if name in _DETECTORS:
            raise ValueError(f"a detector named {name!r} is already registered")
        _DETECTORS[name] = factory
        return factory

    return add


def detector_names() -> list[str]:
    """The names `get_detector` knows."""
    return sorted(_DETECTORS)


def get_detector(name: str, **kwargs: Any) -> Detector:
    """Build the detector registered as ``name`` with options ``kwargs``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in _DETECTORS:
        raise ValueError(f"detector must be one of {', '.join(map(repr, detector_names()))}, got {name!r}")
    return _DETECTORS[name](**kwargs)


@lru_cache(maxsize=1)
def _imagenet_words() -> dict[str, str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return {info.index_to_label_name(i): info.index_to_description(i) for i in range(info.num_classes())}


def class_prompt(class_name: str) -> str:
    """The words a detector is prompted with for a class folder.

    An ImageNet WordNet id becomes its first lemma (``"n02123045"`` -> ``"tabby"``, from timm's table);
    any other folder name is used as it is, with underscores as spaces.
    """
    words = _imagenet_words().get(class_name)
    if words is not None:
        return words.split(",")[0].strip()
    return class_name.replace("_", " ")


@register_detector("whole")
class WholeImage:
    """The whole image is the object's box."""

    def __call__(self, image: np.ndarray, prompt: str, *, source: str = "") -> Box | None:
        h, w = image.shape[:2]
        return 0.0, 0.0, float(w), float(h)


@register_detector("salient")
class SalientBox:
    """The box of the largest salient region of U^2-Net-p (see `lse_imagenet.segment.U2NetP`), with a margin.

    Args:
        margin: the box grows by this share of its size on each side (clipped to the image).
        model: a `U2NetP` to share with the segmenter (built with ``u2netp_options`` otherwise).
        u2netp_options: keyword options of `U2NetP`.
    """

    def __init__(self, *, margin: float = 0.02, model: U2NetP | None = None, **u2netp_options: Any) -> None:
        self.model = model if model is not None else U2NetP(**u2netp_options)
        self.margin = margin

    def __call__(self, image: np.ndarray, prompt: str, *, source: str = "") -> Box | None:
        sal = self.model.saliency(image, source=source)
        box = box_of(best_component(sal > self.model.threshold, None))
        if box is None:
            return None
        h, w = image.shape[:2]
        x0, y0, x1, y1 = box
        dx, dy = self.margin * (x1 - x0), self.margin * (y1 - y0)
        return max(0.0, x0 - dx), max(0.0, y0 - dy), min(float(w), x1 + dx), min(float(h), y1 + dy)


@register_detector("boxes")
class GivenBoxes:
    """Boxes from a JSON file: ``{"<class>/<file>": [x0, y0, x1, y1], ...}`` (paths as in the input folder).

    Args:
        boxes: the JSON file.
    """

    def __init__(self, boxes: str | os.PathLike) -> None:
        path = Path(boxes).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"box file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a JSON object mapping source paths to [x0, y0, x1, y1]")
        self.boxes: dict[str, Box] = {}
        for key, value in data.items():
            if not (isinstance(value, list) and len(value) == 4):
                raise ValueError(f"{path}: the box of {key!r} must be [x0, y0, x1, y1], got {value!r}")
            self.boxes[Path(key).as_posix()] = tuple(float(v) for v in value)  # type: ignore[assignment]

    def __call__(self, image: np.ndarray, prompt: str, *, source: str = "") -> Box | None:
        return self.boxes.get(Path(source).as_posix())


@register_detector("grounding-dino")
class GroundingDino:
    """Grounding DINO through ``transformers``, from a local folder of weights, prompted with the class name.

    Args:
        weights: a folder holding a Grounding DINO checkpoint in ``transformers``' layout (e.g. a copy of
            ``IDEA-Research/grounding-dino-tiny`` or ``-base``).
        box_threshold: the least box score kept.
        text_threshold: the least score of the prompt's words.
        device: ``"cpu"`` or ``"cuda"`` (default: cuda when available).
    """

    def __init__(
        self,
        weights: str | os.PathLike,
        *,
        box_threshold: float = 0.35,
        text_threshold: float = 0.25,
        device: str | None = None,
    ) -> None:
        import torch

        try:
            from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
        except ModuleNotFoundError as err:
            raise ModuleNotFoundError(
                "the Grounding DINO detector needs transformers: pip install 'lse-imagenet[models]'"
            ) from err
        folder = Path(weights).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no Grounding DINO weights (config.json) in {folder}")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(str(folder), local_files_only=True)
        self.model = self.model.to(self.device).eval()
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    def __call__(self, image: np.ndarray, prompt: str, *, source: str = "") -> Box | None:
        import torch

        text = prompt.strip().lower().rstrip(".") + "."  # Grounding DINO wants lower case, ending with a dot
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        post = self.processor.post_process_grounded_object_detection
        sizes = [image.shape[:2]]
        try:  # transformers >= 4.51 names it threshold
            res = post(
                outputs,
                inputs.input_ids,
                threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                target_sizes=sizes,
            )[0]
        except TypeError:
            res = post(
                outputs,
                inputs.input_ids,
                box_threshold=self.box_threshold,
                text_threshold=self.text_threshold,
                target_sizes=sizes,
            )[0]
        if len(res["scores"]) == 0:
            return None
        best = int(res["scores"].argmax())
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in res["boxes"][best].tolist())
        return max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)
