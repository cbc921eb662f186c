r"""``lse-mnist evaluate``: the paper's metrics for trained runs, then Tables 2 and 3 and the plots.

For each run folder (its ``config.yaml`` rebuilds the model, ``final.safetensors`` holds the weights, or the
newest intact checkpoint when there is no final file), on the test scenes (digits of MNIST's test split;
``eval.split val`` evaluates the validation scenes instead, for choosing settings without the test set):

- ``acc``: top-1 accuracy on the test scenes as drawn (digit factors ``U[data.scale_range]``);
- ``inve_paper`` / ``inve_reference``: InvE (eq. 24) on softmax probabilities, the reference image being
  the same digits at scale 1 (same centres) and the transformed ones ``eval.inv_rescalings`` re-renderings
  with every digit at its own factor ``U[eval.inv_scale_range]``; ``paper`` is the squared L2 of the paper,
  ``reference`` the relative L2 of the authors' code. Tables show them x 1e-2;
- ``buckets``: Table 3, the scenes re-rendered with every digit's factor ``U[bucket]`` for each bucket,
  accuracy per bucket with mean and population std over the buckets;
- ``curve``: accuracy with all three digits at one factor, for each of ``eval.curve_scales``;
- ``canonicalizer`` (models with canonicalizers): what they do to the test scenes. ``warp_log_scale_mean`` /
  ``_max``: mean and largest $|\log|$ slope of their warps on the scenes as drawn (0: the identity,
  `lse_common.objectives.warp_statistics`); ``equ_elem``: the element-equivariance error of eq. 5 between
  each scene and its copy warped by a random monotone scaling (``ELEMENT_GRID`` intervals, local scales in
  ``ELEMENT_RANGE``, the training warps' distribution; 0: equivariant, 1: the warp is ignored), per scene
  and averaged over the scenes, on a uniform grid of points; ``equ_elem_content``: the same weighted by the
  scene's content, where a warp is visible (`lse_common.objectives.element_equivariance`).

Every re-rendering is a function of ``(eval.seed, scene index)``, so all runs see the same images. The
metrics are lsmetrics' `Metric` classes: under ``torchrun --nproc_per_node N lse-mnist evaluate ...`` each
process evaluates its own block of scenes and ``compute()`` adds up the processes' counts and sums, giving
the table one process gives. The numbers are stored in ``<run>/eval.json`` (``eval-val.json`` for the
validation split) with the settings and the SHA-256 of the weights; a stored result is reused only when both
match (``eval.force`` re-evaluates anyway).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import lsmetrics
import monowarp
from lse_common import broadcast_object, cleanup_distributed, init_distributed, load_checkpoint
from lse_common.engine import place_model
from lse_common.evaluation import (
    batches,
    load_run_config,
    load_stored_result,
    shard,
    store_result,
    weights_digest,
)
from lse_common.options import RuntimeOptions

from .data import SceneDataset, prepare_data_split
from .generator import sample_factors
from .models import DigitClassifier, build_model
from .options import MnistEval, row_name

__all__ = [
    "eval_settings",
    "evaluate_run",
    "evaluate_runs",
    "load_run",
    "result_file",
    "run_config",
    "run_row",
]

logger = logging.getLogger(__name__)

STREAM_INV, STREAM_BUCKET, STREAM_CURVE, STREAM_ELEMENT = 10, 20, 40, 60
#: The random monotone scalings of the element-equivariance probe: grid and local scale range.
ELEMENT_GRID, ELEMENT_RANGE = (4, 4), (0.5, 2.0)


def run_config(run_dir: str | Path, ev: MnistEval | None = None) -> tuple[Any, Path]:
    """The training options of a run folder (from its ``config.yaml``) and its weights file.

    Args:
        run_dir: the run folder.
        ev: evaluation options whose ``data_dir`` replaces the run's data folder.

    Raises:
        FileNotFoundError: if the folder has no ``config.yaml`` or no weights.
    """
    from .cli import APP

    return load_run_config(APP, run_dir, data_dir=ev.data_dir if ev is not None else None)


def load_run(run_dir: str | Path, ev: MnistEval | None = None) -> tuple[Any, DigitClassifier, Path]:
    """`run_config` and the trained model built from it, with the run's weights loaded."""
    cfg, weights = run_config(run_dir, ev)
    model = build_model(
        cfg.model, cfg.data.size, cfg.method, cfg.canon, for_training=False, layout=cfg.data.layout
    )
    load_checkpoint(weights, model)
    return cfg, model, weights


def run_row(cfg: Any) -> str:
    """The table row of a run's training options (`row_name`: ``aug_continued``, ``dec_ce``, ...)."""
    return row_name(
        cfg.method,
        init_from=cfg.train.init_from,
        consistency_weight=cfg.train.consistency_weight,
        element_weight=cfg.canon.element_weight,
    )


def result_file(ev: MnistEval) -> str:
    """``eval.json`` for the test split, ``eval-val.json`` for the validation split."""
    return "eval.json" if ev.split == "test" else f"eval-{ev.split}.json"


def eval_settings(cfg: Any, ev: MnistEval) -> dict[str, Any]:
    """What a result depends on besides the weights: a stored result is reused only if these match."""
    data = cfg.data
    return {
        "split": ev.split,
        "size": data.val_size if ev.split == "val" else (ev.test_size or data.test_size),
        "eval_size": ev.size,
        "data_seed": data.seed,
        "data_scale_range": list(data.scale_range),
        "source": data.source,
        "layout": data.layout,
        "canvas": list(data.size),
        "inv_rescalings": ev.inv_rescalings,
        "inv_scale_range": list(ev.inv_scale_range),
        "buckets": list(ev.buckets),
        "curve_scales": list(ev.curve_scales),
        "eval_seed": ev.seed,
        "element_probe": {"grid": list(ELEMENT_GRID), "scale_range": list(ELEMENT_RANGE)},
    }


def evaluate_runs(runs: list[str], ev: MnistEval, runtime: RuntimeOptions) -> list[dict]:
    """`evaluate_run` for each run (every process of a torchrun job takes part in each); a stored result made
    from the same weights with the same settings is reused unless ``ev.force``."""
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    info = init_distributed(runtime.device)
    try:
        results = []
        for run in runs:
            stored, digest = None, None
            if info.is_main:
                cfg, weights = run_config(run, ev)
                digest = weights_digest(weights)
                if not ev.force:
                    stored = load_stored_result(
                        Path(run) / result_file(ev), settings=eval_settings(cfg, ev), digest=digest
                    )
                if stored is not None:
                    logger.info("%s: reusing its %s (same weights and settings)", run, result_file(ev))
                    stored["row"] = run_row(cfg)
            stored, digest = broadcast_object((stored, digest))
            if stored is None:
                stored = evaluate_run(run, ev, runtime, info=info, digest=digest)
            results.append(stored)
        return results
    finally:
        cleanup_distributed()


def _predict(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, chunk: int | None = None
) -> torch.Tensor:
    parts = images.split(chunk) if chunk else (images,)
    return torch.cat([model(p.to(device).float() / 255.0).float().softmax(1) for p in parts])


class _CanonicalizerProbe:
    """The ``canonicalizer`` entries of a result (module docstring): one forward pass with the canonicalizers'
    results on a block of scenes and their warped copies; the warps are drawn once per run for all scenes
    (seeded), so every process and every run sees the same ones."""

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        from torchmetrics import MaxMetric, MeanMetric

        generator = torch.Generator().manual_seed(1_000 * seed + STREAM_ELEMENT)
        self.elements = monowarp.sample_monotone_scale(n, ELEMENT_GRID, ELEMENT_RANGE, generator=generator)
        self.metrics = {
            "warp_log_scale_mean": MeanMetric(),
            "warp_log_scale_max": MaxMetric(),
            "equ_elem": MeanMetric(),
            "equ_elem_content": MeanMetric(),
        }
        for m in self.metrics.values():
            m.to(device)

    def update(self, model: torch.nn.Module, images: torch.Tensor, idx: Any, device: torch.device) -> None:
        from types import SimpleNamespace

        from lse_common.objectives import element_equivariance, warp_statistics

        x = images.to(device).float() / 255.0
        g = monowarp.MonotoneScale(
            self.elements.knots_x[idx].to(device), self.elements.knots_y[idx].to(device), validate=False
        )
        pair = torch.cat([x, monowarp.unwarp(x, g)])
        _, results = model(pair, return_results=True)
        b = len(idx)
        drawn = {
            key: SimpleNamespace(element=r.element[:b])
            for key, r in (results or {}).items()
            if getattr(r, "element", None) is not None
        }
        stats = warp_statistics(drawn)
        if stats:
            self.metrics["warp_log_scale_mean"].update(stats["warp_log_scale_mean"], b)
            self.metrics["warp_log_scale_max"].update(stats["warp_log_scale_max"])
        for key, images_ in (("equ_elem", None), ("equ_elem_content", pair)):
            value = element_equivariance(results or {}, g, "unwarp", images=images_, reduction="none")
            if value is not None:
                self.metrics[key].update(value.float())

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {"element_grid": list(ELEMENT_GRID), "element_scale_range": list(ELEMENT_RANGE)}
        for key, metric in self.metrics.items():
            value = metric.compute()
            out[key] = float(value) if torch.isfinite(value) else None
        return out


@torch.no_grad()  # not inference_mode: Optim differentiates its energy inside (torch.enable_grad)
def evaluate_run(
    run_dir: str | Path,
    ev: MnistEval,
    runtime: RuntimeOptions,
    *,
    info: Any = None,
    write: bool = True,
    digest: str | None = None,
) -> dict[str, Any]:
    """Evaluate one run on this process's block of scenes; every process returns the whole result (see the
    module docstring). Rank 0 stores ``eval.json`` and draws the learned warps (with ``write``); ``digest``
    is the weights' SHA-256 when the caller has it already."""
    info = info or init_distributed(runtime.device)
    device = info.device
    cfg, model, weights = load_run(run_dir, ev)
    place_model(model, device, channels_last=runtime.channels_last).eval()
    test = prepare_data_split(
        cfg.data, ev.split, progress=runtime.progress and info.is_main, test_size=ev.test_size
    )
    ds = SceneDataset(test, cfg.data.size)
    n = min(len(ds), ev.size or len(ds))
    k = ev.inv_rescalings
    inv_factors = sample_factors(n, k, seed=ev.seed, stream=STREAM_INV, scale_range=ev.inv_scale_range)
    edges = list(ev.buckets)
    nb = len(edges) - 1
    bucket_factors = [
        sample_factors(n, 1, seed=ev.seed, stream=STREAM_BUCKET + b, scale_range=(edges[b], edges[b + 1]))[
            :, 0
        ]
        for b in range(nb)
    ]
    metrics = {
        "acc": lsmetrics.PerScaleAccuracy(1),
        "acc_rescaled": lsmetrics.PerScaleAccuracy(1),
        "inve_paper": lsmetrics.InvarianceError("paper"),
        "inve_reference": lsmetrics.InvarianceError("reference"),
        "buckets": lsmetrics.PerScaleAccuracy(nb),
        "curve": lsmetrics.PerScaleAccuracy(max(1, len(ev.curve_scales))),
    }
    for m in metrics.values():
        m.to(device)
    probe = _CanonicalizerProbe(n, ev.seed, device) if model.adapted else None
    labels_all = torch.as_tensor(test.spec.labels[:n])
    mine = shard(n, info.rank, info.world_size)
    bar = tqdm(
        total=len(mine),
        desc=f"evaluate {Path(run_dir).name}",
        unit="img",
        disable=not (runtime.progress and info.is_main),
        leave=False,
    )
    curve = [float(f) for f in ev.curve_scales]
    for idx in batches(mine, ev.batch_size):
        y = labels_all[idx].to(device)
        zeros = torch.zeros_like(y)
        # every rendering of this block of scenes in one forward pass: as drawn, at scale 1, the k
        # rescalings of InvE, the buckets and the curve factors
        views = [ds.images_at(idx), ds.render(idx, 1.0)]
        views += [ds.render(idx, inv_factors[idx, j]) for j in range(k)]
        views += [ds.render(idx, bucket_factors[b][idx]) for b in range(nb)]
        views += [ds.render(idx, factor) for factor in curve]
        probs = _predict(model, torch.cat(views), device, ev.forward_batch)
        probs = probs.unflatten(0, (len(views), len(idx)))
        p, reference, transformed = probs[0], probs[1], probs[2 : 2 + k].transpose(0, 1)
        metrics["acc"].update(p.argmax(1) == y, zeros)
        metrics["acc_rescaled"].update(
            (transformed.argmax(2) == y[:, None]).flatten(), zeros.repeat_interleave(k)
        )
        metrics["inve_paper"].update(reference, transformed)
        metrics["inve_reference"].update(reference, transformed)
        hits = probs[2 + k :].argmax(2) == y  # (nb + curve, B)
        for b in range(nb):
            metrics["buckets"].update(hits[b], torch.full_like(y, b))
        for c in range(len(curve)):
            metrics["curve"].update(hits[nb + c], torch.full_like(y, c))
        if probe is not None:
            probe.update(model, views[0], idx, device)
        bar.update(len(idx))
    bar.close()
    values = {name: m.compute() for name, m in metrics.items()}
    buckets, curve = values["buckets"], values["curve"]
    result = {
        "run": str(run_dir),
        "method": cfg.method,
        "row": run_row(cfg),
        "backbone": cfg.model.backbone,
        "seed": cfg.train.seed,
        "canvas": list(cfg.data.size),
        "split": ev.split,
        "test_images": n,
        "acc": float(values["acc"]["pooled"]),
        "acc_rescaled": float(values["acc_rescaled"]["pooled"]),
        "inve_paper": float(values["inve_paper"]),
        "inve_reference": float(values["inve_reference"]),
        "inv_rescalings": k,
        "inv_scale_range": list(ev.inv_scale_range),
        "bucket_edges": edges,
        "bucket_acc": torch.atleast_1d(buckets["accuracy"]).tolist(),  # torchmetrics squeezes one bucket
        "bucket_mean": float(buckets["mean"]),
        "bucket_std": float(buckets["std"]),
        "curve_scales": list(ev.curve_scales),
        "curve_acc": torch.atleast_1d(curve["accuracy"]).tolist()[: len(ev.curve_scales)],
        "settings": eval_settings(cfg, ev),
        "weights": str(weights),
        "weights_sha256": digest or weights_digest(weights),
        "processes": info.world_size,
    }
    if probe is not None:
        result["canonicalizer"] = probe.compute()
    if write and info.is_main:
        store_result(Path(run_dir) / result_file(ev), result)
        if model.adapted and ev.warp_examples > 0:
            from .plots import plot_canonicalizer_warps

            plot_canonicalizer_warps(
                model,
                ds,
                min(ev.warp_examples, n),
                device,
                Path(run_dir) / "canonical_warps.png",
                title=f"{cfg.method} on {cfg.model.backbone}: learned canonicalization",
            )
    logger.info(
        "%s: acc %.2f %%, InvE %.2f x1e-2 (paper) / %.2f x1e-2 (reference)",
        run_dir,
        100 * result["acc"],
        100 * result["inve_paper"],
        100 * result["inve_reference"],
    )
    return result
