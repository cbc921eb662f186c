"""``lse-mnist demo``: what the DEC is for, measured in a few minutes on a laptop CPU.

1. Data: the embedded digits (or a better source when there is one), small canvas, train / validation /
   test scenes (test digits come from MNIST's test split).
2. ``aug``: fine-tune an ImageNet-pretrained EfficientNet-Lite0 (weights that ship in a package) with random
   monotone scaling augmentation.
3. ``dec``: starting from the ``aug`` weights, add DEC modules and fine-tune backbone and DEC with separate
   learning rates, as the paper does.
4. One more baseline (``invl`` by default) from the same ``aug`` weights, if the time budget allows.
5. Evaluate every run on the held-out test scenes (accuracy, InvE with 8 rescalings per image, digit-scale
   buckets, per-scale curve), print Tables 2 and 3, save the plots.

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

import numpy as np

from lse_common import load_yaml, resolve_options

from .options import MnistOptions, canvas_of

__all__ = ["DEMO_DEFAULTS", "DemoOptions", "run_demo"]

logger = logging.getLogger(__name__)


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class DemoOptions:
    demo_dir: str = _help("folder of the demo's data, runs and results", "runs/mnist-demo")
    aug_epochs: int = _help("most epochs of the aug run (fewer if the time budget requires)", 6)
    aug_lr: float = _help("learning rate of the aug run", 2e-3)
    dec_epochs: int = _help("most epochs of the dec (and extra) fine-tuning", 3)
    dec_lr: float = _help("backbone learning rate of the dec fine-tuning", 2e-4)
    dec_canon_lr: float = _help("learning rate of the DEC modules", 2e-2)
    extra_method: str | None = _help(
        "one more baseline fine-tuned from aug if time allows (none: skip)", "invl"
    )
    budget_minutes: float = _help("time budget the epochs are fitted into", 10.0)
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
    "canon_layers": ["input", "0"],
    "dec_widths": [8, 16],
    "dec_view_size": 48,
    "dec_max_iter": 5,
    "curve_scales": [0.4, 1.0, 2.0, 3.0],
    "warp_examples": 6,
}


def _stage(base: MnistOptions, demo: DemoOptions, method: str, **changes: Any) -> MnistOptions:
    return dataclasses.replace(base, method=method, out_dir=str(Path(demo.demo_dir) / method), **changes)


def _prepare(opts: MnistOptions):
    from .data import prepare_split_from_options

    data = {split: prepare_split_from_options(opts, split) for split in ("train", "val", "test")}
    return data


def _calibrate(opts: MnistOptions, images, repeats: int = 2) -> tuple[float, float]:
    """Seconds per training step and inference images per second of ``opts``' model, measured here.

    ``images``: real scenes `(N, H, W)` uint8 (the DEC's solver takes as many iterations as on the data).
    """
    import torch

    from .models import build_model
    from .training import make_step_fn

    if opts.threads:
        torch.set_num_threads(opts.threads)
    probe = dataclasses.replace(opts, init_from=None, pretrained=False, weights=None)
    model = build_model(probe, for_training=False)
    step = make_step_fn(probe)
    x = torch.from_numpy(np.array(images[: opts.batch_size])).unsqueeze(1)
    y = torch.zeros(x.shape[0], dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model.train()
    with torch.random.fork_rng():
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            optimizer.zero_grad()
            loss, _ = step(model, (x, y))
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - t)
        model.eval()
        with torch.no_grad():
            xe = torch.from_numpy(np.array(images[: opts.eval_batch_size])).unsqueeze(1).float() / 255
            t = time.perf_counter()
            model(xe)
            rate = xe.shape[0] / (time.perf_counter() - t)
    return min(times[1:]), rate


def run_demo(config: str | None = None, cli: dict | None = None, demo_cli: dict | None = None) -> int:
    """Run the demo (see the module docstring); returns the exit status."""
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
    budget = demo.budget_minutes * 60

    logger.info(
        "demo: %s on %dx%d scenes, writing to %s", base.backbone, *canvas_of(base)[::-1], demo.demo_dir
    )
    data = _prepare(base)  # data first: its time counts
    sample = data["train"].images
    aug = _stage(base, demo, "aug", epochs=demo.aug_epochs, lr=demo.aug_lr)
    dec = _stage(
        base,
        demo,
        "dec",
        epochs=demo.dec_epochs,
        lr=demo.dec_lr,
        canon_lr=demo.dec_canon_lr,
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
            canon_lr=demo.dec_canon_lr,
            init_from=aug.out_dir,
        )
    # fit the epochs into the time budget: measure a training step and inference of each model once
    cost = {o.method: _calibrate(o, sample) for o in (aug, dec)}
    per_eval = base.test_size * (2 + base.inv_rescalings + len(base.buckets) - 1 + len(base.curve_scales))
    steps = base.train_size // base.batch_size
    val_s = {m: base.val_size / rate for m, (_, rate) in cost.items()}
    eval_s = {m: per_eval / rate for m, (_, rate) in cost.items()}
    left = 0.9 * budget - (time.perf_counter() - t0) - sum(eval_s.values())
    epoch_s = {m: steps * step + val_s[m] for m, (step, _) in cost.items()}
    aug_epochs = max(1, min(demo.aug_epochs, int(0.55 * left // epoch_s["aug"])))
    dec_epochs = max(1, min(demo.dec_epochs, int((left - aug_epochs * epoch_s["aug"]) // epoch_s["dec"])))
    logger.info(
        "demo: %.0f min budget: aug %d epoch(s), dec %d epoch(s) (a step takes %.2f s / %.2f s here; "
        "evaluation about %.0f s)",
        demo.budget_minutes,
        aug_epochs,
        dec_epochs,
        cost["aug"][0],
        cost["dec"][0],
        sum(eval_s.values()),
    )
    aug = dataclasses.replace(aug, epochs=aug_epochs)
    dec = dataclasses.replace(dec, epochs=dec_epochs)
    runs = []
    train(aug)
    runs.append(aug.out_dir)
    train(dec)
    runs.append(dec.out_dir)
    if extra is not None:
        extra = dataclasses.replace(extra, epochs=dec_epochs)
        spent = time.perf_counter() - t0
        step, rate = _calibrate(extra, sample)
        needed = dec_epochs * (steps * step + base.val_size / rate) + per_eval / rate
        if spent + needed + sum(eval_s.values()) < 0.95 * budget:
            train(extra)
            runs.append(extra.out_dir)
        else:
            logger.info(
                "demo: skipping %s, the %.0f min budget would not allow it", extra.method, demo.budget_minutes
            )
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
