r"""``lse-segmentation evaluate``: Table 1's metrics for trained runs, then the tables and the figure.

For each run folder (its ``config.yaml`` rebuilds the model, ``final.safetensors`` or the newest intact
checkpoint holds the weights), on the test split (``eval.split val`` for the validation split):

- ``miou``: the data-set mIoU over the K classes and the background (`lsmetrics.DatasetMeanIoU`: one
  confusion matrix over every pixel of the split; the authors averaged per batch);
- ``equ_paper`` / ``equ_reference``: EquE (eq. 23) under ``eval.equ_rescalings`` random monotone scalings
  $\Phi$ per image (`monowarp.sample_monotone_scale` with ``eval.equ_scale_range``, drawn once from
  ``eval.seed``, so every run sees the same ones): the logits of the image warped by $S(\cdot; \Phi)$, then
  softmax, against the softmax of the logits of the warped image (the authors' order), on the valid pixels
  (those the warp does not fill from outside the image); ``paper`` is the squared L2 mean of eq. 23,
  ``reference`` the root mean of the authors' code;
- ``miou_warped``: mIoU on the warped images against the warped label maps;
- ``variant_miou`` and ``variant_consistency``: on the distance variants of each test scene (the same objects
  rendered at other distances), the mIoU over all variants, and the share of objects (a class present in
  the scene and every variant) whose majority predicted label is the same in the scene and every variant;
- for models with canonicalizers: the size of their warps (``warp_log_scale_mean``: mean $|\log|$ slope, 0
  for the identity) and, for each of ``eval.inverses`` (``exact``, ``approximate``), the metrics above with
  $S$ using that inverse (``by_inverse``): the same weights with monowarp's exact inverse and with the
  paper's per-row/per-column approximation.

The metrics are lsmetrics' `Metric` classes: under ``torchrun`` each process evaluates its own block of
images and ``compute()`` sums the processes' states. Results are stored in ``<run>/eval.json``
(``eval-val.json``) with the settings and the SHA-256 of the weights and reused only when both match. The
predictions of the first ``eval.figure_examples`` images are stored in ``<run>/predictions.npz`` for the
figure.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import lsmetrics
import monowarp
from lse_common import init_distributed, load_checkpoint
from lse_common.engine import place_model
from lse_common.evaluation import batches, load_run_config, shard, store_result, weights_digest
from lse_common.evaluation import evaluate_runs as shared_evaluate_runs
from lse_common.objectives import warp_statistics
from lse_common.options import RuntimeOptions

from .models import SegmentationModel, build_model
from .options import SegEval

__all__ = [
    "evaluate_model",
    "evaluate_run",
    "evaluate_runs",
    "load_run",
    "run_config",
    "variant_consistency",
]

logger = logging.getLogger(__name__)


def run_config(run_dir: str | Path, ev: SegEval | None = None) -> tuple[Any, Path]:
    """The training options of a run folder (``config.yaml``) and its weights file
    (`lse_common.evaluation.load_run_config`; ``ev.data_dir`` replaces the run's data folder).

    Raises:
        FileNotFoundError: if the folder has no ``config.yaml`` or no weights.
    """
    from .cli import APP

    return load_run_config(APP, run_dir, data_dir=ev.data_dir if ev is not None else None)


def load_run(run_dir: str | Path, ev: SegEval | None = None) -> tuple[Any, SegmentationModel, Path]:
    """`run_config` and the trained model built from it, with the run's weights loaded."""
    cfg, weights = run_config(run_dir, ev)
    size = (cfg.data.size, cfg.data.size)
    model = build_model(cfg.model, size, cfg.data.num_classes, cfg.method, cfg.canon, for_training=False)
    load_checkpoint(weights, model)
    return cfg, model, weights


def variant_consistency(preds: torch.Tensor, masks: torch.Tensor, num_classes: int) -> tuple[int, int]:
    """Objects whose majority predicted label agrees across the variants of their scene.

    An object is a class ``c >= 1`` present in every variant's label map of a scene; its majority label in
    a variant is the most frequent prediction on the pixels labelled ``c``.

    Args:
        preds: `(N, V, H, W)` predicted labels in ``[0, num_classes]``.
        masks: `(N, V, H, W)` true labels, 0 the background.
        num_classes: K, the object classes.

    Returns:
        ``(consistent objects, objects)``.

    Example:
        >>> m = torch.zeros(1, 2, 2, 2, dtype=torch.long); m[..., 0, :] = 1
        >>> p = m.clone(); p[0, 1, 0, 0] = 2; p[0, 1, 0, 1] = 2  # class 1 read as 2 in the second variant
        >>> variant_consistency(p, m, 2)
        (0, 1)
    """
    if preds.shape != masks.shape or preds.ndim != 4:
        raise ValueError(
            f"preds and masks must both be (N, V, H, W), got {tuple(preds.shape)} and {tuple(masks.shape)}"
        )
    k = num_classes + 1
    n, v = preds.shape[:2]
    scene = torch.arange(n * v, device=preds.device).view(n, v, 1, 1)
    index = (scene * k + masks.long()) * k + preds.long()
    counts = torch.bincount(index.flatten(), minlength=n * v * k * k).view(n, v, k, k)
    present = counts.sum(-1) > 0  # (N, V, K+1)
    majority = counts.argmax(-1)  # (N, V, K+1)
    objects = present.all(1)  # (N, K+1)
    objects[:, 0] = False
    same = (majority == majority[:, :1]).all(1)  # (N, K+1)
    return int((same & objects).sum()), int(objects.sum())


def _images(array: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 `(..., H, W, 3)` rows -> float `(B, 3, H, W)` in ``[0, 1]``."""
    x = torch.from_numpy(np.ascontiguousarray(array[idx])).to(device)
    return x.movedim(-1, -3).float().div_(255.0)


def _equ_elements(n: int, ev: SegEval) -> monowarp.MonotoneScale:
    gen = torch.Generator().manual_seed(ev.seed)
    return monowarp.sample_monotone_scale(
        n * ev.equ_rescalings, tuple(ev.equ_grid), tuple(ev.equ_scale_range), generator=gen
    )


@torch.no_grad()
def evaluate_model(
    model: SegmentationModel,
    split: Any,
    num_classes: int,
    ev: SegEval,
    *,
    device: torch.device,
    indices: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """The metrics of the module docstring for one model on (this process's block of) a split.

    Args:
        model: the model, in eval mode, on ``device``.
        split: the data (``images`` `(N, H, W, 3)` uint8, ``masks`` `(N, H, W)`, and optionally
            ``variant_images`` `(N, V, H, W, 3)`, ``variant_masks`` `(N, V, H, W)`).
        num_classes: K object classes.
        ev: evaluation options.
        device: where to compute.
        indices: the images of this process (default: all, or the first ``ev.size``).
        progress: show a progress bar.
        desc: the progress bar's label.

    Returns:
        ``{"miou", "miou_warped", "equ_paper", "equ_reference", "variant_miou", "variant_consistency",
        "warp_log_scale_mean", "images"}`` (the variant entries when the split has variants, the warp size for
        models with canonicalizers).
    """
    n_all = min(len(split.images), ev.size or len(split.images))
    idx_all = np.arange(n_all) if indices is None else indices
    r = ev.equ_rescalings
    elements = _equ_elements(n_all, ev)
    metrics: dict[str, Any] = {
        "miou": lsmetrics.DatasetMeanIoU(num_classes + 1),
        "miou_warped": lsmetrics.DatasetMeanIoU(num_classes + 1),
        "equ_paper": lsmetrics.EquivarianceError("paper"),
        "equ_reference": lsmetrics.EquivarianceError("reference"),
    }
    variants = getattr(split, "variant_images", None)
    if variants is not None:
        metrics["variant_miou"] = lsmetrics.DatasetMeanIoU(num_classes + 1)
    for m in metrics.values():
        m.to(device)
    consistent = objects = 0
    warp_means: list[float] = []
    bar = tqdm(total=len(idx_all), desc=desc, unit="img", disable=not progress, leave=False)
    for idx in batches(idx_all, ev.batch_size):
        x = _images(split.images, idx, device)
        y = torch.from_numpy(np.ascontiguousarray(split.masks[idx])).to(device).long()
        logits, results = model(x, return_results=True)
        logits = logits.float()
        metrics["miou"].update(logits.argmax(1), y)
        stats = warp_statistics(results or {})
        if "warp_log_scale_mean" in stats:
            warp_means.append(stats["warp_log_scale_mean"] * len(idx))
        # EquE: r scalings per image, drawn once for the whole split (same for every run and process)
        rows = torch.as_tensor(idx).repeat_interleave(r) * r + torch.arange(r).repeat(len(idx))
        g = monowarp.MonotoneScale.from_knots(elements.knots_x[rows], elements.knots_y[rows]).to(device)
        xr, yr, lr = x.repeat_interleave(r, 0), y.repeat_interleave(r, 0), logits.repeat_interleave(r, 0)
        warped_logits = model(monowarp.warp(xr, g)).float()
        expected = monowarp.warp(lr, g).softmax(1)
        valid = monowarp.warp(torch.ones_like(lr[:, :1]), g, mode="nearest", padding_mode="zeros") > 0.5
        actual = warped_logits.softmax(1)
        metrics["equ_paper"].update(expected, actual, valid)
        metrics["equ_reference"].update(expected, actual, valid)
        metrics["miou_warped"].update(
            warped_logits.argmax(1), monowarp.warp(yr[:, None], g, mode="nearest")[:, 0]
        )
        if variants is not None:
            xv = _images(variants, idx, device)  # (B, V, 3, H, W)
            yv = torch.from_numpy(np.ascontiguousarray(split.variant_masks[idx])).to(device).long()
            b, v = xv.shape[:2]
            pv = model(xv.flatten(0, 1)).argmax(1).view(b, v, *xv.shape[-2:])
            metrics["variant_miou"].update(pv.flatten(0, 1), yv.flatten(0, 1))
            pred = logits.argmax(1)[:, None]  # the scene itself and its variants
            c, o = variant_consistency(torch.cat([pred, pv], 1), torch.cat([y[:, None], yv], 1), num_classes)
            consistent, objects = consistent + c, objects + o
        bar.update(len(idx))
    bar.close()
    out: dict[str, Any] = {name: float(m.compute()) for name, m in metrics.items()}
    from lse_common import all_gather_objects

    gathered = all_gather_objects((consistent, objects, sum(warp_means), len(idx_all)))
    if variants is not None:
        c_all, o_all = sum(g_[0] for g_ in gathered), sum(g_[1] for g_ in gathered)
        out["variant_consistency"] = c_all / o_all if o_all else float("nan")
        out["variant_objects"] = o_all
    if warp_means:
        out["warp_log_scale_mean"] = sum(g_[2] for g_ in gathered) / sum(g_[3] for g_ in gathered)
    out["images"] = n_all
    return out


def _eval_settings(cfg: Any, ev: SegEval) -> dict[str, Any]:
    data = cfg.data
    return {
        "split": ev.split,
        "size": ev.size,
        "data_dir_name": Path(data.dir).name,
        "data_seed": data.seed,
        "image_size": data.size,
        "equ_rescalings": ev.equ_rescalings,
        "equ_scale_range": list(ev.equ_scale_range),
        "equ_grid": list(ev.equ_grid),
        "inverses": list(ev.inverses),
        "eval_seed": ev.seed,
    }


def _result_file(ev: SegEval) -> str:
    return "eval.json" if ev.split == "test" else f"eval-{ev.split}.json"


def evaluate_runs(runs: list[str], ev: SegEval, runtime: RuntimeOptions) -> list[dict]:
    """`evaluate_run` for each run; a stored result of the same weights and settings is reused unless
    ``ev.force`` (`lse_common.evaluation.evaluate_runs`)."""
    return shared_evaluate_runs(
        runs,
        runtime,
        lambda run, **kw: evaluate_run(run, ev, runtime, **kw),
        load_config=lambda run: run_config(run, ev)[0],
        settings=lambda cfg: _eval_settings(cfg, ev),
        result_file=_result_file(ev),
        force=ev.force,
    )


def evaluate_run(
    run_dir: str | Path,
    ev: SegEval,
    runtime: RuntimeOptions,
    *,
    info: Any = None,
    digest: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate one run (see the module docstring); rank 0 stores ``eval.json`` and ``predictions.npz``."""
    from .data import prepare_split

    info = info or init_distributed(runtime.device)
    device = info.device
    cfg, model, weights = load_run(run_dir, ev)
    place_model(model, device, channels_last=runtime.channels_last).eval()
    split = prepare_split(cfg.data, ev.split, progress=runtime.progress and info.is_main)
    n = min(len(split.images), ev.size or len(split.images))
    mine = shard(n, info.rank, info.world_size)
    k = cfg.data.num_classes
    inverses = list(ev.inverses) if model.adapted else ["exact"]
    by_inverse = {}
    for inverse in inverses:
        model.inverse = inverse
        by_inverse[inverse] = evaluate_model(
            model,
            split,
            k,
            ev,
            device=device,
            indices=mine,
            progress=runtime.progress and info.is_main,
            desc=f"evaluate {Path(run_dir).name} ({inverse})",
        )
    model.inverse = "exact"
    result = {
        "run": str(run_dir),
        "method": cfg.method,
        "backbone": cfg.model.backbone,
        "pretrained": bool(cfg.model.pretrained),
        "seed": cfg.train.seed,
        "image_size": cfg.data.size,
        "split": ev.split,
        **by_inverse["exact"],
        "by_inverse": by_inverse,
        "settings": _eval_settings(cfg, ev),
        "weights": str(weights),
        "weights_sha256": digest or weights_digest(weights),
        "processes": info.world_size,
    }
    if write and info.is_main:
        store_result(Path(run_dir) / _result_file(ev), result)
        _store_predictions(
            model, split, min(ev.figure_examples, n), device, Path(run_dir) / "predictions.npz"
        )
    logger.info(
        "%s: mIoU %.2f %%, EquE %.4f (paper) / %.4f (reference)",
        run_dir,
        100 * result["miou"],
        result["equ_paper"],
        result["equ_reference"],
    )
    return result


@torch.no_grad()
def _store_predictions(
    model: SegmentationModel, split: Any, n: int, device: torch.device, path: Path
) -> None:
    if n <= 0:
        return
    from lse_common import atomic_path

    idx = np.arange(n)
    pred = model(_images(split.images, idx, device)).argmax(1).to(torch.uint8).cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, images=split.images[idx], masks=split.masks[idx], preds=pred)
