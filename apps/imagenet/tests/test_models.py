"""Detectors, segmenters, photos: registries, geometry, given masks and boxes, U^2-Net-p when it is here."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lse_imagenet.detect import class_prompt, detector_names, get_detector
from lse_imagenet.photos import PHOTOS, available_photos, load_photo, write_photo_folder
from lse_imagenet.segment import (
    best_component,
    box_of,
    get_segmenter,
    mask_quality,
    register_segmenter,
    segmenter_names,
    u2netp_path,
)

from .conftest import scene


def test_geometry():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 4:14] = True
    assert box_of(mask) == (4.0, 5.0, 14.0, 10.0) and box_of(np.zeros((3, 3), bool)) is None
    assert mask_quality(mask, (4, 5, 14, 10)) == 1.0
    assert mask_quality(mask, (4, 5, 9, 10)) == pytest.approx(0.5)
    assert mask_quality(mask, None) == 1.0 and mask_quality(np.zeros_like(mask), (0, 0, 5, 5)) == 0.0
    two = mask.copy()
    two[12:20, 20:30] = True  # a second, larger region
    assert np.array_equal(best_component(two, (4, 5, 14, 10)), mask)  # the one that fits the box
    assert best_component(two, None).sum() == 80  # the largest without a box


def test_registries_name_the_valid_choices():
    assert {"u2netp", "sam", "mask"} <= set(segmenter_names())
    assert {"grounding-dino", "salient", "whole", "boxes"} <= set(detector_names())
    with pytest.raises(ValueError, match=r"segmenter must be one of .*'mask'.*got 'sam2'"):
        get_segmenter("sam2")
    with pytest.raises(ValueError, match=r"detector must be one of .*'whole'.*got 'yolo'"):
        get_detector("yolo")
    with pytest.raises(ValueError, match="already registered"):
        register_segmenter("mask")(object)


def test_local_weights_are_required_and_never_downloaded(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        get_segmenter("sam", weights=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        get_detector("grounding-dino", weights=tmp_path)


def test_given_masks_and_boxes(tiny_folder):
    from PIL import Image

    seg = get_segmenter("mask", mask_dir=tiny_folder.masks)
    img = np.asarray(Image.open(tiny_folder.input / "class_a" / "a0.png"))
    _, expected = scene(0)
    assert np.array_equal(seg(img, None, source="class_a/a0.png"), expected)
    with pytest.raises(FileNotFoundError, match=r"no mask for class_c/nomask\.png"):
        seg(img, None, source="class_c/nomask.png")
    det = get_detector("boxes", boxes=tiny_folder.boxes)
    box = det(img, "anything", source="class_a/a0.png")
    x0, y0, x1, y1 = box_of(expected)
    assert box == (x0 - 2, y0 - 2, x1 + 2, y1 + 2)
    assert det(img, "anything", source="class_a/unknown.png") is None
    assert get_detector("whole")(img, "x") == (0.0, 0.0, 64.0, 64.0)
    bad = tiny_folder.boxes.parent / "bad.json"
    bad.write_text(json.dumps({"a.png": [1, 2, 3]}))
    with pytest.raises(ValueError, match=r"must be \[x0, y0, x1, y1\]"):
        get_detector("boxes", boxes=bad)


def test_class_prompts():
    assert class_prompt("n02123045") == "tabby"
    assert class_prompt("n03773504") == "missile"
    assert class_prompt("hot_dog") == "hot dog"


def test_photos_that_ship_in_packages(tmp_path):
    names = [p.name for p in available_photos()]
    assert {"chelsea", "coffee", "rocket"} <= set(names)  # scikit-image is a dependency
    for p in PHOTOS:
        assert (p.name in names) == (p.path is not None)
    cat = load_photo("chelsea")
    assert cat.shape == (300, 451, 3) and cat.dtype == np.uint8
    chelsea = next(p for p in PHOTOS if p.name == "chelsea")
    assert (chelsea.label, chelsea.wnid, chelsea.class_name) == (281, "n02123045", "tabby")
    written = write_photo_folder(tmp_path, ["chelsea", "coffee"], max_side=64)
    assert sorted(written) == ["chelsea", "coffee"]
    assert written["coffee"] == tmp_path / "n07920052" / "coffee.png"
    from PIL import Image

    assert max(Image.open(written["chelsea"]).size) == 64
    with pytest.raises(ValueError, match="unknown photos"):
        available_photos(["lena"])


def test_u2netp_on_a_real_photo():
    if not u2netp_path().is_file():
        pytest.skip(f"no U^2-Net-p model at {u2netp_path()} (lse-imagenet data --fetch true)")
    seg = get_segmenter("u2netp", fetch=False)
    coffee = load_photo("coffee")  # a cup on its saucer, on a wooden table
    mask = seg(coffee, None, source="coffee")
    assert mask.shape == coffee.shape[:2] and 0.15 < mask.mean() < 0.8
    x0, y0, x1, y1 = box_of(mask)
    h, w = mask.shape
    assert x0 < w / 2 < x1 and y0 < h / 2 < y1  # the cup is in the middle of the picture
    det = get_detector("salient", model=seg)
    box = det(coffee, "espresso", source="coffee")
    assert mask_quality(mask, box) == 1.0  # the salient box holds the salient mask


class _FakeLama:
    """Stands in for an onnxruntime session of LaMa: fills the hole with 0.25 (a model returning [0, 1])."""

    def __init__(self, path, opts=None, providers=None):
        self.feeds = []

    def get_inputs(self):
        from types import SimpleNamespace

        return [
            SimpleNamespace(name="image", shape=[1, 3, 32, 32]),
            SimpleNamespace(name="mask", shape=[1, 1, 32, 32]),
        ]

    def run(self, outputs, feed):
        self.feeds.append(feed)
        return [feed["image"] * (1 - feed["mask"]) + 0.25 * feed["mask"]]


def test_lama_onnx_inpainter_contract(tmp_path, monkeypatch):
    import onnxruntime
    from lse_imagenet.inpaint import LamaOnnx

    import monowarp

    with pytest.raises(FileNotFoundError, match="no inpainting model"):
        LamaOnnx(tmp_path / "lama.onnx")
    (tmp_path / "lama.onnx").write_bytes(b"stand-in")
    monkeypatch.setattr(onnxruntime, "InferenceSession", _FakeLama)
    lama = LamaOnnx(tmp_path / "lama.onnx")
    assert lama.size == (32, 32)
    img, mask = scene(3)
    out = monowarp.rescale_object(img, mask, [0.5], inpaint=lama, dilation=1, feather=0)
    feed = lama.session.feeds[0]
    assert feed["image"].shape == (1, 3, 32, 32) and feed["image"].dtype == np.float32
    assert 0.0 <= feed["image"].min() and feed["image"].max() <= 1.0
    assert set(np.unique(feed["mask"])) == {0.0, 1.0}
    # where the object was and is no more: the model's fill, 0.25 -> 64, up to resizing at the rim
    cy, cx = np.argwhere(mask).mean(axis=0).round().astype(int)
    ring = out[0, cy - 7 : cy + 8, cx + 6 : cx + 8]
    assert abs(float(np.median(ring)) - 64) <= 2 and np.abs(ring.astype(int) - 64).max() <= 12


def test_a_photo_with_its_box_from_a_package_that_does_not_import(tmp_path, monkeypatch):
    import lse_imagenet.photos as photos
    from PIL import Image

    pkg = tmp_path / "imgaug"  # the layout of imgaug's wheel: the photo and its annotation
    pkg.mkdir()
    Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(pkg / "quokka.jpg")
    (pkg / "quokka_annotations.json").write_text(
        json.dumps({"bounding_boxes": [{"x1": 10.0, "y1": 5.0, "x2": 50.0, "y2": 55.0, "label": "animal"}]})
    )
    (pkg / "__init__.py").write_text("raise ImportError('does not import under this numpy')")
    real = photos._package_dir
    monkeypatch.setattr(photos, "_package_dir", lambda name: pkg if name == "imgaug" else real(name))
    quokka = next(p for p in available_photos(["quokka"]))
    assert (quokka.label, quokka.wnid, quokka.box) == (104, "n01877812", (10.0, 5.0, 50.0, 55.0))
    assert load_photo("quokka").shape == (60, 80, 3)
    assert "wallaby" in quokka.note


def test_lama_onnx_with_free_input_sizes(tmp_path, monkeypatch):
    import onnxruntime
    from lse_imagenet.inpaint import LamaOnnx

    class Free(_FakeLama):
        def get_inputs(self):
            from types import SimpleNamespace

            return [
                SimpleNamespace(name="masked", shape=[1, 1, "h", "w"]),  # named mask: found by name
                SimpleNamespace(name="img", shape=[1, 3, "h", "w"]),
            ]

        def run(self, outputs, feed):
            self.feeds.append(feed)
            return [feed["img"] * 255 * (1 - feed["masked"]) + 64 * feed["masked"]]  # a [0, 255] model

    (tmp_path / "lama.onnx").write_bytes(b"stand-in")
    monkeypatch.setattr(onnxruntime, "InferenceSession", Free)
    lama = LamaOnnx(tmp_path / "lama.onnx")
    assert lama.size is None and (lama.image_name, lama.mask_name) == ("img", "masked")
    img = np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8)
    hole = np.zeros((30, 45), np.uint8)
    hole[10:20, 10:30] = 255
    out = lama(img, hole)
    assert lama.session.feeds[0]["img"].shape == (1, 3, 32, 48)  # padded to a multiple of 8
    assert out.shape == img.shape and np.all(out[hole > 0] == 64)
    assert np.array_equal(out[hole == 0], img[hole == 0])
    gray = lama(img[..., 0], hole)
    assert gray.shape == (30, 45) and np.all(gray[hole > 0] == 64)
