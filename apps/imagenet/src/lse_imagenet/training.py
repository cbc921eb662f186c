"""``lse-imagenet train``: fine-tune a pretrained timm classifier with one method on the shared skeleton.

The data: ``data.train_dir`` (and ``data.val_dir``) is an ImageFolder or the output root of
``lse-imagenet data`` (`open_images`), read through timm's transforms: for training timm's
``create_transform(is_training=True)`` (random resized crop, flip, colour jitter, RandAugment and random
erasing, ``recipe.*``), for validation its evaluation transform; both normalise with the model's mean and std.

The objective of each method (`make_step_fn`), with timm's mixup/cutmix and label smoothing
(`lse_common.objectives.classification_recipe`) in every supervised step, as the paper's Table A1:

- ``base``: the recipe alone (timm's fine-tuning, the paper's Base);
- ``aug``: plus a random monotone scaling of each image with probability ``aug.p`` (Aug);
- ``invl``: eq. 25, clean and warped halves, plus ``train.invl_weight`` x InvE between them (InvL);
- ``canon``, ``dec``: the canonicalizing model on the augmented batches (``train.consistency_weight > 0`` adds
  eq. 25's term); ``dec`` is the paper's Ours.

With ``recipe.label_free`` no label is read (`label_free_step`): the frozen pretrained classifier (or
``train.init_from``) predicts on the original image, the trained model on a rescaled one, and the loss is the
KL divergence between them (`lse_common.objectives.distillation_step`); for ``dec`` and ``canon`` the backbone
stays frozen for the whole run, so only the canonicalizer learns. The rescaled image is another locally
scaled variant of the same photo (a manifest's, ``recipe.pairs variants``) or a random monotone scaling
(``warps``). This is how the demo tunes its DEC without ImageNet, and how anyone without the training set can.

Everything else is `lse_common.training.run_training`: the run folder and resume, timm's optimizer with layer
decay over the backbone and canonicalizer parameter groups (``train.layer_decay``, ``canon.lr``), timm's
cosine schedule with warm-up, DDP under torchrun, checkpoints. Methods other than ``base`` start from the
``base`` run (``train.init_from``), as in the paper.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lse_common.canonicalizers import CANONICALIZING_METHODS
from lse_common.objectives import classification_recipe, distillation_step, options_step, warmup_step
from lse_common.options import AugmentOptions, CanonOptions, TrainOptions
from lse_common.training import TrainingJob, run_training

from .models import build_model, create_classifier, data_config, load_weights
from .options import ImagenetModel, Recipe, TrainData, default_run_dir

__all__ = [
    "ImageListDataset",
    "PairDataset",
    "class_indices",
    "eval_transform",
    "folder_items",
    "label_free_step",
    "make_step_fn",
    "manifest_items",
    "manifest_labels",
    "manifest_pairs",
    "open_images",
    "train",
    "train_transform",
    "validation_fn",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"


# ---- data ------------------------------------------------------------------------------------------------
def _load_rgb(path: str | Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


class ImageListDataset(Dataset):
    """``(transform(image), label)`` for a list of ``(path, label)``.

    Args:
        items: image paths and their class indices.
        transform: PIL image -> tensor.
    """

    def __init__(self, items: Sequence[tuple[str, int]], transform: Callable[[Image.Image], torch.Tensor]):
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.items[index]
        return self.transform(_load_rgb(path)), int(label)


class PairDataset(Dataset):
    """``(transform(original), transform(rescaled))`` for a list of path pairs (label-free tuning)."""

    def __init__(self, pairs: Sequence[tuple[str, str]], transform: Callable[[Image.Image], torch.Tensor]):
        self.pairs = list(pairs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        original, rescaled = self.pairs[index]
        return self.transform(_load_rgb(original)), self.transform(_load_rgb(rescaled))


def class_indices(names: Sequence[str]) -> dict[str, int]:
    """Class name -> index: integer names are the index, ImageNet-1k WordNet ids (``n01440764``) their
    ImageNet index (so a folder with a few of ImageNet's classes keeps the pretrained head's labels), other
    names their position in sorted order (torchvision's ImageFolder numbering).

    Example:
        >>> class_indices(["n02123045", "n07920052"]), class_indices(["b", "a"]), class_indices(["7", "3"])
        ({'n02123045': 281, 'n07920052': 967}, {'a': 0, 'b': 1}, {'3': 3, '7': 7})
    """
    from timm.data import ImageNetInfo

    unique = sorted(set(names))
    if unique and all(n.isdigit() for n in unique):
        return {n: int(n) for n in unique}
    wnids = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    if unique and all(n in wnids for n in unique):
        return {n: wnids[n] for n in unique}
    return {n: i for i, n in enumerate(unique)}


def folder_items(root: str | Path) -> list[tuple[str, int]]:
    """``(path, label)`` of an ImageFolder, the labels from the class folders' names (`class_indices`).

    Raises:
        FileNotFoundError: naming the folder when it holds no class folder with images.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    base = Path(root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    index = class_indices(classes)
    items = [
        (str(f), index[c])
        for c in classes
        for f in sorted((base / c).rglob("*"))
        if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS
    ]
    if not items:
        raise FileNotFoundError(f"{base} is neither an ImageFolder with images nor a root with {MANIFEST}")
    return items


def _records(root: str | Path) -> list[Any]:
    from .manifest import read_manifest

    return list(read_manifest(root))


def manifest_labels(records: Sequence[Any]) -> dict[str, int]:
    """Class name -> label of a manifest's records, by the rule of ImageFolders (`class_indices`): ImageNet
    WordNet ids give ImageNet-1k's index even when the data hold a few of its classes (the manifest's own
    ``label`` counts the input's class folders from 0), integer names their value, others the manifest's."""
    names = sorted({str(r.class_name) for r in records})
    index = class_indices(names)
    own = {str(r.class_name): int(r.label) for r in records}
    return own if index == {n: i for i, n in enumerate(names)} else index


def manifest_items(root: str | Path) -> list[tuple[str, int]]:
    """``(path, label)`` of every variant in a ``lse-imagenet data`` root (labels: `manifest_labels`)."""
    base = Path(root)
    records = _records(base)
    labels = manifest_labels(records)
    return [(str(base / r.path), labels[str(r.class_name)]) for r in records]


def manifest_pairs(root: str | Path, reference_factor: float = 1.0) -> list[tuple[str, str]]:
    """``(original, variant)`` paths of a ``lse-imagenet data`` root for label-free tuning: each variant at
    another factor against the image's ``reference_factor`` variant (1.00: the original photo, unchanged)."""
    from .manifest import factor_key, group_by_image

    base = Path(root)
    pairs = []
    for variants in group_by_image(_records(base)).values():
        ref = variants.get(factor_key(reference_factor))
        if ref is not None:
            pairs += [(str(base / ref.path), str(base / r.path)) for r in variants.values() if r is not ref]
    return pairs


def open_images(
    root: str | Path, transform: Callable[[Image.Image], torch.Tensor], *, limit: int | None = None
) -> ImageListDataset:
    """The labelled images of an ImageFolder or of a ``lse-imagenet data`` root (see `TrainData`)."""
    base = Path(root)
    items = manifest_items(base) if (base / MANIFEST).is_file() else folder_items(base)
    return ImageListDataset(items[:limit] if limit else items, transform)


def train_transform(data: TrainData, recipe: Recipe, cfg: dict[str, Any]):
    """timm's training transform: random resized crop, flip, jitter, auto-augment, normalise, random erase."""
    from timm.data import create_transform

    return create_transform(
        data.img_size,
        is_training=True,
        scale=tuple(recipe.train_crop_scale),
        hflip=recipe.hflip,
        color_jitter=recipe.color_jitter,
        auto_augment=recipe.auto_augment,
        interpolation=data.interpolation,
        mean=cfg["mean"],
        std=cfg["std"],
        re_prob=recipe.reprob,
        re_mode="pixel",
    )


def eval_transform(data: TrainData, cfg: dict[str, Any]):
    """timm's evaluation transform: resize (``data.crop_pct``), centre crop, normalise."""
    from timm.data import create_transform

    return create_transform(
        data.img_size,
        is_training=False,
        interpolation=data.interpolation,
        crop_pct=data.crop_pct,
        mean=cfg["mean"],
        std=cfg["std"],
    )


# ---- objectives ------------------------------------------------------------------------------------------
def _prepare(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = batch
    return x, y


def make_step_fn(
    method: str,
    train: TrainOptions,
    aug: AugmentOptions,
    recipe: Recipe,
    num_classes: int,
    canon: CanonOptions | None = None,
):
    """The supervised training step of ``method`` (see the module docstring)."""
    mix, loss_fn = classification_recipe(
        num_classes,
        mixup=recipe.mixup,
        cutmix=recipe.cutmix,
        mix_prob=recipe.mix_prob,
        smoothing=recipe.smoothing,
    )
    adapted = method in CANONICALIZING_METHODS
    return options_step(
        _prepare,
        method,
        control="invl",
        adapted=adapted,
        train=train,
        aug=aug,
        canon=canon,
        augment=method != "base",
        loss_fn=loss_fn,
        mix=mix,
    )


def label_free_step(method: str, teacher: nn.Module, aug: AugmentOptions, recipe: Recipe):
    """The label-free step (`lse_common.objectives.distillation_step`) on ``(original, rescaled)`` batches,
    or on ``(image, label)`` batches whose label is ignored and whose rescaled view is a random monotone
    scaling (``recipe.pairs warps``)."""

    def prepare(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, other = batch
        return (x, other) if recipe.pairs == "variants" and other.ndim == 4 else (x, None)

    return distillation_step(
        prepare,
        teacher,
        temperature=recipe.distill_temperature,
        scale_range=tuple(aug.scale_range),
        grid=tuple(aug.grid),
        direction=aug.direction,
        log_warps=method in CANONICALIZING_METHODS,
    )


def validation_fn(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int = 0):
    """The engine's ``eval_fn``: top-1 accuracy and cross-entropy on labelled validation images."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        correct, loss_sum, n = 0, 0.0, 0
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        with torch.no_grad():
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                logits = model(x).float()
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
        return {"val_acc": correct / max(n, 1), "val_loss": loss_sum / max(n, 1)}

    return evaluate


def _teacher(model: ImagenetModel, data: TrainData, init_from: str | None) -> nn.Module:
    net = create_classifier(model, data.img_size, num_classes=data.num_classes, load_pretrained=not init_from)
    if init_from:
        load_weights(net, init_from)
    return net.eval()


def train(cfg: Any) -> dict:
    """Train one run of the ``lse-imagenet train`` options ``cfg`` (see the module docstring); returns the
    skeleton's summary. Works under torchrun.

    Args:
        cfg: the train command's options: ``method`` and the groups ``data``, ``model``, ``train``, ``aug``,
            ``canon``, ``recipe``, ``runtime``; they are stored in the run folder as ``config.yaml``.
    """
    from .cli import train_config

    method, data, model, opts, recipe = cfg.method, cfg.data, cfg.model, cfg.train, cfg.recipe
    canon = cfg.canon
    adapted = method in CANONICALIZING_METHODS
    out = default_run_dir(opts.out_dir, model, method, opts.seed, label_free=recipe.label_free)
    teacher = _teacher(model, data, opts.init_from) if recipe.label_free else None
    if recipe.label_free and adapted:  # only the canonicalizer learns: the backbone stays frozen throughout
        canon = dataclasses.replace(canon, freeze_backbone_epochs=opts.epochs)
    probe = teacher if teacher is not None else create_classifier(model, data.img_size, load_pretrained=False)
    preprocessing = data_config(probe)

    def prepare(progress: bool) -> tuple[Dataset, Dataset | None]:
        evaluation = eval_transform(data, preprocessing)
        if recipe.label_free:
            root = Path(data.train_dir)
            if recipe.pairs == "variants" and (root / MANIFEST).is_file():
                pairs = manifest_pairs(root)
                train_set: Dataset = PairDataset(
                    pairs[: data.train_limit] if data.train_limit else pairs, evaluation
                )
            else:
                train_set = open_images(root, evaluation, limit=data.train_limit)
        else:
            train_set = open_images(
                data.train_dir, train_transform(data, recipe, preprocessing), limit=data.train_limit
            )
        val_set = open_images(data.val_dir, evaluation, limit=data.val_limit) if data.val_dir else None
        return train_set, val_set

    step = (
        label_free_step(method, teacher, cfg.aug, recipe)
        if teacher is not None
        else make_step_fn(method, opts, cfg.aug, recipe, data.num_classes, cfg.canon)
    )
    job = TrainingJob(
        out_dir=Path(out),
        config=train_config(cfg),
        build_model=lambda: build_model(
            model,
            method,
            canon,
            img_size=data.img_size,
            num_classes=data.num_classes,
            init_from=opts.init_from,
        ),
        prepare_data=prepare,
        step_fn=step,
        eval_fn=lambda val_set, device: validation_fn(val_set, max(32, 2 * opts.batch_size), device),
        description=f"{method}{' (label-free)' if recipe.label_free else ''} on {model.backbone}, "
        f"{data.img_size}px images",
        warmup_step_fn=warmup_step(_prepare, adapted, canon, cfg.aug),
    )
    return run_training(job, train=opts, runtime=cfg.runtime, canon=canon if adapted else None)
