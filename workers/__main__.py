"""``python -m workers``: the same as ``pedsam worker``."""

import sys

from pedsam.workers.cli import main

sys.exit(main())
