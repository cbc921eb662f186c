"""``lse-imagenet train``: a training step of every method on a tiny ImageFolder; label-free tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lse_imagenet.cli import APP, main
from lse_imagenet.training import folder_items, manifest_pairs, open_images
from PIL import Image
from safetensors.torch import load_file

from lse_common import read_csv_log


def write_image_folder(root: Path, classes=("3", "7"), per_class: int = 4, size: int = 40) -> Path:
    """A tiny ImageFolder: class folders named by their index, random RGB pictures with a bright square."""
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (size, size + 8, 3), dtype=np.uint8)
            s = 6 + 3 * i
            img[10 : 10 + s, 12 : 12 + s] = 255 if c == classes[0] else 160
            Image.fromarray(img).save(root / c / f"img{i}.png")
    return root


def tiny(root: Path, name: str, method: str, *extra: str) -> list[str]:
    return [
        "train",
        "--method",
        method,
        "--data.train_dir",
        str(root / "images"),
        "--data.val_dir",
        str(root / "images"),
        "--data.img_size",
        "32",
        "--data.num_classes",
        "10",
        "--model.backbone",
        "test_vit",
        "--model.pretrained",
        "false",
        "--train.epochs",
        "1",
        "--train.batch_size",
        "4",
        "--train.lr",
        "1e-3",
        "--train.layer_decay",
        "0.75",
        "--train.log_every",
        "1",
        "--train.out_dir",
        str(root / name),
        "--canon.dec_widths",
        "[4, 8]",
        "--canon.dec_view_size",
        "16",
        "--canon.num_elements",
        "4",
        "--canon.energy_width",
        "4",
        "--canon.energy_view_size",
        "16",
        "--recipe.auto_augment",
        "null",
        "--runtime.num_workers",
        "0",
        "--runtime.progress",
        "false",
        "--runtime.device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet-train")
    write_image_folder(root / "images")
    return root


def test_image_folder_labels_are_the_integer_folder_names(tiny_root, tmp_path):
    items = folder_items(tiny_root / "images")
    assert sorted({label for _, label in items}) == [3, 7] and len(items) == 8
    write_image_folder(tmp_path / "named", classes=("n02", "n01"), per_class=1)
    assert {Path(p).parent.name: label for p, label in folder_items(tmp_path / "named")} == {
        "n01": 0,
        "n02": 1,
    }
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        folder_items(tmp_path / "missing")
    ds = open_images(tiny_root / "images", lambda im: torch.zeros(3, 2, 2), limit=3)
    assert len(ds) == 3 and ds[0][1] == 3


@pytest.mark.parametrize("method", ["base", "aug", "canon", "invl", "dec"])
def test_a_training_step_of_every_method(tiny_root, method):
    run = tiny_root / f"run-{method}"
    assert main(tiny(tiny_root, run.name, method)) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 2  # 8 images, batches of 4
    weights = load_file(str(run / "final.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    log = read_csv_log(run / "metrics.csv")
    assert log and all(np.isfinite(float(r["loss"])) for r in log if r.get("loss") not in (None, ""))
    assert 0 <= float(summary["last_eval"]["val_acc"]) <= 1
    keys = {k for r in log for k, v in r.items() if v not in (None, "")}
    assert ("warp_log_scale_mean" in keys) == (method in ("canon", "dec"))
    assert ("inv" in keys) == (method == "invl")
    has_canon = any(k.startswith("canonicalizers.") for k in weights)
    assert has_canon == (method in ("canon", "dec"))
    cfg = APP.load("train", run / "config.yaml")  # the run's options replay
    assert cfg.method == method and cfg.recipe.mixup == pytest.approx(0.8)


def test_fine_tuning_starts_from_the_base_run_and_resumes(tiny_root):
    base = tiny_root / "run-base"
    if not (base / "final.safetensors").is_file():
        assert main(tiny(tiny_root, "run-base", "base")) == 0
    run = tiny_root / "dec-from-base"
    args = tiny(tiny_root, run.name, "dec", "--train.init_from", str(base), "--train.max_steps", "1")
    assert main(args) == 0
    assert json.loads((run / "train_summary.json").read_text())["global_step"] == 1
    assert (
        main([*tiny(tiny_root, run.name, "dec", "--train.init_from", str(base)), "--train.resume", "true"])
        == 0
    )
    assert json.loads((run / "train_summary.json").read_text())["global_step"] == 2


def test_label_free_dec_tuning_changes_only_the_canonicalizer(tiny_root):
    base = tiny_root / "run-base"
    if not (base / "final.safetensors").is_file():
        assert main(tiny(tiny_root, "run-base", "base")) == 0
    run = tiny_root / "dec-label-free"
    args = tiny(
        tiny_root,
        run.name,
        "dec",
        "--train.init_from",
        str(base),
        "--recipe.label_free",
        "true",
        "--canon.lr",
        "0.05",
    )
    assert main(args) == 0
    before = load_file(str(base / "final.safetensors"))
    after = load_file(str(run / "final.safetensors"))
    backbone = {k.removeprefix("backbone."): v for k, v in after.items() if k.startswith("backbone.")}
    assert backbone.keys() == before.keys()
    assert all(torch.equal(backbone[k], before[k]) for k in before)  # frozen throughout
    log = read_csv_log(run / "metrics.csv")
    assert any(r.get("kl") not in (None, "") for r in log) and any(
        r.get("agree") not in (None, "") for r in log
    )
    warps = [float(r["warp_log_scale_mean"]) for r in log if r.get("warp_log_scale_mean") not in (None, "")]
    assert warps[0] == pytest.approx(0.0, abs=1e-6)  # the DEC starts at the identity
    assert warps[-1] > 0  # and has learned to warp


def test_manifest_pairs_put_each_variant_against_the_original(tmp_path):
    from lse_imagenet.manifest import VariantRecord, write_manifest

    records = [
        VariantRecord("a/x", "a/x.jpg", 1, "a", f, f"images/a/x_s{f:.2f}.png", "masks/a/x.png", 0.9)
        for f in (0.8, 1.0, 1.2)
    ] + [VariantRecord("b/y", "b/y.jpg", 2, "b", 0.9, "images/b/y_s0.90.png", "masks/b/y.png", 0.9)]
    write_manifest(tmp_path, records)
    pairs = manifest_pairs(tmp_path)
    original = str(tmp_path / "images/a/x_s1.00.png")
    assert sorted(pairs) == [
        (original, str(tmp_path / "images/a/x_s0.80.png")),
        (original, str(tmp_path / "images/a/x_s1.20.png")),
    ]


def test_bad_options_are_refused_with_their_name(tiny_root, capsys):
    assert main(tiny(tiny_root, "bad", "base", "--recipe.reprob", "1.5")) == 2
    assert "recipe.reprob" in capsys.readouterr().err
    assert main(tiny(tiny_root, "bad", "nope")) == 2  # not a method: the parser refuses it
    assert "method" in capsys.readouterr().err


def test_wordnet_ids_keep_their_imagenet_index_in_a_subset(tmp_path):
    from lse_imagenet.manifest import VariantRecord
    from lse_imagenet.training import manifest_labels

    records = [  # what `lse-imagenet data` writes for two ImageNet classes: labels counted from 0
        VariantRecord("a", "n02123045/a.png", 0, "n02123045", 1.0, "a.png", "m.png", 1.0),
        VariantRecord("b", "n07920052/b.png", 1, "n07920052", 1.0, "b.png", "m.png", 1.0),
    ]
    assert manifest_labels(records) == {"n02123045": 281, "n07920052": 967}
    other = [VariantRecord("a", "x/a.png", 0, "x", 1.0, "a.png", "m.png", 1.0)]
    assert manifest_labels(other) == {"x": 0}
    write_image_folder(tmp_path / "wn", classes=("n07920052",), per_class=1)
    assert folder_items(tmp_path / "wn")[0][1] == 967


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[1] / "configs").glob("*/*.yaml")), ids=str)
def test_the_shipped_configs_parse(config, capsys):
    """Every train config of configs/ (paper and cpu) parses; the data, train and recipe files are parts."""
    if config.stem in ("data", "train", "recipe"):
        pytest.skip("a part of the configs, included by them")
    command = "evaluate" if config.stem == "evaluate" else "train"
    extra = ["--runs", "r"] if command == "evaluate" else []
    try:
        code = main([command, "--config", str(config), *extra, "--print_config"])
    except SystemExit as done:  # jsonargparse's print_config exits
        code = done.code
    assert code in (0, None)
    assert "runtime:" in capsys.readouterr().out


def test_tuning_set_rescales_objects_at_random_factors_and_positions(tmp_path):
    from lse_imagenet.label_free import write_tuning_set
    from lse_imagenet.manifest import VariantRecord, group_by_image, read_manifest, write_manifest

    src = tmp_path / "masks"
    image = np.zeros((40, 40, 3), np.uint8)
    image[14:26, 14:26] = 255
    (src / "images/x").mkdir(parents=True)
    (src / "masks/x").mkdir(parents=True)
    Image.fromarray(image).save(src / "images/x/a_s1.00.png")
    Image.fromarray(((image[..., 0] > 0) * 255).astype(np.uint8)).save(src / "masks/x/a.png")
    write_manifest(
        src, [VariantRecord("x/a", "x/a.png", 0, "x", 1.0, "images/x/a_s1.00.png", "masks/x/a.png", 1.0)]
    )
    write_tuning_set(src, tmp_path / "tune", variants=5, factor_range=(0.7, 1.3), seed=3)
    variants = group_by_image(read_manifest(tmp_path / "tune"))["x/a"]
    assert len(variants) == 6 and 1.0 in variants
    assert all(0.7 <= f <= 1.3 for f in variants)
    original = np.asarray(Image.open(tmp_path / "tune" / variants[1.0].path))
    assert np.array_equal(original, image)
    centres, areas = [], []
    for f, r in variants.items():
        bright = np.asarray(Image.open(tmp_path / "tune" / r.path))[..., 0] > 127
        ys, xs = np.nonzero(bright)
        centres.append((xs.mean(), ys.mean()))
        areas.append((f, bright.sum()))
    shift = max(np.hypot(x - 19.5, y - 19.5) for x, y in centres)
    assert shift > 0.5  # the object moves: scaled about random points, not only about its centre
    big, small = max(areas), min(areas)
    assert big[1] > small[1]  # and grows with the factor
    assert len(manifest_pairs(tmp_path / "tune")) == 5
    with pytest.raises(ValueError, match="factor_range"):
        write_tuning_set(src, tmp_path / "bad", factor_range=(1.3, 0.7))
