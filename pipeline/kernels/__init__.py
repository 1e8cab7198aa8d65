"""Compiled kernels (numba) of the detector's per-batch numerics.

Each kernel does, in one compiled call, what the NumPy functions of
:mod:`pipeline.covariance` and :mod:`pipeline.mahalanobis` do in a few dozen
array calls; the NumPy functions stay as the oracle the kernels are tested
against (tests/test_kernels.py).  Per model the kernels run the same
floating-point operations in the same order as the NumPy path (sums in
reading order, Chan's combination term by term, the forward substitution
term by term), so their moments, merges and whitened deviations are the
NumPy path's, bit for bit; the Cholesky factorisation is a textbook one, not
LAPACK's, and may differ from ``np.linalg.cholesky`` in the last bits.

Readings are reduced per model in blocks: a stable counting sort by model
(linear in the batch) puts each model's readings together, so the inner loops
run over a block of readings with the model's numbers held fixed (vectorised
by LLVM) and the result of a model depends only on its own readings, in
their order: splitting a batch by key group changes nothing.

Compiled code is cached on disk (``cache=True``: ``__pycache__`` beside this
package, or numba's user-wide cache directory when that is not writable), so
only the very first run on a machine compiles.  Every kernel is cached under
one stamp, the digest of all this package's modules (:mod:`pipeline.kernels.cache`):
a kernel compiles in the kernels it calls, so a change to any module
recompiles them all.
"""

# ruff: noqa: E402 (the cache's locators are installed before any kernel module loads)
from pipeline.kernels.cache import install as _install_cache

_install_cache()  # before the kernels below are decorated

from pipeline.kernels.blocks import sort_by_model, time_range_by_model
from pipeline.kernels.charting import ewma_by_time
from pipeline.kernels.episodes import advance_episodes_compiled
from pipeline.kernels.factors import refactor
from pipeline.kernels.fused import score_then_learn
from pipeline.kernels.learning import learn_sorted
from pipeline.kernels.runs import deviations_from_medians, medians_of_the_others
from pipeline.kernels.states import learning_states, regime_bins, settling_in_order
from pipeline.kernels.whitening import contributions_grouped, whiten_sorted

__all__ = [
    "advance_episodes_compiled",
    "contributions_grouped",
    "deviations_from_medians",
    "ewma_by_time",
    "learn_sorted",
    "learning_states",
    "medians_of_the_others",
    "refactor",
    "regime_bins",
    "score_then_learn",
    "settling_in_order",
    "sort_by_model",
    "time_range_by_model",
    "whiten_sorted",
]
