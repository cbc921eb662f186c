"""``lse-imagenet demo`` end to end on a tiny setting: real photos, given masks (nothing is fetched), a tiny
model, the label-free DEC run, the report and figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lse_imagenet.cli import main
from lse_imagenet.demo import write_tune_images
from lse_imagenet.photos import available_photos, write_photo_folder
from PIL import Image


def _ellipse_masks(folder, mask_dir, classes_root):
    """A centred ellipse as the object mask of every picture under ``folder``."""
    for path in sorted(folder.rglob("*.png")):
        with Image.open(path) as im:
            w, h = im.size
        yy, xx = np.mgrid[:h, :w]
        mask = ((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2 <= 1
        target = mask_dir / path.relative_to(classes_root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((mask * 255).astype(np.uint8)).save(target)


def test_demo_runs_the_whole_chain_and_reports_held_out_numbers(tmp_path):
    photos = [p.name for p in available_photos(["chelsea", "coffee"])]
    if not photos:
        pytest.skip("scikit-image's photos are not installed")
    side = 48
    staging = tmp_path / "staging"  # the same folders the demo writes, to draw their masks
    write_photo_folder(staging / "photos", photos, max_side=side)
    write_tune_images(staging / "tune" / "unlabelled", ["astronaut"], max_side=side)
    masks = tmp_path / "masks"
    _ellipse_masks(staging / "photos", masks, staging / "photos")
    _ellipse_masks(staging / "tune", masks, staging / "tune")
    out = tmp_path / "demo"
    args = [
        "demo",
        "--demo.out_dir", str(out),
        "--demo.eval_photos", json.dumps(photos),
        "--demo.tune_images", "[astronaut]",
        "--demo.max_side", str(side),
        "--demo.variants", "3",
        "--demo.detector", "whole",
        "--demo.segmenter", "mask",
        "--demo.mask_dir", str(masks),
        "--demo.docs_dir", str(tmp_path / "docs"),
        "--model.backbone", "test_vit",
        "--model.pretrained", "false",
        "--data.img_size", "32",
        "--train.epochs", "1",
        "--train.batch_size", "2",
        "--canon.dec_widths", "[4]",
        "--canon.dec_view_size", "16",
        "--runtime.progress", "false",
        "--runtime.device", "cpu",
    ]  # fmt: skip
    assert main(args) == 0
    result = json.loads((out / "results" / "demo.json").read_text())
    assert result["info"]["test_images"] == len(photos)
    assert result["info"]["tune_pairs"] == 3  # one image, three random rescalings, the test photos apart
    for name in ("base", "dec"):
        r = result[name]
        assert r["factors"] == [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3]
        assert len(r["fig8"]) == len(photos) and r["inve_paper"] >= 0
    assert result["warp"]["warp_log_scale_mean"] >= 0
    report = (out / "results" / "demo.md").read_text()
    assert "P(correct) Base" in report and "DEC warp size" in report
    for name in ("rescaled_photos.png", "fig8.png", "output.md"):
        assert (tmp_path / "docs" / name).is_file(), name
    with pytest.raises(ValueError, match="test photo"):
        write_tune_images(tmp_path / "x", ["chelsea"], max_side=side)
