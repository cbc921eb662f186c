"""The cached splits, the torch dataset, the options and the ``data`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lse_segmentation import data as data_mod
from lse_segmentation.cli import main
from lse_segmentation.data import SegmentationDataset, prepare_split, preview_grid, split_key
from lse_segmentation.options import SMALL_DATA, SegData

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny(tmp_path: Path, **overrides) -> SegData:
    opts = dict(
        dir=str(tmp_path / "data"),
        size=32,
        train_size=6,
        val_size=3,
        test_size=4,
        num_classes=5,
        variants=2,
        object_size=0.45,
        workers=1,
    )
    return SegData(**{**opts, **overrides})


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    return prepare_split(tiny(tmp_path_factory.mktemp("seg")), "test", progress=False)


def test_split_arrays(test_split):
    s = test_split
    n, v, k = 4, 2, 2
    assert len(s) == n and s.num_classes == 5 and s.num_variants == v
    assert s.images.shape == (n, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.masks.shape == (n, 32, 32) and s.masks.dtype == np.uint8
    assert s.classes.shape == (n, k) and s.scales.shape == (n, k)
    assert s.variant_images.shape == (n, v, 32, 32, 3) and s.variant_masks.shape == (n, v, 32, 32)
    assert s.variant_scales.shape == (n, v, k)
    assert s.masks.max() <= 5 and s.class_names[0] == "background" and len(s.class_names) == 6
    for i in range(n):
        assert set(np.unique(s.masks[i]).tolist()) == {0, *s.classes[i].tolist()}
    assert np.all((s.scales >= 0.5) & (s.scales <= 2.0))
    manifest = json.loads((s.folder / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["options"]["size"] == 32 and len(manifest["scenes"]) == n
    assert manifest["scenes"][1]["classes"] == s.classes[1].tolist()
    assert np.allclose(manifest["scenes"][1]["variant_scales"], s.variant_scales[1], atol=1e-4)
    assert s.folder.name == f"test-{split_key(tiny(Path('x')), 'test')}"


def test_cache_is_reused_and_keyed_on_the_options(tmp_path, monkeypatch):
    data = tiny(tmp_path, train_size=3)
    first = prepare_split(data, "train", progress=False)
    assert first.num_variants == 0 and first.variant_images is None

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(data_mod, "render_scenes", no_render)
    again = prepare_split(tiny(tmp_path, train_size=3, workers=2), "train", progress=False)  # workers: same
    assert again.folder == first.folder
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(first.images))
    for change in ({"scale_range": (0.6, 1.5)}, {"seed": 1}, {"size": 24}, {"num_classes": 4}):
        with pytest.raises(AssertionError, match="rendered again"):
            prepare_split(tiny(tmp_path, train_size=3, **change), "train", progress=False)
    more = tiny(tmp_path, train_size=3, variants=3)
    assert split_key(more, "train") == split_key(data, "train")  # variants: the test split only
    assert split_key(more, "test") != split_key(data, "test")


def test_unfinished_cache_is_rebuilt(tmp_path):
    data = tiny(tmp_path, train_size=3)
    first = prepare_split(data, "train", progress=False)
    reference = np.array(first.images)
    (first.folder / "manifest.json").unlink()
    rebuilt = prepare_split(data, "train", progress=False)
    np.testing.assert_array_equal(np.asarray(rebuilt.images), reference)  # deterministic from the seed


def test_splits_differ_and_are_deterministic(tmp_path):
    a = prepare_split(tiny(tmp_path / "a"), "val", progress=False)
    b = prepare_split(tiny(tmp_path / "b"), "val", progress=False)
    t = prepare_split(tiny(tmp_path / "a"), "train", progress=False)
    np.testing.assert_array_equal(np.asarray(a.images), np.asarray(b.images))
    assert not np.array_equal(np.asarray(a.images), np.asarray(t.images[:3]))
    with pytest.raises(ValueError, match="split"):
        prepare_split(tiny(tmp_path), "holdout")
    with pytest.raises(ValueError, match="empty"):
        prepare_split(tiny(tmp_path, val_size=0), "val")


def test_torch_dataset(test_split):
    ds = SegmentationDataset(test_split)
    x, m = ds[2]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert m.shape == (32, 32) and m.dtype == torch.int64
    assert torch.equal(m, torch.from_numpy(np.asarray(test_split.masks[2], dtype=np.int64)))
    assert torch.allclose(
        x * 255, torch.from_numpy(np.asarray(test_split.images[2], np.float32)).permute(2, 0, 1)
    )
    xs, ms, scales = ds.variants(2)
    assert xs.shape == (3, 3, 32, 32) and ms.shape == (3, 32, 32) and scales.shape == (3, 2)
    assert torch.equal(xs[0], x) and torch.equal(ms[0], m)
    xv, mv = SegmentationDataset(test_split, variant=1)[2]
    assert torch.equal(xv, xs[2]) and torch.equal(mv, ms[2])
    with pytest.raises(ValueError, match="variant"):
        SegmentationDataset(test_split, variant=2)
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    xb, mb = next(iter(loader))
    assert xb.shape == (3, 3, 32, 32) and mb.shape == (3, 32, 32)


def test_preview_grid(test_split):
    grid = preview_grid(test_split, n=2, gap=2)
    assert grid.shape == (2 * 32 + 2, 4 * 32 + 3 * 2, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:32, :32], test_split.images[0])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"scale_range": (2.0, 0.5)}, "scale_range"),
        ({"num_classes": 101}, "num_classes"),
        ({"num_classes": 1}, "objects_per_image"),
        ({"object_size": 0.6}, "object_size"),
        ({"min_visible": 0.7}, "min_visible"),
        ({"size": 8}, "size"),
    ],
)
def test_options_validation(change, match):
    with pytest.raises(ValueError, match=match):
        SegData(**change)


def test_defaults_are_the_paper_and_small_preset_is_the_cpu_config():
    d = SegData()
    assert (d.size, d.train_size, d.test_size, d.num_classes, d.objects_per_image) == (
        256,
        6000,
        2000,
        100,
        2,
    )
    cpu = yaml.safe_load((CONFIGS / "cpu" / "data.yaml").read_text())
    assert cpu == SMALL_DATA
    assert SegData.small().size == 64 and SegData.small(size=32).size == 32
    with pytest.raises(TypeError, match="nope"):
        SegData.small(nope=1)
    paper = yaml.safe_load((CONFIGS / "paper" / "data.yaml").read_text())
    assert SegData(**{**paper, "scale_range": tuple(paper["scale_range"])}) == SegData()


def test_data_command(tmp_path, capsys):
    preview = tmp_path / "preview.png"
    args = ["data", "--data", str(CONFIGS / "cpu" / "data.yaml"), "--data.dir", str(tmp_path / "d")]
    args += ["--data.size", "32", "--data.train_size", "4", "--data.val_size", "0", "--data.test_size", "3"]
    args += ["--data.workers", "1", "--runtime.progress", "false", "--preview", str(preview)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "train: 4 scenes at 32x32" in out and "test: 3 scenes" in out and "val:" not in out
    from PIL import Image

    assert Image.open(preview).size == (4 * 32 + 3 * 2, 3 * 32 + 2 * 2)
    assert main(["data", "--data.size", "32", "--data.workers", "1", "--benchmark", "true"]) == 0
    assert "images/s at 32x32 (1 process)" in capsys.readouterr().out
