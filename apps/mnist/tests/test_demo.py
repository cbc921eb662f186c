"""The demo end to end on tiny settings (the real one: `lse-mnist demo`, about 10 minutes on 2 cores)."""

from __future__ import annotations

import json

from lse_mnist.cli import main


def test_demo_runs_every_stage_and_writes_tables_plots_and_docs(tmp_path, capsys):
    demo_dir = tmp_path / "demo"
    argv = [
        "demo",
        "--demo.out_dir", str(demo_dir),
        "--demo.docs_dir", str(tmp_path / "docs"),
        "--demo.aug_epochs", "1",
        "--demo.dec_epochs", "1",
        "--data.canvas", "32",
        "--data.canvas_height", "32",
        "--model.backbone", "test_resnet",
        "--model.pretrained", "false",
        "--data.train_size", "8",
        "--data.val_size", "4",
        "--data.test_size", "4",
        "--train.batch_size", "4",
        "--eval.batch_size", "4",
        "--eval.inv_rescalings", "2",
        "--eval.curve_scales", "[0.5, 1.0]",
        "--eval.warp_examples", "2",
        "--runtime.progress", "false",
        "--canon.dec_widths", "[4, 8]",
    ]  # fmt: skip
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0
    assert "| Aug |" in out and "| DEC + consistency |" in out and "| InvL |" in out
    assert "DEC vs Aug on 4 held-out test scenes" in out and "DEC - invl: " in out
    assert "the DEC beats it on both" in out or "the DEC does not beat it on both" in out
    assert "at 4 scenes: within the noise" in out or "at 4 scenes: outside the noise" in out
    assert "The DEC's learned warps: " in out and "canonical_warps_test_resnet_dec.png" in out
    results = demo_dir / "results"
    for name in (
        "tables.md",
        "tables.json",
        "per_scale_accuracy_test_resnet.png",
        "bucket_accuracy_test_resnet.png",
        "canonical_warps_test_resnet_dec.png",
        "demo_summary.json",
    ):
        assert (results / name).is_file(), name
    assert json.loads((results / "demo_summary.json").read_text())["runs"][-1].endswith("invl")
    docs = (tmp_path / "docs" / "output.md").read_text()
    assert "![per_scale_accuracy_test_resnet](per_scale_accuracy_test_resnet.png)" in docs
    assert (tmp_path / "docs" / "per_scale_accuracy_test_resnet.png").is_file()
    # everything stays under --demo.out_dir; a second demo there continues (nothing is trained again) ...
    assert {p.name for p in demo_dir.iterdir()} == {"data", "aug", "dec", "invl", "results"}
    stamp = (demo_dir / "dec" / "final.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 0
    assert "DEC vs Aug" in capsys.readouterr().out
    steps = [
        json.loads((demo_dir / m / "train_summary.json").read_text())["global_step"] for m in ("aug", "dec")
    ]
    assert steps == [2, 2]
    # ... and one with other options refuses to train over the earlier runs, unless told to replace them
    assert main([*argv, "--demo.aug_lr", "0.01"]) == 2
    assert "aug" in capsys.readouterr().err
    assert (demo_dir / "dec" / "final.safetensors").stat().st_mtime_ns >= stamp
    assert main([*argv, "--demo.aug_lr", "0.01", "--demo.overwrite", "true"]) == 0
