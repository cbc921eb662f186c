"""The ``lse-segmentation`` command: ``data``.

Each subcommand takes its own option groups (``lse-segmentation data --help`` lists them), as flags
``--<group>.<field>`` or as keys of the YAML file given with ``--config`` (flags after it win);
``--print_config`` prints the resolved options. Examples::

    lse-segmentation data --data apps/segmentation/configs/cpu/data.yaml --preview samples.png
    lse-segmentation data --data apps/segmentation/configs/paper/data.yaml       # the paper's data set
    lse-segmentation data --data.size 256 --benchmark true                         # render speed
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Literal

from jsonargparse import ArgumentParser, Namespace

from lse_common.cli import App
from lse_common.options import RuntimeOptions

from .options import SegData

__all__ = ["APP", "main"]

logger = logging.getLogger("lse_segmentation")


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


def _build_app() -> App:
    app = App("lse-segmentation", "Locally scaled object segmentation: rendered data, training, evaluation.")
    app.command(
        "data",
        _data,
        help="render the scenes (train, val, test with distance variants) and cache them",
        groups={"data": SegData, "runtime": RuntimeOptions},
        arguments=_data_arguments,
    )
    return app


APP = _build_app()
"""The ``lse-segmentation`` app (its parsers also read runs' ``config.yaml`` back)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lse-segmentation`` with ``argv`` (default: the command line)."""
    return APP.main(argv)


if __name__ == "__main__":
    sys.exit(main())
