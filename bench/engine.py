"""Engine benchmark of ``make bench``: readings per second against baselines, one core.

Run from the repository root::

    .venv/bin/python -m bench.engine          # or: .venv/bin/python bench/engine.py

One run (about a minute) measures:

1. the engine path "calibrate + score + learn + store": ``Detector.process``
   then ``AnomalyStore.append``, with the store's final ``flush`` amortised
   over the batches, at D = 4 and 16 and batches of 100, 1,000 and 10,000
   readings (consecutive snapshots of a fleet of 100 turbines: ids tile
   0..99, one timestamp per snapshot), with per-turbine models (the default:
   100 turbine models and 12 key-group fleet models) and with the fleet
   model alone.  Data: correlated Gaussian readings (a random mixing matrix,
   a small offset per turbine) with 1 % injected outliers, so the anomaly
   and store paths run; the models first learn outlier-free readings, so
   every reading is scored by a warm model (checked);
2. two baselines in the same run, timed interleaved batch by batch with the
   engine on the same batches, so a load change on the shared machine hits
   both sides of a ratio alike: :class:`PythonLoop`, the same maths one
   reading at a time, and :class:`NumpyFleet`, the minimal vectorised NumPy
   code of a fleet model (the ceiling of the fleet-only path);
3. one ``WelfordCovariance(1000).update`` of a 10,000 x 1,000 batch into a
   state already holding data: median time and peak extra memory (beyond the
   input and the old state, by tracemalloc, to which NumPy reports its data
   buffers; OpenBLAS's own work buffers are not seen), in child processes
   with all BLAS threads and with one;
4. the engine's readings/s with and without :func:`pipeline.memory.tune_malloc`,
   in two child processes, with the minor page faults per batch;
5. start-up in child processes: the first batches of a fresh process with the
   compiled kernels (numba's cache empty, then on disk) and with the NumPy
   path, and the resident memory after them.

It prints a Markdown report and writes it to ``bench/results/engine.md``.

Method
------
* One core: ``OPENBLAS_NUM_THREADS``, ``OMP_NUM_THREADS`` and
  ``MKL_NUM_THREADS`` are set to 1 at the top of this module, before NumPy is
  imported (OpenBLAS reads them once, when it loads); the report shows the
  thread count OpenBLAS actually uses, and :func:`main` re-executes the
  module when NumPy was imported earlier with more threads.  Only the
  all-cores wide update runs without them, in its own process.
* ``tune_malloc()`` is called at the start of :func:`main`, as the CLI does:
  it keeps batch-sized temporaries in the heap instead of mmap'ing fresh
  pages for every batch.  Part 4 shows what it changes.
* Every figure is a median over many timed batches, after untimed warm-up
  batches, with the garbage collector off while timing (as :mod:`timeit`
  does); the IQR column shows the spread.  Ratios compare figures measured
  in the same run.  The load average is recorded at the start and the end.
"""

from __future__ import annotations

import os
import sys

_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_ALL_CORES_ENV = "BENCH_ALL_CORES"  # set by the parent for the all-cores child only

if os.environ.get(_ALL_CORES_ENV) != "1":
    for _var in _BLAS_THREAD_VARS:
        os.environ[_var] = "1"

if not __package__:  # run as ``python bench/engine.py``: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable, Iterable, Mapping, Sequence  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from scipy.linalg import solve_triangular  # noqa: E402

from pipeline import BatchResult, Detector, DetectorConfig, WelfordCovariance  # noqa: E402
from pipeline.mahalanobis import regularised_cholesky  # noqa: E402
from pipeline.memory import tune_malloc  # noqa: E402
from pipeline.store import AnomalyStore  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results" / "engine.md"

N_TURBINES = 100
KEY_GROUPS = 12
SENSOR_COUNTS = (4, 16)
BATCH_SIZES = (100, 1_000, 10_000)
OUTLIER_RATE = 0.01
OUTLIER_SIZE = 12.0  # whitened length of an injected outlier's deviation
POOL_BATCHES = 16  # distinct batches generated per grid cell, then cycled
LOOP_BATCH = 2_000  # the Python loop's batches (20 fleet snapshots)
LOOP_ROUNDS = 8  # timed loop batches per D: 16,000 readings
WIDE_FEATURES, WIDE_READINGS, WIDE_REPEATS = 1_000, 10_000, 5

HEADLINE_D, HEADLINE_BATCH = 4, 10_000
# Issue 15: per-turbine readings/s at D = 4 by batch size; at D = 16, batches of 10,000;
# the fleet-only engine at least the plain NumPy fleet baseline at every batch size.
TARGET_PER_TURBINE = {100: 2e6, 1_000: 10e6, 10_000: 25e6}
TARGET_WIDE_D, TARGET_WIDE_D_RATE = 16, 5e6
TARGET_FLEET_RATIO = 1.0
TARGET_FIRST_BATCH_S = 2.0  # the first batch after start, numba's cache on disk
TARGET_LOOP_RATIO = 100.0  # engine / Python loop, D = 4, batches of 10,000
TARGET_WIDE_MS = 200.0
TARGET_WIDE_MB = 64.0

PER_TURBINE, FLEET_ONLY, NUMPY, LOOP = "per-turbine", "fleet only", "plain NumPy", "Python loop"
# The La Haute Borne configuration's model structure: the first sensor a condition and
# the regime sensor, in 15 bins (deploy/configs/la-haute-borne.toml: wind speed, 14 edges).
REGIMES = "conditions + regimes"
REGIME_BINS = 15
TARGET_REGIME_RATIO = 0.5  # of the default (per-turbine) configuration, same batches
REGIME_WARMUP_CAP = 400  # learning batches of a fleet snapshot x 100 at most

F64 = NDArray[np.float64]
Batch = tuple[F64, NDArray[np.int64], F64]  # timestamps (n,), turbine ids (n,), values (n, D)
Case = Callable[[F64, NDArray[np.int64], F64], int]  # processes a batch, returns anomalies


# --------------------------------------------------------------------------- data
class Fleet:
    """Synthetic readings of ``N_TURBINES`` turbines with D correlated sensors.

    Each reading is ``A z + offset[turbine]`` with ``z`` standard normal, ``A``
    a random mixing matrix and a small per-turbine offset.  An outlier adds
    ``OUTLIER_SIZE`` times a random unit vector to ``z``: far beyond the alarm
    threshold of every model, so about ``OUTLIER_RATE`` of the readings alarm.
    """

    def __init__(self, n_features: int, seed: int) -> None:
        self.n_features = n_features
        self.rng = np.random.default_rng(seed)
        d = n_features
        self.mixing = np.eye(d) + self.rng.normal(size=(d, d)) / np.sqrt(d)
        self.offsets = self.rng.normal(scale=0.5, size=(N_TURBINES, d))
        self.sensors = tuple(f"s{j}" for j in range(d))

    def readings(self, n: int, outlier_rate: float = OUTLIER_RATE) -> tuple[NDArray, F64]:
        """Turbine ids (n,) tiling 0..99 and readings (n, D); n a multiple of 100."""
        ids = np.tile(np.arange(N_TURBINES, dtype=np.int64), n // N_TURBINES)
        z = self.rng.standard_normal((ids.size, self.n_features))
        hit = self.rng.random(ids.size) < outlier_rate
        u = self.rng.standard_normal((int(hit.sum()), self.n_features))
        z[hit] += OUTLIER_SIZE * u / np.linalg.norm(u, axis=1, keepdims=True)
        return ids, z @ self.mixing.T + self.offsets[ids]


class Stream:
    """Batches of consecutive fleet snapshots: a pool of batches cycled, time running on."""

    def __init__(self, fleet: Fleet, batch_size: int) -> None:
        self.batch_size = batch_size
        self.steps = batch_size // N_TURBINES
        self.pool = [fleet.readings(batch_size) for _ in range(POOL_BATCHES)]
        self.step_of_row = np.repeat(np.arange(self.steps, dtype=np.float64), N_TURBINES)

    def batch(self, k: int) -> Batch:
        """The k-th batch; timestamps are snapshot numbers (seconds), one per snapshot."""
        ids, x = self.pool[k % POOL_BATCHES]
        return 1.7e9 + self.step_of_row + k * self.steps, ids, x


# --------------------------------------------------------------------------- contenders
class EnginePath:
    """The engine path: ``Detector.process`` then ``AnomalyStore.append``.

    The store never flushes while timed (its chunk size is beyond the run's
    anomalies); :meth:`flush` writes everything once, and its time is
    amortised over the timed batches.
    """

    def __init__(
        self, fleet: Fleet, per_turbine: bool, store_dir: Path, regimes: bool = False
    ) -> None:
        extra: dict[str, object] = {}
        if regimes:
            # Edges at the fleet's quantiles of the first sensor: every bin is visited
            # by every turbine (a turbine's offset makes its end bins rarer).
            _, sample = fleet.readings(100 * N_TURBINES, outlier_rate=0.0)
            inner = np.linspace(0.0, 1.0, REGIME_BINS + 1)[1:-1]
            edges = np.quantile(sample[:, 0], inner)
            first = fleet.sensors[0]
            extra = {"conditions": (first,), "regime": {"sensor": first, "edges": edges}}
        config = DetectorConfig(
            sensors=fleet.sensors,
            per_turbine=per_turbine,
            key_groups=KEY_GROUPS if per_turbine else 1,
            **extra,  # type: ignore[arg-type]
        )
        self.detector = Detector(config)
        self.expected_model = 1 if per_turbine else 2  # BatchResult.scored_by
        self.store = AnomalyStore(store_dir, sensors=fleet.sensors, chunk_size=2**62)
        self.last_result: BatchResult | None = None
        turbine_warmup, _ = config.warmup(fleet.n_features)
        rounds = -(-2 * turbine_warmup // 100)  # 2 x min_samples per turbine
        for k in range(REGIME_WARMUP_CAP if regimes else rounds):
            ids, x = fleet.readings(100 * N_TURBINES, outlier_rate=0.0)
            self.detector.learn(np.zeros(ids.size), ids, x)
            # With regimes: until every turbine's every bin has learned 2 x min_samples.
            counts = self.detector.state()["turbine_counts"]
            if k + 1 >= rounds and counts.min() >= 2 * turbine_warmup:
                break

    def __call__(self, timestamps: F64, turbine_ids: NDArray[np.int64], values: F64) -> int:
        result = self.detector.process(timestamps, turbine_ids, values)
        self.store.append(result)
        self.last_result = result
        return result.n_anomalies

    def flush(self) -> float:
        """Flush the store; returns the seconds it took."""
        start = time.perf_counter()
        self.store.flush()
        return time.perf_counter() - start

    def scored_by_warm_models(self) -> bool:
        """Whether the last batch was scored entirely by warm turbine (or fleet) models."""
        r = self.last_result
        return r is not None and bool(np.all(r.scored_by == self.expected_model))


class NumpyFleet:
    """The minimal vectorised NumPy code of a fleet model, one batch at a time.

    ``diff = x - mean; z = solve_triangular(L, diff.T, lower=True); d2 = |z|^2;
    flags = d2 > threshold``; then the batch's mean and co-moment (two passes)
    over the readings not flagged (the engine's default, anomalies are not
    learned), Chan's combination with the state and ``np.linalg.cholesky`` of
    the new covariance.  Column sums go through BLAS (``ones @ a``): the
    literal ``(z*z).sum(0)`` and ``x.mean(0)`` reduce 4-element rows and make
    the whole batch about 1.7x slower at D = 4.  No calibration, ridge,
    contributions, NaN checks or store: the ceiling of the fleet-only path.
    """

    def __init__(self, model: WelfordCovariance, threshold: float) -> None:
        self.n = model.count
        self.mean = model.mean
        self.m2 = model.comoment
        self.chol = np.linalg.cholesky(self.m2 / (self.n - 1))
        self.threshold = threshold

    def __call__(self, timestamps: F64, turbine_ids: NDArray[np.int64], values: F64) -> int:
        diff = values - self.mean
        z = solve_triangular(self.chol, diff.T, lower=True, check_finite=False)
        d2 = np.ones(z.shape[0]) @ (z * z)
        flags = d2 > self.threshold
        keep = values[~flags]
        n_b = keep.shape[0]
        mean_b = (np.ones(n_b) @ keep) / n_b
        centred = keep - mean_b
        m2_b = centred.T @ centred
        delta = mean_b - self.mean
        n = self.n + n_b
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.n = n
        self.chol = np.linalg.cholesky(self.m2 / (n - 1))
        return int(np.count_nonzero(flags))


@dataclass
class _TurbineState:
    count: float
    mean: F64  # running mean, updated per reading
    m2: F64  # running co-moment, updated per reading
    score_mean: F64  # mean as of the start of the batch
    chol: F64  # Cholesky factor as of the start of the batch


class PythonLoop:
    """The same per-turbine maths one reading at a time, in a Python loop.

    For each reading: look up its turbine's model in a dict; ``z =
    scipy.linalg.solve_triangular(L, x - mean0, lower=True)`` with the mean
    ``mean0`` and Cholesky factor ``L`` of the model as of the start of the
    batch (the engine's score-then-learn semantics); ``d2 = z @ z``; flag
    ``d2 > threshold``; when not flagged, Welford's single-reading update of
    the count, the mean and the co-moment (``m2 += outer(x - mean_old, x -
    mean_new)``).  At the end of the batch every model that learned refreshes
    ``mean0`` and refactors ``L`` (with the engine's ridge).  It does less
    than the engine: no calibration, no key-group fleet models, no
    contributions, no store.
    """

    def __init__(self, detector: Detector) -> None:
        self.threshold = detector.threshold
        self.ridge = detector.config.ridge
        self.models: dict[int, _TurbineState] = {}
        for t in detector.turbines.ids.tolist():
            m = detector.turbine_model(t)
            self.models[t] = _TurbineState(m.count, m.mean, m.comoment, m.mean, np.eye(1))
        self._refactor(self.models.values())
        self.last_distances = np.zeros(0)

    def _refactor(self, models: Iterable[_TurbineState]) -> None:
        for m in models:
            m.score_mean = m.mean.copy()
            m.chol = regularised_cholesky(m.m2 / (m.count - 1), self.ridge)[0]

    def __call__(self, timestamps: F64, turbine_ids: NDArray[np.int64], values: F64) -> int:
        distances = np.empty(values.shape[0])
        flagged = 0
        touched: dict[int, _TurbineState] = {}
        for i, (t, x) in enumerate(zip(turbine_ids.tolist(), values, strict=True)):
            m = self.models[t]
            z = solve_triangular(m.chol, x - m.score_mean, lower=True, check_finite=False)
            d2 = float(z @ z)
            distances[i] = d2
            if d2 > self.threshold:
                flagged += 1
                continue
            m.count += 1.0
            delta = x - m.mean
            m.mean = m.mean + delta / m.count
            m.m2 += np.outer(delta, x - m.mean)
            touched[t] = m
        self._refactor(touched.values())
        self.last_distances = distances
        return flagged


# --------------------------------------------------------------------------- timing
@dataclass(frozen=True)
class Timing:
    """Per-batch times of one contender over one stream."""

    seconds: F64
    batch_size: int
    anomalies: int
    extra_seconds: float = 0.0  # once-per-run work (the store's flush), amortised

    @property
    def median_ms(self) -> float:
        return 1e3 * float(np.median(self.seconds))

    @property
    def iqr_pct(self) -> float:
        q25, q50, q75 = np.percentile(self.seconds, [25, 50, 75])
        return 100.0 * float((q75 - q25) / q50)

    @property
    def rate(self) -> float:
        """Readings per second: batch size / (median time + amortised extra time)."""
        per_batch = float(np.median(self.seconds)) + self.extra_seconds / self.seconds.size
        return self.batch_size / per_batch

    @property
    def anomaly_pct(self) -> float:
        return 100.0 * self.anomalies / (self.batch_size * self.seconds.size)


def time_interleaved(
    cases: Mapping[str, Case],
    stream: Stream,
    budget_s: float,
    block: int = 8,
    warmup: int = 1,
    min_blocks: int = 3,
    max_blocks: int = 250,
) -> dict[str, Timing]:
    """Time the cases in turns of ``block`` consecutive batches, each batch timed alone.

    Every case processes the same batches in the same order.  A case runs a
    block of consecutive batches per turn, so it runs in its own steady state
    (its own data and model in cache, as in production), and the cases take
    turns in rotating order, so a change of load on the machine hits them all
    alike.  The first ``warmup`` blocks are not timed; blocks continue until
    ``budget_s`` has passed and ``min_blocks`` were timed, at most ``max_blocks``.
    """
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    anomalies = dict.fromkeys(names, 0)
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        j = 0
        while True:
            batches = [stream.batch(k) for k in range(j * block, (j + 1) * block)]
            shift = j % len(names)
            for name in names[shift:] + names[:shift]:
                case = cases[name]
                for args in batches:
                    t0 = time.perf_counter()
                    flagged = case(*args)
                    elapsed = time.perf_counter() - t0
                    if j >= warmup:
                        times[name].append(elapsed)
                        anomalies[name] += flagged
            j += 1
            timed = j - warmup
            if timed >= max_blocks or (
                timed >= min_blocks and time.perf_counter() - start >= budget_s
            ):
                break
    finally:
        gc.enable()
    return {
        name: Timing(np.array(times[name]), stream.batch_size, anomalies[name]) for name in names
    }


def page_faults_per_batch(case: Case, stream: Stream, rounds: int = 50) -> float:
    """Minor page faults of the process per batch of ``case`` (after warm-up)."""
    for k in range(3):
        case(*stream.batch(k))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for k in range(rounds):
        case(*stream.batch(k))
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds


# --------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class Cell:
    """The grid's results at one (D, batch size)."""

    n_features: int
    batch_size: int
    timings: dict[str, Timing]
    warm_scoring: bool  # every engine batch scored by warm models


def measure_cell(n_features: int, batch_size: int, budget_s: float, workdir: Path) -> Cell:
    """Per-turbine engine, fleet-only engine and plain NumPy, interleaved on one stream."""
    fleet = Fleet(n_features, seed=1000 * n_features + batch_size)
    stream = Stream(fleet, batch_size)
    tag = f"d{n_features}-b{batch_size}"
    engines = {
        PER_TURBINE: EnginePath(fleet, per_turbine=True, store_dir=workdir / f"{tag}-turbine"),
        FLEET_ONLY: EnginePath(fleet, per_turbine=False, store_dir=workdir / f"{tag}-fleet"),
        REGIMES: EnginePath(
            fleet, per_turbine=True, store_dir=workdir / f"{tag}-regimes", regimes=True
        ),
    }
    fleet_detector = engines[FLEET_ONLY].detector
    numpy_fleet = NumpyFleet(fleet_detector.fleet_model, fleet_detector.threshold)
    timings = time_interleaved({**engines, NUMPY: numpy_fleet}, stream, budget_s)
    for name, engine in engines.items():
        timings[name] = replace(timings[name], extra_seconds=engine.flush())
    warm = all(engine.scored_by_warm_models() for engine in engines.values())
    return Cell(n_features, batch_size, timings, warm)


@dataclass(frozen=True)
class LoopResult:
    """The Python loop against the engine on the same batches of ``LOOP_BATCH``."""

    n_features: int
    loop: Timing
    engine: Timing
    max_rel_diff: float  # largest relative difference of the last batch's distances


def measure_loop(n_features: int, workdir: Path) -> LoopResult:
    """Time :class:`PythonLoop` and the per-turbine engine, from the same warm state."""
    fleet = Fleet(n_features, seed=7 + n_features)
    stream = Stream(fleet, LOOP_BATCH)
    engine = EnginePath(fleet, per_turbine=True, store_dir=workdir / f"loop-d{n_features}")
    loop = PythonLoop(engine.detector)
    timings = time_interleaved(
        {PER_TURBINE: engine, LOOP: loop},
        stream,
        budget_s=0.0,
        block=1,
        warmup=1,
        min_blocks=LOOP_ROUNDS,
    )
    engine_d2 = engine.last_result.distances
    diff = np.max(np.abs(loop.last_distances - engine_d2) / np.maximum(engine_d2, 1e-300))
    return LoopResult(n_features, timings[LOOP], timings[PER_TURBINE], float(diff))


def measure_wide() -> dict[str, float]:
    """One ``WelfordCovariance(1000).update`` of 10,000 x 1,000: time and peak memory."""
    rng = np.random.default_rng(42)
    n, d = WIDE_READINGS, WIDE_FEATURES
    x = rng.standard_normal((n, d)) + rng.standard_normal((n, 8)) @ rng.standard_normal((8, d))
    model = WelfordCovariance(d)
    model.update(x)  # the state already holds data
    model.update(x)  # warm-up
    seconds = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(WIDE_REPEATS):
            t0 = time.perf_counter()
            model.update(x)
            seconds.append(time.perf_counter() - t0)
    finally:
        gc.enable()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        model.update(x)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {
        "blas_threads": blas_threads() or 0,
        "median_ms": 1e3 * float(np.median(seconds)),
        "min_ms": 1e3 * min(seconds),
        "input_mb": x.nbytes / 2**20,
        "peak_mb": (peak - base) / 2**20,
        "retained_mb": (current - base) / 2**20,
    }


def measure_malloc(tuned: bool, budget_s: float) -> dict[str, dict[str, float]]:
    """The engine at D = 4, batches of 10,000, in this process as it is (tuned or not)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-malloc-") as tmp:
        fleet = Fleet(HEADLINE_D, seed=99)
        stream = Stream(fleet, HEADLINE_BATCH)
        for name, per_turbine in ((PER_TURBINE, True), (FLEET_ONLY, False)):
            engine = EnginePath(fleet, per_turbine, Path(tmp) / name.replace(" ", "-"))
            timing = time_interleaved({name: engine}, stream, budget_s)[name]
            out[name] = {
                "rate": timing.rate,
                "faults": page_faults_per_batch(engine, stream),
                "tuned": tuned,
            }
    return out


def _process_age() -> float:
    """Seconds since this process started (/proc: exec, interpreter start-up and imports)."""
    with open("/proc/self/stat", encoding="utf-8") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime", encoding="utf-8") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def measure_start(compiled: bool) -> dict[str, float]:
    """A fresh process's first batches: import, the first batch, the first warm batch, RSS.

    Run as a child (``--child start``) so nothing is imported or compiled yet:
    with the compiled kernels their code comes from numba's on-disk cache
    (``NUMBA_CACHE_DIR`` chooses it; an empty one compiles everything).
    """
    t0 = time.perf_counter()
    from pipeline import Detector as FreshDetector  # noqa: N813 (already imported: modules cached)

    fleet = Fleet(HEADLINE_D, seed=5)
    config = DetectorConfig(sensors=fleet.sensors, key_groups=KEY_GROUPS)
    detector = FreshDetector(config, compiled=compiled)
    t1 = time.perf_counter()
    ids, x = fleet.readings(1_000)
    detector.process(np.zeros(ids.size), ids, x)  # turbines warming up: the general path
    t2 = time.perf_counter()
    turbine_warmup, _ = config.warmup(fleet.n_features)
    for _ in range(-(-2 * turbine_warmup // 100)):
        ids, x = fleet.readings(100 * N_TURBINES, outlier_rate=0.0)
        detector.learn(np.zeros(ids.size), ids, x)
    t3 = time.perf_counter()
    ids, x = fleet.readings(1_000)
    detector.process(np.ones(ids.size), ids, x)  # warm models: the plain path
    t4 = time.perf_counter()
    with open("/proc/self/status", encoding="utf-8") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    return {
        "age_s": _process_age(),
        "import_s": t1 - t0,
        "first_s": t2 - t1,
        "first_warm_s": t4 - t3,
        "rss_mb": rss,
        "numba": float("numba" in sys.modules),
    }


# --------------------------------------------------------------------------- environment
def _openblas_libraries() -> list[ctypes.CDLL]:
    """The OpenBLAS libraries loaded in this process (NumPy's and SciPy's)."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    return [ctypes.CDLL(p) for p in paths]


def _openblas_symbol(lib: ctypes.CDLL, stem: str) -> Callable | None:
    for name in (f"scipy_openblas_{stem}64_", f"scipy_openblas_{stem}", f"openblas_{stem}"):
        if hasattr(lib, name):
            return getattr(lib, name)
    return None


def blas_threads() -> int | None:
    """The largest thread count of the loaded OpenBLAS libraries (None if unknown)."""
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS too)

    counts = []
    for lib in _openblas_libraries():
        get = _openblas_symbol(lib, "get_num_threads")
        if get is not None:
            get.restype = ctypes.c_int
            counts.append(int(get()))
    return max(counts) if counts else None


def openblas_config() -> str:
    """NumPy's OpenBLAS build string, or ``unknown``."""
    for lib in _openblas_libraries():
        get = _openblas_symbol(lib, "get_config")
        if get is not None:
            get.restype = ctypes.c_char_p
            return get().decode()
    return "unknown"


def cpu_model() -> str:
    """Model name, family and model of the first CPU in /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the end of the first processor's block
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name", "unknown")
    return f"{name} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def git_head() -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    out = subprocess.run(  # noqa: S603 (fixed arguments)
        [git, "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def run_child(
    args: Sequence[str], all_cores: bool = False, env_extra: Mapping[str, str] | None = None
) -> dict:
    """Run ``python -m bench.engine --child ...``; returns the JSON it prints last."""
    env = {**os.environ, **(env_extra or {})}
    if all_cores:
        for var in _BLAS_THREAD_VARS:
            env.pop(var, None)
        env[_ALL_CORES_ENV] = "1"
    else:
        env.pop(_ALL_CORES_ENV, None)
    out = subprocess.run(  # noqa: S603 (this interpreter, this module)
        [sys.executable, "-m", "bench.engine", "--child", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- report
def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table (numbers right-aligned)."""
    align = ["---:" if isinstance(v, int | float) else "---" for v in rows[0]] if rows else []
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def fmt_rate(rate: float) -> str:
    """Readings/s as ``12.34 M`` or ``56 k``."""
    return f"{rate / 1e6:.2f} M" if rate >= 1e6 else f"{rate / 1e3:.0f} k"


def progress(message: str) -> None:
    print(f"[bench.engine] {message}", file=sys.stderr, flush=True)


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Results:
    facts: dict[str, str]
    cells: list[Cell]
    loops: dict[int, LoopResult]
    wide: dict[str, dict[str, float]]
    malloc: dict[str, dict[str, dict[str, float]]]
    start: dict[str, dict[str, float]]
    seconds: float

    def cell(self, n_features: int, batch_size: int) -> Cell:
        return next(
            c for c in self.cells if (c.n_features, c.batch_size) == (n_features, batch_size)
        )


def engine_table(res: Results) -> list[str]:
    rows = []
    for c in res.cells:
        loop_rate = res.loops[c.n_features].loop.rate
        numpy_rate = c.timings[NUMPY].rate
        per_turbine_rate = c.timings[PER_TURBINE].rate
        for name in (PER_TURBINE, FLEET_ONLY, REGIMES):
            t = c.timings[name]
            rows.append(
                [
                    name,
                    c.n_features,
                    f"{c.batch_size:,}",
                    t.median_ms,
                    round(t.iqr_pct),
                    t.rate / 1e6,
                    t.anomaly_pct,
                    1e3 * t.extra_seconds,
                    t.seconds.size,
                    f"{t.rate / loop_rate:,.0f}x" if name == PER_TURBINE else "",
                    f"{t.rate / numpy_rate:.2f}x" if name == FLEET_ONLY else "",
                    f"{t.rate / per_turbine_rate:.2f}x" if name == REGIMES else "",
                ]
            )
    headers = [
        "models",
        "D",
        "batch",
        "ms/batch (median)",
        "IQR %",
        "M readings/s",
        "anomalies %",
        "flush ms",
        "batches",
        "vs Python loop",
        "vs plain NumPy",
        "vs per-turbine",
    ]
    return table(headers, rows)


def baseline_table(res: Results) -> list[str]:
    rows = []
    for d, lr in res.loops.items():
        rows.append(
            [
                LOOP,
                d,
                f"{LOOP_BATCH:,}",
                lr.loop.median_ms,
                fmt_rate(lr.loop.rate),
                f"{lr.engine.rate / lr.loop.rate:,.0f}x (per-turbine)",
                f"{lr.max_rel_diff:.1e}",
            ]
        )
    for c in res.cells:
        t = c.timings[NUMPY]
        fleet = c.timings[FLEET_ONLY]
        rows.append(
            [
                NUMPY,
                c.n_features,
                f"{c.batch_size:,}",
                t.median_ms,
                fmt_rate(t.rate),
                f"{fleet.rate / t.rate:.2f}x (fleet only)",
                f"anomalies {t.anomaly_pct:.2f} % vs {fleet.anomaly_pct:.2f} %",
            ]
        )
    headers = [
        "baseline",
        "D",
        "batch",
        "ms/batch (median)",
        "readings/s",
        "engine / baseline, same batches",
        "agreement with the engine",
    ]
    return table(headers, rows)


def wide_table(res: Results) -> list[str]:
    rows = [
        [
            label,
            int(w["blas_threads"]),
            w["median_ms"],
            w["min_ms"],
            w["peak_mb"],
            w["retained_mb"],
            mark(w["median_ms"] < TARGET_WIDE_MS),
            mark(w["peak_mb"] < TARGET_WIDE_MB),
        ]
        for label, w in res.wide.items()
    ]
    headers = [
        "BLAS threads",
        "threads (measured)",
        "ms (median)",
        "ms (min)",
        "peak extra MB",
        "retained MB",
        f"< {TARGET_WIDE_MS:.0f} ms",
        f"< {TARGET_WIDE_MB:.0f} MB",
    ]
    return table(headers, rows)


def malloc_table(res: Results) -> list[str]:
    rows = []
    for label, parts in res.malloc.items():
        for name, m in parts.items():
            rows.append([label, name, m["rate"] / 1e6, m["faults"]])
    return table(["malloc", "models", "M readings/s", "minor page faults/batch"], rows)


def start_table(res: Results) -> list[str]:
    rows = [
        [
            label,
            m["import_s"],
            m["first_s"],
            1e3 * m["first_warm_s"],
            m["age_s"],
            m["rss_mb"],
            "yes" if m["numba"] else "no",
        ]
        for label, m in res.start.items()
    ]
    headers = [
        "kernels",
        "Detector() s (imports numba)",
        "first batch s",
        "first warm batch ms",
        "process age at the end s",
        "RSS MB",
        "numba loaded",
    ]
    return table(headers, rows)


def target_rows(res: Results) -> list[list[object]]:
    rows: list[list[object]] = []
    for b, target in TARGET_PER_TURBINE.items():
        rate = res.cell(HEADLINE_D, b).timings[PER_TURBINE].rate
        rows.append(
            [
                f"per-turbine >= {target / 1e6:.0f} M readings/s, D = {HEADLINE_D}, "
                f"batches of {b:,}",
                f"{rate / 1e6:.2f} M/s",
                mark(rate >= target),
            ]
        )
    rate = res.cell(TARGET_WIDE_D, HEADLINE_BATCH).timings[PER_TURBINE].rate
    rows.append(
        [
            f"per-turbine >= {TARGET_WIDE_D_RATE / 1e6:.0f} M readings/s, D = {TARGET_WIDE_D}, "
            f"batches of {HEADLINE_BATCH:,}",
            f"{rate / 1e6:.2f} M/s",
            mark(rate >= TARGET_WIDE_D_RATE),
        ]
    )
    for c in res.cells:
        ratio = c.timings[FLEET_ONLY].rate / c.timings[NUMPY].rate
        rows.append(
            [
                f"fleet only >= {TARGET_FLEET_RATIO:.1f}x plain NumPy, D = {c.n_features}, "
                f"batches of {c.batch_size:,}",
                f"{ratio:.2f}x",
                mark(ratio >= TARGET_FLEET_RATIO),
            ]
        )
    for b in BATCH_SIZES:
        c = res.cell(HEADLINE_D, b)
        ratio = c.timings[REGIMES].rate / c.timings[PER_TURBINE].rate
        rows.append(
            [
                f"{REGIMES} >= {TARGET_REGIME_RATIO:.1f}x per-turbine, D = {HEADLINE_D}, "
                f"batches of {b:,}",
                f"{ratio:.2f}x",
                mark(ratio >= TARGET_REGIME_RATIO),
            ]
        )
    head = res.cell(HEADLINE_D, HEADLINE_BATCH)
    ratio = head.timings[PER_TURBINE].rate / res.loops[HEADLINE_D].loop.rate
    rows.append(
        [
            f"per-turbine >= {TARGET_LOOP_RATIO:.0f}x the Python loop, D = {HEADLINE_D}, "
            f"batches of {HEADLINE_BATCH:,}",
            f"{ratio:,.0f}x",
            mark(ratio >= TARGET_LOOP_RATIO),
        ]
    )
    warm = res.start["compiled, cache on disk"]
    first = warm["import_s"] + warm["first_s"]
    rows.append(
        [
            f"first batch after start <= {TARGET_FIRST_BATCH_S:.0f} s (Detector() + first "
            "batch, cache on disk)",
            f"{first:.2f} s",
            mark(first <= TARGET_FIRST_BATCH_S),
        ]
    )
    for label, w in res.wide.items():
        rows.append(
            [
                f"wide update < {TARGET_WIDE_MS:.0f} ms ({label})",
                f"{w['median_ms']:.0f} ms",
                mark(w["median_ms"] < TARGET_WIDE_MS),
            ]
        )
        rows.append(
            [
                f"wide update < {TARGET_WIDE_MB:.0f} MB extra ({label})",
                f"{w['peak_mb']:.1f} MB",
                mark(w["peak_mb"] < TARGET_WIDE_MB),
            ]
        )
    return rows


def report(res: Results) -> str:
    """The whole report, Markdown."""
    lines = ["# Engine benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in res.facts.items()]
    lines += [f"- run time: {res.seconds:.0f} s", ""]
    lines += ["## Targets", ""]
    lines += table(["target", "measured", "result"], target_rows(res))
    lines += [
        "",
        "## Engine path: calibrate + score + learn + store (one BLAS thread)",
        "",
        f"{N_TURBINES} turbines, batches of consecutive fleet snapshots; `per-turbine` is the "
        f"default configuration ({N_TURBINES} turbine models + {KEY_GROUPS} key-group fleet "
        "models), `fleet only` is `per_turbine=False, key_groups=1`; "
        f"`{REGIMES}` is the default plus the model structure of the La Haute Borne "
        f"configuration: the first sensor a condition and the regime sensor in {REGIME_BINS} "
        f"bins ({N_TURBINES * REGIME_BINS:,} turbine models, edges at the fleet's quantiles; "
        "each model learned twice its minimum before the timing). Rate = batch / (median "
        "batch time + store flush / batches). Engine and baselines ran interleaved on the same "
        "batches. `vs Python loop` compares with the loop's rate at the same D.",
        "",
    ]
    lines += engine_table(res)
    warm = all(c.warm_scoring for c in res.cells)
    lines += [
        "",
        f"Every engine batch scored by warm models: {'yes' if warm else 'NO'}. At batches "
        "of 100 about a third of the batches (0.99^100) hold no anomaly and skip the "
        "contributions work, so batch times are bimodal and the IQR is wide.",
    ]
    lines += ["", "## Baselines (same run, one BLAS thread)", ""]
    lines += [
        f"`{LOOP}`: see `PythonLoop` in bench/engine.py (per reading: dict lookup, "
        "`solve_triangular` with the batch-start Cholesky factor, threshold, Welford update "
        "of mean and co-moment; Cholesky refactor per touched model at batch end; no "
        "calibration, contributions or store). `agreement` is the largest relative "
        "difference of its distances from the engine's on the last batch. "
        f"`{NUMPY}`: see `NumpyFleet` (score, learn the unflagged readings with Chan's "
        "formula, `np.linalg.cholesky`); `agreement` compares anomaly fractions.",
        "",
    ]
    lines += baseline_table(res)
    lines += [
        "",
        f"## Wide sensor sets: WelfordCovariance({WIDE_FEATURES}).update, "
        f"{WIDE_READINGS:,} x {WIDE_FEATURES:,} batch",
        "",
        f"Input {next(iter(res.wide.values()))['input_mb']:.0f} MB. Peak extra = tracemalloc "
        "peak during the update beyond what was allocated before it (input and old state "
        "excluded); retained = the new state kept afterwards. Each row in its own process.",
        "",
    ]
    lines += wide_table(res)
    lines += [
        "",
        "## tune_malloc (D = 4, batches of 10,000, one BLAS thread, child processes)",
        "",
    ]
    lines += malloc_table(res)
    lines += [
        "",
        "glibc raises its mmap threshold to the size of the largest mmap'ed block freed "
        "(up to 32 MiB), so once the first batches are freed the engine's temporaries come "
        "from the heap with or without `tune_malloc()`. Setting any malloc tunable "
        "(`mallopt` or a `MALLOC_*_` variable) turns that adaptation off; the pinned row "
        "shows the cost of mmap'ed temporaries (page faults on fresh pages every batch) "
        "that `tune_malloc()` rules out.",
    ]
    lines += [
        "",
        "## Start-up: the first batches of a fresh process (D = 4, batches of 1,000)",
        "",
        "Each row in its own process. `first batch`: the first `Detector.process` of a "
        "fresh detector (turbines warming up; with the kernels it loads them, or compiles "
        "them when numba's cache is empty); `first warm batch`: the first batch once the "
        "models are warm (the plain path's one compiled call); `process age`: from exec to "
        "the end of that batch, Python start-up and every import included. The compiled "
        "rows use a fresh `NUMBA_CACHE_DIR`: the first compiles and writes it, the second "
        "reads it (a deployment's cache is `__pycache__` beside `pipeline/kernels` when "
        "writable, else `NUMBA_CACHE_DIR`; the Docker image fills it at build time with "
        "`python -m pipeline.kernels`). RSS after the batch: numba and LLVM are resident "
        "in the compiled rows.",
        "",
    ]
    lines += start_table(res)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main
def run(budget_s: float) -> Results:
    """Every part of the benchmark, in one run."""
    start = time.perf_counter()
    facts = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_head(),
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable",
        "Python / NumPy / SciPy": f"{platform.python_version()} / {np.__version__} / "
        f"{scipy.__version__}",
        "BLAS": openblas_config(),
        "BLAS threads (engine, baselines)": str(blas_threads()),
        "tune_malloc() applied at start": "yes",
        "load average at start (1, 5, 15 min)": load_average(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        workdir = Path(tmp)
        cells = []
        for d in SENSOR_COUNTS:
            for b in BATCH_SIZES:
                progress(f"engine and plain NumPy, D = {d}, batches of {b:,}")
                cells.append(measure_cell(d, b, budget_s, workdir))
        progress("Python loop")
        loops = {d: measure_loop(d, workdir) for d in SENSOR_COUNTS}
    progress("wide update (child processes)")
    wide = {
        "all cores (default)": run_child(["wide"], all_cores=True),
        "one thread": run_child(["wide"]),
    }
    progress("tune_malloc (child processes)")
    untuned = ["malloc", "--no-tune", "--budget", str(budget_s / 2)]
    malloc = {
        "glibc defaults": run_child(untuned),
        "glibc, mmap threshold pinned at 128 KiB": run_child(
            untuned, env_extra={"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
        ),
        "tune_malloc()": run_child(["malloc", "--budget", str(budget_s / 2)]),
    }
    progress("start-up (child processes)")
    with tempfile.TemporaryDirectory(prefix="bench-numba-cache-") as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        start_up = {
            "compiled, empty cache (compiles)": run_child(["start"], env_extra=env),
            "compiled, cache on disk": run_child(["start"], env_extra=env),
            "NumPy path (compiled=False)": run_child(["start", "--numpy"]),
        }
    facts["load average at end (1, 5, 15 min)"] = load_average()
    return Results(facts, cells, loops, wide, malloc, start_up, time.perf_counter() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS, help="Markdown report path")
    parser.add_argument(
        "--budget", type=float, default=5.0, help="seconds of timed batches per grid cell"
    )
    parser.add_argument("--child", choices=("wide", "malloc", "start"), help=argparse.SUPPRESS)
    parser.add_argument("--numpy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-tune", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is None and os.environ.get(_ALL_CORES_ENV) != "1":
        threads = blas_threads()
        if threads is not None and threads > 1:  # NumPy was imported before the pin
            script = str(Path(__file__).resolve())
            os.execv(sys.executable, [sys.executable, script, *sys.argv[1:]])  # noqa: S606
    if not args.no_tune:
        tune_malloc()
    if args.child == "wide":
        print(json.dumps(measure_wide()))
        return 0
    if args.child == "malloc":
        print(json.dumps(measure_malloc(tuned=not args.no_tune, budget_s=args.budget)))
        return 0
    if args.child == "start":
        print(json.dumps(measure_start(compiled=not args.numpy)))
        return 0

    text = report(run(args.budget))
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
