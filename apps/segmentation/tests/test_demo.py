"""The command line: every config parses, the demo's presets, and (slow) the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lse_segmentation.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("protocol", ["cpu", "paper"])
@pytest.mark.parametrize("method", ["aug", "augl", "canon", "dec"])
def test_train_configs_parse(protocol, method, capsys):
    cfg = CONFIGS / protocol / f"{method}.yaml"  # it reads data.yaml beside it (data: data.yaml)
    assert main(["train", "--config", str(cfg), "--print_config"]) == 0
    out = capsys.readouterr().out
    assert f"method: {method}" in out
    assert "background_weight: 0.1" in out
    assert f"size: {64 if protocol == 'cpu' else 256}" in out


@pytest.mark.parametrize("protocol", ["cpu", "paper"])
def test_evaluate_configs_parse(protocol, capsys):
    assert (
        main(
            [
                "evaluate",
                "--config",
                str(CONFIGS / protocol / "evaluate.yaml"),
                "--runs",
                "x",
                "--print_config",
            ]
        )
        == 0
    )
    assert "- approximate" in capsys.readouterr().out


def test_demo_presets(capsys):
    assert main(["demo", "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "backbone: tf_efficientnet_lite0" in out and "size: 64" in out and "mode: equivariant" in out
    assert main(["train", "--method", "invl", "--print_config"]) != 0  # not a method of this app


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--demo.out_dir", str(out), "--demo.aug_epochs", "1", "--demo.dec_epochs", "1"]
    argv += ["--data.size", "32", "--data.train_size", "16", "--data.val_size", "4", "--data.test_size", "4"]
    argv += ["--data.num_classes", "3", "--data.workers", "1", "--model.pretrained", "false"]
    argv += [
        "--train.batch_size",
        "8",
        "--runtime.progress",
        "false",
        "--demo.docs_dir",
        str(tmp_path / "docs"),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "### Table 1" in printed and "| Aug |" in printed and "| DEC (ours) |" in printed
    assert "| approximate |" in printed  # the DEC evaluated with both inverses
    summary = json.loads((out / "results" / "table1.json").read_text())
    runs = {r["method"]: r for r in summary["runs"]}
    assert set(runs) == {"aug", "dec"} and "warp_log_scale_mean" in runs["dec"]
    assert (out / "results" / "predictions_tf_efficientnet_lite0.png").is_file()
    assert (tmp_path / "docs" / "output.md").is_file()
    # a second demo in the same folder reuses the finished runs and their evaluation
    assert main(argv) == 0
