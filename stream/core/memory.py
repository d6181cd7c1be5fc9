"""Keep the edge's resident memory close to what it actually holds.

glibc's malloc hands out large blocks with ``mmap`` (returned to the system on ``free``) only
above a threshold that it raises by itself each time such a block is freed, up to 32 MiB. After
a frame or two, the edge's many multi-megabyte temporaries (token grids, qkv, attention mask
chunks, MLP activations, message buffers, allocated on several threads) come from heaps that keep
their pages after ``free``; resident memory grows by a few hundred megabytes that hold nothing
(ViT-B: about 280 MiB of a 1.9 GiB peak). Pinning the threshold at 4 MiB returns every large
block when it is freed.

The price is faulting fresh pages in for every such block, and pinning the threshold also pins
glibc's trim threshold at 128 KiB, so heap tops are given back and faulted in again at every
frame too. That is noise for ViT-B (seconds per frame) but not for small models: a 1 MiB
threshold with the default trim cost the tiny preset about 7 ms of edge CPU per frame (global
blocks, image preparation and mask decoding each fault megabytes in). A 4 MiB threshold with a
64 MiB trim threshold keeps small models' temporaries in the heap and costs ViT-B's edge about
1 % of its peak resident memory against 1 MiB with the default trim. Attention-mask chunks, the
largest temporaries, are reused instead (:mod:`pedsam.workers.kernels`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def release_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES, trim: int = TRIM_THRESHOLD_BYTES) -> bool:
    """Have glibc serve blocks of ``threshold`` bytes and more with ``mmap`` from now on, for
    this whole process, and keep up to ``trim`` free bytes at the top of a heap rather than
    return them at every ``free``. Returns whether it took effect (False off glibc, e.g. macOS
    or musl)."""
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
    done = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
    log.debug("malloc mmap threshold %d, trim threshold %d bytes: %s", threshold, trim, "set" if done else "not set")
    return done
