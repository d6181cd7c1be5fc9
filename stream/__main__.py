"""``python -m stream``: the same as ``pedsam``."""

import sys

from .cli import main

sys.exit(main())
