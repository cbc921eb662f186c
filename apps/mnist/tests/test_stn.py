"""The ``stn`` method, the ablation of the DEC's equilibrium: the DEC's H and settings, applied once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import deqcanon
from lse_common import read_csv_log
from lse_common.canonicalizers import make_canonicalizer
from lse_common.options import AugmentOptions, CanonOptions, TrainOptions
from lse_mnist.cli import APP, main, train_config
from lse_mnist.models import build_model
from lse_mnist.options import CANONICALIZING, METHODS, MnistModel
from lse_mnist.tables import NAMES
from lse_mnist.training import make_step_fn

CONFIGS = Path(__file__).parents[1] / "configs"
MODEL = MnistModel(backbone="test_resnet", pretrained=False)
CANON = CanonOptions(dec_widths=[4, 8], dec_view_size=32, layers=["input", 0], dec_tol=1e-2)


def _batch(n: int = 3, size: tuple[int, int] = (32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 255, (n, 1, *size), dtype=torch.uint8, generator=gen)
    return x, torch.arange(n) * 7


def test_stn_is_a_method_with_a_label():
    assert "stn" in METHODS and "stn" in CANONICALIZING and NAMES["stn"]
    assert APP.command_parser("train").parse_args(["--method", "stn"]).method == "stn"


def test_stn_gets_the_dec_h_in_the_dec_places():
    dec = build_model(MODEL, (32, 32), "dec", CANON, for_training=False)
    stn = build_model(MODEL, (32, 32), "stn", CANON, for_training=False)
    assert list(stn.net.canonicalizers) == list(dec.net.canonicalizers)  # the same layers
    for key, module in stn.net.canonicalizers.items():
        assert isinstance(module, deqcanon.SpatialTransformerCanonicalizer) and module.tol == 1e-2
        other = dec.net.canonicalizers[key]
        assert isinstance(other, deqcanon.DEQCanonicalizer)
        shapes = {k: v.shape for k, v in module.param_net.state_dict().items()}
        assert shapes == {k: v.shape for k, v in other.param_net.state_dict().items()}
        assert module.param_net.view_size == other.param_net.view_size == 32
    # the factory takes the bounded head and its options like the DEC's
    bounded = CanonOptions(dec_widths=[4, 8], dec_head="bounded", dec_temperature=2.0, dec_init_scale=0.1)
    net = make_canonicalizer("stn", bounded)(1).param_net
    assert net.head_kind == "bounded" and net.temperature == 2.0


def test_one_training_step_of_stn_logs_the_warp_and_trains_h():
    model = build_model(MODEL, (32, 32), "stn", CanonOptions(dec_widths=[4, 8], dec_head="bounded"))
    torch.manual_seed(0)
    loss, logs = make_step_fn("stn", TrainOptions(), AugmentOptions())(model, _batch())
    assert torch.isfinite(loss) and logs["solver_iters"] == 1.0  # H applied once
    assert logs["warp_log_scale_mean"] > 0 and logs["warp_log_scale_max"] >= logs["warp_log_scale_mean"]
    loss.backward()
    grads = [p.grad for p in model.net.canonicalizers.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)  # every parameter of H, the body included


def test_stn_and_dec_log_the_same_warp_statistics():
    torch.manual_seed(0)
    keys = {}
    for method in ("dec", "stn"):
        model = build_model(MODEL, (32, 32), method, CanonOptions(dec_widths=[4, 8]))
        _, logs = make_step_fn(method, TrainOptions(consistency_weight=1.0), AugmentOptions())(
            model, _batch()
        )
        keys[method] = {k for k in logs if k.startswith("warp_") or k == "solver_iters"}
    assert keys["stn"] == keys["dec"] == {"warp_log_scale_mean", "warp_log_scale_max", "solver_iters"}


def test_stn_trains_from_the_command_line_and_logs_its_warps(tmp_path):
    common = [
        "--data.dir", str(tmp_path / "data"),
        "--data.canvas", "32",
        "--data.train_size", "4",
        "--data.val_size", "4",
        "--data.test_size", "4",
        "--model.backbone", "test_resnet",
        "--model.pretrained", "false",
        "--train.epochs", "1",
        "--train.batch_size", "4",
        "--train.log_every", "1",
        "--canon.dec_widths", "[4, 8]",
        "--runtime.num_workers", "0",
        "--runtime.progress", "false",
        "--runtime.device", "cpu",
    ]  # fmt: skip
    run = tmp_path / "stn"
    assert main(["train", *common, "--method", "stn", "--train.out_dir", str(run)]) == 0
    assert APP.load("train", run / "config.yaml").method == "stn"
    rows = [r for r in read_csv_log(run / "metrics.csv") if r["split"] == "train"]
    assert rows and float(rows[0]["solver_iters"]) == 1.0
    assert float(rows[0]["warp_log_scale_mean"]) >= 0.0  # the size of the learned warp is logged
    assert any(".canonicalizers." in k for k in load_file(run / "final.safetensors"))


@pytest.mark.parametrize("method", ["canon", "optim"])
def test_the_other_canonicalizers_are_unchanged(method):
    model = build_model(
        MODEL,
        (32, 32),
        method,
        CanonOptions(num_elements=4, energy_width=8, optim_steps=2),
        for_training=False,
    )
    assert list(model.net.canonicalizers) == ["input"]


@pytest.mark.parametrize("protocol", ["cpu", "paper"])
def test_stn_configs_are_the_dec_configs_without_the_solver(protocol):
    """Equal training budget: every option of dec.yaml but the solve's (which the STN does not have)."""
    configs = {m: train_config(APP.load("train", CONFIGS / protocol / f"{m}.yaml")) for m in ("dec", "stn")}
    assert (configs["dec"]["method"], configs["stn"]["method"]) == ("dec", "stn")
    for cfg in configs.values():
        del cfg["method"]
        for key in ("dec_solver", "dec_max_iter", "dec_backward"):
            del cfg["canon"][key]
    assert configs["stn"] == configs["dec"]
