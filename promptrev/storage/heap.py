"""The C heap Git's object writes allocate from, kept instead of given back per object.

libgit2 (through zlib) allocates a few hundred KB of compression state for every object it
writes and frees it right after. With glibc's starting thresholds that memory sits at the
top of the heap and is handed back to the system at once (more than 128 KB free there), so
every blob, tree and commit paid for ``brk`` calls and freshly zeroed pages: a third of
writing a 50-entry tree on the machines here. The thresholds set here are the ones glibc
itself adopts once a process has freed a 4 MB block; later it would still adapt, but a
registry process may never free one. ``git fast-import`` gets the same through
``MALLOC_TOP_PAD_`` (see :mod:`.gitstore`).
"""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # blocks at least this large get their own mapping
TRIM_THRESHOLD = 8 << 20  # free memory kept at the heap's top


def keep_heap() -> bool:
    """Set glibc's heap thresholds for this process; False where there is no glibc."""
    try:
        os.confstr("CS_GNU_LIBC_VERSION")
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # another C library, or no confstr
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
