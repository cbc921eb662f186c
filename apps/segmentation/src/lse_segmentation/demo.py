"""``lse-segmentation demo``: Table 1 in miniature, in a few minutes on 2 CPU cores.

1. Data: render the small data set (`lse_segmentation.options.SMALL_DATA`: 64x64 images of 10 object
   classes, 300 training, 50 validation and 100 test scenes with 2 distance variants each).
2. ``aug``: fine-tune an ImageNet-pretrained EfficientNet-Lite0 (weights that ship in a package) with its
   DPT-style head, under random monotone scaling augmentation of images and label maps.
3. ``dec``: from the ``aug`` weights, add DECs in the equivariant form of eq. 21 (at the input, with the
   logits warped back, and before the first stage) and fine-tune backbone and DECs with separate learning
   rates, as the paper does.
4. Optionally one more method fine-tuned from ``aug`` the same way (``--demo.extra_method augl``).
5. Evaluate every run on the test split (mIoU, EquE under random monotone scalings, distance-variant
   consistency; the DEC with the exact and with the paper's approximate inverse), print Table 1, save the
   prediction figure.

The epochs are fixed, so the result does not depend on how busy the machine is; on 2 CPU cores shared with
other jobs the demo took 8.4 minutes (0.3 rendering, 6.0 training, 2.0 evaluation). Everything goes under
``--demo.out_dir`` (default ``runs/seg-demo``); a second demo in the same folder continues its runs when its
options are the same and refuses otherwise (``--demo.overwrite true`` replaces them). Every stage is an
ordinary ``lse-segmentation train`` run with the demo's presets; ``--config`` and flags override them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jsonargparse import Namespace
from jsonargparse.typing import NonNegativeFloat, PositiveFloat, PositiveInt

from .options import SMALL_DATA

__all__ = ["DEMO_DEFAULTS", "DemoOptions", "run_demo"]

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
        dec_consistency: weight of the equivariance term the DEC is fine-tuned with (0: off, the paper's).
        extra_method: one more method fine-tuned from aug like dec (augl, canon; none: skip).
        docs_dir: also copy the tables and the figure there.
    """

    out_dir: str = "runs/seg-demo"
    overwrite: bool = False
    aug_epochs: PositiveInt = 4
    aug_lr: PositiveFloat = 2e-3
    dec_epochs: PositiveInt = 2
    dec_lr: PositiveFloat = 2e-4
    dec_canon_lr: PositiveFloat = 1e-2
    dec_consistency: NonNegativeFloat = 0.0
    extra_method: Literal["augl", "canon", "none"] = "none"
    docs_dir: str | None = None


DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {k: v for k, v in SMALL_DATA.items() if k != "dir"},  # the demo's data go under demo.out_dir
    "model": {"backbone": "tf_efficientnet_lite0", "pretrained": True, "head_width": 32},
    "train": {"batch_size": 16, "sched": "cosine", "weight_decay": 0.01, "log_every": 10},
    "canon": {
        "layers": ["input", 0],
        "mode": "equivariant",
        "dec_widths": [8, 16],
        "dec_view_size": 48,
        "dec_max_iter": 5,
    },
    "eval": {"batch_size": 16, "equ_rescalings": 2, "figure_examples": 4},
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
    """Run the demo (see the module docstring) with the options of ``lse-segmentation demo``; returns 0."""
    from .data import prepare_split
    from .evaluation import evaluate_runs
    from .tables import aggregate
    from .training import train

    t0 = time.perf_counter()
    demo: DemoOptions = cfg.demo
    root = Path(demo.out_dir)
    logger.info("demo: %s, writing to %s", cfg.model.backbone, root)
    data = dataclasses.replace(cfg.data, dir=str(root / "data"))
    for split in ("train", "val", "test"):  # render and cache the data once, before any run
        prepare_split(data, split, progress=cfg.runtime.progress)
    t_data = time.perf_counter() - t0
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
    t_train = time.perf_counter() - t0 - t_data
    runs = [stage.train.out_dir for stage in stages]
    ev = dataclasses.replace(cfg.eval, data_dir=None)
    results = evaluate_runs(runs, ev, cfg.runtime)
    results_dir = Path(cfg.eval.results_dir or root / "results")
    summary = aggregate(results, results_dir)
    table = (results_dir / "table1.md").read_text()
    print(table)
    by_method = {r["method"]: r for r in results}
    a, d = by_method["aug"], by_method["dec"]
    verdict = (
        f"DEC vs Aug on {a['images']} test images: mIoU {100 * d['miou']:.2f} % vs {100 * a['miou']:.2f} %, "
        f"EquE {d['equ_paper']:.4f} vs {a['equ_paper']:.4f} (lower is better); DEC warp size "
        f"{d.get('warp_log_scale_mean', float('nan')):.3f} (mean |log slope|)"
    )
    print(verdict)
    print("files: " + ", ".join(summary["files"]))
    minutes = (time.perf_counter() - t0) / 60
    print(
        f"demo finished in {minutes:.1f} min (data {t_data / 60:.1f}, training {t_train / 60:.1f}, "
        f"evaluation {minutes - (t_data + t_train) / 60:.1f})"
    )
    (results_dir / "demo_summary.json").write_text(
        json.dumps({"verdict": verdict, "minutes": minutes, "runs": runs}, indent=1)
    )
    if demo.docs_dir:
        _write_docs(Path(demo.docs_dir), summary["files"], table, verdict, minutes)
    return 0


def _write_docs(folder: Path, files: list[str], table: str, verdict: str, minutes: float) -> None:
    """Copy the demo's figure and table into the docs (``output.md``)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.endswith(".png"):
            shutil.copyfile(f, folder / Path(f).name)
    images = "\n\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in files if f.endswith(".png"))
    text = (
        f"<!-- written by `lse-segmentation demo --demo.docs_dir {folder}`; do not edit -->\n\n"
        f"Demo time {minutes:.1f} min.\n\n{table.replace('### ', '#### ')}\n**{verdict}**\n\n{images}\n"
    )
    (folder / "output.md").write_text(text)
