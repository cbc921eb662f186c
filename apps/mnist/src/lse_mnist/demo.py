"""``lse-mnist demo``: what the DEC is for, measured in a few minutes on a laptop CPU.

1. Data: the embedded digits (or a better source when there is one), small canvas, train / validation /
   test scenes (test digits come from MNIST's test split).
2. ``aug``: fine-tune an ImageNet-pretrained EfficientNet-Lite0 (weights that ship in a package) with random
   monotone scaling augmentation.
3. ``dec``: starting from the ``aug`` weights, add a DEC at the input and fine-tune backbone and DEC with
   separate learning rates, as the paper does, with the consistency term of eq. 25 on a doubled batch
   (clean and warped halves).
4. ``invl``, the control: the same fine-tuning from the same ``aug`` weights, with the same consistency
   term but without the DEC, so that what the DEC itself adds can be read off the table.
5. Evaluate every run on the held-out test scenes (accuracy, InvE with 8 rescalings per image, digit-scale
   buckets, per-scale curve), print Tables 2 and 3, save the plots.

The epochs are fixed (3 for ``aug``, 1 for each fine-tuning), so the result does not depend on how busy the
machine is; on 2 CPU cores the whole demo takes about 6 minutes. Everything goes under
``--demo.out_dir`` (default ``runs/mnist-demo``): data, one run folder per stage, results. A second demo in
the same folder continues its runs (a finished run is not trained again) when its options are the same, and
refuses otherwise: choose another ``--demo.out_dir``, or ``--demo.overwrite true`` to replace the old runs.

Every stage is an ordinary ``lse-mnist train`` run with the demo's presets (see ``lse-mnist demo --help``);
``--config`` and flags override them (e.g. ``--model.backbone resnet18 --model.pretrained false``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

__all__ = ["DEMO_DEFAULTS", "DemoOptions", "accuracy_difference_se", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoOptions:
    """The demo's stages.

    Args:
        out_dir: folder of the demo's data, runs and results.
        overwrite: replace the runs of an earlier demo in out_dir made with other options.
        aug_epochs: epochs of the aug run.
        aug_lr: learning rate of the aug run.
        dec_epochs: epochs of the dec (and extra) fine-tuning from aug.
        dec_lr: backbone learning rate of the fine-tuning runs.
        dec_canon_lr: learning rate of the DEC modules.
        dec_consistency: weight of the consistency term the DEC is fine-tuned with (eq. 25; 0: off).
        extra_method: one more baseline fine-tuned from aug like dec (invl: the same consistency term without
            the DEC; none: skip).
        docs_dir: also copy the tables and plots there (docs/mnist/demo).
    """

    out_dir: str = "runs/mnist-demo"
    overwrite: bool = False
    aug_epochs: PositiveInt = 3
    aug_lr: PositiveFloat = 2e-3
    dec_epochs: PositiveInt = 1
    dec_lr: PositiveFloat = 2e-4
    dec_canon_lr: PositiveFloat = 2e-3
    dec_consistency: NonNegativeFloat = 1.0
    extra_method: Literal["invl", "canon", "optim", "none"] = "invl"
    docs_dir: str | None = None


DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"canvas": 96, "canvas_height": 32, "train_size": 6000, "val_size": 500, "test_size": 1000},
    "model": {"head": "digits", "backbone": "tf_efficientnet_lite0", "pretrained": True},
    "train": {"batch_size": 64, "sched": "cosine", "weight_decay": 0.01, "log_every": 20},
    "canon": {"layers": ["input"], "dec_widths": [8, 16], "dec_view_size": 48, "dec_max_iter": 5},
    "eval": {
        "batch_size": 200,
        "forward_batch": 32,
        "curve_scales": [0.4, 1.0, 2.0, 3.0],
        "warp_examples": 6,
    },
    "runtime": {"num_workers": 0},
}
"""The demo's presets on top of the train and eval defaults (flags and ``--config`` override them)."""


def _stage(
    cfg: Namespace, method: str, *, train: dict[str, Any], canon: dict[str, Any] | None = None
) -> Namespace:
    from lse_common.training import demo_stage

    from .cli import TRAIN_GROUPS

    return demo_stage(cfg, method, list(TRAIN_GROUPS), train=train, canon=canon)


def run_demo(cfg: Namespace) -> int:
    """Run the demo (see the module docstring) with the options of ``lse-mnist demo``; returns 0."""
    from .data import prepare_data_split
    from .evaluation import evaluate_runs
    from .tables import aggregate
    from .training import train

    t0 = time.perf_counter()
    demo: DemoOptions = cfg.demo
    root = Path(demo.out_dir)
    h, w = cfg.data.size
    logger.info("demo: %s on %dx%d scenes, writing to %s", cfg.model.backbone, w, h, root)
    data = dataclasses.replace(cfg.data, dir=str(root / "data"))
    for split in ("train", "val", "test"):  # draw, render and cache the data once, before any run
        prepare_data_split(data, split, progress=cfg.runtime.progress)
    aug = _stage(cfg, "aug", train={"epochs": demo.aug_epochs, "lr": demo.aug_lr})
    fine_tune = {
        "epochs": demo.dec_epochs,
        "lr": demo.dec_lr,
        "grad_clip": 1.0,
        "init_from": aug.train.out_dir,
    }
    stages = [
        aug,
        _stage(
            cfg,
            "dec",
            train={**fine_tune, "consistency_weight": demo.dec_consistency},
            canon={"lr": demo.dec_canon_lr},
        ),
    ]
    if demo.extra_method != "none":
        stages.append(_stage(cfg, demo.extra_method, train=fine_tune, canon={"lr": demo.dec_canon_lr}))
    for stage in stages:
        train(stage)
    runs = [stage.train.out_dir for stage in stages]
    ev = dataclasses.replace(cfg.eval, data_dir=None)
    results = evaluate_runs(runs, ev, cfg.runtime)
    results_dir = Path(cfg.eval.results_dir or root / "results")
    summary = aggregate(results, results_dir)
    table = (results_dir / "tables.md").read_text()
    print(table)
    by_method = {r["method"]: r for r in results}
    a, d = by_method["aug"], by_method["dec"]
    verdict = (
        f"DEC vs Aug on {a['test_images']} held-out test scenes: accuracy {100 * d['acc']:.2f} % vs "
        f"{100 * a['acc']:.2f} %, InvE {100 * d['inve_paper']:.2f} vs {100 * a['inve_paper']:.2f} (x 1e-2, "
        "lower is better)"
    )
    if demo.extra_method != "none":
        e = by_method[demo.extra_method]
        d_acc, d_inv = 100 * (d["acc"] - e["acc"]), 100 * (d["inve_paper"] - e["inve_paper"])
        holds = d_acc > 0 and d_inv < 0
        se = accuracy_difference_se(d["acc"], e["acc"], d["test_images"])
        noise = "within" if abs(d_acc) < 2 * se else "outside"
        verdict += (
            f"; {demo.extra_method}: {100 * e['acc']:.2f} %, InvE {100 * e['inve_paper']:.2f}. DEC - "
            f"{demo.extra_method}: {d_acc:+.2f} points (standard error {se:.2f} at "
            f"{d['test_images']} scenes: {noise} the noise), InvE {d_inv:+.2f}: "
            + ("the DEC beats it on both" if holds else "the DEC does not beat it on both")
            + " (one seed; the protocol's paired differences over seeds are in docs/mnist/protocol.md)"
        )
    warps = [f for f in summary["files"] if Path(f).name.startswith("canonical_warps_") and "_dec" in f]
    if warps:
        verdict += f". The DEC's learned warps: {warps[0]}"
    print(verdict)
    print("files: " + ", ".join(summary["files"]))
    minutes = (time.perf_counter() - t0) / 60
    print(f"demo finished in {minutes:.1f} min")
    (results_dir / "demo_summary.json").write_text(
        json.dumps({"verdict": verdict, "minutes": minutes, "runs": runs}, indent=1)
    )
    if demo.docs_dir:
        _write_docs(Path(demo.docs_dir), summary["files"], table, verdict, minutes, cfg)
    return 0


def accuracy_difference_se(acc_a: float, acc_b: float, n: int) -> float:
    """Standard error, in points, of the difference of two accuracies on ``n`` test items each (binomial,
    as if independent: an upper bound for paired runs on the same items).

    Example:
        >>> round(accuracy_difference_se(0.5, 0.5, 1000), 2)
        2.24
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return 100 * math.sqrt((acc_a * (1 - acc_a) + acc_b * (1 - acc_b)) / n)


def _write_docs(
    folder: Path, files: list[str], table: str, verdict: str, minutes: float, cfg: Namespace
) -> None:
    """Copy the demo's plots and tables into the docs (the tutorial includes ``demo/output.md``)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.endswith(".png"):
            shutil.copyfile(f, folder / Path(f).name)
    images = "\n\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in files if f.endswith(".png"))
    h, w = cfg.data.size
    text = (
        f"<!-- written by `lse-mnist demo --demo.docs_dir {folder}`; do not edit -->\n\n"
        f"{cfg.model.backbone}, {w}x{h} canvas, {cfg.data.train_size} training scenes; "
        f"demo time {minutes:.1f} min.\n\n{table.replace('### ', '#### ')}\n**{verdict}**\n\n{images}\n"
    )
    (folder / "output.md").write_text(text)
