r"""latentcanon: canonicalizers in the latent features of timm backbones, through removable hooks.

The paper's latent canonicalization (Sec. 4.3): a pretrained network $M = M_K \circ \dots \circ M_1$ is
adapted layer by layer, each chosen layer reading a canonicalized feature,
$\tilde M_k(F_k) = M_k(S^{-1}(F_k; \Phi_k))$ (invariant, eq. 22) or
$\tilde M_k(F_k) = S(M_k(S^{-1}(F_k; \Phi_k)); \Phi_k)$ (equivariant, eq. 21), with $\Phi_k$ found by a
canonicalizer (by default a DEC from `deqcanon`). `adapt` does it for any timm backbone whose blocks or
stages it can find, through forward hooks: the backbone's code and state_dict keys stay as they are.

Examples:
    >>> import timm, torch
    >>> import latentcanon
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10)
    >>> with latentcanon.adapt(vit, layers=["input", 0], mode="equivariant") as adapted:
    ...     logits = adapted(torch.randn(2, 3, 32, 32))
    >>> tuple(logits.shape)
    (2, 10)
"""

from .layers import INPUT, find_layers, resolve_layers
from .layouts import (
    INVERSES,
    LAYOUTS,
    GroupAction,
    Layout,
    ModelLayout,
    from_nchw,
    to_nchw,
    unwarp_feature,
    warp_feature,
)
from .model import (
    MODES,
    SOURCES,
    CanonicalizerFactory,
    LatentCanonicalizedModel,
    adapt,
    default_canonicalizer,
)
from .pretrained import (
    KEY_MATCHING,
    PackagedWeights,
    create_model,
    load_pretrained,
    match_state_dict_in_order,
    packaged_weights,
    packaged_weights_names,
    register_packaged_weights,
)
from .probe import UnsupportedLayoutError, probe_layers

__version__ = "0.1.0"

__all__ = [
    "INPUT",
    "INVERSES",
    "KEY_MATCHING",
    "LAYOUTS",
    "MODES",
    "SOURCES",
    "CanonicalizerFactory",
    "GroupAction",
    "LatentCanonicalizedModel",
    "Layout",
    "ModelLayout",
    "PackagedWeights",
    "UnsupportedLayoutError",
    "adapt",
    "create_model",
    "default_canonicalizer",
    "find_layers",
    "from_nchw",
    "load_pretrained",
    "match_state_dict_in_order",
    "packaged_weights",
    "packaged_weights_names",
    "probe_layers",
    "register_packaged_weights",
    "resolve_layers",
    "to_nchw",
    "unwarp_feature",
    "warp_feature",
]
