"""`lse_common.training.load_init_weights`: ``train.init_from`` as a weights file or a run folder."""

import torch
from safetensors.torch import save_model
from torch import nn

from lse_common.training import load_init_weights


def test_load_init_weights_from_a_file_or_a_run_folder(tmp_path):
    source = nn.Linear(3, 2)
    run = tmp_path / "run"
    run.mkdir()
    save_model(source, str(run / "final.safetensors"))
    model = nn.Linear(3, 2)
    assert not torch.equal(model.weight, source.weight)
    assert load_init_weights(model, run) == run / "final.safetensors"
    assert torch.equal(model.weight, source.weight)
    other = nn.Linear(3, 2)
    assert load_init_weights(other, str(run / "final.safetensors")) == run / "final.safetensors"
    assert torch.equal(other.bias, source.bias)
