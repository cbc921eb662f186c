"""``python -m lse_imagenet`` (also under ``torchrun``) runs the ``lse-imagenet`` command."""

import sys

from .cli import main

sys.exit(main())
