"""``lse-mnist demo``: what the DEC is for, measured in a few minutes on a laptop CPU.

1. Data: the embedded digits (or a better source when there is one), small canvas, train / validation /
   test scenes (test digits come from MNIST's test split).
2. ``aug``: fine-tune an ImageNet-pretrained EfficientNet-Lite0 (weights that ship in a package) with random
   monotone scaling augmentation.
3. ``dec``: starting from the ``aug`` weights, add a DEC at the input and fine-tune backbone and DEC with
   separate learning rates, as the paper does, with the consistency term of eq. 25 on a doubled batch
   (clean and warped halves), as the authors' code trains its DEC.
4. ``invl``, the control: the same fine-tuning from the same ``aug`` weights, with the same consistency
   term but without the DEC, so that what the DEC itself adds can be read off the table.
5. Evaluate every run on the held-out test scenes (accuracy, InvE with 8 rescalings per image, digit-scale
   buckets, per-scale curve), print Tables 2 and 3, save the plots.

The epochs are fixed (3 for ``aug``, 1 for each fine-tuning), so the result does not depend on how
busy the machine is; on 2 CPU cores the whole demo takes about 10 minutes.

Every stage is an ordinary ``lse-mnist train`` / ``evaluate`` run with the options below on top of the
defaults; ``--config`` and flags override them (e.g. ``--backbone resnet18 --no-pretrained``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lse_common import load_yaml, resolve_options

from .options import MnistOptions, canvas_of

__all__ = ["DEMO_DEFAULTS", "DemoOptions", "run_demo"]

logger = logging.getLogger(__name__)


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class DemoOptions:
    demo_dir: str = _help("folder of the demo's data, runs and results", "runs/mnist-demo")
    aug_epochs: int = _help("epochs of the aug run", 3)
    aug_lr: float = _help("learning rate of the aug run", 2e-3)
    dec_epochs: int = _help("epochs of the dec (and extra) fine-tuning from aug", 1)
    dec_lr: float = _help("backbone learning rate of the fine-tuning runs", 2e-4)
    dec_canon_lr: float = _help("learning rate of the DEC modules", 2e-3)
    dec_consistency: float = _help(
        "weight of the consistency term the DEC is fine-tuned with (eq. 25 on a doubled batch; 0: off)", 1.0
    )
    extra_method: str | None = _help(
        "one more baseline fine-tuned from aug like dec (invl: the same consistency term without the DEC; "
        "none: skip)",
        "invl",
    )
    docs_dir: str | None = _help("also copy the tables and plots there (docs/mnist/demo)", None)


DEMO_DEFAULTS: dict[str, Any] = {
    "canvas": 96,
    "canvas_height": 32,
    "head": "digits",
    "backbone": "tf_efficientnet_lite0",
    "pretrained": True,
    "train_size": 6000,
    "val_size": 500,
    "test_size": 1000,
    "batch_size": 64,
    "scheduler": "cosine",
    "weight_decay": 0.01,
    "num_workers": 0,
    "eval_batch_size": 200,
    "log_every": 20,
    "canon_layers": ["input"],
    "dec_widths": [8, 16],
    "dec_view_size": 48,
    "dec_max_iter": 5,
    "curve_scales": [0.4, 1.0, 2.0, 3.0],
    "warp_examples": 6,
}


def _stage(base: MnistOptions, demo: DemoOptions, method: str, **changes: Any) -> MnistOptions:
    return dataclasses.replace(base, method=method, out_dir=str(Path(demo.demo_dir) / method), **changes)


def run_demo(config: str | None = None, cli: dict | None = None, demo_cli: dict | None = None) -> int:
    """Run the demo (see the module docstring); returns the exit status."""
    from .data import prepare_split_from_options
    from .evaluation import EVAL_OPTIONS, evaluate_run
    from .tables import aggregate
    from .training import train

    t0 = time.perf_counter()
    file_values = {k.replace("-", "_"): v for k, v in (load_yaml(config) if config else {}).items()}
    demo_names = {f.name for f in dataclasses.fields(DemoOptions)}
    demo = resolve_options(
        DemoOptions, config={k: v for k, v in file_values.items() if k in demo_names}, cli=demo_cli or {}
    )
    layered = {
        **DEMO_DEFAULTS,
        "data_dir": str(Path(demo.demo_dir) / "data"),
        "results_dir": str(Path(demo.demo_dir) / "results"),
    }
    layered.update({k: v for k, v in file_values.items() if k not in demo_names})
    base = resolve_options(MnistOptions, config=layered, cli=cli or {})

    logger.info(
        "demo: %s on %dx%d scenes, writing to %s", base.backbone, *canvas_of(base)[::-1], demo.demo_dir
    )
    for split in ("train", "val", "test"):  # draw, render and cache the data once, before any run
        prepare_split_from_options(base, split)
    aug = _stage(base, demo, "aug", epochs=demo.aug_epochs, lr=demo.aug_lr)
    dec = _stage(
        base,
        demo,
        "dec",
        epochs=demo.dec_epochs,
        lr=demo.dec_lr,
        grad_clip=1.0,
        canon_lr=demo.dec_canon_lr,
        consistency_weight=demo.dec_consistency,
        init_from=aug.out_dir,
    )
    extra = None
    if demo.extra_method and demo.extra_method not in ("none", "aug", "dec"):
        extra = _stage(
            base,
            demo,
            demo.extra_method,
            epochs=demo.dec_epochs,
            lr=demo.dec_lr,
            grad_clip=1.0,
            canon_lr=demo.dec_canon_lr,
            init_from=aug.out_dir,
        )
    runs = []
    for stage in (aug, dec, extra):
        if stage is not None:
            train(stage)
            runs.append(stage.out_dir)
    overrides = {k: getattr(base, k) for k in EVAL_OPTIONS}
    results = [evaluate_run(run, overrides) for run in runs]
    summary = aggregate(results, base.results_dir)
    table = (Path(base.results_dir) / "tables.md").read_text()
    print(table)
    by_method = {r["method"]: r for r in results}
    a, d = by_method["aug"], by_method["dec"]
    verdict = (
        f"DEC vs Aug on {a['test_images']} held-out test scenes: accuracy {100 * d['acc']:.2f} % vs "
        f"{100 * a['acc']:.2f} %, InvE {100 * d['inve_paper']:.2f} vs {100 * a['inve_paper']:.2f} (x 1e-2, "
        "lower is better)"
    )
    if extra is not None:
        e = by_method[extra.method]
        verdict += f"; {extra.method}: {100 * e['acc']:.2f} %, InvE {100 * e['inve_paper']:.2f}"
    print(verdict)
    print("files: " + ", ".join(summary["files"]))
    minutes = (time.perf_counter() - t0) / 60
    print(f"demo finished in {minutes:.1f} min")
    (Path(base.results_dir) / "demo_summary.json").write_text(
        json.dumps({"verdict": verdict, "minutes": minutes, "runs": runs}, indent=1)
    )
    if demo.docs_dir:
        _write_docs(Path(demo.docs_dir), summary["files"], table, verdict, minutes, base)
    return 0


def _write_docs(
    folder: Path, files: list[str], table: str, verdict: str, minutes: float, base: MnistOptions
) -> None:
    """Copy the demo's plots and tables into the docs (the tutorial includes ``demo/output.md``)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        if f.endswith(".png"):
            shutil.copyfile(f, folder / Path(f).name)
    images = "\n\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in files if f.endswith(".png"))
    text = (
        f"<!-- written by `lse-mnist demo --docs-dir {folder}`; do not edit -->\n\n"
        f"{base.backbone}, {canvas_of(base)[1]}x{canvas_of(base)[0]} canvas, "
        f"{base.train_size} training scenes; "
        f"demo time {minutes:.1f} min.\n\n{table.replace('### ', '#### ')}\n**{verdict}**\n\n{images}\n"
    )
    (folder / "output.md").write_text(text)
