"""The embedded run: a recorded file through the engine, batch by batch, no broker."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from pipeline.batching import iter_batches
from pipeline.config import DetectorConfig, make_config
from pipeline.detector import BatchResult, Detector
from pipeline.durable import atomic_file
from pipeline.episodes import Episodes, EpisodeTracker
from pipeline.errors import ConfigError, InputError, StoreError
from pipeline.evaluation import Confusion, DelayTracker, EpisodeScores, LabelRuns, score_episodes
from pipeline.names import TurbineNames
from pipeline.quirks import QuirkCounts, Quirks
from pipeline.recordings import Chunk, RecordingSpec, read_recording
from pipeline.store import MODEL, AnomalyStore

if TYPE_CHECKING:
    from pipeline.recordings import Recording

DEFAULT_BATCH_STEPS = 10


def config_for(config: DetectorConfig, sensors: tuple[str, ...], source: str) -> DetectorConfig:
    """The configuration with the recording's sensor names (checked when both name them)."""
    if config.sensors is not None:
        if tuple(config.sensors) != tuple(sensors):
            raise ConfigError(
                f"{source}: sensors {list(sensors)} differ from the configuration's "
                f"{list(config.sensors)}"
            )
        return config
    return make_config({**config.model_dump(), "sensors": sensors}, source=source)


def check_turbines(
    detector: Detector,
    batch: Chunk,
    path: str,
    id_col: str,
    names: TurbineNames | None = None,
) -> None:
    """Unknown turbines of a declared fleet, as a located input error."""
    if not detector.turbines.fixed:
        return
    unknown = np.flatnonzero(detector.turbines.find(batch.turbine_ids) < 0)
    if unknown.size:
        i = int(unknown[0])
        tid = int(batch.turbine_ids[i])
        name = names.name_of(tid) if names is not None else str(tid)
        raise InputError(
            f"unknown turbine {name} (not in the configured fleet)",
            path=path,
            line=int(batch.lines[i]),
            column=id_col,
        )


class TopAnomalies:
    """The k largest anomalies seen so far (by distance), kept without sorting everything."""

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self.rows: list[tuple[float, float, int, NDArray[np.float64]]] = []

    def add(self, result: BatchResult) -> None:
        hit = result.anomaly_index
        if hit.size == 0:
            return
        d = result.distances[hit]
        best = np.argsort(d)[::-1][: self.k]
        for j in best.tolist():
            i = int(hit[j])
            self.rows.append(
                (
                    float(d[j]),
                    float(result.timestamps[i]),
                    int(result.turbine_ids[i]),
                    result.contributions[j],
                )
            )
        self.rows.sort(key=lambda r: -r[0])
        del self.rows[self.k :]


@dataclass
class RunReport:
    """What one embedded run saw."""

    path: str
    sensors: tuple[str, ...]
    readings: int = 0
    learned_only: int = 0
    skipped: int = 0
    anomalies: int = 0
    batches: int = 0
    seconds: float = 0.0
    per_turbine: dict[int, int] = field(default_factory=dict)
    confusion: Confusion | None = None
    top: TopAnomalies = field(default_factory=TopAnomalies)
    threshold: float = float("nan")
    states: dict[str, int] = field(default_factory=dict)
    rebaselined: list[tuple[float, int]] = field(default_factory=list)
    quirks: QuirkCounts = field(default_factory=QuirkCounts)
    names: TurbineNames = field(default_factory=TurbineNames)
    attribution: str | None = None
    episodes: Episodes | None = None
    episode_scores: EpisodeScores | None = None


def _split_training(
    chunks: Iterable[Chunk], train_rows: int
) -> tuple[list[Chunk], Iterator[Chunk]]:
    """The first ``train_rows`` rows (as chunks) and an iterator over the rest."""
    it = iter(chunks)
    head: list[Chunk] = []
    need = train_rows
    for c in it:
        if need <= 0:
            return head, _prepend(c, it)
        if len(c) <= need:
            head.append(c)
            need -= len(c)
            continue
        head.append(c.take(slice(0, need)))
        return head, _prepend(c.take(slice(need, None)), it)
    return head, iter(())


def _prepend(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest


def run_recording(
    recording: Recording,
    detector: Detector,
    store: AnomalyStore | None = None,
    batch_steps: int = DEFAULT_BATCH_STEPS,
    train_rows: int = 0,
    progress: bool = False,
    id_col: str = "turbine_id",
    on_batch: Callable[[Chunk, BatchResult], None] | None = None,
) -> RunReport:
    """Score an opened recording with ``detector``; anomalies go to ``store``.

    ``on_batch(batch, result)`` is called after each scored batch (the
    report uses it to keep every reading's distance for a few turbines).

    The readings pass through :class:`pipeline.quirks.Quirks` first:
    duplicate and out-of-order readings are dropped, the recording's
    sentinels blanked, all counted in ``RunReport.quirks``.  The turbine
    names the recording met are merged into ``detector.names`` (and the
    store's manifest).  A sensor with no usable reading in the whole file is
    an input error.

    Every scored batch also feeds an :class:`EpisodeTracker` (gap
    ``config.episode_gap``): the episodes it closes go to the store, those
    still open at the end of the file are closed then, and all are in
    ``report.episodes`` (with ``report.episode_scores`` against the labels).
    """
    path = str(recording.path)
    report = RunReport(
        path=path,
        sensors=recording.sensors,
        names=recording.names,
        attribution=recording.spec.attribution,
    )
    quirks = Quirks.for_spec(recording.spec, recording.sensors)
    labelled = recording.has_labels
    if labelled:
        report.confusion = Confusion()
    bar = _progress(progress, path, getattr(recording, "n_rows", None))
    start = time.perf_counter()
    per_turbine: dict[int, int] = {}
    delays = DelayTracker()
    tracker = EpisodeTracker(
        recording.sensors, detector.config.episode_gap, compiled=detector.compiled
    )
    closed: list[Episodes] = []
    runs = LabelRuns()
    try:
        head, rest = _split_training(quirks.filter(recording), train_rows)
        for chunk in head:
            check_turbines(detector, chunk, path, id_col, recording.names)
            detector.learn(chunk.timestamps, chunk.turbine_ids, chunk.values)
            report.learned_only += len(chunk)
            bar.update(len(chunk))
        for number, batch in iter_batches(rest, batch_steps):
            check_turbines(detector, batch, path, id_col, recording.names)
            result = detector.process(batch.timestamps, batch.turbine_ids, batch.values)
            if on_batch is not None:
                on_batch(batch, result)
            report.threshold = result.threshold
            done = tracker.update_result(result).closed
            closed.append(done)
            if store is not None:
                store.append(result, partitions=-1, offsets=number)
                store.append_episodes(done)
                store.advance({-1: number + 1})
            report.readings += result.n_readings
            report.skipped += result.n_skipped
            for name, count in result.state_counts().items():
                report.states[name] = report.states.get(name, 0) + count
            if result.rebaselined.size:
                when = float(batch.timestamps.max())
                report.rebaselined += [(when, int(t)) for t in result.rebaselined.tolist()]
            report.anomalies += result.n_anomalies
            report.batches += 1
            if result.n_anomalies:
                ids, counts = np.unique(
                    result.turbine_ids[result.anomaly_index], return_counts=True
                )
                for t, c in zip(ids.tolist(), counts.tolist(), strict=True):
                    per_turbine[t] = per_turbine.get(t, 0) + c
                report.top.add(result)
            if report.confusion is not None and batch.labels is not None:
                scored = result.scored_by >= 0  # stops (learn_when states) are not counted
                lab = batch.labels.astype(bool)[scored]
                alarm = result.is_anomaly[scored]
                report.confusion.add(lab, alarm)
                kinds = None if batch.kinds is None else batch.kinds[scored]
                delays.update(
                    batch.timestamps[scored], batch.turbine_ids[scored], lab, alarm, kinds
                )
                runs.update(batch.timestamps[scored], batch.turbine_ids[scored], lab)
            bar.update(len(batch))
    finally:
        bar.close()
    report.quirks = quirks.counts
    unusable = quirks.unusable()
    if unusable and (report.readings or report.learned_only):
        sensor = unusable[0]
        marks = dict(quirks.sentinels).get(recording.sensors.index(sensor))
        why = f"empty or the sentinel {', '.join(f'{m:g}' for m in marks)}" if marks else "empty"
        raise InputError(
            f"sensor {sensor!r}: every reading is {why}, so no reading can be scored "
            "(leave it out of --sensors)",
            path=path,
        )
    detector.names.merge(recording.names)
    if store is not None:
        store.add_names(detector.names)
    closed.append(tracker.close_all())
    report.episodes = Episodes.concat(closed, recording.sensors)
    if store is not None:
        store.append_episodes(closed[-1])
    if report.confusion is not None:
        delays.finish()
        report.confusion.delays = tuple(delays.delays)
        report.confusion.missed_faults = delays.missed
        report.confusion.fault_kinds = tuple(delays.kinds)
        e = report.episodes
        report.episode_scores = score_episodes(
            *runs.finish(), e.turbine_ids, e.starts, e.ends, runs.turbine_months
        )
    if store is not None:
        store.flush()
    report.per_turbine = dict(sorted(per_turbine.items()))
    report.seconds = time.perf_counter() - start
    return report


def run_file(
    path: str | Path,
    spec: RecordingSpec,
    config: DetectorConfig,
    store_dir: str | Path | None = None,
    batch_steps: int = DEFAULT_BATCH_STEPS,
    train_rows: int = 0,
    progress: bool = False,
) -> tuple[RunReport, Detector]:
    """Open ``path``, build a fresh detector for its sensors, and run it.

    The store is written to a temporary directory beside ``store_dir`` and
    renamed into place only when the whole file has been scored: a run that
    fails on bad input leaves no partial store behind.  Its manifest records
    the configuration, ``batch_steps`` and ``train_rows``; the detector's final state goes
    beside it as ``model.npz`` (``np.savez(**Detector.state())``).
    """
    target = Path(store_dir) if store_dir is not None else None
    if target is not None and target.exists() and any(target.iterdir()):
        raise StoreError(f"{target}: exists and is not empty (choose a new store directory)")
    with read_recording(path, spec) as rec:
        cfg = config_for(config, rec.sensors, str(path))
        detector = Detector(cfg)
        if target is None:
            report = run_recording(
                rec, detector, None, batch_steps, train_rows, progress, id_col=spec.id_col
            )
            return report, detector
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            store = AnomalyStore(
                partial,
                sensors=rec.sensors,
                config=cfg,
                batch_steps=batch_steps,
                train_rows=train_rows,
            )
            report = run_recording(
                rec, detector, store, batch_steps, train_rows, progress, id_col=spec.id_col
            )
            with atomic_file(partial / MODEL) as f:
                np.savez(f, **detector.state())  # type: ignore[arg-type]
            if target.exists():
                target.rmdir()
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return report, detector


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, path: str, total: int | None) -> Any:
    """A tqdm progress bar on stderr, or a stand-in that draws nothing."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=" readings", unit_scale=True, desc=Path(path).name, leave=False)
