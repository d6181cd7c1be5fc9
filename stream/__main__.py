"""``python -m stream``: the same as ``pedsam``."""

from pedsam.stream.cli.main import entry

entry()
