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
