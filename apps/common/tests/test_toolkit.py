"""Reports, evaluation helpers, caches, training steps and the optimizer and scheduler factories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

import latentcanon
from lse_common.cache import cached_array, read_meta, write_meta
from lse_common.evaluation import (
    batches,
    load_stored_result,
    run_weights,
    shard,
    store_result,
    weights_digest,
)
from lse_common.objectives import augmented_step, paired_step, warp_statistics
from lse_common.options import CanonOptions, TrainOptions
from lse_common.reports import (
    format_mean_std,
    group_results,
    markdown_table,
    mean_std,
    paired_differences,
    write_report,
)
from lse_common.training import backbone_modules, create_optimizer, create_scheduler, param_groups


# -- reports -------------------------------------------------------------------------------------------------
def _results():
    rows = []
    for seed, (aug, dec, invl) in enumerate([(0.50, 0.55, 0.52), (0.40, 0.47, 0.43), (0.45, 0.44, 0.46)]):
        for method, acc in (("aug", aug), ("dec", dec), ("invl", invl)):
            rows.append(
                {"backbone": "r18", "method": method, "seed": seed, "acc": acc, "run": f"{method}{seed}"}
            )
    return rows


def test_mean_std_and_format():
    assert mean_std([1.0]) == (1.0, 0.0)
    m, s = mean_std([0.1, 0.3], scale=100)
    assert m == pytest.approx(20.0) and s == pytest.approx(np.std([10, 30], ddof=1))
    assert format_mean_std(20.0, 14.1421, 2) == "20.00 ± 14.14"
    assert format_mean_std(20.0, 0.0, 1) == "20.00"
    with pytest.raises(ValueError):
        mean_std([])


def test_paired_differences_pair_by_backbone_and_seed():
    diffs = paired_differences(_results(), "acc", reference="aug", scale=100)
    dec = diffs[("r18", "dec")]
    assert dec["diffs"] == pytest.approx([5.0, 7.0, -1.0])
    assert dec["seeds"] == [0, 1, 2]
    assert dec["mean"] == pytest.approx(11 / 3)
    assert dec["std"] == pytest.approx(np.std([5, 7, -1], ddof=1))
    assert dec["better"] == 2 and dec["n"] == 3
    assert ("r18", "aug") not in diffs
    # a run without a partner is left out
    lonely = [*_results(), {"backbone": "r18", "method": "dec", "seed": 9, "acc": 1.0}]
    assert paired_differences(lonely, "acc", reference="aug")[("r18", "dec")]["n"] == 3


def test_group_results_and_markdown(tmp_path):
    groups = group_results(_results())
    assert list(groups) == [("r18", "aug"), ("r18", "dec"), ("r18", "invl")]
    with pytest.raises(ValueError, match="has no"):
        group_results([{"method": "aug"}])
    table = markdown_table(["Method", "Acc"], [["Aug", "1.00"], ["DEC", "2.00"]])
    assert table.splitlines()[1] == "|---|---:|"
    with pytest.raises(ValueError, match="cells"):
        markdown_table(["a", "b"], [["only one"]])
    files = write_report(tmp_path / "out", "tables", table, {"x": np.float32(1.5), "a": np.arange(2)})
    assert (tmp_path / "out" / "tables.md").read_text() == table
    assert json.loads((tmp_path / "out" / "tables.json").read_text()) == {"x": 1.5, "a": [0, 1]}
    assert len(files) == 2


# -- evaluation helpers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 3), (7, 4), (2, 4), (0, 2)])
def test_shards_cover_every_index_once(n, world):
    parts = [shard(n, r, world) for r in range(world)]
    joined = np.concatenate(parts)
    assert joined.tolist() == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError):
        shard(n, world, world)


def test_batches():
    assert [b.tolist() for b in batches(np.arange(5), 2)] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError):
        list(batches(np.arange(5), 0))


def test_stored_result_is_reused_only_for_the_same_weights_and_settings(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    save_file({"w": torch.ones(3)}, str(run / "final.safetensors"))
    weights = run_weights(run)
    digest = weights_digest(weights)
    settings = {"split": "test", "size": 10, "scales": [0.5, 1.0]}
    store_result(run / "eval.json", {"acc": 0.5, "settings": settings, "weights_sha256": digest})
    assert load_stored_result(run / "eval.json", settings=settings, digest=digest)["acc"] == 0.5
    assert load_stored_result(run / "eval.json", settings={**settings, "size": 11}, digest=digest) is None
    save_file({"w": torch.zeros(3)}, str(run / "final.safetensors"))  # retrained
    assert weights_digest(weights) != digest
    assert load_stored_result(run / "eval.json", settings=settings, digest=weights_digest(weights)) is None
    (run / "eval.json").write_text("{broken")
    assert load_stored_result(run / "eval.json", settings=settings, digest=digest) is None
    with pytest.raises(ValueError, match="weights_sha256"):
        store_result(run / "x.json", {"settings": {}})
    with pytest.raises(FileNotFoundError, match="neither"):
        run_weights(tmp_path)


# -- caches --------------------------------------------------------------------------------------------------
def test_cached_array_fills_in_chunks_once_and_rebuilds_on_a_new_shape(tmp_path):
    calls = []

    def fill(start, end, out):
        calls.append((start, end))
        out[:] = np.arange(start, end)[:, None]

    a = cached_array(tmp_path / "a.npy", (5, 2), np.int64, fill, chunk=2, progress=False)
    assert calls == [(0, 2), (2, 4), (4, 5)]
    assert a[:, 0].tolist() == [0, 1, 2, 3, 4]
    cached_array(tmp_path / "a.npy", (5, 2), np.int64, fill, chunk=2, progress=False)
    assert len(calls) == 3  # reused
    b = cached_array(tmp_path / "a.npy", (6, 2), np.int64, fill, chunk=10, progress=False)
    assert b.shape == (6, 2) and len(calls) == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_cached_array_leaves_nothing_after_a_failed_fill(tmp_path):
    def fill(start, end, out):
        raise RuntimeError("renderer failed")

    with pytest.raises(RuntimeError):
        cached_array(tmp_path / "a.npy", (4, 2), np.uint8, fill, progress=False)
    assert not (tmp_path / "a.npy").exists() and not list(tmp_path.iterdir())


def test_meta_round_trip(tmp_path):
    write_meta(tmp_path / "m.json", {"seed": 1})
    assert read_meta(tmp_path / "m.json") == {"seed": 1}
    assert read_meta(tmp_path / "none.json") is None
    (tmp_path / "m.json").write_text("[1, 2]")
    assert read_meta(tmp_path / "m.json") is None


# -- training steps ------------------------------------------------------------------------------------------
def _prepare(batch):
    x, y = batch
    return x, y


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


def test_augmented_step_gives_a_loss_with_gradients_and_accuracy():
    model = _tiny_model()
    step = augmented_step(_prepare, p=1.0, scale_range=(0.5, 2.0))
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    loss, metrics = step(model, (x, y))
    loss.backward()
    assert loss.ndim == 0 and 0 <= metrics["acc"] <= 1
    assert model[0].weight.grad is not None
    with pytest.raises(ValueError):
        augmented_step(_prepare, p=1.5)


def test_paired_step_is_cross_entropy_plus_weighted_invariance():
    model = _tiny_model()
    x, y = torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    loss0, m0 = paired_step(_prepare, weight=0.0)(model, (x, y))
    torch.manual_seed(1)
    loss2, m2 = paired_step(_prepare, weight=2.0)(model, (x, y))
    assert m0["inv"] == pytest.approx(m2["inv"]) and m0["ce"] == pytest.approx(m2["ce"])
    assert float(loss2.detach()) == pytest.approx(m2["ce"] + 2.0 * m2["inv"], rel=1e-5)
    assert float(loss0.detach()) == pytest.approx(m0["ce"], rel=1e-6)
    with pytest.raises(ValueError):
        paired_step(_prepare, weight=-1.0)


def test_warp_statistics_see_the_identity_and_a_real_warp():
    import monowarp

    class Result:
        def __init__(self, element):
            self.element = element

    ident = monowarp.MonotoneScale.identity(2, grid=(4, 4))
    stats = warp_statistics({"input": Result(ident)})
    assert stats["warp_log_scale_mean"] == pytest.approx(0.0, abs=1e-5)
    g = monowarp.sample_monotone_scale(2, (4, 4), (0.5, 2.0), generator=torch.Generator().manual_seed(0))
    moved = warp_statistics({"input": Result(g)})
    assert 0 < moved["warp_log_scale_mean"] <= moved["warp_log_scale_max"] <= np.log(2.0) + 1e-4
    assert warp_statistics({}) == {}


# -- optimizer and scheduler factories -----------------------------------------------------------------------
class _Classifier(nn.Module):
    def __init__(self, net, head):
        super().__init__()
        self.net = net
        self.head = head

    def forward(self, x):
        return self.head(self.net.forward_features(x).mean((2, 3)))


def _adapted():
    backbone = timm.create_model("resnet10t", num_classes=0, pretrained=False)
    adapted = latentcanon.adapt(backbone, layers=["input"], input_size=(3, 32, 32))
    return _Classifier(adapted, nn.Linear(backbone.num_features, 5))


def test_param_groups_separate_canonicalizers_and_cover_every_parameter():
    model = _adapted()
    groups = param_groups(model, lr=1e-4, canon_lr=1e-2, weight_decay=0.05)
    names = {g["name"] for g in groups}
    assert names == {"backbone", "canonicalizers"}
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len([p for p in model.parameters() if p.requires_grad])
    canon = {id(p) for p in model.net.canonicalizers.parameters()}
    for g in groups:
        in_canon = {id(p) in canon for p in g["params"]}
        assert in_canon == {g["name"] == "canonicalizers"}
        assert g["lr"] == (1e-2 if g["name"] == "canonicalizers" else 1e-4)
    head_bias = next(g for g in groups if any(p is model.head.bias for p in g["params"]))
    assert head_bias["weight_decay"] == 0.0


def test_timm_optimizer_and_scheduler_from_the_options():
    model = _adapted()
    train = TrainOptions(opt="adamw", lr=1e-3, epochs=4, warmup_epochs=1, warmup_lr=1e-5, sched="cosine")
    opt = create_optimizer(model, train, CanonOptions(lr=1e-2))
    assert isinstance(opt, torch.optim.AdamW)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"backbone": 1e-3, "canonicalizers": 1e-2}
    sched, monitor = create_scheduler(opt, train, updates_per_epoch=10)
    assert monitor is None and hasattr(sched, "step_update")
    sched.step_update(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    sched.step_update(10)  # after the warm-up: timm's cosine of the base rates, each group its own
    factor = 0.5 * (1 + np.cos(np.pi * 10 / 40))
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"backbone": 1e-3 * factor, "canonicalizers": 1e-2 * factor})
    sched.step_update(40)
    assert opt.param_groups[0]["lr"] < 1e-4
    assert create_scheduler(opt, TrainOptions(sched="none"), 10) == (None, None)
    _, monitor = create_scheduler(opt, TrainOptions(sched="plateau"), 10)
    assert monitor == "val_acc"
    with pytest.raises(ValueError, match="timm's optimizers"):
        create_optimizer(model, TrainOptions(opt="nesterovish"))


def test_backbone_modules_leave_only_the_canonicalizers_trainable():
    model = _adapted()
    frozen = backbone_modules(model)
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    canon_ids = {id(p) for p in model.net.canonicalizers.parameters()}
    assert frozen_ids.isdisjoint(canon_ids)
    assert frozen_ids | canon_ids == {id(p) for p in model.parameters()}
