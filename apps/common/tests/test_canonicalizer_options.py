"""`lse_common.canonicalizers`: the layers of each method and the mode an app may fix."""

import pytest

from lse_common.canonicalizers import adapt_for_method, method_layers
from lse_common.options import CanonOptions


def test_method_layers_follow_the_method():
    canon = CanonOptions(layers=["input", 0])
    assert method_layers("canon", canon) == ["input"]
    assert method_layers("optim", canon) == ["input"]
    assert method_layers("dec", canon) == list(canon.layer_list)
    assert method_layers("aug", canon) == []


def test_adapt_for_method_mode_overrides_the_option():
    import timm

    canon = CanonOptions(layers=["input", 0], dec_widths=[4], num_elements=4, mode="invariant")
    net = timm.create_model("test_resnet", num_classes=3)
    adapted = adapt_for_method(net, "dec", canon, (3, 32, 32), mode="equivariant")
    assert adapted.mode == "equivariant"
    kept = adapt_for_method(timm.create_model("test_resnet", num_classes=3), "dec", canon, (3, 32, 32))
    assert kept.mode == "invariant"
    with pytest.raises(ValueError, match="mode"):
        adapt_for_method(net, "dec", canon, (3, 32, 32), mode="sideways")
