"""``lse-mnist evaluate``: the paper's metrics for trained runs, then Tables 2 and 3 and the plots.

For each run folder (its ``config.yaml`` rebuilds the model, ``final.safetensors`` holds the weights, or
the latest checkpoint when there is no final file), on the test scenes (digits of MNIST's test split;
``eval_split="val"`` evaluates the validation scenes instead, for choosing settings without the test set):

- ``acc``: top-1 accuracy on the test scenes as drawn (digit factors ``U[scale_range]``);
- ``inve_paper`` / ``inve_reference``: InvE (eq. 24) by `lsmetrics.invariance_error` on softmax
  probabilities, the reference image being the same digits at scale 1 (same centres) and the
  transformed ones ``inv_rescalings`` (8) re-renderings with every digit at its own factor
  ``U[inv_scale_range]``, over the whole test set; ``paper`` is the squared L2 of the paper,
  ``reference`` the relative L2 of the authors' code. Tables show them x 1e-2;
- ``buckets``: Table 3, the test scenes re-rendered with every digit's factor ``U[bucket]`` for each
  bucket ([0.4, 1], [1, 2], [2, 3] by default), accuracy per bucket, with mean and population std over
  the buckets (`lsmetrics.per_scale_accuracy_from_counts`);
- ``curve``: accuracy with all three digits at one factor, for each of ``curve_scales``.

Every re-rendering is a function of ``(eval_seed, test index)``, so all runs see the same images. The
numbers are stored in ``<run>/eval.json`` (``eval-val.json`` for the validation split); `aggregate`
turns several runs into the tables (mean and sample std over seeds) and plots.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import lsmetrics
from lse_common import atomic_write_bytes, find_latest, load_checkpoint, resolve_options

from .data import SceneDataset, prepare_split_from_options
from .generator import sample_factors
from .models import DigitClassifier, build_model
from .options import MnistOptions, canvas_of

__all__ = ["EVAL_OPTIONS", "eval_settings", "evaluate_run", "evaluate_runs", "load_run", "result_file"]

logger = logging.getLogger(__name__)

EVAL_OPTIONS = (
    "eval_batch_size",
    "eval_size",
    "inv_rescalings",
    "inv_scale_range",
    "buckets",
    "curve_scales",
    "eval_seed",
    "data_dir",
    "device",
    "progress",
    "threads",
    "warp_examples",
    "num_workers",
    "test_size",
    "val_size",
    "eval_split",
)
"""Options of a run that ``evaluate`` may override from its own command line or config."""

STREAM_INV, STREAM_BUCKET, STREAM_CURVE = 10, 20, 40


def load_run(
    run_dir: str | Path, overrides: dict[str, Any] | None = None
) -> tuple[MnistOptions, DigitClassifier]:
    """The options and the trained model of a run folder.

    Raises:
        FileNotFoundError: if the folder has no ``config.yaml`` or no weights.
    """
    run = Path(run_dir)
    config = run / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{run} is not a run folder: no config.yaml")
    opts = resolve_options(MnistOptions, config=config, cli=overrides or {})
    model = build_model(opts, for_training=False)
    weights = run / "final.safetensors"
    if weights.is_file():
        load_checkpoint(weights, model)
    else:
        latest = find_latest(run / "checkpoints")
        if latest is None:
            raise FileNotFoundError(f"{run} has neither final.safetensors nor a checkpoint")
        load_checkpoint(latest, model)
    return opts, model


def result_file(opts: MnistOptions) -> str:
    """``eval.json`` for the test split, ``eval-val.json`` for the validation split."""
    return "eval.json" if opts.eval_split == "test" else f"eval-{opts.eval_split}.json"


def eval_settings(opts: MnistOptions) -> dict[str, Any]:
    """What an ``eval.json`` depends on besides the weights: a stored result is reused only if these match."""
    return {
        "split": opts.eval_split,
        "size": opts.val_size if opts.eval_split == "val" else opts.test_size,
        "eval_size": opts.eval_size,
        "data_seed": opts.data_seed,
        "canvas": list(canvas_of(opts)),
        "inv_rescalings": opts.inv_rescalings,
        "inv_scale_range": list(opts.inv_scale_range),
        "buckets": list(opts.buckets),
        "curve_scales": list(opts.curve_scales),
        "eval_seed": opts.eval_seed,
    }


def evaluate_runs(
    runs: list[str], overrides: dict[str, Any] | None = None, *, force: bool = False
) -> list[dict]:
    """`evaluate_run` for each run, reusing an ``eval.json`` made with the same settings unless ``force``."""
    results = []
    for run in runs:
        config = Path(run) / "config.yaml"
        if not force and config.is_file():
            opts = resolve_options(MnistOptions, config=config, cli=overrides or {})
            stored = Path(run) / result_file(opts)
            previous = json.loads(stored.read_text()) if stored.is_file() else {}
            if previous.get("settings") == eval_settings(opts):
                logger.info("%s: reusing its %s (same settings; --force re-evaluates)", run, stored.name)
                results.append(previous)
                continue
        results.append(evaluate_run(run, overrides))
    return results


def _predict(model: torch.nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    return model(images.to(device).float() / 255.0).float().softmax(1)


@torch.no_grad()
def evaluate_run(
    run_dir: str | Path, overrides: dict[str, Any] | None = None, *, write: bool = True
) -> dict[str, Any]:
    """Evaluate one run (see the module docstring); returns and (with ``write``) stores ``eval.json``."""
    opts, model = load_run(run_dir, overrides)
    device = torch.device(opts.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    model.to(device).eval()
    test = prepare_split_from_options(opts, opts.eval_split)
    ds = SceneDataset(test, canvas_of(opts))
    n = min(len(ds), opts.eval_size or len(ds))
    labels_all = torch.as_tensor(test.spec.labels[:n])
    k = opts.inv_rescalings
    inv_factors = sample_factors(
        n, k, seed=opts.eval_seed, stream=STREAM_INV, scale_range=opts.inv_scale_range
    )
    edges = list(opts.buckets)
    nb = len(edges) - 1
    bucket_factors = [
        sample_factors(
            n, 1, seed=opts.eval_seed, stream=STREAM_BUCKET + b, scale_range=(edges[b], edges[b + 1])
        )[:, 0]
        for b in range(nb)
    ]
    correct = 0
    correct_rescaled = 0
    inv_sum = {"paper": 0.0, "reference": 0.0}
    bucket_correct = torch.zeros(nb, dtype=torch.long)
    curve_correct = torch.zeros(len(opts.curve_scales), dtype=torch.long)
    bar = tqdm(
        total=n, desc=f"evaluate {Path(run_dir).name}", unit="img", disable=not opts.progress, leave=False
    )
    for s in range(0, n, opts.eval_batch_size):
        idx = np.arange(s, min(n, s + opts.eval_batch_size))
        y = labels_all[idx].to(device)
        images = torch.from_numpy(np.asarray(test.images[idx])).unsqueeze(1)  # type: ignore[index]
        p = _predict(model, images, device)
        correct += int((p.argmax(1) == y).sum())
        reference = _predict(model, ds.render(idx, 1.0), device)
        transformed = torch.stack(
            [_predict(model, ds.render(idx, inv_factors[idx, j]), device) for j in range(k)], dim=1
        )
        correct_rescaled += int((transformed.argmax(2) == y[:, None]).sum())
        for variant in inv_sum:
            inv_sum[variant] += float(
                lsmetrics.invariance_error(reference, transformed, variant=variant, reduction="sum")
            )
        for b in range(nb):
            pb = _predict(model, ds.render(idx, bucket_factors[b][idx]), device)
            bucket_correct[b] += int((pb.argmax(1) == y).sum())
        for c, factor in enumerate(opts.curve_scales):
            pc = _predict(model, ds.render(idx, float(factor)), device)
            curve_correct[c] += int((pc.argmax(1) == y).sum())
        bar.update(len(idx))
    bar.close()
    total = torch.full((nb,), n, dtype=torch.long)
    buckets = lsmetrics.per_scale_accuracy_from_counts(bucket_correct, total)
    curve = lsmetrics.per_scale_accuracy_from_counts(curve_correct, torch.full_like(curve_correct, n))
    result = {
        "run": str(run_dir),
        "method": opts.method,
        "backbone": opts.backbone,
        "seed": opts.seed,
        "canvas": list(canvas_of(opts)),
        "split": opts.eval_split,
        "test_images": n,
        "acc": correct / n,
        "acc_rescaled": correct_rescaled / (n * k),
        "inve_paper": inv_sum["paper"] / (n * k),
        "inve_reference": inv_sum["reference"] / (n * k),
        "inv_rescalings": k,
        "inv_scale_range": list(opts.inv_scale_range),
        "bucket_edges": edges,
        "bucket_acc": buckets.accuracy.tolist(),
        "bucket_mean": float(buckets.mean),
        "bucket_std": float(buckets.std),
        "curve_scales": list(opts.curve_scales),
        "curve_acc": curve.accuracy.tolist(),
        "settings": eval_settings(opts),
    }
    if write:
        atomic_write_bytes(Path(run_dir) / result_file(opts), json.dumps(result, indent=1).encode())
        if model.adapted and opts.warp_examples > 0:
            from .plots import plot_canonicalizer_warps

            plot_canonicalizer_warps(
                model,
                ds,
                min(opts.warp_examples, n),
                device,
                Path(run_dir) / "canonical_warps.png",
                title=f"{opts.method} on {opts.backbone}: learned canonicalization",
            )
    logger.info(
        "%s: acc %.2f %%, InvE %.2f x1e-2 (paper) / %.2f x1e-2 (reference)",
        run_dir,
        100 * result["acc"],
        100 * result["inve_paper"],
        100 * result["inve_reference"],
    )
    return result
