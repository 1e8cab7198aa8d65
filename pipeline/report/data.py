"""What the report reads: the stores chunk by chunk, the re-scored input, the models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from pipeline.config import DetectorConfig
from pipeline.detector import BatchResult, Detector
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.recordings import Chunk, RecordingSpec, read_recording
from pipeline.report.common import F64, I64, ReportOptions, best_per_turbine
from pipeline.runner import RunReport, config_for, run_recording
from pipeline.store import CORRUPT_NPZ_ERRORS, MODEL, Anomalies, AnomalyStore, store_paths
from pipeline.wire.schema import TIME_RANGE


@dataclass
class FleetSummary:
    """What one pass over a store's chunks gives.

    Attributes
    ----------
    turbines : ndarray of shape (T,)
        Turbines with anomalies, sorted.
    counts : ndarray of shape (T,)
        Anomalies per turbine.
    edges : ndarray of shape (B + 1,)
        Time bucket edges (epoch seconds).
    heat : csr_array of shape (T, B)
        Anomalies per turbine and time bucket.
    top : Anomalies
        The worst events, at most one per turbine, largest first.
    thresholds : ndarray of shape (m,)
        The distinct thresholds of the anomalies.
    """

    sensors: tuple[str, ...]
    anomalies: int
    readings: int
    chunks: int
    turbines: I64
    counts: I64
    edges: F64
    heat: sparse.csr_array
    top: Anomalies
    thresholds: F64
    invalid_times: int = 0
    bucket: float = 0.0  # bucket width, seconds (one of BUCKETS)


# Heatmap bucket widths, seconds, and how the page names them.
BUCKETS = ((60.0, "1 min"), (600.0, "10 min"), (3600.0, "1 h"), (86_400.0, "1 day"))


def bucket_edges(t0: float, t1: float, max_buckets: int) -> tuple[F64, float]:
    """Edges (B + 1,) of round time buckets covering [t0, t1], and their width in seconds.

    The width is the smallest of 1 min, 10 min, 1 h and 1 day that needs at
    most ``max_buckets`` buckets (1 day for longer spans); edges fall on
    multiples of the width (UTC), so a bucket reads as a clock interval.

    >>> edges, width = bucket_edges(130.0, 3000.0, 96)
    >>> width, float(edges[0]), float(edges[-1]), edges.size - 1
    (60.0, 120.0, 3000.0, 48)
    >>> bucket_edges(0.0, 7200.0, 96)[1], bucket_edges(0.0, 400 * 86400.0, 96)[1]
    (600.0, 86400.0)
    """
    width = BUCKETS[-1][0]
    for w, _ in BUCKETS:
        if math.ceil((t1 - t0) / w) + 1 <= max_buckets:
            width = w
            break
    lo = math.floor(t0 / width) * width
    hi = max(math.ceil(t1 / width) * width, lo + width)
    n = int(round((hi - lo) / width))
    return lo + width * np.arange(n + 1, dtype=np.float64), width


def bucket_name(width: float) -> str:
    """How the page names a bucket width (seconds).

    >>> bucket_name(600.0), bucket_name(51.0)
    ('10 min', '51 s')
    """
    return next((name for w, name in BUCKETS if w == width), f"{width:,.0f} s")


def valid_times(timestamps: F64) -> NDArray[np.bool_]:
    """Timestamps a date can show (finite, 1970-2200), shape (n,) -> (n,).

    A store written before timestamps were validated on the way in may hold
    others; the report leaves those rows out of its figures and says so.
    """
    lo, hi = TIME_RANGE
    return np.isfinite(timestamps) & (timestamps >= lo) & (timestamps <= hi)


def open_stores(path: str | Path) -> list[AnomalyStore]:
    """The store under ``path``, or its ``partition-*`` stores (the Kafka layout)."""
    return [AnomalyStore(p) for p in store_paths(path)]


def summarise(stores: Sequence[AnomalyStore], options: ReportOptions) -> FleetSummary:
    """Counts, the heatmap and the worst events, one chunk in memory at a time."""
    sensors = next((s.sensors for s in stores if s.sensors), ())
    chunks = [c for s in stores for c in s.chunks]
    turbines = np.unique(np.concatenate([s.turbines for s in stores] + [np.zeros(0, np.int64)]))
    bounds = np.array([[float(c["t_min"]), float(c["t_max"])] for c in chunks]).reshape(-1)
    if bounds.size and not valid_times(bounds).all():
        # A chunk holds a timestamp no date can show: the valid rows' own span.
        seen = [
            m.timestamps[valid_times(m.timestamps)] for st in stores for m in st.iter_matrices()
        ]
        bounds = np.concatenate([*seen, np.zeros(0)])
    if bounds.size:
        t0, t1 = float(bounds.min()), float(bounds.max())
    else:
        t0 = t1 = 0.0
    if t1 <= t0:
        t0, t1 = t0 - 0.5, t1 + 0.5
    edges, width = bucket_edges(t0, t1, max(1, options.time_buckets))
    buckets = edges.size - 1
    heat = sparse.csr_array((turbines.size, buckets), dtype=np.int64)
    top = Anomalies.concat([], sensors)
    thresholds = np.zeros(0)
    invalid = 0
    for st in stores:
        for chunk in st.iter_matrices():
            ok = valid_times(chunk.timestamps)
            keep = np.flatnonzero(ok)
            invalid += int(ok.size - keep.size)
            n = keep.size
            if n == 0:
                continue
            ts, ids, d = chunk.timestamps[keep], chunk.turbine_ids[keep], chunk.distances[keep]
            row = np.searchsorted(turbines, ids)
            col = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, buckets - 1)
            heat = heat + sparse.csr_array(
                (np.ones(n, dtype=np.int64), (row, col)), shape=heat.shape
            )
            # Candidates: each turbine's largest anomaly of the chunk, then the best overall.
            order = np.lexsort((-d, ids))
            first = order[np.r_[True, ids[order][1:] != ids[order][:-1]]]
            first = first[np.argsort(-d[first], kind="stable")][: options.top_events]
            merged = Anomalies.concat([top, chunk.take(keep[first])], sensors)
            top = merged.select(best_per_turbine(merged, options.top_events))
            thresholds = np.unique(np.concatenate((thresholds, np.unique(chunk.thresholds))))
    counts = np.asarray(heat.sum(axis=1), dtype=np.int64).reshape(-1)
    return FleetSummary(
        sensors=sensors,
        anomalies=int(counts.sum()),
        readings=sum(s.readings for s in stores),
        chunks=len(chunks),
        turbines=turbines,
        counts=counts,
        edges=edges,
        heat=heat,
        top=top,
        thresholds=thresholds,
        invalid_times=invalid,
        bucket=width,
    )


@dataclass
class Series:
    """One turbine's timeline.

    Attributes
    ----------
    timestamps, distances : ndarray of shape (n,)
    anomalous : ndarray of shape (n,)
    labels : ndarray of shape (n,), optional
    kinds : ndarray of shape (n,), optional
    """

    timestamps: F64
    distances: F64
    anomalous: NDArray[np.bool_]
    labels: NDArray[np.bool_] | None = None
    kinds: NDArray[np.str_] | None = None  # each reading's fault kind ("" for none)


def stored_series(stores: Sequence[AnomalyStore], turbines: I64) -> dict[int, Series]:
    """The stored anomalies of ``turbines`` (k,) as series (anomalies only)."""
    parts: list[tuple[F64, I64, F64]] = []
    for st in stores:
        for chunk in st.iter_matrices():
            ids = chunk.turbine_ids
            keep = np.isin(ids, turbines) & valid_times(chunk.timestamps)
            if keep.any():
                parts.append((chunk.timestamps[keep], ids[keep], chunk.distances[keep]))
    return _split_series(parts, None, turbines, all_anomalous=True)


def _split_series(
    parts: list[tuple[F64, I64, F64]],
    extra: list[tuple[NDArray[np.bool_], NDArray[np.bool_] | None]] | None,
    turbines: I64,
    all_anomalous: bool = False,
    kind_parts: list[NDArray[np.str_] | None] | None = None,
) -> dict[int, Series]:
    """Concatenate collected (timestamps, ids, distances) and cut them per turbine."""
    if not parts:
        return {}
    ts = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    dist = np.concatenate([p[2] for p in parts])
    kinds = None
    if extra is None:
        flags = np.ones(ts.size, dtype=bool)
        labels = None
    else:
        flags = np.concatenate([e[0] for e in extra])
        has = all(e[1] is not None for e in extra)
        labels = np.concatenate([e[1] for e in extra if e[1] is not None]) if has else None
        if kind_parts is not None and kind_parts and all(k is not None for k in kind_parts):
            kinds = np.concatenate([k for k in kind_parts if k is not None])
    order = np.lexsort((ts, ids))  # by turbine, then time (stable within a time step)
    ids_s = ids[order]
    out: dict[int, Series] = {}
    bounds = np.searchsorted(ids_s, turbines), np.searchsorted(ids_s, turbines, side="right")
    for t, a, b in zip(turbines.tolist(), bounds[0].tolist(), bounds[1].tolist(), strict=True):
        idx = order[a:b]  # loop over the few turbines drawn, not over readings
        if idx.size:
            out[t] = Series(
                ts[idx],
                dist[idx],
                flags[idx],
                None if labels is None else labels[idx],
                None if kinds is None else kinds[idx],
            )
    return out


class TimelineCollector:
    """Keeps every scored reading of a few turbines while a file is re-scored.

    Parameters
    ----------
    turbines : ndarray of shape (k,)

    Examples
    --------
    >>> from pipeline.detector import BatchResult
    >>> c = TimelineCollector(np.array([7]))
    >>> r = BatchResult(np.array([0.0, 0.0]), np.array([7, 8]), np.array([3.0, 4.0]),
    ...                 np.array([False, False]), np.array([1, 1], np.int8), 10.0,
    ...                 np.zeros(0, np.intp), np.zeros((0, 1)))
    >>> batch = Chunk(r.timestamps, r.turbine_ids, np.zeros((2, 1)), None, None, np.arange(2))
    >>> c(batch, r)
    >>> c.series()[7].distances.tolist()
    [3.0]
    """

    def __init__(self, turbines: I64) -> None:
        self.turbines = np.asarray(turbines, dtype=np.int64)
        self._parts: list[tuple[F64, I64, F64]] = []
        self._flags: list[tuple[NDArray[np.bool_], NDArray[np.bool_] | None]] = []
        self._kinds: list[NDArray[np.str_] | None] = []

    def __call__(self, batch: Chunk, result: BatchResult) -> None:
        keep = np.isin(result.turbine_ids, self.turbines) & (result.scored_by > 0)
        if not keep.any():
            return
        self._parts.append(
            (result.timestamps[keep], result.turbine_ids[keep], result.distances[keep])
        )
        labels = None if batch.labels is None else batch.labels[keep].astype(bool)
        self._flags.append((result.is_anomaly[keep], labels))
        self._kinds.append(None if batch.kinds is None else batch.kinds[keep])

    def series(self) -> dict[int, Series]:
        """Each collected turbine's series."""
        return _split_series(self._parts, self._flags, self.turbines, kind_parts=self._kinds)


class FaultKinds:
    """The labelled readings' fault kinds while a file is re-scored (labelled ones only).

    >>> k = FaultKinds()
    >>> k.add(np.array([0.0, 1, 2, 3]), np.array([5, 5, 5, 6]),
    ...       np.array(["", "drift", "drift", "spike"]))
    >>> k.at(np.array([5, 5, 6]), np.array([1.0, 0.0, 3.0]))
    ['drift', '', 'spike']
    >>> k.during(np.array([5, 6]), np.array([0.0, 0.0]), np.array([9.0, 1.0]))
    ['drift', '']
    """

    def __init__(self) -> None:
        self._parts: list[tuple[F64, I64, NDArray[np.str_]]] = []
        self.seen = False  # the input carried a kind column

    def __call__(self, batch: Chunk, result: BatchResult) -> None:
        if batch.kinds is not None:
            self.add(batch.timestamps, batch.turbine_ids, batch.kinds)

    def add(self, timestamps: F64, turbine_ids: I64, kinds: NDArray[np.str_]) -> None:
        """Keep the readings (arrays of shape (n,)) that carry a kind."""
        self.seen = True
        hit = np.flatnonzero(kinds != "")
        if hit.size:
            self._parts.append((timestamps[hit], turbine_ids[hit], kinds[hit]))

    def _all(self) -> tuple[F64, I64, NDArray[np.str_]]:
        if not self._parts:
            return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, dtype="<U1")
        if len(self._parts) > 1:
            merged = tuple(np.concatenate(a) for a in zip(*self._parts, strict=True))
            self._parts = [merged]  # type: ignore[list-item]
        return self._parts[0]

    def at(self, turbines: I64, times: F64) -> list[str]:
        """The kind of the reading of each turbine (q,) at each time (q,); "" for none."""
        ts, ids, kinds = self._all()
        out = []
        for t, when in zip(turbines.tolist(), times.tolist(), strict=True):  # a few events
            hit = np.flatnonzero((ids == t) & (ts == when))
            out.append(str(kinds[hit[0]]) if hit.size else "")
        return out

    def during(self, turbines: I64, starts: F64, ends: F64) -> list[str]:
        """The kinds (joined by '+') of each turbine's readings in [start, end], (q,)."""
        ts, ids, kinds = self._all()
        out = []
        for t, lo, hi in zip(turbines.tolist(), starts.tolist(), ends.tolist(), strict=True):
            hit = (ids == t) & (ts >= lo) & (ts <= hi)
            out.append("+".join(sorted(set(kinds[hit].tolist()))))
        return out


def recorded_config(stores: Sequence[AnomalyStore], model: Detector | None) -> DetectorConfig:
    """The configuration that wrote the store: its manifest's, else the saved model's."""
    configs = [c for c in (s.config for s in stores) if c is not None]
    if configs:
        return configs[0]
    if model is not None:
        return model.config
    raise ConfigError(
        "the store records no detector configuration (written by an older version) and "
        "has no model.npz or checkpoints: re-run detect to re-score --input"
    )


def rescore(
    path: str | Path,
    spec: RecordingSpec,
    config: DetectorConfig,
    batch_steps: int,
    turbines: I64,
    sensors: tuple[str, ...],
    train_rows: int = 0,
) -> tuple[RunReport, dict[int, Series], FaultKinds]:
    """Re-score a recorded file as the store was written; keep ``turbines``' readings (k,).

    Also returns the fault kinds of the file's labelled readings (all turbines).
    """
    collector = TimelineCollector(turbines)
    kinds = FaultKinds()

    def keep(batch: Chunk, result: BatchResult) -> None:
        collector(batch, result)
        kinds(batch, result)

    with read_recording(path, spec) as rec:
        if sensors and tuple(rec.sensors) != tuple(sensors):
            raise InputError(
                f"sensors {list(rec.sensors)} differ from the store's {list(sensors)}",
                path=str(path),
            )
        detector = Detector(config_for(config, rec.sensors, str(path)))
        run = run_recording(
            rec, detector, None, batch_steps, train_rows, id_col=spec.id_col, on_batch=keep
        )
    return run, collector.series(), kinds


def load_model(
    store: str | Path, checkpoint_dir: str | Path | None = None, site: str = "default"
) -> Detector | None:
    """The learned models: ``STORE/model.npz``, else the Kafka checkpoints merged.

    Checkpoints are ``CHECKPOINT_DIR/<topic>-<partition>.npz`` (default
    ``STORE/checkpoints``); each partition's detector is rebuilt with
    ``Detector.from_state`` and the partitions are merged (exactly, Chan).
    """
    root = Path(store)
    if (root / MODEL).exists():
        try:
            with np.load(root / MODEL, allow_pickle=False) as f:
                state = {k: f[k] for k in f.files}
        except CORRUPT_NPZ_ERRORS as exc:  # cut or garbled: BadZipFile, EOFError...
            raise StoreError(f"{root / MODEL}: unreadable ({exc.__class__.__name__})") from None
        return Detector.from_state(state)
    cp_dir = Path(checkpoint_dir) if checkpoint_dir is not None else root / "checkpoints"
    files = sorted(cp_dir.glob("*.npz")) if cp_dir.is_dir() else []
    if not files:
        return None
    from consumers.checkpoint import CheckpointDir  # the service's format; no Kafka import

    merged: Detector | None = None
    for f in files:
        topic, _, part = f.stem.rpartition("-")
        if not topic or not part.isdigit():
            continue
        try:
            cp = CheckpointDir(cp_dir, topic).load(int(part))
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{f}: unreadable checkpoint ({exc})") from None
        share = cp.site_part(site) if cp is not None else None
        if share is None or not share.detector_state:
            continue
        det = Detector.from_state(share.detector_state)
        merged = det if merged is None else merged.merge(det)
    return merged
