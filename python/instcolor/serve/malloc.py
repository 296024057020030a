"""glibc malloc settings for a long-running server.

Every edit of the hint editor (and every request) allocates the same large float32 arrays again:
the fusion net's features at S = 256 are 4-8 MB each. glibc hands blocks that large out as fresh
``mmap`` pages and returns them to the system on ``free``, so each allocation pays its page faults
anew (~2,000 per 8 MB array): on the 2-core machine an edit spent about 10 ms of its ~125 ms in them.
:func:`keep_freed_blocks` makes glibc serve blocks up to 32 MiB from its heap and keep freed memory
there, so repeated requests reuse pages that are already mapped. The cost: the process keeps its peak
heap instead of returning it at once.

The setting is process-wide, so the processes that are servers apply it: ``instcolor serve`` before
it listens, and each Ray replica in its constructor. :func:`~instcolor.serve.app.build_app` does not,
so an app built inside another program (a test, a notebook) leaves that program's malloc alone; call
:func:`keep_freed_blocks` yourself when you run the app under your own ASGI server.

Only on Linux with glibc (``mallopt``); elsewhere it does nothing. Measured: ``benchmarks/bench_editor.py``
(README *Editor*).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("instcolor.serve")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024     # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024   # keep up to 1 GiB of freed heap at its top

_done = False


def keep_freed_blocks() -> bool:
    """Apply the settings above once per process; True when glibc accepted them."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    except OSError:
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not ok:
        log.debug("instcolor serve: mallopt refused the large-block settings; leaving malloc as it is")
    _done = ok
    return ok
