"""The demo end to end on tiny settings (the real one: `lse-mnist demo`, about 10 minutes on 2 cores)."""

from __future__ import annotations

import json

from lse_mnist.cli import main


def test_demo_runs_every_stage_and_writes_tables_plots_and_docs(tmp_path, capsys):
    demo_dir = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--demo-dir",
            str(demo_dir),
            "--docs-dir",
            str(tmp_path / "docs"),
            "--aug-epochs",
            "1",
            "--dec-epochs",
            "1",
            "--canvas",
            "32",
            "--backbone",
            "test_resnet",
            "--no-pretrained",
            "--train-size",
            "8",
            "--val-size",
            "4",
            "--test-size",
            "4",
            "--batch-size",
            "4",
            "--eval-batch-size",
            "4",
            "--inv-rescalings",
            "2",
            "--curve-scales",
            "0.5",
            "1.0",
            "--no-progress",
            "--dec-widths",
            "4",
            "8",
            "--warp-examples",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| Aug |" in out and "| DEC (ours) |" in out and "| InvL |" in out
    assert "DEC vs Aug on 4 held-out test scenes" in out
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
