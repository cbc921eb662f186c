"""The command-line scaffold of the apps: subcommands, typed option groups, ``--config``, one-line errors.

An app declares its subcommands, each with the option groups it accepts (dataclasses, see
`lse_common.options`) and the function that runs it::

    app = App("lse-mnist", "Locally scaled MNIST.")
    app.command("train", train_main, help="train one run",
                groups={"data": MnistData, "train": TrainOptions, "runtime": RuntimeOptions})
    sys.exit(app.main())

Built on jsonargparse (what LightningCLI uses): a subcommand accepts only its own options, on the command
line (``--train.lr 3e-4``) or in the YAML file of ``--config`` (flags after it override it), and rejects an
unknown key or a badly typed value with a message naming it; ``--print_config`` prints the resolved
configuration as YAML, which ``--config`` replays. ``-v`` turns on debug logging (and tracebacks); under
torchrun only rank 0 logs below warnings. An error while a command runs ends it with one line,
``<prog> <command>: error: <message>``, and exit status 2.

The standard commands of an app are built from its own functions, named as ``"module:function"`` so that
they are imported only when the command runs (``--help`` stays fast)::

    app.command("train", run_command("lse_mnist.training:train", status=False), groups=TRAIN_GROUPS, ...)
    evaluate = evaluate_command("lse_mnist.evaluation:evaluate_runs", "lse_mnist.tables:aggregate",
                                "tables.md")
    app.command("evaluate", evaluate, groups={"eval": MnistEval, "runtime": RuntimeOptions},
                arguments=runs_argument)
    app.command("demo", run_command("lse_mnist.demo:run_demo"), groups=..., defaults=DEMO_DEFAULTS)

and `App.config` gives a command's options as the mapping a run stores in its ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

__all__ = ["App", "Command", "evaluate_command", "resolve", "run_command", "runs_argument", "setup_logging"]

logger = logging.getLogger(__name__)


def setup_logging(level: int = logging.INFO, *, main_process: bool | None = None) -> None:
    """Log the apps' messages to stderr; processes other than rank 0 log warnings and errors only.

    Args:
        level: the level of the main process.
        main_process: whether this is rank 0 (default: read from torchrun's ``RANK``).
    """
    if main_process is None:
        main_process = os.environ.get("RANK", "0") == "0"
    logging.basicConfig(
        level=level if main_process else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


@dataclass(frozen=True)
class Command:
    """One subcommand: its help, option groups, extra arguments and the function that runs it.

    Args:
        name: the subcommand's name.
        run: ``run(cfg) -> exit status``; ``cfg`` holds an instance of each group's dataclass under the
            group's name, and the extra arguments.
        help: one line for ``--help``.
        groups: group name -> options dataclass.
        arguments: adds extra (non-group) arguments to the subcommand's parser.
        defaults: group name -> {field: value}, defaults that replace the dataclass's for this command
            (the demo presets its small settings this way).
    """

    name: str
    run: Callable[[Namespace], int]
    help: str = ""
    groups: Mapping[str, type] = field(default_factory=dict)
    arguments: Callable[[ArgumentParser], None] | None = None
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class App:
    """A command-line app made of `Command`s (see the module docstring)."""

    def __init__(self, prog: str, description: str = "") -> None:
        self.prog = prog
        self.description = description
        self.commands: dict[str, Command] = {}

    def command(self, name: str, run: Callable[[Namespace], int], **kwargs: Any) -> Command:
        """Declare a subcommand (keyword arguments as in `Command`)."""
        if name in self.commands:
            raise ValueError(f"command {name!r} is declared twice")
        cmd = Command(name, run, **kwargs)
        self.commands[name] = cmd
        return cmd

    def command_parser(self, name: str) -> ArgumentParser:
        """The parser of one subcommand alone (e.g. to read a run's ``config.yaml`` back)."""
        if name not in self.commands:
            raise ValueError(f"{self.prog} has no command {name!r}; commands: {', '.join(self.commands)}")
        cmd = self.commands[name]
        parser = ArgumentParser(prog=f"{self.prog} {name}", description=cmd.help, exit_on_error=False)
        parser.add_argument(
            "--config", action=ActionConfigFile, help="a YAML file of options (flags after it win)"
        )
        parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
        for group, cls in cmd.groups.items():
            parser.add_class_arguments(cls, group, fail_untyped=True, sub_configs=True)
        if cmd.arguments is not None:
            cmd.arguments(parser)
        for group, values in cmd.defaults.items():
            parser.set_defaults({f"{group}.{k}": v for k, v in values.items()})
        return parser

    def parser(self) -> ArgumentParser:
        """The whole app's parser."""
        parser = ArgumentParser(prog=self.prog, description=self.description, exit_on_error=False)
        parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks")
        sub = parser.add_subcommands(required=True, dest="command")
        for name, cmd in self.commands.items():
            sub.add_subcommand(name, self.command_parser(name), help=cmd.help)
        return parser

    def load(self, name: str, path: str | os.PathLike, **overrides: Any) -> Namespace:
        """Read a YAML file of command ``name``'s options (e.g. a run's ``config.yaml``) and build the groups.

        Args:
            name: the subcommand whose options the file holds.
            path: the YAML file.
            overrides: ``"group.field"``-style keys (written with ``__`` for the dot) and values set on top.

        Raises:
            FileNotFoundError: if there is no such file.
            ValueError: for an unknown key or a bad value, naming the file.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        parser = self.command_parser(name)
        try:
            cfg = parser.parse_path(str(p), defaults=True)
            for key, value in overrides.items():
                cfg[key.replace("__", ".")] = value
            return _builtin_values(parser.instantiate(cfg))
        except Exception as err:  # jsonargparse's own error types
            raise ValueError(f"{p}: {_first_line(err)}") from err

    def dump(self, name: str, cfg: Namespace) -> str:
        """The YAML of command ``name``'s options in ``cfg`` (groups built or not), as ``--config`` reads."""
        parser = self.command_parser(name)
        plain = Namespace({k: v for k, v in vars(_strip(cfg)).items() if k not in ("config", "verbose")})
        return parser.dump(plain, skip_validation=True)

    def config(self, name: str, cfg: Namespace) -> dict[str, Any]:
        """Command ``name``'s options in ``cfg`` as the nested mapping of `App.dump` (what a run stores in its
        ``config.yaml``)."""
        import yaml

        return yaml.safe_load(self.dump(name, cfg))

    def reference(self) -> str:
        """The command-line reference of the app in Markdown: every subcommand, its extra arguments and
        each option group as a table of flags, types, defaults (with the command's presets) and help.

        The docs pages of the apps' command lines are this text (see ``docs/scripts/make_cli_reference.py``).
        """
        lines = [f"# `{self.prog}`", "", self.description, ""]
        lines += [
            "Each subcommand takes the option groups listed under it, as `--group.field VALUE` flags or as",
            "YAML mappings in the file given with `--config` (flags after it win); `--print_config` prints",
            "the resolved options as YAML. Generated from the options themselves.",
            "",
        ]
        for name, cmd in self.commands.items():
            parser = self.command_parser(name)
            lines += [f"## `{self.prog} {name}`", "", cmd.help + ".", ""]
            skip = {"help", "config", "print_config", "verbose", *cmd.groups}
            extras = [
                a
                for a in parser._actions  # argparse keeps no public list of a parser's arguments
                if a.option_strings and a.dest not in skip and a.dest.split(".")[0] not in cmd.groups
            ]
            if extras:
                lines += ["| argument | default | |", "|---|---|---|"]
                for a in extras:
                    default = "required" if a.required else f"`{a.default!r}`"
                    lines.append(f"| `{a.option_strings[0]}` | {default} | {_cell(a.help or '')} |")
                lines.append("")
            for group, cls in cmd.groups.items():
                summary, helps = _field_docs(cls)
                presets = cmd.defaults.get(group, {})
                lines += [f"### `{group}`: {summary}", ""]
                lines += ["| option | type | default | |", "|---|---|---|---|"]
                for f in dataclasses.fields(cls):
                    if f.name in presets:
                        default = presets[f.name]
                    elif f.default is not dataclasses.MISSING:
                        default = f.default
                    else:
                        default = f.default_factory()  # type: ignore[misc]
                    kind = str(f.type).replace(" | ", " or ")
                    text = _cell(helps.get(f.name, ""))
                    lines.append(f"| `--{group}.{f.name}` | `{kind}` | `{default!r}` | {text} |")
                lines.append("")
        return "\n".join(lines)

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` (default: ``sys.argv[1:]``), run the command, and return its exit status."""
        parser = self.parser()
        args = list(sys.argv[1:] if argv is None else argv)
        verbose = "-v" in args or "--verbose" in args
        try:
            _check_config_files(args)
            cfg = parser.parse_args(args)
        except SystemExit as exit_:  # --help, --print_config
            return int(exit_.code or 0)
        except Exception as err:
            print(f"{self.prog}: error: {_first_line(err)}", file=sys.stderr)
            return 2
        name = cfg.command
        setup_logging(logging.DEBUG if verbose else logging.INFO)
        try:
            built = _builtin_values(parser.instantiate(cfg))[name]
            return int(self.commands[name].run(built) or 0)
        except KeyboardInterrupt:
            print(f"{self.prog} {name}: interrupted", file=sys.stderr)
            return 130
        except Exception as err:
            if verbose:
                raise
            print(f"{self.prog} {name}: error: {_first_line(err)}", file=sys.stderr)
            return 2


def resolve(target: str | Callable[..., Any]) -> Callable[..., Any]:
    """The function named by ``target`` (``"package.module:function"``), imported now; a callable is
    returned as it is.

    Raises:
        ValueError: if ``target`` is a string without one ``:``.
    """
    if callable(target):
        return target
    if not isinstance(target, str) or target.count(":") != 1:
        raise ValueError(f"target must be 'module:function' or a callable, got {target!r}")
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_command(
    target: str | Callable[[Namespace], Any], *, status: bool = True
) -> Callable[[Namespace], int]:
    """A command that calls ``target(cfg)`` (see `resolve`, imported when the command runs).

    Args:
        target: the function, or its ``"module:function"`` name.
        status: whether ``target`` returns the exit status (a demo); otherwise (training, which returns
            its run) the command exits with 0 once ``target`` returns.
    """

    def run(cfg: Namespace) -> int:
        result = resolve(target)(cfg)
        return int(result or 0) if status else 0

    return run


def runs_argument(parser: ArgumentParser) -> None:
    """Add ``--runs`` (one or more run folders, required) to an evaluate command's ``parser``."""
    parser.add_argument("--runs", type=str, nargs="+", required=True, help="run folders to evaluate")


def evaluate_command(
    evaluate_runs: str | Callable[..., Any], aggregate: str | Callable[..., Any], table_file: str
) -> Callable[[Namespace], int]:
    """The evaluate command of an app: evaluate ``cfg.runs``, write the tables, print them and the files.

    The command calls ``evaluate_runs(cfg.runs, cfg.eval, cfg.runtime) -> results`` on every process (it may
    share the work under torchrun), then, on rank 0 only, ``aggregate(results, results_dir) -> summary``
    with ``results_dir = cfg.eval.results_dir`` or ``results`` beside the first run, and prints
    ``results_dir/table_file`` and ``summary["files"]``. Its options: the groups ``eval`` (with a
    ``results_dir`` field) and ``runtime``, and `runs_argument`.

    Args:
        evaluate_runs: the app's function, or its ``"module:function"`` name (see `resolve`).
        aggregate: the app's table writer, or its name.
        table_file: the Markdown file of the tables inside ``results_dir``, printed at the end.
    """

    def evaluate(cfg: Namespace) -> int:
        from .distributed import is_main_process

        results = resolve(evaluate_runs)(cfg.runs, cfg.eval, cfg.runtime)
        if not is_main_process():
            return 0
        results_dir = cfg.eval.results_dir or str(Path(cfg.runs[0]).parent / "results")
        summary = resolve(aggregate)(results, results_dir)
        print((Path(results_dir) / table_file).read_text())
        print("written: " + ", ".join(summary["files"]))
        return 0

    return evaluate


def _check_config_files(args: Sequence[str]) -> None:
    """Name the file and line of a ``--config`` that is missing or not valid YAML."""
    import yaml

    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(args):
            value = args[i + 1]
        if value is None:
            continue
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ValueError(
                f"config file {path} is not valid YAML{where}: {getattr(err, 'problem', err)}"
            ) from err


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _field_docs(cls: type) -> tuple[str, dict[str, str]]:
    """The first line of a dataclass's docstring and its ``Args:`` texts (base classes' too)."""
    from docstring_parser import parse

    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__doc__ and dataclasses.is_dataclass(klass):
            helps.update({p.arg_name: p.description or "" for p in parse(klass.__doc__).params})
    summary = (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")
    return summary, helps


def _first_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return text or type(err).__name__


def _builtin(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int) and type(value) is not int:  # jsonargparse's PositiveInt and the like
        return int(value)
    if isinstance(value, float) and type(value) is not float:
        return float(value)
    if isinstance(value, list | tuple):
        return type(value)(_builtin(v) for v in value)
    return value


def _builtin_values(cfg: Namespace) -> Namespace:
    """``cfg`` with the restricted number types of jsonargparse (``PositiveFloat``...) turned into plain
    ``int`` and ``float`` inside every options dataclass, so that values pickle and compare as built-ins
    (an optimizer's state loads with ``weights_only=True``)."""
    for key, value in vars(cfg).items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                object.__setattr__(value, f.name, _builtin(getattr(value, f.name)))
        elif isinstance(value, Namespace):
            _builtin_values(value)
        else:
            cfg[key] = _builtin(value)
    return cfg


def _strip(cfg: Namespace) -> Namespace:
    """``cfg`` with dataclass instances turned back into namespaces (for dumping)."""
    out = Namespace()
    for key, value in vars(cfg).items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out[key] = Namespace(dataclasses.asdict(value))
        elif isinstance(value, Namespace):
            out[key] = _strip(value)
        else:
            out[key] = value
    return out
