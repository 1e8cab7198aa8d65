"""Process-level memory tuning for batch-sized NumPy temporaries.

Every batch allocates a few dozen arrays of a few hundred KiB.  With glibc's
defaults, blocks above 128 KiB are mmap'ed and handed back to the OS on free,
so each batch pays page faults on fresh pages.  glibc raises that threshold
by itself only after it frees an mmap'ed block of the size concerned, which
depends on the process's history: measured here at D = 4 with batches of
10,000, a process whose threshold had not adapted ran the engine at 5.2 M
readings/s, and 12.6 M with this tuning (where it had adapted, both are the
same).  Raising the mmap and trim thresholds up front keeps those pages in
the heap for reuse (what jemalloc or tcmalloc would do).  Called once by the
command-line entry point and the benchmarks; a library user may call it too.
A no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc(threshold_bytes: int = 64 * 2**20) -> bool:
    """Keep freed blocks below ``threshold_bytes`` in the heap; True when applied."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, threshold_bytes),
            (_M_TRIM_THRESHOLD, 2 * threshold_bytes),
            (_M_TOP_PAD, threshold_bytes // 4),
        )
    )
    log.debug("malloc tuned=%s threshold_bytes=%d", ok, threshold_bytes)
    return ok


def limit_blas_threads(default: int = 1) -> int | None:
    """Cap OpenBLAS/MKL threads (``TURBINE_BLAS_THREADS``, default 1; 0 leaves them be).

    The engine's BLAS calls are small (4x4 factors, batches of thousands):
    handing each to a second thread costs more than it saves (measured: a
    triangular solve 63 us with 2 threads, 8 us with one), and an idle BLAS
    thread spins on the core the broker or the producer needs. Returns the
    limit applied, None when left alone.
    """
    import os

    from threadpoolctl import threadpool_limits

    value = int(os.environ.get("TURBINE_BLAS_THREADS", default))
    if value <= 0:
        return None
    threadpool_limits(limits=value, user_api="blas")
    return value
