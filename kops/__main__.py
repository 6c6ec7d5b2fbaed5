"""``python -m kops fit | predict | evaluate | info | bench | demo | train`` (also the ``kops``
console script); see :mod:`kops.cli`."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
