"""The ``lse-imagenet`` command: ``train``, ``evaluate`` and ``demo``.

Each subcommand takes its own option groups (``lse-imagenet train --help`` lists them), as flags
``--<group>.<field>`` or as keys of the YAML file given with ``--config`` (flags after it win);
``--print_config`` prints the resolved options. Examples::

    lse-imagenet train --config apps/imagenet/configs/paper/base.yaml \\
        --model.backbone swin_base_patch4_window7_224 --model.weights swin_base.safetensors
    torchrun --nproc_per_node 8 -m lse_imagenet train --config ...     # DistributedDataParallel
    lse-imagenet evaluate --runs runs/imagenet/swin_base_patch4_window7_224/* \\
        --eval.data_dir runs/imagenet/data/test
    lse-imagenet demo                                                  # real photos, offline
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import yaml
from jsonargparse import ArgumentParser, Namespace

from lse_common.cli import App
from lse_common.options import AugmentOptions, CanonOptions, RuntimeOptions, TrainOptions

from .options import TrainData, ImagenetEval, ImagenetModel, Recipe

__all__ = ["APP", "TRAIN_GROUPS", "main", "train_config"]

logger = logging.getLogger("lse_imagenet")

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


def _method_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        type=Literal["base", "aug", "canon", "invl", "dec"],
        default="base",
        help="base, aug, canon, invl or dec",
    )


def train_config(cfg: Namespace) -> dict:
    """A train command's options as the nested mapping stored in a run's ``config.yaml``."""
    return yaml.safe_load(APP.dump("train", cfg))


def _train(cfg: Namespace) -> int:
    from .training import train

    train(cfg)
    return 0


def _evaluate_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--runs", type=str, nargs="+", required=True, help="run folders to evaluate")


def _evaluate(cfg: Namespace) -> int:
    from lse_common import is_main_process

    from .evaluation import evaluate_runs
    from .tables import aggregate

    results = evaluate_runs(cfg.runs, cfg.eval, cfg.runtime)
    if not is_main_process():
        return 0
    results_dir = cfg.eval.results_dir or str(Path(cfg.runs[0]).parent / "results")
    summary = aggregate(results, results_dir)
    print((Path(results_dir) / "tables.md").read_text())
    print("written: " + ", ".join(summary["files"]))
    return 0


def _demo(cfg: Namespace) -> int:
    from .demo import run_demo

    return run_demo(cfg)


def register_commands(app: App) -> App:
    """Add ``train``, ``evaluate`` and ``demo`` to ``app``."""
    from .demo import DEMO_GROUPS

    app.command(
        "train",
        _train,
        help="fine-tune one method on one backbone (torchrun for several processes or machines)",
        groups=TRAIN_GROUPS,
        arguments=_method_argument,
    )
    app.command(
        "evaluate",
        _evaluate,
        help="evaluate runs on a locally scaled test set: Tables 5, 6, A5 and Fig. 8 (torchrun works too)",
        groups={"eval": ImagenetEval, "runtime": RuntimeOptions},
        arguments=_evaluate_arguments,
    )
    app.command(
        "demo",
        _demo,
        help="real photos, offline: rescaled objects, the pretrained classifier and a label-free DEC",
        groups=DEMO_GROUPS,
    )
    return app


APP = register_commands(App("lse-imagenet", "Locally scaled ImageNet: data, fine-tuning, evaluation, demo."))
"""The ``lse-imagenet`` app (its parsers also read runs' ``config.yaml`` back)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lse-imagenet`` with ``argv`` (default: the command line)."""
    return APP.main(argv)


if __name__ == "__main__":
    sys.exit(main())
