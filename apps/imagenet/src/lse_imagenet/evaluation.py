r"""``lse-imagenet evaluate``: Top-1, InvE, per-factor accuracy, accuracy on unmodified images and the Fig. 8
curves of trained runs on a locally scaled test set.

The test set is the output root of ``lse-imagenet data`` (``eval.data_dir``, default: the run's
``data.val_dir``): every image comes in variants whose object is rescaled by the factors ``eval.factors``
(0.7, 0.8, ..., 1.3), the background unchanged. Each image is evaluated at all its factors in one batch
(images lacking a factor are skipped and counted), with the evaluation transform of the run, and
`ScaleMetrics` accumulates, on lsmetrics' `Metric` classes (under torchrun every process takes its own block
of images and ``compute()`` adds the processes up):

- ``acc``: Top-1 over all variants (Table 5's Acc, the mean of the per-factor accuracies);
- ``factor_acc``, ``factor_mean``, ``factor_std``: accuracy per factor with mean and population std over the
  factors (Table 6);
- ``inve_paper``: InvE of eq. 24 on softmax probabilities, $\lVert p_1 - p_s\rVert_2^2$ averaged over the
  images and the factors other than the reference (``eval.reference_factor``, 1.0), whose prediction is
  $M(I)$; ``inve_reference``: the authors' ImageNet code, $\lVert p_1 - p_s\rVert_2$ (unsquared) averaged over
  all factors with the identity's zero term included. Both come from `lsmetrics.invariance_error`; tables
  show them x 1e-2;
- ``acc_unmodified``: accuracy on the unmodified photos (Table A5): the ``eval.reference_factor`` variants,
  which ``lse-imagenet data`` writes as the original image, unchanged;
- ``fig8``: the probability of the correct class at each factor for chosen images (``eval.fig8_images`` or the
  first ``eval.fig8_count``), with `lsmetrics.correct_class_probability`'s mean and std over the factors.

A run's numbers go to ``<run>/eval.json`` with the settings and the SHA-256 of the weights and are reused only
when both match (``eval.force`` re-evaluates).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

import lsmetrics
from lse_common import (
    all_gather_objects,
    init_distributed,
    load_checkpoint,
)
from lse_common.engine import place_model
from lse_common.evaluation import evaluate_runs as shared_evaluate_runs
from lse_common.evaluation import load_run_config, shard, store_result, weights_digest
from lse_common.options import RuntimeOptions

from .models import build_model, data_config
from .options import ImagenetEval
from .training import _load_rgb, eval_transform, manifest_labels

__all__ = [
    "ImageGroup",
    "ScaleMetrics",
    "evaluate_model",
    "evaluate_run",
    "evaluate_runs",
    "load_run",
    "merge_fig8",
    "scale_groups",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageGroup:
    """One test image: its variants at the evaluated factors and its label."""

    image_id: str
    label: int
    class_name: str
    paths: tuple[str, ...]


def scale_groups(root: str | Path, factors: Sequence[float]) -> tuple[list[ImageGroup], int]:
    """The test images of a ``lse-imagenet data`` root that have every factor, and how many were skipped.

    Labels follow `lse_imagenet.training.manifest_labels` (ImageNet WordNet ids: ImageNet-1k's index).

    Raises:
        FileNotFoundError: when the root has no manifest.
    """
    from .manifest import group_by_image, read_manifest

    base = Path(root)
    records = read_manifest(base)
    labels = manifest_labels(records)
    groups, skipped = [], 0
    for image_id, variants in group_by_image(records).items():
        chosen = []
        for f in factors:
            match = next((r for g, r in variants.items() if abs(float(g) - f) < 1e-6), None)
            if match is None:
                break
            chosen.append(match)
        if len(chosen) != len(factors):
            skipped += 1
            continue
        groups.append(
            ImageGroup(
                image_id=str(image_id),
                label=labels[str(chosen[0].class_name)],
                class_name=str(getattr(chosen[0], "class_name", "")),
                paths=tuple(str(base / r.path) for r in chosen),
            )
        )
    return groups, skipped


class _GroupDataset(Dataset):
    def __init__(self, groups: Sequence[ImageGroup], indices: Sequence[int], transform: Any) -> None:
        self.groups, self.indices, self.transform = groups, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        index = int(self.indices[i])
        g = self.groups[index]
        return torch.stack([self.transform(_load_rgb(p)) for p in g.paths]), g.label, index


class ScaleMetrics:
    """The ImageNet metrics over batches of images seen at S factors (see the module docstring).

    Args:
        factors: the S factors, in the order of the batches' second axis.
        reference_factor: the factor of InvE's reference prediction.
        device: where the metric states live.

    Example:
        >>> m = ScaleMetrics([0.5, 1.0])
        >>> probs = torch.tensor([[[0.9, 0.1], [0.6, 0.4]]])  # one image, two factors, two classes
        >>> m.update(probs, torch.tensor([0]))
        >>> out = m.compute()
        >>> round(out["inve_paper"], 4), out["factor_acc"]
        (0.18, [1.0, 1.0])
    """

    def __init__(
        self, factors: Sequence[float], reference_factor: float = 1.0, device: torch.device | str = "cpu"
    ) -> None:
        from torchmetrics import MeanMetric

        self.factors = [float(f) for f in factors]
        matches = [i for i, f in enumerate(self.factors) if abs(f - reference_factor) < 1e-6]
        if not matches:
            raise ValueError(f"reference_factor {reference_factor} must be one of the factors {self.factors}")
        self.reference = matches[0]
        self.others = [i for i in range(len(self.factors)) if i != self.reference]
        s = len(self.factors)
        self.per_factor = lsmetrics.PerScaleAccuracy(s).to(device)
        self.inve_paper = lsmetrics.InvarianceError("paper").to(device)
        self.inve_reference = MeanMetric().to(device)
        self.unmodified = lsmetrics.PerScaleAccuracy(1).to(device)

    def update(
        self, probs: torch.Tensor, labels: torch.Tensor, original_probs: torch.Tensor | None = None
    ) -> None:
        """Add a batch: ``probs`` `(B, S, K)` softmax outputs at the S factors, ``labels`` `(B,)`,
        ``original_probs`` `(B, K)` on the unmodified photos (default: the reference factor's)."""
        if probs.ndim != 3 or probs.shape[1] != len(self.factors):
            raise ValueError(f"probs must be (B, {len(self.factors)}, K), got {tuple(probs.shape)}")
        if labels.shape != probs.shape[:1]:
            raise ValueError(f"labels must be ({probs.shape[0]},), got {tuple(labels.shape)}")
        b, s, _ = probs.shape
        correct = probs.argmax(2) == labels[:, None]
        ids = torch.arange(s, device=probs.device).expand(b, s)
        self.per_factor.update(correct.flatten(), ids.flatten())
        ref = probs[:, self.reference]
        if self.others:
            self.inve_paper.update(ref, probs[:, self.others])
        squared = lsmetrics.invariance_error(ref, probs, variant="paper", reduction="none")  # (B, S)
        self.inve_reference.update(squared.clamp_min(0).sqrt())  # the identity's zero term included
        unmodified = original_probs if original_probs is not None else ref
        self.unmodified.update(unmodified.argmax(1) == labels, torch.zeros_like(labels))

    def compute(self) -> dict[str, Any]:
        """The metrics as plain numbers (fractions; the tables scale them)."""
        per = self.per_factor.compute()
        return {
            "factors": self.factors,
            "acc": float(per["pooled"]),
            "factor_acc": torch.atleast_1d(per["accuracy"]).tolist(),
            "factor_mean": float(per["mean"]),
            "factor_std": float(per["std"]),
            "inve_paper": float(self.inve_paper.compute()) if self.others else 0.0,
            "inve_reference": float(self.inve_reference.compute()),
            "acc_unmodified": float(self.unmodified.compute()["pooled"]),
            "images": int(per["total"][0]),
        }


def _fig8_indices(groups: Sequence[ImageGroup], ev: ImagenetEval) -> list[int]:
    if ev.fig8_images:
        wanted = {str(i) for i in ev.fig8_images}
        found = [i for i, g in enumerate(groups) if g.image_id in wanted]
        missing = wanted - {groups[i].image_id for i in found}
        if missing:
            raise ValueError(f"eval.fig8_images not in the test set: {sorted(missing)}")
        return found
    return list(range(min(ev.fig8_count, len(groups))))


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    groups: Sequence[ImageGroup],
    ev: ImagenetEval,
    transform: Any,
    *,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "evaluate",
) -> dict[str, Any]:
    """The metrics of ``model`` on the image groups (this process's block of them under torchrun).

    Args:
        model: the classifier, `(B, 3, H, W)` normalised images -> logits.
        groups: the test images (`scale_groups`).
        ev: the evaluation options (``factors`` in the groups' order, ``reference_factor``, Fig. 8 images,
            ``batch_size`` in images: each brings its S variants).
        transform: PIL image -> normalised tensor (the run's evaluation transform).
        device: where the model runs.
        rank, world_size: this process's share (`lse_common.evaluation.shard`).
        num_workers: data-loader workers.
        progress: show a progress bar.
        desc: the bar's label.

    Returns:
        `ScaleMetrics.compute`'s numbers plus ``fig8``: image id -> label, class name, ``p_correct`` per
        factor, and its mean and std over the factors.
    """
    device = torch.device(device)
    model.eval().to(device)
    metrics = ScaleMetrics(ev.factors, ev.reference_factor, device)
    chosen = set(_fig8_indices(groups, ev))
    fig8: dict[str, Any] = {}
    mine = shard(len(groups), rank, world_size)
    per_batch = max(1, ev.batch_size // len(ev.factors))
    loader = DataLoader(_GroupDataset(groups, mine, transform), batch_size=per_batch, num_workers=num_workers)
    bar = tqdm(total=len(mine), desc=desc, unit="img", disable=not progress, leave=False)
    for variants, labels, index in loader:
        b, s = variants.shape[:2]
        probs = model(variants.flatten(0, 1).to(device)).float().softmax(1)
        per_factor = probs.reshape(b, s, -1)
        labels = labels.to(device)
        metrics.update(per_factor, labels)
        for j, i in enumerate(index.tolist()):
            if i in chosen:
                g = groups[i]
                curve = lsmetrics.correct_class_probability(per_factor[j], int(labels[j]))
                fig8[g.image_id] = {
                    "label": g.label,
                    "class_name": g.class_name,
                    "p_correct": curve.probability.tolist(),
                    "mean": float(curve.mean),
                    "std": float(curve.std),
                }
        bar.update(b)
    bar.close()
    if world_size > 1:  # every process's curves
        for part in all_gather_objects(fig8):
            fig8.update(part)
    out = metrics.compute()
    out["unmodified_source"] = f"factor {ev.reference_factor:g} variants"
    out["fig8"] = fig8
    return out


def load_run(run_dir: str | Path) -> tuple[Any, nn.Module, Path]:
    """A run's options (its ``config.yaml``), its model with the run's weights, and the weights file.

    Raises:
        FileNotFoundError: if the folder has no ``config.yaml`` or no weights.
    """
    from .cli import APP

    cfg, weights = load_run_config(APP, run_dir)
    model = build_model(
        cfg.model,
        cfg.method,
        cfg.canon,
        img_size=cfg.data.img_size,
        num_classes=cfg.data.num_classes,
        for_training=False,
    )
    load_checkpoint(weights, model)
    return cfg, model, weights


def _test_root(cfg: Any, ev: ImagenetEval) -> Path:
    root = ev.data_dir or cfg.data.val_dir
    if not root:
        raise ValueError("no test set: give eval.data_dir (the root of `lse-imagenet data`)")
    return Path(root)


def eval_settings(cfg: Any, ev: ImagenetEval, root: Path) -> dict[str, Any]:
    """What a result depends on besides the weights: a stored result is reused only if these match."""
    return {
        "data_dir": str(root.resolve()),
        "factors": [float(f) for f in ev.factors],
        "reference_factor": ev.reference_factor,
        "img_size": cfg.data.img_size,
        "crop_pct": cfg.data.crop_pct,
        "size": ev.size,
        "fig8": list(ev.fig8_images or []) or ev.fig8_count,
    }


def evaluate_run(
    run_dir: str | Path,
    ev: ImagenetEval,
    runtime: RuntimeOptions,
    *,
    info: Any = None,
    digest: str | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Evaluate one run (see the module docstring); every process returns the whole result, rank 0 stores
    ``eval.json`` (with ``write``)."""
    info = info or init_distributed(runtime.device)
    cfg, model, weights = load_run(run_dir)
    root = _test_root(cfg, ev)
    groups, skipped = scale_groups(root, ev.factors)
    groups = groups[: ev.size] if ev.size else groups
    if not groups:
        raise ValueError(f"{root} has no image with all of the factors {ev.factors}")
    transform = eval_transform(cfg.data, data_config(model))
    out = evaluate_model(
        place_model(model, info.device, channels_last=runtime.channels_last),
        groups,
        ev,
        transform,
        device=info.device,
        rank=info.rank,
        world_size=info.world_size,
        num_workers=runtime.num_workers,
        progress=runtime.progress and info.is_main,
        desc=f"evaluate {Path(run_dir).name}",
    )
    result = {
        "run": str(run_dir),
        "method": cfg.method,
        "label_free": bool(cfg.recipe.label_free),
        "backbone": cfg.model.backbone,
        "seed": cfg.train.seed,
        **out,
        "skipped_images": skipped,
        "settings": eval_settings(cfg, ev, root),
        "weights": str(weights),
        "weights_sha256": digest or weights_digest(weights),
        "processes": info.world_size,
    }
    if write and info.is_main:
        store_result(Path(run_dir) / "eval.json", result)
    logger.info(
        "%s: Top-1 %.2f %%, InvE %.3f x1e-2 (paper) / %.3f x1e-2 (reference), unmodified %.2f %%",
        run_dir,
        100 * result["acc"],
        100 * result["inve_paper"],
        100 * result["inve_reference"],
        100 * result["acc_unmodified"],
    )
    return result


def evaluate_runs(runs: Sequence[str], ev: ImagenetEval, runtime: RuntimeOptions) -> list[dict[str, Any]]:
    """`evaluate_run` for each run (every process of a torchrun job takes part); a stored result made from the
    same weights with the same settings is reused unless ``ev.force``
    (`lse_common.evaluation.evaluate_runs`)."""
    from .cli import APP

    return shared_evaluate_runs(
        runs,
        runtime,
        lambda run, **kw: evaluate_run(run, ev, runtime, **kw),
        load_config=lambda run: APP.load("train", Path(run) / "config.yaml"),
        settings=lambda cfg: eval_settings(cfg, ev, _test_root(cfg, ev)),
        force=ev.force,
    )


def merge_fig8(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Method name -> its ``fig8`` curves, keeping the images every method has (for the plots)."""
    common = set.intersection(*(set(r["fig8"]) for r in results.values())) if results else set()
    return {name: {k: v for k, v in r["fig8"].items() if k in common} for name, r in results.items()}
