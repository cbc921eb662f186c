r"""monowarp: the monotone scaling group for local scale equivariance.

Elements of the group are monotone maps $l: [0, 1]^2 \to [0, 1]^2$ built from per-row and per-column
piecewise-linear monotone functions blended bilinearly (paper, sec. 4.1 and appendix A2.2). The package
provides the elements (`MonotoneScale`) with an exact inverse and exact lazy composition, the 1-D
functions (`Monotone1d`), the warps $S(I; l) = I \circ l^{-1}$ (`warp`, eq. 13) and
$S^{-1}(I; l) = I \circ l$ (`unwarp`), and a sampler with guaranteed local scale factors
(`sample_monotone_scale`).

Examples:
    >>> import torch, monowarp
    >>> g = monowarp.sample_monotone_scale(2, grid=(4, 4), generator=torch.Generator().manual_seed(0))
    >>> x = torch.rand(2, 3, 32, 48)
    >>> y = monowarp.warp(x, g)
    >>> y.shape
    torch.Size([2, 3, 32, 48])
"""

from .approximate import approximate_inverse_map, approximate_warp
from .functional import (
    pixel_grid,
    pixels_to_points,
    points_to_pixels,
    sample_at,
    unwarp,
    unwarp1d,
    warp,
    warp1d,
)
from .maps import InverseScaling, MonotoneScale, ScalingChain, ScalingMap
from .monotone1d import Monotone1d
from .sampling import sample_monotone_scale

__version__ = "0.1.0"

__all__ = [
    "InverseScaling",
    "Monotone1d",
    "MonotoneScale",
    "ScalingChain",
    "ScalingMap",
    "approximate_inverse_map",
    "approximate_warp",
    "pixel_grid",
    "pixels_to_points",
    "points_to_pixels",
    "sample_at",
    "sample_monotone_scale",
    "unwarp",
    "unwarp1d",
    "warp",
    "warp1d",
]

# Augmentation (augmentation.py: RandomMonotoneScale) and visualisation (viz.py, matplotlib on first use).
from . import viz
from .augmentation import RandomMonotoneScale

# Object-level rescaling (objects.py: cut out, inpaint, scale, paste back; OpenCV on first use).
from .objects import get_inpainter, inpaint_background, inpainter_names, register_inpainter, rescale_object

__all__ += ["RandomMonotoneScale", "viz"]
__all__ += ["get_inpainter", "inpaint_background", "inpainter_names", "register_inpainter", "rescale_object"]
