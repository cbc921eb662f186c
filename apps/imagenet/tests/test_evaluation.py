"""``lse-imagenet evaluate``: the metrics on known inputs, a whole evaluation of tiny runs, the tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lse_imagenet.cli import main
from lse_imagenet.evaluation import ScaleMetrics, evaluate_model, evaluate_runs, scale_groups
from lse_imagenet.manifest import VariantRecord, read_manifest, write_manifest
from lse_imagenet.options import ImagenetEval
from lse_imagenet.tables import aggregate, markdown_tables, summarise
from PIL import Image
from torch import nn

from lse_common.options import RuntimeOptions

FACTORS = [0.8, 1.0, 1.2]


def _training_helpers():
    """``tiny`` and ``write_image_folder`` of test_training.py (tests import by path, not as a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_imagenet_test_training", Path(__file__).with_name("test_training.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiny, module.write_image_folder


def test_scale_metrics_on_known_probabilities():
    probs = torch.tensor(
        [
            [[0.7, 0.3], [0.9, 0.1], [0.4, 0.6]],  # label 0: right, right, wrong
            [[0.2, 0.8], [0.5, 0.5], [0.1, 0.9]],  # label 1: right, wrong (tie -> 0), right
        ]
    )
    labels = torch.tensor([0, 1])
    m = ScaleMetrics(FACTORS)
    m.update(probs[:1], labels[:1])
    m.update(probs[1:], labels[1:])
    out = m.compute()
    assert out["factor_acc"] == pytest.approx([1.0, 0.5, 0.5])
    assert out["acc"] == pytest.approx(4 / 6)
    assert out["factor_mean"] == pytest.approx(2 / 3)
    assert out["factor_std"] == pytest.approx(np.std([1.0, 0.5, 0.5]))
    ref = probs[:, 1:2]
    sq = ((probs - ref) ** 2).sum(-1)  # (B, S), zero at the reference
    assert out["inve_paper"] == pytest.approx(float(sq[:, [0, 2]].mean()))
    assert out["inve_reference"] == pytest.approx(float(sq.sqrt().mean()))  # the zero term averaged in
    assert out["acc_unmodified"] == pytest.approx(0.5)
    assert out["images"] == 2
    with pytest.raises(ValueError, match="reference_factor"):
        ScaleMetrics(FACTORS, reference_factor=1.1)
    with pytest.raises(ValueError, match="probs"):
        m.update(probs[:, :2], labels)


class Brightness(nn.Module):
    """A known classifier: class 0 when the picture is bright (mean > 0.5), else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.mean((1, 2, 3))
        return torch.stack([8 * (v - 0.5), torch.zeros_like(v)], 1)


def write_test_set(root: Path, levels: dict[str, list[int]], labels: dict[str, int]) -> Path:
    """A ``lse-imagenet data`` root: each image's variants are flat grey pictures of the given levels; the
    class folders are named by the label."""
    records = []
    for image_id, per_factor in levels.items():
        for f, level in zip(FACTORS, per_factor, strict=True):
            rel = f"images/c/{image_id}_s{f:.2f}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((12, 16, 3), level, np.uint8)).save(root / rel)
            records.append(
                VariantRecord(
                    image_id,
                    f"c/{image_id}.jpg",
                    labels[image_id],
                    str(labels[image_id]),
                    f,
                    rel,
                    "m.png",
                    1.0,
                )
            )
    write_manifest(root, records)
    return root


def test_evaluate_model_matches_the_known_classifier(tmp_path):
    levels = {"a": [250, 200, 40], "b": [30, 20, 240], "c": [10, 10, 10]}
    labels = {"a": 0, "b": 1, "c": 1}
    root = write_test_set(tmp_path, levels, labels)
    # an image lacking a factor is skipped
    extra = VariantRecord("d", "c/d.jpg", 0, "0", 1.0, "images/c/a_s1.00.png", "m.png", 1.0)
    write_manifest(root, [*read_manifest(root), extra])
    groups, skipped = scale_groups(root, FACTORS)
    assert [g.image_id for g in groups] == ["a", "b", "c"] and skipped == 1

    def transform(im):
        return torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)

    ev = ImagenetEval(factors=FACTORS, batch_size=6, fig8_images=["b"])
    out = evaluate_model(Brightness(), groups, ev, transform)
    bright = {k: [lv / 255 > 0.5 for lv in v] for k, v in levels.items()}
    correct = np.array([[b == (labels[k] == 0) for b in bright[k]] for k in levels])
    assert out["factor_acc"] == pytest.approx(correct.mean(0).tolist())
    assert out["acc"] == pytest.approx(correct.mean())
    assert out["acc_unmodified"] == pytest.approx(correct[:, 1].mean())
    probs = np.stack(
        [
            torch.softmax(Brightness()(torch.full((1, 3, 2, 2), lv / 255.0))[0], 0).numpy()
            for k in levels
            for lv in levels[k]
        ]
    ).reshape(3, 3, 2)
    sq = ((probs - probs[:, 1:2]) ** 2).sum(-1)
    assert out["inve_paper"] == pytest.approx(sq[:, [0, 2]].mean(), rel=1e-5)
    assert out["inve_reference"] == pytest.approx(np.sqrt(sq).mean(), rel=1e-5)
    assert list(out["fig8"]) == ["b"]
    assert out["fig8"]["b"]["p_correct"] == pytest.approx(probs[1, :, 1].tolist(), rel=1e-5)
    with pytest.raises(ValueError, match="fig8_images"):
        evaluate_model(Brightness(), groups, ImagenetEval(factors=FACTORS, fig8_images=["zz"]), transform)


def test_evaluate_runs_writes_tables_json_and_plots(tmp_path):
    tiny, write_image_folder = _training_helpers()
    write_image_folder(tmp_path / "images")
    levels = {"a": [250, 200, 40], "b": [30, 20, 240]}
    test = write_test_set(tmp_path / "test", levels, {"a": 3, "b": 7})
    runs = []
    for method in ("base", "dec"):
        assert main(tiny(tmp_path, f"run-{method}", method, "--train.max_steps", "1")) == 0
        runs.append(str(tmp_path / f"run-{method}"))
    runtime = RuntimeOptions(device="cpu", num_workers=0, progress=False)
    ev = ImagenetEval(data_dir=str(test), factors=FACTORS, batch_size=6, fig8_count=2)
    results = evaluate_runs(runs, ev, runtime)
    assert [r["method"] for r in results] == ["base", "dec"]
    for r in results:
        assert len(r["factor_acc"]) == 3 and 0 <= r["acc"] <= 1 and r["inve_paper"] >= 0
        assert set(r["fig8"]) == {"a", "b"}
        assert json.loads((Path(r["run"]) / "eval.json").read_text())["weights_sha256"] == r["weights_sha256"]
    again = evaluate_runs(runs, ev, runtime)  # stored results are reused for the same weights and settings
    assert [r["weights_sha256"] for r in again] == [r["weights_sha256"] for r in results]
    summary = aggregate(results, tmp_path / "results")
    for name in ("tables.md", "tables.json", "factor_acc_test_vit.png", "fig8_test_vit.png"):
        assert (tmp_path / "results" / name).is_file(), name
    text = (tmp_path / "results" / "tables.md").read_text()
    assert "Table 5" in text and "Table 6" in text and "Table A5" in text and "DEC (ours)" in text
    assert summary["table6"]["test_vit"]["base"]["factors"] == FACTORS
    assert (
        main(
            [
                "evaluate",
                "--runs",
                *runs,
                "--eval.data_dir",
                str(test),
                "--eval.factors",
                "[0.8, 1.0, 1.2]",
                "--eval.results_dir",
                str(tmp_path / "cli"),
                "--runtime.device",
                "cpu",
                "--runtime.progress",
                "false",
                "--runtime.num_workers",
                "0",
            ]
        )
        == 0
    )
    assert (tmp_path / "cli" / "tables.md").is_file()


def _result(method, seed, factor_acc, inve, label_free=False):
    acc = float(np.mean(factor_acc))
    return {
        "backbone": "swin_tiny",
        "method": method,
        "seed": seed,
        "label_free": label_free,
        "factors": FACTORS,
        "factor_acc": factor_acc,
        "acc": acc,
        "inve_paper": inve,
        "inve_reference": 2 * inve,
        "acc_unmodified": factor_acc[1],
        "unmodified_source": "factor 1 variants",
        "fig8": {},
    }


def test_tables_average_seeds_and_keep_label_free_runs_apart():
    results = [
        _result("base", 0, [0.5, 0.7, 0.6], 0.02),
        _result("base", 1, [0.7, 0.9, 0.8], 0.04),
        _result("dec", 0, [0.6, 0.7, 0.65], 0.01, label_free=True),
    ]
    s = summarise(results)
    base = s["table5"]["swin_tiny"]["base"]
    assert base["acc"]["mean"] == pytest.approx(70.0) and base["n"] == 2
    assert base["acc"]["std"] == pytest.approx(np.std([60.0, 80.0], ddof=1))
    assert base["inve_paper"]["mean"] == pytest.approx(3.0)
    t6 = s["table6"]["swin_tiny"]["base"]
    assert t6["factor_acc"] == pytest.approx([60.0, 80.0, 70.0])
    assert t6["overall_mean"] == pytest.approx(70.0) and t6["overall_std"] == pytest.approx(
        np.std([60, 80, 70])
    )
    assert "dec (label-free)" in s["table5"]["swin_tiny"] and "dec" not in s["table5"]["swin_tiny"]
    md = markdown_tables(s)
    assert "DEC (ours) (label-free)" in md and "70.00 ± 14.14" in md
    assert "The paper's Table 5" in md  # a Swin backbone: the paper's rows for reference


@pytest.mark.slow
def test_two_process_ddp_label_free_training_and_evaluation_equal_to_one_process(tmp_path):
    import os
    import subprocess
    import sys

    from lse_imagenet.evaluation import evaluate_run

    from lse_common import find_latest

    tiny, write_image_folder = _training_helpers()
    write_image_folder(tmp_path / "images")
    test = write_test_set(tmp_path / "test", {"a": [250, 200, 40], "b": [30, 20, 240]}, {"a": 3, "b": 7})
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    args = tiny(
        tmp_path,
        "ddp",
        "dec",
        "--recipe.label_free",
        "true",
        "--recipe.pairs",
        "warps",
        "--train.batch_size",
        "2",
        "--data.val_dir",
        "null",
    )
    proc = subprocess.run(
        [*torchrun, "-m", "lse_imagenet", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(find_latest(out / "checkpoints"), weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 2  # 8 images / (2 processes x batch 2)
    flags = [
        "--eval.data_dir",
        str(test),
        "--eval.factors",
        "[0.8, 1.0, 1.2]",
        "--eval.batch_size",
        "3",
        "--eval.results_dir",
        str(tmp_path / "res"),
        "--runtime.progress",
        "false",
        "--runtime.device",
        "cpu",
        "--runtime.num_workers",
        "0",
    ]
    proc = subprocess.run(
        [*torchrun, "-m", "lse_imagenet", "evaluate", "--runs", str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = json.loads((out / "eval.json").read_text())
    ev = ImagenetEval(data_dir=str(test), factors=FACTORS, batch_size=3)
    one = evaluate_run(out, ev, RuntimeOptions(device="cpu", num_workers=0, progress=False), write=False)
    assert two["processes"] == 2 and one["processes"] == 1
    for key in ("acc", "factor_acc", "acc_unmodified", "inve_paper", "inve_reference"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert set(two["fig8"]) == set(one["fig8"]) == {"a", "b"}
