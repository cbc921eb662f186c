"""monowarp.validation (which latentcanon uses) and lsmetrics' own copy give the same messages."""

from __future__ import annotations

import pytest
import torch

from latentcanon import _utils

CASES = [
    (object(), "x", [("B", "C", "H", "W")], {}),
    (torch.zeros(2, 3), "x", [("B", "C", "H", "W"), ("B", "P + H*W", "C")], {}),
    (torch.zeros(2, 3, dtype=torch.long), "x", [("B", "K")], {}),
    (torch.full((2, 3), float("nan")), "x", [("B", "K")], {}),
    (torch.zeros(0, 3), "x", [("B", "K")], {}),
    (torch.zeros(2, 3), "y", [("B", "K")], {"dims": {"B": 4}}),
]


def _message(check, value, name, shapes, kwargs):
    with pytest.raises((TypeError, ValueError)) as info:
        check(value, name, shapes, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in kwargs.items()})
    return type(info.value), str(info.value)


@pytest.mark.parametrize("module", ["monowarp._utils", "lsmetrics._utils"])
def test_same_messages_as_the_other_packages(module):
    other = pytest.importorskip(module)
    for value, name, shapes, kwargs in CASES:
        ours = _message(_utils.check_tensor, value, name, shapes, kwargs)
        assert ours == _message(other.check_tensor, value, name, shapes, kwargs)
    with pytest.raises(ValueError) as ours:
        _utils.check_choice("chw", "kind", ("nchw", "nhwc", "tokens"))
    with pytest.raises(ValueError) as theirs:
        other.check_choice("chw", "kind", ("nchw", "nhwc", "tokens"))
    assert str(ours.value) == str(theirs.value) == "kind must be one of 'nchw', 'nhwc', 'tokens', got 'chw'"


def test_check_tensor_returns_the_tensor_and_binds_dims():
    x = torch.zeros(2, 7, 5)
    dims: dict[str, int] = {}
    assert _utils.check_tensor(x, "x", [("B", "C", "H", "W"), ("B", "N", "C")], dims=dims) is x
    assert dims == {"B": 2, "N": 7, "C": 5}
    assert _utils.check_tensor(x, "x", None) is x  # any shape
    with pytest.raises(ValueError, match=r"x must have shape \(B=2, N=7, C=5\), got \(3, 7, 5\)"):
        _utils.check_tensor(torch.zeros(3, 7, 5), "x", [("B", "N", "C")], dims=dims)
