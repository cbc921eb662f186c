"""The standard commands of `lse_common.cli`: ``run_command``, ``evaluate_command``, ``App.config``."""

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from lse_common.cli import App, evaluate_command, resolve, run_command, runs_argument
from lse_common.options import RuntimeOptions


@dataclass
class _Eval:
    """Evaluation options.

    Args:
        results_dir: where the tables go.
        scale: a number passed through.
    """

    results_dir: str | None = None
    scale: float = 1.0


@pytest.fixture
def fake_app(monkeypatch):
    """A module with an evaluate_runs, an aggregate and a train that record their calls."""
    calls = []
    mod = types.ModuleType("_fake_lse_app")

    def evaluate_runs(runs, eval_opts, runtime):
        calls.append(("evaluate", list(runs), eval_opts.scale, runtime.device))
        return {"runs": list(runs), "scale": eval_opts.scale}

    def aggregate(results, results_dir):
        out = Path(results_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tables.md").write_text(f"| runs | {len(results['runs'])} |\n")
        (out / "results.json").write_text(json.dumps(results))
        return {"files": [str(out / "tables.md"), str(out / "results.json")]}

    def train(cfg):
        calls.append(("train", cfg.eval.scale))
        return Path("a-run")  # a run folder, not an exit status

    def demo(cfg):
        return 3

    mod.evaluate_runs, mod.aggregate, mod.train, mod.demo = evaluate_runs, aggregate, train, demo
    monkeypatch.setitem(sys.modules, "_fake_lse_app", mod)
    return calls


def _app() -> App:
    app = App("fake", "a fake app")
    groups = {"eval": _Eval, "runtime": RuntimeOptions}
    app.command("train", run_command("_fake_lse_app:train", status=False), groups={"eval": _Eval})
    app.command(
        "evaluate",
        evaluate_command("_fake_lse_app:evaluate_runs", "_fake_lse_app:aggregate", "tables.md"),
        groups=groups,
        arguments=runs_argument,
    )
    app.command("demo", run_command("_fake_lse_app:demo"), groups={"eval": _Eval})
    return app


def test_evaluate_command_prints_the_table_and_the_files(fake_app, tmp_path, capsys):
    runs = [str(tmp_path / "r1"), str(tmp_path / "r2")]
    assert _app().main(["evaluate", "--runs", *runs, "--eval.scale", "2.5", "--runtime.device", "cpu"]) == 0
    assert fake_app == [("evaluate", runs, 2.5, "cpu")]
    out = capsys.readouterr().out
    assert "| runs | 2 |" in out
    assert f"written: {tmp_path / 'results' / 'tables.md'}, {tmp_path / 'results' / 'results.json'}" in out
    other = tmp_path / "elsewhere"
    assert _app().main(["evaluate", "--runs", runs[0], "--eval.results_dir", str(other)]) == 0
    assert json.loads((other / "results.json").read_text())["runs"] == runs[:1]


def test_evaluate_command_requires_runs(fake_app, capsys):
    assert _app().main(["evaluate"]) == 2
    assert "runs" in capsys.readouterr().err


def test_run_command_status(fake_app):
    assert _app().main(["train", "--eval.scale", "4"]) == 0
    assert fake_app == [("train", 4.0)]
    assert _app().main(["demo"]) == 3


def test_resolve_names_and_callables(fake_app):
    assert resolve("json:dumps") is json.dumps
    assert resolve(len) is len
    with pytest.raises(ValueError, match="target"):
        resolve("json.dumps")
    with pytest.raises(ModuleNotFoundError):
        resolve("_no_such_module_here:f")


def test_app_config_is_the_dumped_mapping(fake_app, tmp_path):
    import yaml

    app = _app()
    cfg = app.command_parser("train").parse_args(["--eval.scale", "0.5"])
    config = app.config("train", cfg)
    assert config["eval"]["scale"] == 0.5 and config["eval"].get("results_dir") is None
    assert "config" not in config and "verbose" not in config
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert app.load("train", path).eval.scale == 0.5
