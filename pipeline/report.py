"""The anomaly report: one HTML page and the PNG figures operators look at.

``turbine report --store DIR [--input FILE] --output DIR`` writes
``index.html`` and, drawn with matplotlib's Agg canvas (headless, no pyplot
state):

``timeline.png``
    For the turbines with the most anomalies, the squared distance against
    the threshold over time, anomalies marked and labelled faults shaded.
    With ``--input`` the file is re-scored with the configuration and batch
    size recorded in the store's manifest, so every reading's distance is
    drawn; without it, the stored anomalies only.
``heatmap.png``
    Anomaly counts per turbine and time bucket, accumulated chunk by chunk.
``contributions.png``
    Each sensor's contribution to the worst events (one per turbine), and
    for each the most similar earlier anomalies (:mod:`pipeline.similarity`).
``correlation.png``
    The correlation matrix of each key group's fleet model, from the
    embedded run's ``model.npz`` or the Kafka detector's merged checkpoints.

Labelled inputs add the evaluation table (precision, recall, F1, FAR, MAR,
as ``turbine evaluate``).  The store is read one CSR chunk at a time,
whatever its size: a pass for the counts, the heatmap and the worst events,
one for the similar anomalies, and (without ``--input``) one for the worst
turbines' anomalies.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import NDArray
from scipy import sparse

from pipeline.config import DetectorConfig
from pipeline.detector import BatchResult, Detector
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.evaluation import Confusion
from pipeline.recordings import Chunk, RecordingSpec, read_recording
from pipeline.runner import DEFAULT_BATCH_STEPS, RunReport, config_for, run_recording
from pipeline.similarity import SeenBefore
from pipeline.store import MODEL, Anomalies, AnomalyStore, store_paths

TIMELINE = "timeline.png"
HEATMAP = "heatmap.png"
CONTRIBUTIONS = "contributions.png"
CORRELATION = "correlation.png"
FIGURES = (TIMELINE, HEATMAP, CONTRIBUTIONS, CORRELATION)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows.

    >>> ReportOptions().worst_turbines
    6
    """

    worst_turbines: int = 6
    top_events: int = 6
    similar: int = 5
    time_buckets: int = 96
    heatmap_turbines: int = 60
    correlation_groups: int = 12
    max_points: int = 20_000
    dpi: int = 100


# ---------------------------------------------------------------------- small helpers
def to_datetime64(timestamps: F64) -> NDArray[np.datetime64]:
    """Epoch seconds (n,) as ``datetime64[ms]`` (n,), what matplotlib puts on a date axis.

    >>> to_datetime64(np.array([0.0, 1.5])).tolist()[1].isoformat()
    '1970-01-01T00:00:01.500000'
    """
    return (
        np.round(np.asarray(timestamps, dtype=np.float64) * 1000)
        .astype(np.int64)
        .astype("datetime64[ms]")
    )


def iso(ts: float) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC.

    >>> iso(1767225600.0)
    '2026-01-01 00:00:00'
    """
    return str(np.datetime64(int(round(ts)), "s")).replace("T", " ")


def thin(values: F64, max_points: int) -> NDArray[np.intp]:
    """Indices of at most ``max_points`` points of a series (n,) keeping its envelope.

    The series is cut into ``max_points // 2`` equal runs and each run keeps
    its minimum and its maximum, in order: spikes survive the thinning.

    >>> thin(np.array([0.0, 5.0, 1.0, 2.0, 9.0, 3.0]), 4).tolist()
    [0, 1, 3, 4]
    >>> thin(np.arange(3.0), 10).tolist()
    [0, 1, 2]
    """
    n = values.size
    if n <= max_points:
        return np.arange(n)
    bins = max(1, max_points // 2)
    run = np.arange(n) * bins // n
    order = np.lexsort((values, run))
    first = np.r_[True, run[order][1:] != run[order][:-1]]
    last = np.r_[run[order][1:] != run[order][:-1], True]
    return np.unique(np.concatenate((order[first], order[last])))


def correlations(counts: F64, m2: F64) -> F64:
    """Correlation matrices (G, D, D) from Welford counts (G,) and co-moments (G, D, D).

    A sensor without variance (or a model with fewer than 2 readings) gives NaN.

    >>> m2 = np.array([[[4.0, 2.0], [2.0, 9.0]]])
    >>> correlations(np.array([10.0]), m2).round(3).tolist()
    [[[1.0, 0.333], [0.333, 1.0]]]
    """
    var = np.einsum("gii->gi", m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 1.0 / np.sqrt(var)
        corr = m2 * scale[:, :, None] * scale[:, None, :]
    corr[counts < 2] = np.nan
    return np.asarray(np.clip(corr, -1.0, 1.0), dtype=np.float64)


def worst(turbines: I64, counts: I64, n: int) -> I64:
    """The ``n`` turbines (T,) with the most anomalies (T,), ties to the lower id.

    >>> worst(np.array([3, 5, 8]), np.array([2, 7, 2]), 2).tolist()
    [5, 3]
    """
    order = np.lexsort((turbines, -counts))
    order = order[counts[order] > 0][:n]
    return turbines[order]


def best_per_turbine(table: Anomalies, n: int) -> NDArray[np.intp]:
    """Rows of the ``n`` largest anomalies of ``table``, at most one per turbine.

    >>> t = Anomalies(np.zeros(4), np.array([1, 1, 2, 3]), np.array([9.0, 8.0, 5.0, 7.0]),
    ...               np.ones(4), np.zeros((4, 1)), *(np.zeros(4, np.int64),) * 3,
    ...               np.ones(4, np.int8), ("a",))
    >>> best_per_turbine(t, 2).tolist()
    [0, 3]
    """
    if len(table) == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((-table.distances, table.turbine_ids))
    ids = table.turbine_ids[order]
    first = order[np.r_[True, ids[1:] != ids[:-1]]]
    ranked = first[np.lexsort((table.turbine_ids[first], -table.distances[first]))]
    return ranked[:n].astype(np.intp)


# ---------------------------------------------------------------------- the store
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


def open_stores(path: str | Path) -> list[AnomalyStore]:
    """The store under ``path``, or its ``partition-*`` stores (the Kafka layout)."""
    return [AnomalyStore(p) for p in store_paths(path)]


def summarise(stores: Sequence[AnomalyStore], options: ReportOptions) -> FleetSummary:
    """Counts, the heatmap and the worst events, one chunk in memory at a time."""
    sensors = next((s.sensors for s in stores if s.sensors), ())
    chunks = [c for s in stores for c in s.chunks]
    turbines = np.unique(np.concatenate([s.turbines for s in stores] + [np.zeros(0, np.int64)]))
    if chunks:
        t0 = min(float(c["t_min"]) for c in chunks)
        t1 = max(float(c["t_max"]) for c in chunks)
    else:
        t0 = t1 = 0.0
    if t1 <= t0:
        t0, t1 = t0 - 0.5, t1 + 0.5
    buckets = max(1, options.time_buckets)
    edges = np.linspace(t0, t1, buckets + 1)
    heat = sparse.csr_array((turbines.size, buckets), dtype=np.int64)
    top = Anomalies.concat([], sensors)
    thresholds = np.zeros(0)
    for st in stores:
        for chunk in st.iter_matrices():
            n = len(chunk)
            if n == 0:
                continue
            row = np.searchsorted(turbines, chunk.turbine_ids)
            col = np.clip(
                np.searchsorted(edges, chunk.timestamps, side="right") - 1, 0, buckets - 1
            )
            heat = heat + sparse.csr_array(
                (np.ones(n, dtype=np.int64), (row, col)), shape=heat.shape
            )
            # Candidates: each turbine's largest anomaly of the chunk, then the best overall.
            d, ids = chunk.distances, chunk.turbine_ids
            order = np.lexsort((-d, ids))
            first = order[np.r_[True, ids[order][1:] != ids[order][:-1]]]
            first = first[np.argsort(-d[first], kind="stable")][: options.top_events]
            merged = Anomalies.concat([top, chunk.take(first)], sensors)
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
    )


@dataclass
class Series:
    """One turbine's timeline.

    Attributes
    ----------
    timestamps, distances : ndarray of shape (n,)
    anomalous : ndarray of shape (n,)
    labels : ndarray of shape (n,), optional
    """

    timestamps: F64
    distances: F64
    anomalous: NDArray[np.bool_]
    labels: NDArray[np.bool_] | None = None


def stored_series(stores: Sequence[AnomalyStore], turbines: I64) -> dict[int, Series]:
    """The stored anomalies of ``turbines`` (k,) as series (anomalies only)."""
    parts: list[tuple[F64, I64, F64]] = []
    for st in stores:
        for chunk in st.iter_matrices():
            ids = chunk.turbine_ids
            keep = np.isin(ids, turbines)
            if keep.any():
                parts.append((chunk.timestamps[keep], ids[keep], chunk.distances[keep]))
    return _split_series(parts, None, turbines, all_anomalous=True)


def _split_series(
    parts: list[tuple[F64, I64, F64]],
    extra: list[tuple[NDArray[np.bool_], NDArray[np.bool_] | None]] | None,
    turbines: I64,
    all_anomalous: bool = False,
) -> dict[int, Series]:
    """Concatenate collected (timestamps, ids, distances) and cut them per turbine."""
    if not parts:
        return {}
    ts = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    dist = np.concatenate([p[2] for p in parts])
    if extra is None:
        flags = np.ones(ts.size, dtype=bool)
        labels = None
    else:
        flags = np.concatenate([e[0] for e in extra])
        has = all(e[1] is not None for e in extra)
        labels = np.concatenate([e[1] for e in extra if e[1] is not None]) if has else None
    order = np.lexsort((ts, ids))  # by turbine, then time (stable within a time step)
    ids_s = ids[order]
    out: dict[int, Series] = {}
    bounds = np.searchsorted(ids_s, turbines), np.searchsorted(ids_s, turbines, side="right")
    for t, a, b in zip(turbines.tolist(), bounds[0].tolist(), bounds[1].tolist(), strict=True):
        idx = order[a:b]  # loop over the few turbines drawn, not over readings
        if idx.size:
            out[t] = Series(ts[idx], dist[idx], flags[idx], None if labels is None else labels[idx])
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

    def __call__(self, batch: Chunk, result: BatchResult) -> None:
        keep = np.isin(result.turbine_ids, self.turbines) & (result.scored_by > 0)
        if not keep.any():
            return
        self._parts.append(
            (result.timestamps[keep], result.turbine_ids[keep], result.distances[keep])
        )
        labels = None if batch.labels is None else batch.labels[keep].astype(bool)
        self._flags.append((result.is_anomaly[keep], labels))

    def series(self) -> dict[int, Series]:
        """Each collected turbine's series."""
        return _split_series(self._parts, self._flags, self.turbines)


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
) -> tuple[RunReport, dict[int, Series]]:
    """Re-score a recorded file as the store was written; keep ``turbines``' readings (k,)."""
    collector = TimelineCollector(turbines)
    with read_recording(path, spec) as rec:
        if sensors and tuple(rec.sensors) != tuple(sensors):
            raise InputError(
                f"sensors {list(rec.sensors)} differ from the store's {list(sensors)}",
                path=str(path),
            )
        detector = Detector(config_for(config, rec.sensors, str(path)))
        run = run_recording(
            rec, detector, None, batch_steps, train_rows, id_col=spec.id_col, on_batch=collector
        )
    return run, collector.series()


def load_model(store: str | Path, checkpoint_dir: str | Path | None = None) -> Detector | None:
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
        except (OSError, ValueError) as exc:
            raise StoreError(f"{root / MODEL}: unreadable ({exc})") from None
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
        if cp is None:
            continue
        det = Detector.from_state(cp.detector_state)
        merged = det if merged is None else merged.merge(det)
    return merged


# ---------------------------------------------------------------------- figures
def _save(fig: Figure, path: Path, dpi: int) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def _date_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def timeline_figure(
    series: dict[int, Series],
    counts: dict[int, int],
    threshold: float,
    every_reading: bool,
    statistic: str = "squared distance",
    max_points: int = 20_000,
    xlim: tuple[float, float] | None = None,
) -> Figure:
    """One panel per turbine: distance against threshold, anomalies, labelled faults.

    Parameters
    ----------
    series : dict of turbine id to Series
        Each series' arrays have shape (n,).
    counts : dict of turbine id to int
        Anomalies the store holds for each turbine (titles).
    threshold : float
    every_reading : bool
        True: the series holds every scored reading (a line); False: the
        anomalies only (points).
    statistic : str
        Y axis title.
    max_points : int
        Longer series are thinned to their envelope (see :func:`thin`).
    xlim : (float, float), optional
        Time range shown (epoch seconds); default the series'.

    Examples
    --------
    >>> s = Series(np.arange(5.0), np.array([1.0, 2, 40, 3, 1]),
    ...            np.array([0, 0, 1, 0, 0], bool), np.array([0, 1, 1, 0, 0], bool))
    >>> len(timeline_figure({3: s}, {3: 1}, 20.0, True).axes)
    1
    """
    n = max(1, len(series))
    fig = Figure(figsize=(11, 1.2 + 2.1 * n), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, (turbine, s) in zip(axes, series.items(), strict=False):
        t = to_datetime64(s.timestamps)
        d = np.maximum(s.distances, 1e-3)
        if every_reading:
            keep = thin(d, max_points)
            ax.plot(t[keep], d[keep], lw=0.7, color="tab:blue", label=statistic)
        if s.labels is not None and s.labels.any():
            ax.fill_between(
                t,
                0,
                1,
                where=s.labels,
                step="mid",
                color="tab:orange",
                alpha=0.25,
                lw=0,
                transform=ax.get_xaxis_transform(),
                label="labelled fault",
            )
        hit = s.anomalous
        ax.scatter(t[hit], d[hit], s=9, color="tab:red", zorder=3, label="anomaly")
        ax.axhline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.1f}")
        ax.set_yscale("log")
        ax.set_ylabel(statistic)
        ax.set_title(
            f"turbine {turbine}: {counts.get(turbine, int(hit.sum())):,} anomalies",
            loc="left",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        _date_axis(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", fontsize=8, ncols=4, frameon=False)
    if xlim is not None:
        axes[0].set_xlim(to_datetime64(np.asarray(xlim, dtype=np.float64)))
    what = "every reading re-scored" if every_reading else "stored anomalies only"
    which = ": the turbines with the most anomalies" if len(series) > 1 else ""
    fig.suptitle(f"{statistic} over time{which} ({what})", fontsize=12, x=0.01, ha="left")
    return fig


def heatmap_figure(summary: FleetSummary, max_turbines: int) -> Figure:
    """Anomalies per turbine (rows) and time bucket (columns).

    Shows every turbine with anomalies, or the ``max_turbines`` with the
    most, in turbine order.

    >>> s = FleetSummary(("a",), 3, 10, 1, np.array([1, 2]), np.array([2, 1]),
    ...                  np.array([0.0, 5, 10]), sparse.csr_array(np.array([[1, 1], [0, 1]])),
    ...                  Anomalies.concat([], ("a",)), np.array([9.0]))
    >>> len(heatmap_figure(s, 60).axes)
    2
    """
    rows = np.flatnonzero(summary.counts > 0)
    if rows.size > max_turbines:
        pick = np.lexsort((summary.turbines[rows], -summary.counts[rows]))[:max_turbines]
        rows = np.sort(rows[pick])
    counts = np.asarray(summary.heat[rows].toarray(), dtype=np.float64)
    r = rows.size
    fig = Figure(figsize=(11, min(14.0, 2.0 + 0.2 * r)), layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_equal(counts, 0)
    mesh = ax.pcolormesh(
        to_datetime64(summary.edges), np.arange(r + 1), masked, cmap="viridis", shading="flat"
    )
    step = max(1, math.ceil(r / 40))
    ticks = np.arange(0, r, step)
    ax.set_yticks(ticks + 0.5, [str(t) for t in summary.turbines[rows][ticks].tolist()])
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    ax.set_ylabel("turbine")
    ax.set_facecolor("#f4f4f4")
    _date_axis(ax)
    width = (summary.edges[-1] - summary.edges[0]) / max(1, summary.edges.size - 1)
    shown = (
        f"all {r} turbines with anomalies"
        if r == np.count_nonzero(summary.counts)
        else f"the {r} of {np.count_nonzero(summary.counts)} turbines with the most anomalies"
    )
    ax.set_title(f"Anomalies per turbine and {width:,.0f} s bucket ({shown})", fontsize=11)
    fig.colorbar(mesh, ax=ax, label="anomalies", shrink=0.8)
    return fig


def contributions_figure(top: Anomalies, max_sensors: int = 12) -> Figure:
    """Each sensor's contribution to each of the worst events (one panel each).

    Parameters
    ----------
    top : Anomalies
        k events; contributions of shape (k, D).
    max_sensors : int
        Panels show the sensors with the largest absolute contributions.

    >>> t = Anomalies(np.zeros(1), np.array([4]), np.array([30.0]), np.array([9.0]),
    ...               np.array([[25.0, 5.0]]), *(np.zeros(1, np.int64),) * 3,
    ...               np.ones(1, np.int8), ("a", "b"))
    >>> len(contributions_figure(t).axes)
    1
    """
    k = max(1, len(top))
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    d = len(top.sensors)
    shown = min(d, max_sensors)
    fig = Figure(figsize=(11, 0.9 + nrows * (0.9 + 0.28 * shown)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    names = np.asarray(top.sensors, dtype=object)
    for i, ax in enumerate(axes):
        if i >= len(top):
            ax.set_axis_off()
            continue
        c = top.contributions[i]
        order = np.argsort(-np.abs(c), kind="stable")[:shown][::-1]
        colors = np.where(c[order] >= 0, "tab:red", "tab:blue")
        ax.barh(np.arange(shown), c[order], color=colors.tolist())
        ax.set_yticks(np.arange(shown), names[order].tolist(), fontsize=8)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(
            f"turbine {int(top.turbine_ids[i])}, {iso(float(top.timestamps[i]))}\n"
            f"d\u00b2 = {float(top.distances[i]):,.1f}",
            fontsize=9,
        )
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Per-sensor contributions to the worst events (they sum to d\u00b2)", fontsize=12)
    return fig


def correlation_figure(model: Detector, max_groups: int = 12) -> Figure | None:
    """The correlation matrix of each key group's fleet model (the groups with most readings).

    >>> rng = np.random.default_rng(0)
    >>> from pipeline.config import DetectorConfig
    >>> det = Detector(DetectorConfig(key_groups=2, sensors=("a", "b")))
    >>> _ = det.learn(np.zeros(100), np.arange(100) % 4, rng.normal(size=(100, 2)))
    >>> len(correlation_figure(det).axes)  # two groups and a colour bar
    3
    """
    state = model.state()
    if "group_m2" not in state:
        return None
    counts = np.asarray(state["group_counts"], dtype=np.float64)
    corr = correlations(counts, np.asarray(state["group_m2"], dtype=np.float64))
    groups = np.flatnonzero(counts >= 2)
    groups = groups[np.argsort(-counts[groups], kind="stable")][:max_groups]
    if groups.size == 0:
        return None
    groups = np.sort(groups)
    g_all = model.config.key_groups
    per_group = np.bincount(
        np.mod(np.asarray(state["turbine_ids"], dtype=np.int64), g_all), minlength=g_all
    )
    sensors = list(model.config.sensors or [f"sensor {j}" for j in range(corr.shape[1])])
    d = len(sensors)
    ncols = min(4, groups.size)
    nrows = math.ceil(groups.size / ncols)
    side = min(3.6, 1.4 + 0.3 * d)
    fig = Figure(figsize=(1.2 + ncols * side, 0.9 + nrows * side), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, g in zip(axes, groups.tolist(), strict=False):
        image = ax.imshow(corr[g], vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(np.arange(d), sensors, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(d), sensors, fontsize=7)
        plural = "s" if per_group[g] != 1 else ""
        ax.set_title(
            f"group {g}: {per_group[g]} turbine{plural}, {int(counts[g]):,} readings", fontsize=8
        )
        if d <= 8:
            rr, cc = np.indices((d, d))
            for i, j in zip(rr.ravel().tolist(), cc.ravel().tolist(), strict=True):
                v = corr[g, i, j]  # loop over the matrix cells of a small panel
                if np.isfinite(v):
                    color = "white" if abs(v) > 0.6 else "black"
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color=color)
    for ax in axes[groups.size :]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), label="correlation", shrink=0.8)
    smoothed = ", EWMA-smoothed" if model.config.chart == "mewma" else ""
    fig.suptitle(
        f"Correlation of calibrated{smoothed} readings per key group (fleet models)", fontsize=11
    )
    return fig


# ---------------------------------------------------------------------- the page
@dataclass
class Report:
    """What :func:`write_report` wrote."""

    index: Path
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    if header is None:
        body = "".join(
            f"<tr><th>{html.escape(str(row[0]))}</th>"
            + "".join(f"<td>{html.escape(str(c))}</td>" for c in row[1:])
            + "</tr>"
            for row in rows
        )
        return f"<table><tbody>{body}</tbody></table>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# A figure that fails to load says so in the browser's console; one that loads is marked.
_IMG_EVENTS = (
    "onload=\"this.dataset.loaded='yes'\" "
    "onerror=\"this.dataset.loaded='no'; console.error('figure failed to load: ' + this.src)\""
)


def _figure(name: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}" {_IMG_EVENTS}>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _top_sensors(contrib: F64, sensors: tuple[str, ...], n: int = 2) -> str:
    order = np.argsort(-contrib, kind="stable")[:n]
    return ", ".join(f"{sensors[j]} {contrib[j]:.1f}" for j in order.tolist())


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def evaluation_rows(c: Confusion) -> list[tuple[str, str]]:
    """The evaluation table's rows, as ``turbine evaluate`` prints them.

    >>> evaluation_rows(Confusion(tp=8, fp=2, fn=2, tn=88))[:3]
    [('precision', '0.800'), ('recall', '0.800'), ('F1 (SKAB)', '0.800')]
    """
    faults = len(c.delays) + c.missed_faults
    return [
        ("precision", _fmt(c.precision)),
        ("recall", _fmt(c.recall)),
        ("F1 (SKAB)", _fmt(c.f1)),
        ("FAR (% of normal readings flagged)", _fmt(c.far, 2)),
        ("MAR (% of faulty readings missed)", _fmt(c.mar, 2)),
        ("mean detection delay (s)", _fmt(c.mean_delay, 1)),
        ("faults detected", f"{faults - c.missed_faults} of {faults}"),
        ("TP / FP / FN / TN", f"{c.tp:,} / {c.fp:,} / {c.fn:,} / {c.tn:,}"),
    ]


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; } .note { color: #555; } .warn { color: #a00; font-weight: bold; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def write_report(
    store: str | Path,
    output: str | Path,
    input_path: str | Path | None = None,
    spec: RecordingSpec | None = None,
    batch_steps: int | None = None,
    checkpoint_dir: str | Path | None = None,
    options: ReportOptions | None = None,
) -> Report:
    """Write ``OUTPUT/index.html`` and its PNG figures for the store under ``store``.

    Parameters
    ----------
    store : path
        One store, or a directory of ``partition-*`` stores.
    output : path
        Created if missing; the report's files are replaced.
    input_path : path, optional
        The recorded file the store was written from: re-scored to draw
        every reading's distance (and labels, and the evaluation table).
    spec : RecordingSpec, optional
        How to read ``input_path``.
    batch_steps : int, optional
        Time steps per engine batch; default the manifest's, else 10.
    checkpoint_dir : path, optional
        The Kafka detectors' checkpoints (default ``STORE/checkpoints``).
    """
    opts = options or ReportOptions()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    stores = open_stores(store)
    summary = summarise(stores, opts)
    model = load_model(store, checkpoint_dir)
    report = Report(index=out / "index.html")
    notes = report.notes
    worst_ids = worst(summary.turbines, summary.counts, opts.worst_turbines)
    count_of = dict(zip(summary.turbines.tolist(), summary.counts.tolist(), strict=True))
    config: DetectorConfig | None = None
    try:
        config = recorded_config(stores, model)
    except ConfigError:
        if input_path is not None:
            raise
    statistic = statistic_name(config)
    threshold = float(summary.thresholds.max()) if summary.thresholds.size else math.nan

    # 1. timelines
    run: RunReport | None = None
    if input_path is not None and config is not None:
        steps = batch_steps or next(
            (s.batch_steps for s in stores if s.batch_steps), DEFAULT_BATCH_STEPS
        )
        train_rows = next((s.train_rows for s in stores if s.train_rows), 0)
        run, series = rescore(
            input_path,
            spec or RecordingSpec(),
            config,
            steps,
            worst_ids,
            summary.sensors,
            train_rows,
        )
        if math.isfinite(run.threshold):
            threshold = run.threshold
        if run.anomalies != summary.anomalies:
            notes.append(
                f"warning: re-scoring {input_path} gives {run.anomalies:,} anomalies, the "
                f"store holds {summary.anomalies:,}: the input may not be the file the store "
                "was written from (or not all of it, or a different batch size)."
            )
    else:
        series = stored_series(stores, worst_ids)
    if series:
        fig = timeline_figure(
            series,
            count_of,
            threshold,
            run is not None,
            statistic,
            opts.max_points,
            None if run is not None else (float(summary.edges[0]), float(summary.edges[-1])),
        )
        report.figures[TIMELINE] = _save(fig, out / TIMELINE, opts.dpi)

    # 2. heatmap
    if summary.anomalies:
        fig = heatmap_figure(summary, opts.heatmap_turbines)
        report.figures[HEATMAP] = _save(fig, out / HEATMAP, opts.dpi)

    # 3. contributions and seen before
    similar: list[tuple[Anomalies, F64]] = []
    if len(summary.top):
        fig = contributions_figure(summary.top)
        report.figures[CONTRIBUTIONS] = _save(fig, out / CONTRIBUTIONS, opts.dpi)
        seen = SeenBefore(summary.top.contributions, opts.similar, summary.top.timestamps)
        latest = float(summary.top.timestamps.max())
        for st in stores:
            for chunk in st.iter_matrices(until=latest):
                seen.update(chunk)
        similar = [seen.matches(i) for i in range(len(summary.top))]

    # 5. correlation
    if model is not None:
        fig_c = correlation_figure(model, opts.correlation_groups)
        if fig_c is not None:
            report.figures[CORRELATION] = _save(fig_c, out / CORRELATION, opts.dpi)

    page = _page(store, input_path, stores, summary, config, run, report, similar, model, opts)
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, report.index)
    return report


def _page(
    store: str | Path,
    input_path: str | Path | None,
    stores: Sequence[AnomalyStore],
    summary: FleetSummary,
    config: DetectorConfig | None,
    run: RunReport | None,
    report: Report,
    similar: list[tuple[Anomalies, F64]],
    model: Detector | None,
    opts: ReportOptions,
) -> str:
    esc = html.escape
    parts: list[str] = []
    add = parts.append
    add("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>")
    add(f"<title>Anomaly report: {esc(str(store))}</title><style>{_CSS}</style></head><body>")
    add("<h1>Anomaly report</h1>")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    add(f"<p class='note'>store <code>{esc(str(store))}</code>, generated {generated}</p>")
    for note in report.notes:
        add(f"<p class='warn'>{esc(note)}</p>")
    t0, t1 = float(summary.edges[0]), float(summary.edges[-1])
    facts: list[tuple[str, object]] = [
        ("stores", f"{len(stores)} ({'partitioned' if len(stores) > 1 else 'one store'})"),
        ("chunks", summary.chunks),
        ("readings scored", f"{summary.readings:,}"),
        ("anomalies", f"{summary.anomalies:,}"),
        ("turbines with anomalies", f"{int(np.count_nonzero(summary.counts)):,}"),
        ("sensors", ", ".join(summary.sensors)),
    ]
    if summary.anomalies:
        facts.append(("time range of the anomalies", f"{iso(t0)} to {iso(t1)} UTC"))
    if summary.thresholds.size:
        facts.append(("threshold", ", ".join(f"{x:.3f}" for x in summary.thresholds.tolist())))
    if config is not None:
        shown = {
            k: v
            for k, v in json.loads(config.model_dump_json()).items()
            if k
            in (
                "chart",
                "mewma_lambda",
                "false_alarm_rate",
                "min_samples",
                "key_groups",
                "per_turbine",
                "memory",
            )
        }
        facts.append(
            (
                "detector configuration",
                ", ".join(f"{k} {v}" for k, v in shown.items() if v is not None),
            )
        )
    if input_path is not None and run is not None:
        facts.append(
            (
                "input re-scored",
                f"{input_path}: {run.readings:,} readings, {run.anomalies:,} anomalies",
            )
        )
    add("<h2>Summary</h2>" + _table(None, facts))

    add("<h2>1. Turbines with the most anomalies</h2>")
    if TIMELINE in report.figures:
        if run is not None:
            caption = (
                "Every scored reading's distance (line, log scale) against the threshold "
                "(dashed); anomalies in red"
                + (", labelled faults shaded" if run.confusion is not None else "")
                + f". Re-scored from {input_path} with the store's configuration."
            )
        else:
            caption = (
                "The stored anomalies' distances (log scale) against the threshold (dashed). "
                "Pass --input FILE to draw every reading and the labelled faults."
            )
        add(_figure(TIMELINE, "distance timelines of the worst turbines", caption))
    else:
        add("<p class='note'>No anomalies in the store.</p>")

    add("<h2>2. Fleet heatmap</h2>")
    if HEATMAP in report.figures:
        add(
            _figure(
                HEATMAP,
                "heatmap of anomaly counts per turbine and time bucket",
                "Anomalies per turbine and time bucket; blank cells have none.",
            )
        )
    else:
        add("<p class='note'>No anomalies in the store.</p>")

    add("<h2>3. Worst events and what they looked like before</h2>")
    if CONTRIBUTIONS in report.figures:
        add(
            _figure(
                CONTRIBUTIONS,
                "per-sensor contributions of the worst events",
                "The largest anomaly of each of the worst turbines: each sensor's share of its "
                "squared distance (red adds, blue subtracts).",
            )
        )
        top = summary.top
        ids = top.event_ids()
        rows = [
            (
                ids[i],
                iso(float(top.timestamps[i])),
                int(top.turbine_ids[i]),
                f"{float(top.distances[i]):,.1f}",
                _top_sensors(top.contributions[i], top.sensors),
            )
            for i in range(len(top))  # a few events
        ]
        add(_table(("event", "time (UTC)", "turbine", statistic_name(config), "top sensors"), rows))
        add(
            "<h3>Seen before</h3><p class='note'>For each event, the earlier anomalies "
            "whose per-sensor contributions point the same way (cosine similarity; "
            f"<code>turbine anomalies STORE --similar-to EVENT --top {opts.similar}</code>).</p>"
        )
        for i, (matches, sim) in enumerate(similar):
            add(f"<h4>{esc(ids[i])} (turbine {int(top.turbine_ids[i])})</h4>")
            if len(matches) == 0:
                add("<p class='note'>Nothing earlier: the first of its kind.</p>")
                continue
            mids = matches.event_ids()
            add(
                _table(
                    ("similarity", "event", "time (UTC)", "turbine", "d\u00b2", "top sensors"),
                    [
                        (
                            f"{float(sim[j]):.4f}",
                            mids[j],
                            iso(float(matches.timestamps[j])),
                            int(matches.turbine_ids[j]),
                            f"{float(matches.distances[j]):,.1f}",
                            _top_sensors(matches.contributions[j], matches.sensors),
                        )
                        for j in range(len(matches))  # at most k rows
                    ],
                )
            )
    else:
        add("<p class='note'>No anomalies in the store.</p>")

    add("<h2>4. Evaluation against the labels</h2>")
    if run is not None and run.confusion is not None:
        add(_table(("score", "value"), evaluation_rows(run.confusion)))
        add(
            "<p class='note'>Point-wise, as <code>turbine evaluate</code> (SKAB's "
            "definitions), over the re-scored input.</p>"
        )
    elif run is not None:
        add("<p class='note'>The input has no label column (set --label-col).</p>")
    else:
        add("<p class='note'>Pass --input FILE with labels to score the anomalies.</p>")

    add("<h2>5. Model correlations per turbine group</h2>")
    if CORRELATION in report.figures:
        add(
            _figure(
                CORRELATION,
                "correlation matrices of the key groups' fleet models",
                "What each group's model has learned: a fault that breaks one of these "
                "correlations is what a per-sensor threshold cannot see.",
            )
        )
    elif model is None:
        add(
            "<p class='note'>No model state: neither STORE/model.npz (written by "
            "<code>turbine detect --input</code>) nor Kafka checkpoints.</p>"
        )
    else:
        add("<p class='note'>The models have not learned enough readings yet.</p>")
    add("</body></html>\n")
    return "\n".join(parts)


def statistic_name(config: DetectorConfig | None) -> str:
    """Column title of the anomaly statistic.

    >>> statistic_name(None)
    'd²'
    """
    return "MEWMA statistic" if config is not None and config.chart == "mewma" else "d\u00b2"
