"""Backgrounds of the rendered scenes: real photographs and textures that ship inside installed packages, or
a folder of your own images and HDRI panoramas.

The paper composites its objects over HDRI Haven panoramas. Nothing is downloaded here: the built-in pool
(`BUILTIN_BACKGROUNDS`) is read from image files installed with scikit-image (photos such as ``astronaut``,
``chelsea``, ``coffee``, ``rocket``, ``motorcycle``, and the ``brick``, ``grass``, ``gravel`` textures),
matplotlib (``grace_hopper``), pybullet_data (a grass and a wood texture) and, when scikit-learn is installed,
its ``china`` and ``flower`` photos. ``data.backgrounds`` names a folder instead: every image in it (PNG,
JPEG, BMP, TIFF, WebP) and every HDRI panorama (Radiance ``.hdr``, OpenEXR ``.exr``; read with OpenCV and
tone-mapped with Reinhard's operator) is a background.

A scene's background is a square crop of one of them (side a fraction ``U[0.5, 1]`` of the picture's shorter
side, anywhere in it), flipped left-right with probability 1/2 and resized to the image size (`crop`).
Pictures are shrunk once when loaded so that their shorter side is at most twice the image size (a crop is
then never more than 2x larger than its output), which keeps the crops fast; grey pictures become RGB.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "BUILTIN_BACKGROUNDS",
    "IMAGE_SUFFIXES",
    "Backgrounds",
    "background_sources",
    "load_backgrounds",
    "read_image",
]

BUILTIN_BACKGROUNDS: tuple[tuple[str, str, str], ...] = (
    # (name, package, file inside the package)
    ("astronaut", "skimage", "data/astronaut.png"),
    ("camera", "skimage", "data/camera.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("motorcycle", "skimage", "data/motorcycle_left.png"),
    ("coins", "skimage", "data/coins.png"),
    ("moon", "skimage", "data/moon.png"),
    ("clock", "skimage", "data/clock_motion.png"),
    ("page", "skimage", "data/page.png"),
    ("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg"),
    ("immunohistochemistry", "skimage", "data/ihc.png"),
    ("brick", "skimage", "data/brick.png"),
    ("grass", "skimage", "data/grass.png"),
    ("gravel", "skimage", "data/gravel.png"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("stadium_grass", "pybullet_data", "roboschool/models_outdoor/stadium/stadium_grass.jpg"),
    ("wood", "pybullet_data", "table/table.png"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
)
"""The built-in pool: ``(name, package, file)``; a package that is not installed is skipped."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
HDR_SUFFIXES = (".hdr", ".exr")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def background_sources(folder: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The ``(name, file)`` of every background: the files of ``folder``, or the built-in pool.

    Args:
        folder: a folder of images and HDRI panoramas (searched recursively), or ``None`` for the built-in
            pool.

    Raises:
        FileNotFoundError: if ``folder`` is not a folder.
        ValueError: if it holds no image.
    """
    if folder is None:
        found = []
        for name, package, rel in BUILTIN_BACKGROUNDS:
            root = _package_dir(package)
            if root is not None and (root / rel).is_file():
                found.append((name, root / rel))
        if not found:
            raise ValueError("no built-in background found (is scikit-image installed?)")
        return found
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"data.backgrounds: no folder {root}")
    files = sorted(
        f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES + HDR_SUFFIXES
    )
    if not files:
        raise ValueError(
            f"data.backgrounds: {root} holds no image ({', '.join(IMAGE_SUFFIXES + HDR_SUFFIXES)})"
        )
    return [(str(f.relative_to(root)), f) for f in files]


def _tone_map(hdr: np.ndarray) -> np.ndarray:
    """Reinhard's global operator: exposure to a log-average luminance of 0.18, ``L / (1 + L)``, gamma 2.2."""
    hdr = np.nan_to_num(np.maximum(hdr.astype(np.float64), 0.0))
    lum = hdr @ np.array([0.2126, 0.7152, 0.0722])
    key = np.exp(np.mean(np.log(lum + 1e-6)))
    scaled = hdr * (0.18 / key)
    lum_s = lum * (0.18 / key)
    ldr = scaled / (1.0 + lum_s)[..., None]
    return (np.clip(ldr, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (HDR files tone-mapped, grey and RGBA made RGB).

    Raises:
        ImportError: for an HDR file without OpenCV (``pip install opencv-python-headless``).
        ValueError: if the file cannot be read.
    """
    p = Path(path)
    if p.suffix.lower() in HDR_SUFFIXES:
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
        try:
            import cv2
        except ImportError as err:
            raise ImportError(f"reading {p} needs OpenCV: pip install opencv-python-headless") from err
        bgr = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"cannot read the HDR image {p}")
        return _tone_map(bgr[..., ::-1])
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as err:
        raise ValueError(f"cannot read the image {p}: {err}") from err


@dataclass
class Backgrounds:
    """A pool of background pictures, each ``(h, w, 3)`` uint8, and their names."""

    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.images)

    def crop(self, index: int, box: np.ndarray, flip: bool, size: int) -> np.ndarray:
        """The square crop ``box`` of background ``index``, flipped if asked, at ``size x size``.

        Args:
            index: which background.
            box: ``(x, y, side)`` in ``[0, 1]``: the side as a fraction of the picture's shorter side, the
                left and top edges as fractions of the room left for them.
            flip: mirror left-right.
            size: output side in pixels.

        Returns:
            `(size, size, 3)` uint8.
        """
        if not 0 <= index < len(self.images):
            raise ValueError(f"index must be in [0, {len(self.images)}), got {index}")
        img = self.images[index]
        h, w = img.shape[:2]
        side = max(1, min(h, w, round(float(box[2]) * min(h, w))))
        x0 = round(float(box[0]) * (w - side))
        y0 = round(float(box[1]) * (h - side))
        patch = Image.fromarray(np.ascontiguousarray(img[y0 : y0 + side, x0 : x0 + side]))
        out = np.asarray(patch.resize((size, size), Image.BILINEAR))
        return np.ascontiguousarray(out[:, ::-1]) if flip else out


def load_backgrounds(folder: str | os.PathLike | None = None, *, size: int = 256) -> Backgrounds:
    """Read the backgrounds (see `background_sources`), shrunk so that the shorter side is at most ``2 size``.

    Args:
        folder: a folder of images and HDRI panoramas, or ``None`` for the built-in pool.
        size: the image size the crops are made for.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    names, images = [], []
    for name, path in background_sources(folder):
        img = read_image(path)
        short = min(img.shape[:2])
        if short > 2 * size:
            f = 2 * size / short
            h, w = max(1, round(img.shape[0] * f)), max(1, round(img.shape[1] * f))
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        names.append(name)
        images.append(np.ascontiguousarray(img))
    return Backgrounds(tuple(names), tuple(images))
