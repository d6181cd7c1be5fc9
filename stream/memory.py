"""Keep the edge's resident memory close to what it actually holds.

glibc's malloc hands out large blocks with ``mmap`` (returned to the system on ``free``) only
above a threshold that it raises by itself each time such a block is freed, up to 32 MiB. After
a frame or two, the edge's many multi-megabyte temporaries (token grids, qkv, attention mask
chunks, MLP activations, message buffers, allocated on several threads) come from heaps that keep
their pages after ``free``; resident memory grows by a few hundred megabytes that hold nothing
(ViT-B: about 280 MiB of a 1.9 GiB peak). Pinning the threshold at 1 MiB returns every large
block when it is freed. The cost, faulting fresh pages in, did not show in the CPU time of a
ViT-B global block (about 2 s either way on this project's machines).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1024 * 1024


def release_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Have glibc serve blocks of ``threshold`` bytes and more with ``mmap`` from now on, for
    this whole process. Returns whether it took effect (False off glibc, e.g. macOS or musl)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold))
    log.debug("malloc mmap threshold %d bytes: %s", threshold, "set" if done else "not set")
    return done
