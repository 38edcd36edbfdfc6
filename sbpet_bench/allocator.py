"""Keep memory that a batch freed for the next batch, instead of handing it back to the kernel at once.

A batched forward pass allocates and frees hundreds of megabytes of activations per chunk of images.
glibc's malloc trims the top of its heap back to the kernel as soon as a free leaves more than a small
margin there, so the next chunk page-faults the same memory in again, zero-filled by the kernel. On
hm-faceres (64-image chunks at 224 px, 2 CPUs) that was a third of the wall time: 9.6-10.8 ms/image
without, 5.7-6.3 ms/image with a 1 GiB top pad, for about 600 MB more peak resident memory
(``benchmarks/panel_speed.py``). The pad changes no number a plugin computes, so no cache key follows it.

``M_TOP_PAD`` is glibc's own knob (mallopt(3)); elsewhere (macOS, musl) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TOP_PAD = -2  # malloc.h
TOP_PAD_BYTES = 1 << 30

_done = False


def keep_freed_memory(pad: int = TOP_PAD_BYTES) -> bool:
    """Ask glibc to keep ``pad`` bytes above its heap's top when it grows or trims; True when it took effect."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_TOP_PAD, ctypes.c_int(pad)))
    except (OSError, AttributeError):
        return False
    return _done
