"""Elements of the monotone scaling group, in one namespace.

* `ScalingMap`, `InverseScaling`, `ScalingChain` (module ``group``): the interface every element offers and
  the lazy, exact inverse and composition (eq. 9);
* `MonotoneScale` (module ``monotone2d``): the 2-D knot family of appendix A2.2 with its exact inverse.

Import them from ``monowarp`` (or from here).
"""

from __future__ import annotations

from .group import InverseScaling, ScalingChain, ScalingMap
from .monotone2d import MonotoneScale

__all__ = ["InverseScaling", "MonotoneScale", "ScalingChain", "ScalingMap"]
