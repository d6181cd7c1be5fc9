"""``python -m workers``: the same as ``pedsam worker``."""

import sys

from .cli import main

sys.exit(main())
