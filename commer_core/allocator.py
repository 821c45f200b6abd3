"""Keep freed activation memory in the process instead of handing it back to the kernel.

glibc serves large allocations (a forward pass's 1-6 MB activations) from fresh
``mmap`` pages or trims them off the heap when freed, so the next batch page-faults
every 4 KiB of them again, and the kernel zeroes each page. On the 2-core CPU a
timing of the compressor's ops put SiLU and the SiLU x up product at 3-4x their cost on
warm memory, and counted 0.1-3.2 million minor page faults per 128 documents; with
the thresholds below, 0-17 thousand (docs/PERFORMANCE.md). ``load_backbone`` calls it:
every process that loads a model runs forward passes in a loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's ceiling for this setting; above a 1024x1536 fp32 activation (6 MiB)
TRIM_THRESHOLD_BYTES = 256 * 2**20  # freed memory kept at the heap's top before it is returned


def keep_freed_memory(
    mmap_threshold: int = MMAP_THRESHOLD_BYTES, trim_threshold: int = TRIM_THRESHOLD_BYTES
) -> bool:
    """Raise glibc's mmap and trim thresholds so freed activations are reused, not re-faulted.

    Returns whether the thresholds were set: False off Linux/glibc, and when the operator
    already tuned malloc through ``GLIBC_TUNABLES`` (their choice wins). Peak memory does
    not grow: at most ``trim_threshold`` bytes of already-freed heap stay resident.
    """
    if not sys.platform.startswith("linux") or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only: musl's mallopt accepts the call and ignores it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
    log.debug("glibc malloc thresholds: mmap %d, trim %d bytes (%s)", mmap_threshold, trim_threshold, "set" if ok else "refused")
    return ok
