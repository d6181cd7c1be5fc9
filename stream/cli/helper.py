"""``python -m pedsam.stream.cli.helper FD``: the spawner's helper as a fresh interpreter, where
it is not forked from the command line (see :mod:`pedsam.stream.cli.forkserver`). FD is its end
of the edge's socket."""

from __future__ import annotations

import os
import socket
import sys

from pedsam.stream.cli.forkserver import serve
from pedsam.stream.cli.main import main

if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), main)
    os._exit(0)  # nothing to flush or clean: skip a second of tearing torch's modules down
