"""The ``lse-segmentation`` command: ``data``, ``train``, ``evaluate`` and ``demo``.

Each subcommand takes its own option groups (``lse-segmentation train --help`` lists them), as flags
``--<group>.<field>`` or as keys of the YAML file given with ``--config`` (flags after it win);
``--print_config`` prints the resolved options. Examples::

    lse-segmentation data --data apps/segmentation/configs/cpu/data.yaml --preview samples.png
    lse-segmentation data --data apps/segmentation/configs/paper/data.yaml       # the paper's data set
    lse-segmentation data --data.size 256 --benchmark true                         # render speed
    lse-segmentation train --config apps/segmentation/configs/cpu/aug.yaml --train.seed 1
    torchrun --nproc_per_node 2 -m lse_segmentation train --config ...   # DistributedDataParallel
    lse-segmentation evaluate --runs runs/seg/tf_efficientnet_lite0/* --eval.results_dir runs/seg/results
    lse-segmentation demo                                               # aug and dec, Table 1, on 2 CPU cores
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from lse_common.cli import App, evaluate_command, run_command, runs_argument
from lse_common.options import AugmentOptions, CanonOptions, RuntimeOptions, TrainOptions

from .options import SegData, SegEval, SegModel

__all__ = ["APP", "TRAIN_GROUPS", "main", "train_config"]

logger = logging.getLogger("lse_segmentation")

TRAIN_GROUPS = {
    "data": SegData,
    "model": SegModel,
    "train": TrainOptions,
    "aug": AugmentOptions,
    "canon": CanonOptions,
    "runtime": RuntimeOptions,
}
"""The option groups of ``lse-segmentation train`` (and of a run's ``config.yaml``)."""


def _data_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark",
        type=bool,
        default=False,
        help="measure the renderer's images/s (one process and data.workers processes) and exit",
    )
    parser.add_argument("--preview", type=str | None, default=None, help="save a PNG of a few scenes there")
    parser.add_argument(
        "--splits",
        type=list[Literal["train", "val", "test"]],
        default=["train", "val", "test"],
        help="which splits to build",
    )


def _data(cfg: Namespace) -> int:
    import os

    from . import data as data_mod
    from .render import benchmark_render

    data: SegData = cfg.data
    if cfg.benchmark:
        config = data_mod.render_config(data, "train")
        workers = data.workers or os.cpu_count() or 1
        one = benchmark_render(config, scenes=40, workers=1)
        print(f"renderer: {one:,.1f} images/s at {data.size}x{data.size} (1 process)")
        if workers > 1:
            many = benchmark_render(config, scenes=40 * workers, workers=workers)
            print(f"renderer: {many:,.1f} images/s at {data.size}x{data.size} ({workers} processes)")
        return 0
    splits = [s for s in cfg.splits if not (s == "val" and data.val_size == 0)]
    for split in splits:
        d = data_mod.prepare_split(data, split, progress=cfg.runtime.progress)
        extra = f", {d.num_variants} distance variants each" if d.num_variants else ""
        print(
            f"{split}: {len(d)} scenes at {data.size}x{data.size}{extra}, {d.num_classes} classes, "
            f"{len(d.background_names)} backgrounds -> {d.folder}"
        )
        if cfg.preview and split == splits[-1]:
            path = data_mod.save_preview(d, cfg.preview)
            print(f"preview: {path} (image, mask, distance variants)")
    return 0


def _method_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        type=Literal["aug", "canon", "augl", "dec"],
        default="aug",
        help="aug, canon, augl or dec",
    )


def train_config(cfg: Namespace) -> dict:
    """A train command's options as the nested mapping stored in a run's ``config.yaml``."""
    return APP.config("train", cfg)


def _add_commands(app: App) -> None:
    from .demo import DEMO_DEFAULTS, DemoOptions

    app.command(
        "train",
        run_command("lse_segmentation.training:train", status=False),
        help="train one method on one backbone (torchrun for several processes or machines)",
        groups=TRAIN_GROUPS,
        arguments=_method_argument,
    )
    app.command(
        "evaluate",
        evaluate_command(
            "lse_segmentation.evaluation:evaluate_runs", "lse_segmentation.tables:aggregate", "table1.md"
        ),
        help="evaluate runs and write Table 1 and the prediction figure (torchrun for several processes)",
        groups={"eval": SegEval, "runtime": RuntimeOptions},
        arguments=runs_argument,
    )
    app.command(
        "demo",
        run_command("lse_segmentation.demo:run_demo"),
        help="the README demo: render a small set, train aug and dec briefly, print Table 1",
        groups={"demo": DemoOptions, **TRAIN_GROUPS, "eval": SegEval},
        defaults=DEMO_DEFAULTS,
    )


def _build_app() -> App:
    app = App("lse-segmentation", "Locally scaled object segmentation: rendered data, training, evaluation.")
    app.command(
        "data",
        _data,
        help="render the scenes (train, val, test with distance variants) and cache them",
        groups={"data": SegData, "runtime": RuntimeOptions},
        arguments=_data_arguments,
    )
    _add_commands(app)
    return app


APP = _build_app()
"""The ``lse-segmentation`` app (its parsers also read runs' ``config.yaml`` back)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lse-segmentation`` with ``argv`` (default: the command line)."""
    return APP.main(argv)


if __name__ == "__main__":
    sys.exit(main())
