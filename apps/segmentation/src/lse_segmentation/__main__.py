"""``python -m lse_segmentation`` (also under ``torchrun``) runs the ``lse-segmentation`` command."""

import sys

from .cli import main

sys.exit(main())
