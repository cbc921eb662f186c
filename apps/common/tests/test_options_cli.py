"""Option groups and the CLI scaffold: per-subcommand options, --config, --print_config, one-line errors."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from lse_common.cli import App
from lse_common.options import AugmentOptions, CanonOptions, EvalOptions, RuntimeOptions, TrainOptions


@dataclasses.dataclass
class ToyData:
    """Toy data.

    Args:
        size: items.
    """

    size: int = 10


def _app(seen: dict) -> App:
    def run(cfg):
        seen["cfg"] = cfg
        return 0

    def fail(cfg):
        raise ValueError(f"cannot read {cfg.data.size}")

    app = App("toy", "A toy app.")
    app.command(
        "train",
        run,
        help="train",
        groups={
            "data": ToyData,
            "train": TrainOptions,
            "aug": AugmentOptions,
            "canon": CanonOptions,
            "runtime": RuntimeOptions,
        },
        defaults={"train": {"epochs": 3}},
    )
    app.command("evaluate", run, help="evaluate", groups={"eval": EvalOptions, "runtime": RuntimeOptions})
    app.command("fail", fail, groups={"data": ToyData})
    return app


def test_groups_are_built_with_defaults_presets_and_flags():
    seen: dict = {}
    assert _app(seen).main(["train", "--train.lr", "0.25", "--canon.layers", "[input, 0]"]) == 0
    cfg = seen["cfg"]
    assert isinstance(cfg.train, TrainOptions) and cfg.train.lr == 0.25
    assert cfg.train.epochs == 3  # the command's preset
    assert cfg.canon.layer_list == ["input", 0]
    assert cfg.aug == AugmentOptions()


def test_each_subcommand_accepts_only_its_own_options(capsys):
    seen: dict = {}
    app = _app(seen)
    assert app.main(["evaluate", "--train.lr", "0.1"]) == 2
    assert "--train.lr" in capsys.readouterr().err
    assert "cfg" not in seen


def test_config_file_then_flags_and_unknown_keys(tmp_path, capsys):
    seen: dict = {}
    app = _app(seen)
    good = tmp_path / "good.yaml"
    good.write_text("train:\n  lr: 0.5\n  seed: 4\n")
    assert app.main(["train", "--config", str(good), "--train.seed", "7"]) == 0
    assert (seen["cfg"].train.lr, seen["cfg"].train.seed) == (0.5, 7)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.5\n")
    assert app.main(["train", "--config", str(bad)]) == 2
    assert "lrr" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--train.lr", "-1"], "train.lr"),
        (["train", "--train.batch_size", "0"], "train.batch_size"),
        (["train", "--aug.p", "1.5"], "aug.p"),
        (["train", "--aug.scale_range", "[2, 1]"], "aug.scale_range"),
        (["train", "--train.resume", "true", "--train.overwrite", "true"], "train.overwrite"),
        (["train", "--canon.layers", "[top]"], "canon.layers"),
        (["train", "--train.max_steps", "0"], "train.max_steps"),
        (["evaluate", "--eval.inv_rescalings", "0"], "eval.inv_rescalings"),
        (["evaluate", "--eval.size", "-5"], "eval.size"),
        (["evaluate", "--eval.split", "train"], "eval.split"),
        (["train", "--train.sched", "linear"], "train.sched"),
    ],
)
def test_bad_values_end_in_one_line_naming_the_option(argv, needle, capsys):
    assert _app({}).main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err


def test_config_file_errors_name_the_file(tmp_path, capsys):
    app = _app({})
    broken = tmp_path / "broken.yaml"
    broken.write_text("train:\n  lr: [1\n")
    assert app.main(["train", "--config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml" in err and "line" in err
    assert app.main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_errors_while_running_are_one_line(capsys):
    assert _app({}).main(["fail"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "toy fail: error: cannot read 10"


def test_print_config_replays_through_config(tmp_path, capsys):
    seen: dict = {}
    app = _app(seen)
    assert app.main(["train", "--train.lr", "0.125", "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed)["train"]["lr"] == 0.125
    (tmp_path / "c.yaml").write_text(printed)
    assert app.main(["train", "--config", str(tmp_path / "c.yaml")]) == 0
    assert seen["cfg"].train.lr == 0.125


def test_dump_and_load_round_trip(tmp_path):
    seen: dict = {}
    app = _app(seen)
    app.main(
        ["train", "--train.lr", "0.3", "--canon.layers", "[input, 1]", "--aug.scale_range", "[0.7, 1.4]"]
    )
    text = app.dump("train", seen["cfg"])
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = app.load("train", path)
    assert (
        again.train == seen["cfg"].train and again.canon == seen["cfg"].canon and again.aug == seen["cfg"].aug
    )
    with pytest.raises(ValueError, match=r"config\.yaml"):
        path.write_text("train:\n  bogus: 1\n")
        app.load("train", path)
    with pytest.raises(FileNotFoundError):
        app.load("train", tmp_path / "nothing.yaml")


def test_declaring_a_command_twice_is_an_error():
    app = App("toy")
    app.command("a", lambda cfg: 0)
    with pytest.raises(ValueError, match="twice"):
        app.command("a", lambda cfg: 0)
    with pytest.raises(ValueError, match="no command 'b'"):
        app.command_parser("b")
