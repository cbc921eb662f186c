"""``python -m lse_mnist`` (and ``torchrun ... -m lse_mnist train ...``) runs the ``lse-mnist`` command."""

import sys

from .cli import main

sys.exit(main())
