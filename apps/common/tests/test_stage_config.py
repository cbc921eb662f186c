"""`lse_common.training.stage_config`: one training stage's options derived from a command's options."""

import pytest
from jsonargparse import Namespace

from lse_common.options import CanonOptions, RuntimeOptions, TrainOptions
from lse_common.training import stage_config

GROUPS = ["train", "canon", "runtime"]


def _cfg() -> Namespace:
    return Namespace(
        demo=object(),
        train=TrainOptions(epochs=5, lr=1e-3),
        canon=CanonOptions(layers=["input"]),
        runtime=RuntimeOptions(device="cpu"),
    )


def test_stage_config_sets_the_run_folder_and_replaces_fields(tmp_path):
    cfg = _cfg()
    run = stage_config(
        cfg, "dec", GROUPS, out_dir=tmp_path / "dec", resume=True, train={"lr": 2e-4}, canon={"layers": [0]}
    )
    assert list(vars(run)) == ["method", *GROUPS] and run.method == "dec"
    assert run.train.out_dir == str(tmp_path / "dec") and run.train.resume and not run.train.overwrite
    assert (run.train.lr, run.train.epochs) == (2e-4, 5)
    assert run.canon.layers == [0] and cfg.canon.layers == ["input"]  # the source is left as it was
    assert run.runtime is cfg.runtime
    assert cfg.train.out_dir != run.train.out_dir
    fresh = stage_config(cfg, "aug", GROUPS, out_dir="x", resume=False, overwrite=True, canon=None)
    assert fresh.train.overwrite and not fresh.train.resume and fresh.canon is cfg.canon


def test_stage_config_names_bad_groups():
    with pytest.raises(ValueError, match="data"):
        stage_config(_cfg(), "aug", GROUPS, out_dir="x", resume=False, data={"dir": "d"})
    with pytest.raises(ValueError, match="train"):
        stage_config(_cfg(), "aug", ["canon"], out_dir="x", resume=False)


def test_demo_stage_puts_runs_and_data_under_the_demo_folder(tmp_path):
    import dataclasses

    from lse_common.options import AugmentOptions
    from lse_common.training import demo_stage

    # an app's data group: only its folder matters here
    data_cls = dataclasses.make_dataclass("Data", [("dir", str, dataclasses.field(default="elsewhere"))])
    groups = ["data", "train", "aug", "canon", "runtime"]
    for overwrite in (False, True):
        cfg = _cfg()
        cfg.demo = Namespace(out_dir=str(tmp_path / "demo"), overwrite=overwrite)
        cfg.data, cfg.aug = data_cls(), AugmentOptions()
        run = demo_stage(cfg, "dec", groups, train={"epochs": 1}, canon={"lr": 1e-2})
        assert run.train.out_dir == str(tmp_path / "demo" / "dec")
        assert run.data.dir == str(tmp_path / "demo" / "data")
        assert (run.train.resume, run.train.overwrite) == (not overwrite, overwrite)
        assert (run.train.epochs, run.canon.lr, cfg.canon.lr) == (1, 1e-2, CanonOptions().lr)
    with pytest.raises(ValueError, match="not among groups"):
        demo_stage(cfg, "aug", ["train", "canon"], train={})  # data is not a group of that command
