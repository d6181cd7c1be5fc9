"""``python -m stream``: the same as ``pedsam``."""

import sys

from pedsam.stream.cli.main import main

sys.exit(main())
