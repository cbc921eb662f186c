"""Real photographs that ship inside installed Python packages, with their ImageNet-1k classes.

For the docs' pictures and the demo: no download, only files that are already on disk. A photo whose package
is not installed is left out. Labels are ImageNet-1k class indices; where ImageNet has no class for the
object itself, the nearest one is used and `Photo.note` says so.

| name | package, file | class |
| --- | --- | --- |
| ``chelsea`` | scikit-image, ``data/chelsea.png`` | 281 tabby cat |
| ``coffee`` | scikit-image, ``data/coffee.png`` | 967 espresso |
| ``rocket`` | scikit-image, ``data/rocket.jpg`` | 657 missile (a launch vehicle on its pad) |
| ``motorcycle`` | scikit-image, ``data/motorcycle_left.png`` | 665 moped (ImageNet has no motorcycle) |
| ``china`` | scikit-learn, ``datasets/images/china.jpg`` | 698 palace (the Summer Palace, Beijing) |
| ``flower`` | scikit-learn, ``datasets/images/flower.jpg`` | 985 daisy (a dahlia: ImageNet's nearest) |
| ``quokka`` | imgaug, ``quokka.jpg`` | 104 wallaby (ImageNet has no quokka) |

imgaug's file is read where the package is installed, without importing it (it does not import under every
numpy); its bounding-box annotation comes with it (`Photo.box`).
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["PHOTOS", "Photo", "available_photos", "load_photo", "write_photo_folder"]


@dataclass(frozen=True)
class Photo:
    """A photograph inside a package.

    Args:
        name: short name.
        package: the package whose files hold it.
        file: the path inside the package.
        label: ImageNet-1k class index.
        note: why the label is only the nearest class, if it is.
        box_file: a JSON file of the package with the object's box, if there is one.
    """

    name: str
    package: str
    file: str
    label: int
    note: str = ""
    box_file: str | None = None

    @property
    def wnid(self) -> str:
        """The class's WordNet id (ImageNet's folder name)."""
        from timm.data import ImageNetInfo

        return ImageNetInfo().index_to_label_name(self.label)

    @property
    def class_name(self) -> str:
        """The class's words (ImageNet's first lemma)."""
        from timm.data import ImageNetInfo

        return ImageNetInfo().index_to_description(self.label).split(",")[0].strip()

    @property
    def path(self) -> Path | None:
        """The file on disk, or None if the package is not installed (found without importing it)."""
        root = _package_dir(self.package)
        if root is None:
            return None
        p = root / self.file
        return p if p.is_file() else None

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        """The object's box ``(x0, y0, x1, y1)`` from the package's annotation, if it has one."""
        root = _package_dir(self.package)
        if self.box_file is None or root is None or not (root / self.box_file).is_file():
            return None
        data = json.loads((root / self.box_file).read_text(encoding="utf-8"))
        b = data["bounding_boxes"][0]
        return float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"])


PHOTOS = (
    Photo("chelsea", "skimage", "data/chelsea.png", 281),
    Photo("coffee", "skimage", "data/coffee.png", 967),
    Photo(
        "rocket",
        "skimage",
        "data/rocket.jpg",
        657,
        "a launch vehicle on its pad; ImageNet's nearest is missile",
    ),
    Photo(
        "motorcycle",
        "skimage",
        "data/motorcycle_left.png",
        665,
        "ImageNet has no motorcycle class; nearest: moped",
    ),
    Photo("china", "sklearn", "datasets/images/china.jpg", 698, "the Summer Palace, Beijing"),
    Photo(
        "flower", "sklearn", "datasets/images/flower.jpg", 985, "a dahlia; ImageNet's nearest flower is daisy"
    ),
    Photo(
        "quokka",
        "imgaug",
        "quokka.jpg",
        104,
        "ImageNet has no quokka; nearest: wallaby",
        "quokka_annotations.json",
    ),
)
"""Every photo this module knows (`available_photos` gives those on disk)."""


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available_photos(names: list[str] | None = None) -> list[Photo]:
    """The photos whose files are on disk (all of `PHOTOS`, or those named), in `PHOTOS`' order.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    known = {p.name: p for p in PHOTOS}
    if names is not None:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown photos {unknown}; photos: {', '.join(known)}")
    wanted = PHOTOS if names is None else tuple(p for p in PHOTOS if p.name in names)
    return [p for p in wanted if p.path is not None]


def load_photo(photo: Photo | str) -> np.ndarray:
    """The photo as an RGB ``uint8`` array `(H, W, 3)`.

    Raises:
        FileNotFoundError: if its package is not installed.
    """
    from PIL import Image

    p = photo if isinstance(photo, Photo) else {q.name: q for q in PHOTOS}[photo]
    if p.path is None:
        raise FileNotFoundError(f"photo {p.name!r} needs the package {p.package!r}, which is not installed")
    with Image.open(p.path) as im:
        return np.asarray(im.convert("RGB"))


def write_photo_folder(
    out_dir: str | os.PathLike, names: list[str] | None = None, *, max_side: int | None = None
) -> dict[str, Path]:
    """Write the available photos as an ImageFolder: ``<out_dir>/<wnid>/<name>.png``.

    Args:
        out_dir: the folder (created).
        names: which photos (default: all available).
        max_side: shrink each photo so that its longer side is at most this (default: as shipped).

    Returns:
        Photo name -> written file.
    """
    from PIL import Image

    from lse_common.checkpoint import atomic_path

    out = {}
    for p in available_photos(names):
        img = Image.fromarray(load_photo(p))
        if max_side is not None and max(img.size) > max_side:
            scale = max_side / max(img.size)
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS
            )
        target = Path(out_dir) / p.wnid / f"{p.name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            img.save(tmp, format="PNG")
        out[p.name] = target
    return out
