"""`lse_common.evaluation.load_run_config` and `evaluate_runs`: read a run, reuse or evaluate its result."""

from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from lse_common.cli import App
from lse_common.evaluation import evaluate_runs, load_run_config, store_result, weights_digest
from lse_common.options import RuntimeOptions


@dataclass
class _Data:
    """Data options.

    Args:
        dir: the data folder.
        size: images per split.
    """

    dir: str = "data"
    size: int = 4


def _app() -> App:
    app = App("fake")
    app.command("train", lambda cfg: 0, groups={"data": _Data})
    return app


def _run(tmp_path, name="run", size=4):
    run = tmp_path / name
    run.mkdir()
    (run / "config.yaml").write_text(f"data:\n  dir: data\n  size: {size}\n")
    save_file({"w": torch.full((3,), float(size))}, str(run / "final.safetensors"))
    return run


def test_load_run_config_reads_options_and_weights(tmp_path):
    run = _run(tmp_path)
    cfg, weights = load_run_config(_app(), run)
    assert (cfg.data.dir, cfg.data.size) == ("data", 4) and weights == run / "final.safetensors"
    assert load_run_config(_app(), run, data_dir="elsewhere")[0].data.dir == "elsewhere"
    with pytest.raises(FileNotFoundError, match=r"no config\.yaml"):
        load_run_config(_app(), tmp_path)


def test_evaluate_runs_reuses_only_matching_results(tmp_path):
    runs = [str(_run(tmp_path, "a", 4)), str(_run(tmp_path, "b", 6))]
    evaluated = []

    def evaluate_run(run, *, info, digest):
        evaluated.append(run)
        result = {"run": run, "settings": {"split": "test"}, "weights_sha256": digest}
        store_result(f"{run}/eval-test.json", result)
        return result

    kwargs = dict(
        load_config=lambda run: load_run_config(_app(), run)[0],
        settings=lambda cfg: {"split": "test"},
        result_file="eval-test.json",
    )
    runtime = RuntimeOptions(device="cpu")
    first = evaluate_runs(runs, runtime, evaluate_run, **kwargs)
    assert [r["run"] for r in first] == runs and evaluated == runs
    assert first[1]["weights_sha256"] == weights_digest(f"{runs[1]}/final.safetensors")
    assert evaluate_runs(runs, runtime, evaluate_run, **kwargs) == first and evaluated == runs
    save_file({"w": torch.zeros(3)}, f"{runs[0]}/final.safetensors")  # retrained
    evaluate_runs(runs, runtime, evaluate_run, **kwargs)
    assert evaluated == [*runs, runs[0]]
    evaluate_runs(runs[1:], runtime, evaluate_run, force=True, **kwargs)
    assert evaluated == [*runs, runs[0], runs[1]]
    store_result(f"{runs[1]}/eval-test.json", {"settings": {"split": "val"}, "weights_sha256": "x"})
    evaluate_runs(runs[1:], runtime, evaluate_run, **{**kwargs, "settings": lambda cfg: {"split": "val"}})
    assert evaluated[-1] == runs[1] and len(evaluated) == 5
