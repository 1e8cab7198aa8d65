"""The anomaly store: anomalies as scipy CSR matrices in chunks on disk.

Layout of a store directory::

    manifest.json                  the chunks, the turbine columns, the positions
    chunk-000001-distance.npz      CSR (rows: time steps with anomalies, cols: turbines,
                                   values: squared distance)
    chunk-000001-contrib.npz       CSR (one row per anomaly, in the distance matrix's
                                   data order; cols: sensors; values: contributions)
    chunk-000001-meta.npz          per row: timestamp; per anomaly: source partition,
                                   offset and row (the event id), threshold, model
    episodes-000001.npz            alarm episodes closed since the previous flush
                                   (``Episodes.save``: turbine, start, end, peak, ...)
    model.npz                      (embedded run) the detector's final state,
                                   ``np.savez(**Detector.state())``

The manifest also records, when the writer gives them, the detector
configuration (``config``, as JSON), the time steps per engine batch
(``batch_steps``) and the leading rows learned without scoring
(``train_rows``): what it takes to re-score the input exactly as the store
was written (``turbine report --input``).

Only time steps that hold an anomaly get a row, so the store grows with the
anomalies, not with the readings.  Anomalies wait in memory until
``chunk_size`` of them are pending, then go to disk as one chunk; the
manifest is replaced atomically (temp file, fsync, rename) after the chunk's
files are durable, so a crash never leaves a manifest naming a missing chunk.

Each anomaly's id is (partition, offset, row) of the reading that raised it.
The store remembers, per source partition, the next offset not yet stored;
anomalies from an offset below that are dropped on append, so a replay after
a crash adds no duplicate.  ``truncate`` rolls the store back to a position
saved in a checkpoint.

Alarm episodes (``pipeline/episodes.py``) closed by the writer are appended
with :meth:`AnomalyStore.append_episodes`, wait beside the pending anomalies
and go to disk at the same flush, one ``episodes-NNNNNN.npz`` file each,
listed in the manifest's ``episodes`` (written whole to a temporary name
and renamed, before the manifest names it); :meth:`AnomalyStore.episodes`
and :func:`read_episodes` read them back.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from pipeline.config import DetectorConfig
from pipeline.detector import BatchResult
from pipeline.distinct import distinct_ids, distinct_sorted
from pipeline.durable import atomic_file, fsync_path
from pipeline.episodes import Episodes
from pipeline.errors import SchemaError, StoreError
from pipeline.names import TurbineNames

STORE_VERSION = 1
MANIFEST = "manifest.json"
MODEL = "model.npz"
# What a damaged .npz raises while it is opened or read: a cut zip directory
# (BadZipFile), a CRC mismatch (BadZipFile), a cut member (EOFError), garbage
# in a header or a pickled member (ValueError), a garbled deflate stream.
CORRUPT_NPZ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error)
_MANIFEST_KEYS = {"version": int, "sensors": list, "turbines": list, "chunks": list}


def _at(values: NDArray[np.int64] | int, index: NDArray[np.intp]) -> NDArray[np.int64]:
    """``values[index]``, where an int stands for the same value everywhere."""
    if isinstance(values, np.ndarray) and values.ndim:
        return np.asarray(values, dtype=np.int64)[index]
    return _filled(index.size, int(values), np.int64)


def _filled(k: int, value: float, dtype: type = np.float64) -> np.ndarray:
    """``np.full(k, value, dtype)`` (its Python overhead is most of its cost at a few anomalies)."""
    out: np.ndarray = np.empty(k, dtype=dtype)
    out.fill(value)
    return out


@dataclass(frozen=True)
class Anomalies:
    """A table of anomalies, one row each.

    Attributes
    ----------
    timestamps : ndarray of shape (k,)
    turbine_ids : ndarray of shape (k,)
    distances : ndarray of shape (k,)
        Squared distances (or MEWMA statistics).
    thresholds : ndarray of shape (k,)
    contributions : ndarray of shape (k, D)
    partitions, offsets, rows : ndarray of shape (k,)
        The event id: where the reading came from.
    scored_by : ndarray of shape (k,)
        1 the turbine's model, 2 the fleet model.
    sensors : tuple of str
    """

    timestamps: NDArray[np.float64]
    turbine_ids: NDArray[np.int64]
    distances: NDArray[np.float64]
    thresholds: NDArray[np.float64]
    contributions: NDArray[np.float64]
    partitions: NDArray[np.int64]
    offsets: NDArray[np.int64]
    rows: NDArray[np.int64]
    scored_by: NDArray[np.int8]
    sensors: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.timestamps.size)

    def event_ids(self) -> list[str]:
        """Deterministic ids ``partition:offset:row`` (the topic is added by transports)."""
        return [
            f"{p}:{o}:{r}"
            for p, o, r in zip(
                self.partitions.tolist(), self.offsets.tolist(), self.rows.tolist(), strict=True
            )
        ]

    def select(self, mask: NDArray[np.bool_] | NDArray[np.intp]) -> Anomalies:
        return Anomalies(
            self.timestamps[mask],
            self.turbine_ids[mask],
            self.distances[mask],
            self.thresholds[mask],
            self.contributions[mask],
            self.partitions[mask],
            self.offsets[mask],
            self.rows[mask],
            self.scored_by[mask],
            self.sensors,
        )

    @staticmethod
    def concat(parts: list[Anomalies], sensors: tuple[str, ...]) -> Anomalies:
        if not parts:
            d = len(sensors)
            z = np.zeros(0)
            zi = np.zeros(0, dtype=np.int64)
            return Anomalies(z, zi, z, z, np.zeros((0, d)), zi, zi, zi, zi.astype(np.int8), sensors)
        arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in ARRAY_FIELDS}
        return Anomalies(**arrays, sensors=sensors)


# The per-anomaly arrays of a chunk's meta file.
_PER_ANOMALY = ("thresholds", "partitions", "offsets", "rows", "scored_by")

# The per-anomaly arrays of an Anomalies table (checkpoints save exactly these).
ARRAY_FIELDS = (
    "timestamps",
    "turbine_ids",
    "distances",
    "thresholds",
    "contributions",
    "partitions",
    "offsets",
    "rows",
    "scored_by",
)


@dataclass(frozen=True)
class ChunkMatrices:
    """One stored chunk as its matrices, nothing densified.

    Anomaly ``i`` of the chunk is non-zero ``i`` of ``distance`` (in CSR
    data order) and row ``i`` of ``contributions``.

    Attributes
    ----------
    distance : csr_array of shape (steps, turbines)
        Squared distances; rows are the time steps holding an anomaly,
        columns the store's turbines.
    contributions : csr_array of shape (k, D)
        Each anomaly's per-sensor contributions.
    step_timestamps : ndarray of shape (steps,)
    turbines : ndarray of shape (turbines,)
        The turbine id of each column.
    thresholds, partitions, offsets, rows, scored_by : ndarray of shape (k,)
    sensors : tuple of str
    """

    distance: sparse.csr_array
    contributions: sparse.csr_array
    step_timestamps: NDArray[np.float64]
    turbines: NDArray[np.int64]
    thresholds: NDArray[np.float64]
    partitions: NDArray[np.int64]
    offsets: NDArray[np.int64]
    rows: NDArray[np.int64]
    scored_by: NDArray[np.int8]
    sensors: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.distance.nnz)

    @property
    def timestamps(self) -> NDArray[np.float64]:
        """Each anomaly's timestamp, shape (k,)."""
        return np.repeat(self.step_timestamps, np.diff(self.distance.indptr))

    @property
    def turbine_ids(self) -> NDArray[np.int64]:
        """Each anomaly's turbine id, shape (k,)."""
        return self.turbines[self.distance.indices]

    @property
    def distances(self) -> NDArray[np.float64]:
        """Each anomaly's squared distance, shape (k,)."""
        return np.asarray(self.distance.data, dtype=np.float64)

    def take(self, index: NDArray[np.intp] | NDArray[np.bool_] | None = None) -> Anomalies:
        """The anomalies at ``index`` (all when None) as a table; densifies only those rows."""
        every = index is None
        idx = np.arange(len(self)) if index is None else np.asarray(index)
        if idx.dtype == np.bool_:
            idx = np.flatnonzero(idx)
        contrib = self.contributions if every else self.contributions[idx]
        return Anomalies(
            self.timestamps[idx],
            self.turbine_ids[idx],
            self.distances[idx],
            self.thresholds[idx],
            np.asarray(contrib.toarray(), dtype=np.float64).reshape(idx.size, len(self.sensors)),
            self.partitions[idx],
            self.offsets[idx],
            self.rows[idx],
            self.scored_by[idx],
            self.sensors,
        )


class AnomalyStore:
    """Append anomalies, flush them as CSR chunks, and read them back.

    Parameters
    ----------
    directory : str or Path
        Created if missing; an existing store is opened and appended to.
    sensors : sequence of str, optional
        Sensor names; required for a new store, checked against an old one.
    chunk_size : int
        Anomalies held in memory before a chunk is written.
    config : DetectorConfig, optional
        The configuration of the detector writing the store, recorded in the
        manifest (``config``) so the input can be re-scored the same way.
    batch_steps : int, optional
        Time steps per engine batch, recorded in the manifest when given.
    train_rows : int, optional
        Leading rows learned, not scored, recorded in the manifest when given.

    Examples
    --------
    >>> import tempfile
    >>> from pipeline import Detector, DetectorConfig
    >>> rng = np.random.default_rng(0)
    >>> det = Detector(DetectorConfig(min_samples=50, key_groups=1))
    >>> _ = det.learn(np.zeros(200), np.zeros(200, dtype=int), rng.normal(size=(200, 2)))
    >>> r = det.process([1.0, 2.0], [0, 0], [[0.0, 0.0], [9.0, -9.0]])
    >>> store = AnomalyStore(tempfile.mkdtemp(), sensors=("a", "b"))
    >>> store.append(r)
    1
    >>> store.flush(); len(store.query())
    1
    """

    def __init__(
        self,
        directory: str | Path,
        sensors: tuple[str, ...] | list[str] | None = None,
        chunk_size: int = 65_536,
        config: DetectorConfig | None = None,
        batch_steps: int | None = None,
        train_rows: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.chunk_size = chunk_size
        path = self.directory / MANIFEST
        if path.exists():
            self._manifest = self._load_manifest(path)
            stored = tuple(self._manifest["sensors"])
            if sensors is not None and tuple(sensors) != stored and stored:
                raise StoreError(
                    f"{self.directory}: the store holds sensors {list(stored)}, not {list(sensors)}"
                )
            if not stored and sensors is not None:
                self._manifest["sensors"] = list(sensors)
            self._record_run(config, batch_steps, train_rows)  # persisted by the next flush
        else:
            if self.directory.exists() and any(self.directory.iterdir()):
                raise StoreError(f"{self.directory}: exists, is not empty, and has no {MANIFEST}")
            self.directory.mkdir(parents=True, exist_ok=True)
            self._manifest = {
                "version": STORE_VERSION,
                "sensors": list(sensors) if sensors is not None else [],
                "turbines": [],
                "chunks": [],
                "positions": {},
                "readings": 0,
            }
            self._record_run(config, batch_steps, train_rows)
            self._write_manifest()
        self._columns = {int(t): i for i, t in enumerate(self._manifest["turbines"])}
        self._pending: list[Anomalies] = []
        self._pending_count = 0
        self._positions = {int(k): int(v) for k, v in self._manifest["positions"].items()}
        self._readings = int(self._manifest.get("readings", 0))
        # Readings per operating state (learn_when: stopped, curtailed...), not anomalies.
        self._states = {str(k): int(v) for k, v in self._manifest.get("states", {}).items()}
        self._pending_episodes: list[Episodes] = []
        self._replayed: Episodes | None = None  # see skip_stored_episodes

    # ------------------------------------------------------------------ manifest
    def _load_manifest(self, path: Path) -> dict:
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, bad UTF-8
            raise StoreError(f"{path}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or any(
            not isinstance(manifest.get(k), t) for k, t in _MANIFEST_KEYS.items()
        ):
            raise StoreError(f"{path}: unreadable manifest (not a store manifest)")
        if not isinstance(manifest.get("positions", {}), dict):
            raise StoreError(f"{path}: unreadable manifest (positions is not a mapping)")
        if manifest.get("version") != STORE_VERSION:
            raise StoreError(
                f"{path}: store version {manifest.get('version')!r}, "
                f"this code reads {STORE_VERSION}"
            )
        return manifest

    def _record_run(
        self, config: DetectorConfig | None, batch_steps: int | None, train_rows: int | None
    ) -> None:
        if config is not None:
            self._manifest["config"] = json.loads(config.model_dump_json())
        if batch_steps is not None:
            self._manifest["batch_steps"] = int(batch_steps)
        if train_rows is not None:
            self._manifest["train_rows"] = int(train_rows)

    def _write_manifest(self) -> None:
        data = json.dumps(self._manifest, indent=1, sort_keys=True).encode()
        with atomic_file(self.directory / MANIFEST) as f:
            f.write(data)

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(self._manifest["sensors"])

    @property
    def config(self) -> DetectorConfig | None:
        """The detector configuration recorded in the manifest, if any."""
        recorded = self._manifest.get("config")
        if recorded is None:
            return None
        try:
            return DetectorConfig.model_validate_json(json.dumps(recorded))
        except ValueError as exc:
            raise StoreError(f"{self.directory}: recorded configuration invalid ({exc})") from None

    @property
    def batch_steps(self) -> int | None:
        """Time steps per engine batch recorded in the manifest, if any."""
        steps = self._manifest.get("batch_steps")
        return None if steps is None else int(steps)

    @property
    def train_rows(self) -> int:
        """Leading rows of the input learned without scoring (0 unless recorded)."""
        return int(self._manifest.get("train_rows", 0))

    @property
    def names(self) -> TurbineNames:
        """The names behind hashed turbine ids (manifest ``turbine_names``)."""
        try:
            return TurbineNames.from_json(self._manifest.get("turbine_names"))
        except SchemaError as exc:
            raise StoreError(f"{self.directory}: {exc}") from None

    def add_names(self, names: TurbineNames) -> None:
        """Keep ``names`` in the manifest (written by the next flush)."""
        if len(names):
            self._manifest["turbine_names"] = self.names.merge(names).to_json()

    @property
    def turbines(self) -> NDArray[np.int64]:
        """Turbine id of each column of the distance matrices, shape (turbines,)."""
        return np.asarray(self._manifest["turbines"], dtype=np.int64)

    @property
    def positions(self) -> dict[int, int]:
        """Per source partition, the next offset not yet stored."""
        return dict(self._positions)

    # ------------------------------------------------------------------ writing
    def append(
        self,
        result: BatchResult,
        partitions: NDArray[np.int64] | int = -1,
        offsets: NDArray[np.int64] | int = 0,
        rows: NDArray[np.int64] | None = None,
    ) -> int:
        """Queue a batch's anomalies; returns how many were new.

        Parameters
        ----------
        result : BatchResult
        partitions, offsets : int or ndarray of shape (n,)
            Source of each reading of the batch (an int applies to all).
        rows : ndarray of shape (n,), optional
            Row of each reading within its source record (default: its position).
        """
        if not self._manifest["sensors"] and result.sensors:
            self._manifest["sensors"] = list(result.sensors)
        n = result.n_readings
        if self._positions and n:
            # Readings below a partition's floor were counted when first stored (a
            # partition rebuilding its models replays them): count each once.
            every = np.arange(n)
            old = np.zeros(n, dtype=bool)
            part_all, off_all = _at(partitions, every), _at(offsets, every)
            for p, floor in self._positions.items():  # a loop over source partitions
                old |= (part_all == p) & (off_all < floor)
            n -= int(np.count_nonzero(old))
        self._readings += n
        for name, count in result.state_counts().items():
            self._states[name] = self._states.get(name, 0) + count
        hit = result.anomaly_index
        if hit.size == 0:
            return 0
        part = _at(partitions, hit)
        off = _at(offsets, hit)
        row = hit.astype(np.int64) if rows is None else np.asarray(rows, np.int64)[hit]
        fresh: NDArray[np.bool_] | None = None  # None: every anomaly is new
        if self._positions:
            keep = np.ones(hit.size, dtype=bool)
            for p, floor in self._positions.items():  # a loop over source partitions
                keep &= ~((part == p) & (off < floor))
            if not keep.any():
                return 0
            if not keep.all():
                fresh = keep
        d = result.contributions.shape[1]
        if not self._manifest["sensors"]:
            self._manifest["sensors"] = [f"sensor_{j}" for j in range(d)]
        elif len(self._manifest["sensors"]) != d:
            raise StoreError(
                f"anomalies carry {d} contributions, the store has {len(self.sensors)} sensors"
            )
        ts, tid, dist = result.timestamps[hit], result.turbine_ids[hit], result.distances[hit]
        by, contrib = result.scored_by[hit], result.contributions
        if fresh is not None:
            ts, tid, dist, by, contrib = (
                ts[fresh],
                tid[fresh],
                dist[fresh],
                by[fresh],
                contrib[fresh],
            )
            part, off, row = part[fresh], off[fresh], row[fresh]
        k = int(ts.size)
        self._pending.append(
            Anomalies(
                ts,
                tid,
                dist,
                _filled(k, result.threshold),
                contrib,
                part,
                off,
                row,
                by,
                self.sensors,
            )
        )
        self._pending_count += k
        if self._pending_count >= self.chunk_size:
            self.flush()
        return k

    def advance(self, positions: Mapping[int, int]) -> None:
        """Record that every offset below ``positions[partition]`` has been appended."""
        for p, o in positions.items():
            self._positions[int(p)] = max(self._positions.get(int(p), 0), int(o))

    def flush(self) -> None:
        """Write pending anomalies as a chunk, pending episodes, and the manifest, durably."""
        if self._pending:
            table = Anomalies.concat(self._pending, self.sensors)
            self._write_chunk(table)
            self._pending = []
            self._pending_count = 0
        if self._pending_episodes:
            self._write_episodes(Episodes.concat(self._pending_episodes, self.sensors))
            self._pending_episodes = []
        self._manifest["positions"] = {str(p): o for p, o in sorted(self._positions.items())}
        self._manifest["readings"] = self._readings
        self._manifest["states"] = dict(sorted(self._states.items()))
        self._write_manifest()

    def _write_chunk(self, table: Anomalies) -> None:
        d = table.contributions.shape[1]
        if len(self._manifest["sensors"]) != d:
            if self._manifest["sensors"]:
                raise StoreError(f"a chunk of {d} sensors for a store of {len(self.sensors)}")
            self._manifest["sensors"] = list(table.sensors) or [f"sensor_{j}" for j in range(d)]
        present, inverse = distinct_ids(table.turbine_ids)
        turbines = present.tolist()
        for t in turbines:  # a loop over the chunk's distinct turbines
            if t not in self._columns:
                self._columns[t] = len(self._manifest["turbines"])
                self._manifest["turbines"].append(t)
        cols = np.array([self._columns[t] for t in turbines], dtype=np.int64)[inverse]
        steps, row_of = distinct_sorted(table.timestamps)
        n_cols = len(self._manifest["turbines"])
        key = row_of.astype(np.int64) * n_cols + cols
        if key.size > 1 and not bool(np.all(key[1:] >= key[:-1])):
            # Not yet in (time step, column) order (streams in time and turbine
            # order, the usual case, already are: the stable sort is the identity).
            order = np.lexsort((cols, row_of))
            table = table.select(order)
            row_of, cols = row_of[order], cols[order]
        t = table
        indptr = np.zeros(steps.size + 1, dtype=np.int64)
        np.cumsum(np.bincount(row_of, minlength=steps.size), out=indptr[1:])
        shape = (steps.size, n_cols)
        dist = sparse.csr_array((t.distances, cols, indptr), shape=shape)
        contrib = _dense_to_csr(t.contributions)
        seq = len(self._manifest["chunks"]) + 1
        stem = f"chunk-{seq:06d}"
        files = {
            "distance": self.directory / f"{stem}-distance.npz",
            "contrib": self.directory / f"{stem}-contrib.npz",
            "meta": self.directory / f"{stem}-meta.npz",
        }
        sparse.save_npz(files["distance"], dist, compressed=False)
        sparse.save_npz(files["contrib"], contrib, compressed=False)
        np.savez(
            files["meta"],
            step_timestamps=steps,
            thresholds=t.thresholds,
            partitions=t.partitions,
            offsets=t.offsets,
            rows=t.rows,
            scored_by=t.scored_by,
        )
        for f in files.values():
            fsync_path(f)
        self._manifest["chunks"].append(
            {
                "name": stem,
                "anomalies": len(t),
                "steps": int(steps.size),
                "t_min": float(steps[0]),
                "t_max": float(steps[-1]),
                "turbines": turbines,
                "bytes": int(sum(f.stat().st_size for f in files.values())),
            }
        )

    # ------------------------------------------------------------------ episodes
    def append_episodes(self, episodes: Episodes) -> int:
        """Queue closed alarm episodes (written at the next flush); returns how many."""
        if len(episodes) == 0:
            return 0
        if not self._manifest["sensors"]:
            self._manifest["sensors"] = list(episodes.sensors)
        if tuple(episodes.sensors) != self.sensors:
            raise StoreError(
                f"episodes of sensors {list(episodes.sensors)} for a store of {list(self.sensors)}"
            )
        if self._replayed is not None and len(self._replayed):
            episodes = episodes.select(~_overlapping(episodes, self._replayed))
            if len(episodes) == 0:
                return 0
        self._pending_episodes.append(episodes)
        return len(episodes)

    def skip_stored_episodes(self) -> None:
        """From now on, drop appended episodes that overlap a stored one of their turbine.

        For a partition that rebuilds its models by replaying records already
        stored: the episodes the replay closes again are in the store already
        (anomalies are dropped by offset; episodes carry times only).
        """
        self._replayed = self.episodes()

    def _write_episodes(self, table: Episodes) -> None:
        entries = self._manifest.setdefault("episodes", [])
        stem = f"episodes-{len(entries) + 1:06d}"
        with atomic_file(self.directory / f"{stem}.npz") as f:
            table.save(f)
        entries.append(
            {
                "name": stem,
                "episodes": len(table),
                "t_min": float(table.starts.min()),
                "t_max": float(table.ends.max()),
                "turbines": sorted(set(table.turbine_ids.tolist())),
            }
        )

    def pending_episodes(self) -> Episodes:
        """Episodes appended but not yet flushed (a checkpoint keeps them)."""
        return Episodes.concat(self._pending_episodes, self.sensors)

    def restore_pending_episodes(self, table: Episodes | None) -> None:
        """Put back the pending episodes saved in a checkpoint (after :meth:`truncate`)."""
        self._pending_episodes = [table] if table is not None and len(table) else []

    def iter_episodes(
        self,
        turbine: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Episodes]:
        """Flushed episodes file by file; ``since``/``until`` keep those overlapping the range."""
        for entry in self._manifest.get("episodes", []):
            if not _may_match(entry, turbine, since, until):
                continue
            table = _episodes_matching(
                Episodes.load(self.directory / f"{entry['name']}.npz"), turbine, since, until
            )
            if len(table):
                yield table

    def episodes(
        self,
        turbine: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Episodes:
        """Flushed episodes matching the filters, as one table by (start, turbine)."""
        parts = list(self.iter_episodes(turbine, since, until))
        return Episodes.concat(parts, self.sensors).chronological()

    def pending(self) -> Anomalies:
        """Anomalies appended but not yet flushed (a checkpoint keeps them)."""
        return Anomalies.concat(self._pending, self.sensors)

    def restore_pending(self, table: Anomalies | None) -> None:
        """Put back the pending anomalies saved in a checkpoint (after :meth:`truncate`)."""
        self._pending = [table] if table is not None and len(table) else []
        self._pending_count = len(table) if table is not None else 0
        if self._pending and not self._manifest["sensors"]:
            # A run killed before its first chunk never wrote the sensors down.
            self._manifest["sensors"] = list(table.sensors)  # type: ignore[union-attr]

    def position(self) -> dict[str, object]:
        """What a checkpoint needs to roll the store back: flushed chunks and offsets."""
        return {
            "chunks": len(self._manifest["chunks"]),
            "episode_files": len(self._manifest.get("episodes", [])),
            "positions": {str(p): o for p, o in self._positions.items()},
            "readings": self._readings,
            "states": dict(self._states),
            "turbines": len(self._manifest["turbines"]),
        }

    def truncate(self, position: Mapping[str, object]) -> int:
        """Roll back to a :meth:`position`: drop later chunks and pending anomalies."""
        keep = int(position["chunks"])  # type: ignore[call-overload]
        dropped = self._manifest["chunks"][keep:]
        self._manifest["chunks"] = self._manifest["chunks"][:keep]
        self._manifest["turbines"] = self._manifest["turbines"][: int(position["turbines"])]  # type: ignore[call-overload]
        self._columns = {int(t): i for i, t in enumerate(self._manifest["turbines"])}
        self._positions = {int(k): int(v) for k, v in dict(position["positions"]).items()}  # type: ignore[call-overload]
        self._readings = int(position["readings"])  # type: ignore[call-overload]
        states = position.get("states", {})
        self._states = {str(k): int(v) for k, v in dict(states).items()}  # type: ignore[call-overload]
        self._pending, self._pending_count = [], 0
        episode_files = self._manifest.get("episodes", [])
        keep_episodes = int(position.get("episode_files", 0))  # type: ignore[call-overload]
        self._manifest["episodes"] = episode_files[:keep_episodes]
        self._pending_episodes = []
        self.flush()
        for c in dropped:
            for part in ("distance", "contrib", "meta"):
                (self.directory / f"{c['name']}-{part}.npz").unlink(missing_ok=True)
        for e in episode_files[keep_episodes:]:
            (self.directory / f"{e['name']}.npz").unlink(missing_ok=True)
        return sum(int(c["anomalies"]) for c in dropped)

    def close(self) -> None:
        self.flush()

    # ------------------------------------------------------------------ reading
    @property
    def chunks(self) -> list[dict]:
        return list(self._manifest["chunks"])

    @property
    def readings(self) -> int:
        """Readings appended (scored or not), flushed or pending."""
        return self._readings

    @property
    def states(self) -> dict[str, int]:
        """Readings per operating state (``learn_when``): not scored, not anomalies."""
        return dict(self._states)

    def stats(self) -> dict[str, int]:
        """Anomalies (non-zeros) and bytes on disk of the flushed chunks."""
        return {
            "anomalies": sum(int(c["anomalies"]) for c in self._manifest["chunks"]),
            "total": sum(int(c["anomalies"]) for c in self._manifest["chunks"])
            + self._pending_count,
            "pending": self._pending_count,
            "bytes": sum(int(c["bytes"]) for c in self._manifest["chunks"]),
            "chunks": len(self._manifest["chunks"]),
        }

    def load_chunk(self, chunk: Mapping[str, object]) -> ChunkMatrices:
        """One chunk's matrices as stored (files read with ``allow_pickle=False``).

        A chunk whose files are missing, cut, garbled or inconsistent with each
        other or with the manifest raises :class:`StoreError` naming it.
        """
        stem = str(chunk["name"])
        part = "distance"
        try:
            dist = sparse.csr_array(sparse.load_npz(self.directory / f"{stem}-distance.npz"))
            part = "contrib"
            contrib = sparse.csr_array(sparse.load_npz(self.directory / f"{stem}-contrib.npz"))
            part = "meta"
            with np.load(self.directory / f"{stem}-meta.npz", allow_pickle=False) as meta:
                m = {k: meta[k] for k in meta.files}
            k = int(dist.nnz)
            if (
                dist.shape != (m["step_timestamps"].size, dist.shape[1])
                or dist.shape[1] > len(self._manifest["turbines"])
                or contrib.shape[0] != k
                or any(m[f].shape != (k,) for f in _PER_ANOMALY)
                or k != int(chunk.get("anomalies", k))  # type: ignore[call-overload]
            ):
                raise ValueError("its matrices disagree with each other or with the manifest")
            return ChunkMatrices(
                dist,
                contrib,
                m["step_timestamps"],
                self.turbines,
                m["thresholds"],
                m["partitions"],
                m["offsets"],
                m["rows"],
                m["scored_by"],
                self.sensors,
            )
        except CORRUPT_NPZ_ERRORS as exc:
            detail = " ".join(str(exc).split())[:200]  # one line, whatever the library said
            raise StoreError(
                f"{self.directory / stem}-{part}.npz: chunk {stem} unreadable "
                f"({exc.__class__.__name__}: {detail})"
            ) from None

    def read_chunk(self, chunk: Mapping[str, object]) -> Anomalies:
        """All anomalies of one chunk as a table."""
        return self.load_chunk(chunk).take()

    def iter_matrices(
        self,
        turbine: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[ChunkMatrices]:
        """The flushed chunks' matrices, one chunk in memory at a time.

        The filters only skip the chunks the manifest rules out; the chunks
        read are whole (mask their rows to filter further).
        """
        for c in self._manifest["chunks"]:
            if _may_match(c, turbine, since, until):
                yield self.load_chunk(c)

    def iter_chunks(
        self,
        turbine: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Anomalies]:
        """Anomalies chunk by chunk, skipping chunks the manifest rules out, then filtered."""
        for c in self._manifest["chunks"]:
            if not _may_match(c, turbine, since, until):
                continue
            a = self.read_chunk(c)
            keep = np.ones(len(a), dtype=bool)
            if turbine is not None:
                keep &= a.turbine_ids == turbine
            if since is not None:
                keep &= a.timestamps >= since
            if until is not None:
                keep &= a.timestamps <= until
            if keep.any():
                yield a if keep.all() else a.select(keep)

    def query(
        self,
        turbine: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> Anomalies:
        """Flushed anomalies matching the filters, as one table."""
        return Anomalies.concat(list(self.iter_chunks(turbine, since, until)), self.sensors)


def _dense_to_csr(dense: NDArray[np.float64]) -> sparse.csr_array:
    """``sparse.csr_array(dense)`` of a (k, D) array, built directly (its non-zeros, in order).

    Parameters
    ----------
    dense : ndarray of shape (k, D)
    """
    k, d = dense.shape
    flat = dense.reshape(-1)  # row-major: the order of the non-zeros in CSR
    nonzero = flat != 0
    # The index type scipy picks for such a matrix (int32 unless it is huge).
    index = np.int32 if dense.size < 2**31 else np.int64
    indptr = np.zeros(k + 1, dtype=index)
    np.cumsum(np.count_nonzero(nonzero.reshape(k, d), axis=1), out=indptr[1:])
    if bool(nonzero.all()):  # the usual case: no contribution is exactly zero
        indices = np.tile(np.arange(d, dtype=index), k)
        data = flat
    else:
        at = np.flatnonzero(nonzero)
        indices = (at % d).astype(index)
        data = flat[at]
    return sparse.csr_array((data, indices, indptr), shape=dense.shape)


def _overlapping(episodes: Episodes, stored: Episodes) -> NDArray[np.bool_]:
    """Whether each episode overlaps, in time, a stored one of its turbine; shape (k,)."""
    hit = np.zeros(len(episodes), dtype=bool)
    for i in range(len(episodes)):  # a loop over the few episodes closed by one batch
        same = stored.turbine_ids == episodes.turbine_ids[i]
        hit[i] = bool(
            np.any(same & (stored.starts <= episodes.ends[i]) & (stored.ends >= episodes.starts[i]))
        )
    return hit


def _may_match(
    chunk: Mapping[str, Any], turbine: int | None, since: float | None, until: float | None
) -> bool:
    """Whether a chunk's manifest entry leaves room for anomalies matching the filters."""
    if since is not None and float(chunk["t_max"]) < since:
        return False
    if until is not None and float(chunk["t_min"]) > until:
        return False
    return turbine is None or turbine in chunk["turbines"]


def store_paths(path: str | Path) -> list[Path]:
    """The stores under ``path``: itself, or its ``partition-*`` stores (the Kafka layout)."""
    root = Path(path)
    if (root / MANIFEST).exists():
        return [root]
    parts = sorted(p for p in root.glob("partition-*") if (p / MANIFEST).exists())
    if not parts:
        raise StoreError(f"{root}: not an anomaly store (no {MANIFEST}, no partition-* stores)")
    return parts


def read_anomalies(
    path: str | Path,
    turbine: int | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Anomalies:
    """All flushed anomalies under ``path`` (one store or a partitioned set), filtered."""
    stores = [AnomalyStore(p) for p in store_paths(path)]
    sensors = next((s.sensors for s in stores if s.sensors), ())
    return Anomalies.concat(
        [a for s in stores for a in s.iter_chunks(turbine, since, until)], sensors
    )


def read_episodes(
    path: str | Path,
    turbine: int | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Episodes:
    """All flushed episodes under ``path`` (one store or a partitioned set), by start."""
    stores = [AnomalyStore(p) for p in store_paths(path)]
    sensors = next((s.sensors for s in stores if s.sensors), ())
    parts = [e for s in stores for e in s.iter_episodes(turbine, since, until)]
    return Episodes.concat(parts, sensors).chronological()


def _episodes_matching(
    table: Episodes, turbine: int | None, since: float | None, until: float | None
) -> Episodes:
    """The episodes of ``turbine`` (all when None) overlapping [since, until]."""
    keep = np.ones(len(table), dtype=bool)
    if turbine is not None:
        keep &= table.turbine_ids == turbine
    if since is not None:
        keep &= table.ends >= since
    if until is not None:
        keep &= table.starts <= until
    return table if keep.all() else table.select(keep)


def episodes_in_progress(
    path: str | Path,
    turbine: int | None = None,
    since: float | None = None,
    until: float | None = None,
    checkpoint_dir: str | Path | None = None,
    site: str = "default",
) -> Episodes:
    """The episodes still open in the Kafka detectors' checkpoints, by start.

    ``site``: that site's part of each checkpoint (``pipeline/sites.py``).

    The service never sees the end of its stream, so an episode in progress
    is in its partition's checkpoint (``CHECKPOINT_DIR/<topic>-<partition>.npz``,
    default ``PATH/checkpoints``), not in a store file.  An embedded run's
    store has none (the run closes them at the end of its file).
    """
    root = Path(path)
    cp_dir = Path(checkpoint_dir) if checkpoint_dir is not None else root / "checkpoints"
    files = sorted(cp_dir.glob("*.npz")) if cp_dir.is_dir() else []
    if not files:
        return Episodes.empty(())
    from consumers.checkpoint import CheckpointDir  # the service's format; no Kafka import
    from pipeline.episodes import EpisodeTracker

    parts = []
    for f in files:
        topic, _, part = f.stem.rpartition("-")
        if not topic or not part.isdigit():
            continue
        try:
            cp = CheckpointDir(cp_dir, topic).load(int(part))
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{f}: unreadable checkpoint ({exc})") from None
        share = cp.site_part(site) if cp is not None else None
        if share is not None and share.episode_state:
            open_ = EpisodeTracker.from_state(share.episode_state).in_progress
            parts.append(_episodes_matching(open_, turbine, since, until))
    sensors = next((p.sensors for p in parts), ())
    return Episodes.concat(parts, sensors).chronological()


def parse_event_id(text: str) -> tuple[int, int, int]:
    """(partition, offset, row) of an event id.

    Accepts ``partition:offset:row`` (as ``turbine anomalies`` prints it) and
    the Kafka event id ``topic:partition:offset:row`` (the topic is not
    stored, so it is not checked).

    >>> parse_event_id("-1:42:3"), parse_event_id("turbine.readings:2:1050:0")
    ((-1, 42, 3), (2, 1050, 0))
    """
    parts = text.strip().split(":")
    try:
        if len(parts) not in (3, 4):
            raise ValueError
        p, o, r = (int(x) for x in parts[-3:])
    except ValueError:
        raise StoreError(
            f"not an event id: {text!r} (partition:offset:row or topic:partition:offset:row)"
        ) from None
    return p, o, r


def find_event(path: str | Path, event: str) -> Anomalies:
    """The stored anomaly with event id ``event`` under ``path``, as a one-row table."""
    partition, offset, row = parse_event_id(event)
    for p in store_paths(path):
        store = AnomalyStore(p)
        floor = store.positions.get(partition)
        if floor is not None and offset >= floor:
            continue  # this store has not reached that offset of that partition
        for chunk in store.iter_matrices():
            hit = np.flatnonzero(
                (chunk.partitions == partition) & (chunk.offsets == offset) & (chunk.rows == row)
            )
            if hit.size:
                return chunk.take(hit[:1])
    raise StoreError(f"{path}: no stored anomaly with event id {event!r}")
