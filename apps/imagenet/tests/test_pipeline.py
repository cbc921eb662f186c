"""The data pipeline end to end on a tiny ImageFolder with given masks and boxes (no model needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lse_imagenet.cli import main
from lse_imagenet.manifest import classes, group_by_image, read_manifest
from lse_imagenet.pipeline import (
    DEFAULT_FACTORS,
    ImagenetData,
    list_images,
    merge_shards,
    run_pipeline,
    shard_of,
)
from PIL import Image


def _options(folder, out, **kwargs) -> ImagenetData:
    base = {
        "input_dir": str(folder.input),
        "out_dir": str(out),
        "detector": "boxes",
        "boxes": str(folder.boxes),
        "segmenter": "mask",
        "mask_dir": str(folder.masks),
        "format": "png",
    }
    return ImagenetData(**{**base, **kwargs})


def _blue_area(path) -> int:
    return int((np.asarray(Image.open(path))[..., 2] > 127).sum())


def test_end_to_end_with_given_masks(tiny_folder, tmp_path):
    out = tmp_path / "out"
    summary = run_pipeline(_options(tiny_folder, out), progress=False)
    n_good, n_factors = len(tiny_folder.good), len(DEFAULT_FACTORS)
    assert summary["images"] == n_good + len(tiny_folder.bad)
    assert (summary["done"], summary["failed"], summary["variants"]) == (n_good, 4, n_good * n_factors)
    assert summary["failures_by_reason"] == {
        "mask_outside_box": 1,
        "no_mask": 1,
        "no_object": 1,
        "unreadable": 1,
    }
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["source"]: f["reason"] for f in failures} == tiny_folder.bad

    records = read_manifest(out)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert classes(out) == ["class_a", "class_b", "class_c"]
    groups = group_by_image(records)
    assert sorted(groups) == sorted(tiny_folder.good)
    for image_id, per in groups.items():
        assert list(per) == list(DEFAULT_FACTORS)
        r1 = per[1.0]
        assert r1.class_name == image_id.split("/")[0]
        assert r1.label == ["class_a", "class_b", "class_c"].index(r1.class_name)
        assert r1.source == image_id + ".png" and r1.mask_quality == 1.0
        # the 1.0 variant is the original file, byte for byte; the mask is the given one
        assert (out / r1.path).read_bytes() == (tiny_folder.input / r1.source).read_bytes()
        given = np.asarray(Image.open(tiny_folder.masks / r1.source)) > 0
        assert np.array_equal(np.asarray(Image.open(out / r1.mask_path)) > 0, given)
        # the object's area grows with the factor squared; the picture keeps its size
        areas = np.array([_blue_area(out / per[f].path) for f in DEFAULT_FACTORS])
        assert Image.open(out / per[1.3].path).size == (64, 64)
        np.testing.assert_allclose(areas / given.sum(), np.square(DEFAULT_FACTORS), rtol=0.15)


def test_listing_classes_and_shards(tiny_folder):
    names, images, dups = list_images(tiny_folder.input)
    assert names == ["class_a", "class_b", "class_c"] and dups == []
    assert len(images) == 11 and all(not im.source.endswith(".txt") for im in images)
    assert [im.source for im in images] == sorted(im.source for im in images)
    _, two, _ = list_images(tiny_folder.input, per_class=2)
    assert [sum(im.label == k for im in two) for k in range(3)] == [2, 2, 2]
    # a stable partition: every image in exactly one shard, independent of the list
    ids = [im.image_id for im in images]
    assert [shard_of(i, 3) for i in ids] == [shard_of(i, 3) for i in reversed(ids)][::-1]
    assert all(0 <= shard_of(i, 3) < 3 for i in ids)
    (tiny_folder.input / "class_a" / "a0.jpg").write_bytes(b"")  # same id as a0.png
    _, _, dups = list_images(tiny_folder.input)
    assert [(d.source, d.reason) for d in dups] == [("class_a/a0.png", "duplicate_id")]


def test_resume_skips_finished_images(tiny_folder, tmp_path):
    out = tmp_path / "out"
    data = _options(tiny_folder, out)
    first = run_pipeline(data, progress=False)
    records = read_manifest(out)
    stamps = {r.path: (out / r.path).stat().st_mtime_ns for r in records}

    again = run_pipeline(data, progress=False)
    assert again["last_run"]["processed"] == 0 and again["last_run"]["skipped_as_done"] == len(
        tiny_folder.good
    )
    assert again["last_run"]["failed"] == {}  # failed images are not retried either
    assert {r.path: (out / r.path).stat().st_mtime_ns for r in records} == stamps  # nothing rewritten
    assert read_manifest(out) == records

    # a run killed while appending: the last image's records partly written, the last line cut short
    lines = (out / "manifest.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])["image_id"]
    kept = [line for line in lines if json.loads(line)["image_id"] != last]
    partial = [line for line in lines if json.loads(line)["image_id"] == last][:3]
    (out / "manifest.jsonl").write_text("\n".join(kept + partial) + "\n" + partial[0][:25])
    assert len(read_manifest(out)) == len(records) - 4  # the cut line is ignored
    resumed = run_pipeline(data, progress=False)
    assert (
        resumed["last_run"]["processed"] == 1
        and resumed["last_run"]["skipped_as_done"] == len(tiny_folder.good) - 1
    )
    assert read_manifest(out) == records
    assert {k: resumed[k] for k in ("done", "failed", "variants")} == {
        k: first[k] for k in ("done", "failed", "variants")
    }

    retried = run_pipeline(_options(tiny_folder, out, retry_failed=True), progress=False)
    assert retried["last_run"]["processed"] == 0 and sum(retried["last_run"]["failed"].values()) == 4


def test_two_shards_merged_equal_one_run(tiny_folder, tmp_path, capsys):
    whole = tmp_path / "whole"
    args = [
        "data",
        f"--data.input_dir={tiny_folder.input}",
        f"--data.out_dir={whole}",
        "--data.detector=boxes",
        f"--data.boxes={tiny_folder.boxes}",
        "--data.segmenter=mask",
        f"--data.mask_dir={tiny_folder.masks}",
        "--runtime.num_workers=0",
        "--runtime.progress=false",
    ]
    assert main(args) == 0
    assert "7 of 11 images done" in capsys.readouterr().out
    shards = []
    for k in range(2):
        root = tmp_path / f"machine{k}"
        s = run_pipeline(_options(tiny_folder, root, shard=f"{k}/2", format="jpg"), progress=False)
        assert (root / f"manifest-{k}-of-2.jsonl").is_file() and not (root / "manifest.jsonl").exists()
        assert 0 < s["images"] < 11
        shards.append(root)
    merged = tmp_path / "merged"
    with pytest.raises(ValueError, match=r"shards \[1\] of 2 are missing"):
        merge_shards(merged, [shards[0]])
    assert main(["merge", f"--out_dir={merged}", "--inputs", *map(str, shards)]) == 0
    one, two = read_manifest(whole), read_manifest(merged)
    assert one == two and len(one) == 49
    for r in one:  # the same pictures, byte for byte
        assert (whole / r.path).read_bytes() == (merged / r.path).read_bytes()
        assert (whole / r.mask_path).read_bytes() == (merged / r.mask_path).read_bytes()
    a, b = (json.loads((p / "summary.json").read_text()) for p in (whole, merged))
    keys = ("classes", "factors", "images", "done", "failed", "variants", "failures_by_reason", "settings")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert (whole / "failures.jsonl").read_text() == (merged / "failures.jsonl").read_text()
    # shards that share one output folder (a shared disk) are merged in place
    shared = tmp_path / "shared"
    for k in range(2):
        run_pipeline(_options(tiny_folder, shared, shard=f"{k}/2", format="jpg"), progress=False)
    assert main(["merge", f"--out_dir={shared}"]) == 0
    assert read_manifest(shared) == one


def test_bad_options_end_with_one_line(tiny_folder, tmp_path, capsys):
    assert main(["data", "--runtime.progress=false"]) == 2
    assert "data.input_dir is required" in capsys.readouterr().err
    assert main(["data", f"--data.input_dir={tiny_folder.input}", "--data.shard=2/2"]) == 2
    assert "0 <= K < N" in capsys.readouterr().err
    assert main(["data", "--data.segmenter=sam"]) == 2
    assert "needs data.segmenter_weights" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                f"--data.input_dir={tmp_path / 'nowhere'}",
                "--data.segmenter=mask",
                f"--data.mask_dir={tmp_path}",
            ]
        )
        == 2
    )
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="repeats"):
        ImagenetData(factors=[0.7, 0.701])


def test_missing_models_stop_the_run_before_any_image(tiny_folder, tmp_path):
    out = tmp_path / "out"
    assert main(["data", f"--data.input_dir={tiny_folder.input}", "--data.inpainter=lama2"]) == 2
    with pytest.raises(FileNotFoundError, match=r"data\.inpainter_weights: no ONNX model"):
        run_pipeline(_options(tiny_folder, out, inpainter="lama", inpainter_weights=str(tmp_path / "x.onnx")))
    with pytest.raises(FileNotFoundError, match=r"data\.mask_dir: no mask folder"):
        run_pipeline(_options(tiny_folder, out, mask_dir=str(tmp_path / "nowhere")), progress=False)
    assert not (out / "manifest.jsonl").exists()

    # a box file that exists passes the check; its content breaks the workers' set-up
    bad = tmp_path / "bad_boxes.json"
    bad.write_text(json.dumps({"class_a/a0.png": [1, 2]}))
    with pytest.raises(
        RuntimeError, match=r"a worker could not load the models: ValueError: .*\[x0, y0, x1, y1\]"
    ):
        run_pipeline(_options(tiny_folder, out, boxes=str(bad)), workers=1, progress=False)
    assert (out / "failures.jsonl").read_text() == ""  # the images are not marked as failed


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(0)
    inp, masks = tmp_path / "input", tmp_path / "masks"
    for k in range(24):  # 512x512 pictures: a few per second, so the kill lands mid-run
        img = rng.integers(0, 100, (512, 512, 3), dtype=np.uint8)
        mask = np.zeros((512, 512), np.uint8)
        mask[150 + k : 350 + k, 180:330] = 255
        img[mask > 0] = (40, 200, 255)
        for root, arr in ((inp, img), (masks, mask)):
            (root / f"c{k % 3}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / f"c{k % 3}" / f"i{k}.png")
    out = tmp_path / "out"
    data = ImagenetData(
        input_dir=str(inp), out_dir=str(out), detector="whole", segmenter="mask", mask_dir=str(masks)
    )
    args = [sys.executable, "-m", "lse_imagenet", "data", f"--data.input_dir={inp}", f"--data.out_dir={out}"]
    args += ["--data.detector=whole", "--data.segmenter=mask", f"--data.mask_dir={masks}"]
    args += ["--runtime.num_workers=0", "--runtime.progress=false"]
    proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and len(manifest.read_text().splitlines()) >= 14:  # two images written
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {
        json.loads(line)["image_id"] for line in manifest.read_text().splitlines() if line.endswith("}")
    }
    assert 2 <= len(before) < 24, "the run was not killed mid-way"
    summary = run_pipeline(data, progress=False)
    done_before = summary["last_run"]["skipped_as_done"]
    assert done_before >= 2 and summary["last_run"]["processed"] == 24 - done_before
    assert summary["done"] == 24 and len(read_manifest(out)) == 24 * 7


@pytest.mark.slow
def test_worker_processes_write_what_one_process_writes(tiny_folder, tmp_path):
    one = run_pipeline(_options(tiny_folder, tmp_path / "one"), workers=0, progress=False)
    two = run_pipeline(_options(tiny_folder, tmp_path / "two"), workers=2, progress=False)
    assert two["last_run"]["workers"] == 2
    assert {k: one[k] for k in ("done", "failed", "variants")} == {
        k: two[k] for k in ("done", "failed", "variants")
    }
    records = read_manifest(tmp_path / "one")
    assert records == read_manifest(tmp_path / "two")
    for r in records:
        assert (tmp_path / "one" / r.path).read_bytes() == (tmp_path / "two" / r.path).read_bytes()


def test_a_learned_inpainter_plugs_in(tiny_folder, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import onnxruntime

    class GreyLama:  # stands in for an onnxruntime session of LaMa: fills the hole with mid-grey
        def __init__(self, path, opts=None, providers=None):
            pass

        def get_inputs(self):
            return [
                SimpleNamespace(name="image", shape=[1, 3, 64, 64]),
                SimpleNamespace(name="mask", shape=[1, 1, 64, 64]),
            ]

        def run(self, outputs, feed):
            return [feed["image"] * (1 - feed["mask"]) + 0.5 * feed["mask"]]

    monkeypatch.setattr(onnxruntime, "InferenceSession", GreyLama)
    weights = tmp_path / "lama.onnx"
    weights.write_bytes(b"stand-in")
    out = tmp_path / "out"
    opts = _options(tiny_folder, out, inpainter="lama", inpainter_weights=str(weights), factors=[0.7, 1.0])
    summary = run_pipeline(opts, progress=False)
    assert summary["done"] == len(tiny_folder.good) and summary["settings"]["inpainter"] == "lama"
    r = group_by_image(read_manifest(out))["class_a/a0"][0.7]
    small = np.asarray(Image.open(out / r.path)).astype(int)
    mask = np.asarray(Image.open(out / r.mask_path)) > 0
    ys, xs = np.nonzero(mask)
    cy = int(ys.mean())
    rim = small[cy - 2 : cy + 3, xs.max() - 1]  # inside the old disc, outside the shrunk one
    assert np.abs(rim - 128).max() <= 3
