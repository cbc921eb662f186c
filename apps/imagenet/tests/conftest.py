"""A tiny ImageFolder written by the tests: 64x64 scenes with a known object, its mask and its box.

Three classes; seven good images and four bad ones, each bad for one reason: a file that is no image
(``unreadable``), an empty mask (``no_object``), no mask file (``no_mask``) and a box that misses the mask
(``mask_outside_box``). Masks and boxes are given, so no model is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 64
GOOD = {
    "class_a": ["a0", "a1", "a2"],
    "class_b": ["b0", "b1"],
    "class_c": ["c0", "c1"],
}
BAD = {
    "class_b/broken.png": "unreadable",
    "class_b/empty.png": "no_object",
    "class_c/nomask.png": "no_mask",
    "class_c/far.png": "mask_outside_box",
}


@dataclass(frozen=True)
class TinyFolder:
    input: Path
    masks: Path
    boxes: Path
    good: list[str]  # image ids
    bad: dict[str, str]  # source -> reason


def scene(seed: int, radius: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A textured background (blue below 100) with a disc whose blue is 255."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 100, (SIZE, SIZE, 3), dtype=np.uint8)
    cy, cx = 28 + seed % 7, 30 + seed % 5
    yy, xx = np.mgrid[:SIZE, :SIZE]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    img[mask] = (40, 200, 255)
    return img, mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_tiny_folder(root: Path) -> TinyFolder:
    inp, masks = root / "input", root / "masks"
    boxes: dict[str, list[float]] = {}
    good = []
    seed = 0
    for cls, stems in GOOD.items():
        for stem in stems:
            img, mask = scene(seed)
            seed += 1
            _save(img, inp / cls / f"{stem}.png")
            _save(mask.astype(np.uint8) * 255, masks / cls / f"{stem}.png")
            ys, xs = np.nonzero(mask)
            boxes[f"{cls}/{stem}.png"] = [xs.min() - 2.0, ys.min() - 2.0, xs.max() + 3.0, ys.max() + 3.0]
            good.append(f"{cls}/{stem}")
    (inp / "class_b").mkdir(parents=True, exist_ok=True)
    (inp / "class_b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    boxes["class_b/broken.png"] = [0, 0, SIZE, SIZE]
    img, _ = scene(20)
    _save(img, inp / "class_b" / "empty.png")
    _save(np.zeros((SIZE, SIZE), np.uint8), masks / "class_b" / "empty.png")
    boxes["class_b/empty.png"] = [0, 0, SIZE, SIZE]
    img, _ = scene(21)
    _save(img, inp / "class_c" / "nomask.png")
    boxes["class_c/nomask.png"] = [0, 0, SIZE, SIZE]
    img, mask = scene(22)
    _save(img, inp / "class_c" / "far.png")
    _save(mask.astype(np.uint8) * 255, masks / "class_c" / "far.png")
    boxes["class_c/far.png"] = [0, 0, 10, 10]  # nowhere near the disc
    (inp / "class_c" / "notes.txt").write_text("not an image: not listed")
    box_file = root / "boxes.json"
    box_file.write_text(json.dumps(boxes))
    return TinyFolder(inp, masks, box_file, good, dict(BAD))


@pytest.fixture
def tiny_folder(tmp_path) -> TinyFolder:
    return make_tiny_folder(tmp_path / "tiny")
