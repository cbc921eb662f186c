"""The validation helpers: `check_tensor` returns the checked tensor; `shapes=None` accepts any shape."""

from __future__ import annotations

import pytest
import torch

from lsmetrics._utils import check_choice, check_tensor


def test_check_tensor_any_shape_and_return():
    x = torch.zeros(2, 3, 4, 5, 6)
    assert check_tensor(x, "x", None) is x
    with pytest.raises(TypeError, match=r"x must have a floating point dtype, got torch\.int64"):
        check_tensor(x.long(), "x", None)
    with pytest.raises(ValueError, match="x contains NaN or infinite values"):
        check_tensor(torch.full((2,), float("inf")), "x", None)


def test_check_choice_lists_the_valid_values():
    assert check_choice("sum", "reduction", ("mean", "sum", "none")) == "sum"
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'max'"):
        check_choice("max", "reduction", ("mean", "sum", "none"))
