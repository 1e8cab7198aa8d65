"""Per-partition checkpoints: model state, store position, pending anomalies, offset,
and the alarm episodes in progress (the tracker's state) and those not yet stored.

One file per (topic, partition) in a directory the whole consumer group
shares, written in one atomic step: a temp file, fsync, rename, fsync of the
directory.  A checkpoint is what a partition's next owner restores before it
scores that partition's first record, so state moves with the partition.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.durable import atomic_file
from pipeline.episodes import Episodes
from pipeline.errors import StoreError
from pipeline.store import ARRAY_FIELDS, CORRUPT_NPZ_ERRORS, Anomalies

VERSION = 1
_DET = "det__"
_PENDING = "pending__"
_EPISODES = "episodes__"  # the EpisodeTracker's state (episodes in progress)
_PENDING_EPISODES = "pending_episodes__"  # closed episodes not yet in a store file


class StateError(StoreError):
    """A partition's saved state (its checkpoint, or its store) that cannot be restored.

    >>> str(StateError("cp/t-0000.npz", "unreadable checkpoint (BadZipFile)"))
    'cp/t-0000.npz: unreadable checkpoint (BadZipFile)'
    """

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {message}")


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its class and its message."""
    return f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}"


@dataclass
class Checkpoint:
    """Everything one partition needs to resume exactly where it was."""

    partition: int
    offset: int
    detector_state: dict[str, np.ndarray]
    store_position: dict
    pending: Anomalies | None
    last_batch: dict[tuple[str, int], int] = field(default_factory=dict)
    sensors: tuple[str, ...] = ()
    episode_state: dict[str, np.ndarray] = field(default_factory=dict)
    pending_episodes: Episodes | None = None


class CheckpointDir:
    """Reads and writes the checkpoints of one topic under ``directory``."""

    def __init__(self, directory: str | Path, topic: str) -> None:
        self.directory = Path(directory)
        self.topic = topic
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, partition: int) -> Path:
        return self.directory / f"{self.topic}-{partition:04d}.npz"

    def save(self, cp: Checkpoint) -> Path:
        arrays: dict[str, np.ndarray] = {f"{_DET}{k}": v for k, v in cp.detector_state.items()}
        if cp.pending is not None and len(cp.pending):
            for name in ARRAY_FIELDS:
                arrays[f"{_PENDING}{name}"] = getattr(cp.pending, name)
        arrays.update({f"{_EPISODES}{k}": v for k, v in cp.episode_state.items()})
        if cp.pending_episodes is not None and len(cp.pending_episodes):
            arrays.update(cp.pending_episodes.arrays(_PENDING_EPISODES))
        meta = {
            "version": VERSION,
            "topic": self.topic,
            "partition": cp.partition,
            "offset": cp.offset,
            "store_position": cp.store_position,
            "last_batch": [[p, g, b] for (p, g), b in sorted(cp.last_batch.items())],
            "sensors": list(cp.sensors),
        }
        arrays["meta"] = np.asarray(json.dumps(meta))
        target = self.path(cp.partition)
        with atomic_file(target) as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        return target

    def load(self, partition: int) -> Checkpoint | None:
        """The partition's checkpoint; None when there is none (never written, or lost).

        A file that exists but does not load (cut, garbled, another version)
        raises :class:`StateError` naming it: it is never taken for "no
        checkpoint".
        """
        path = self.path(partition)
        if not path.exists():
            return None
        try:
            cp = self._parse(path)
        except StateError:
            raise
        except (*CORRUPT_NPZ_ERRORS, TypeError, AttributeError) as exc:
            raise StateError(path, f"unreadable checkpoint ({one_line(exc)})") from None
        if cp.partition != partition:
            raise StateError(path, f"holds the checkpoint of partition {cp.partition}")
        return cp

    def _parse(self, path: Path) -> Checkpoint:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
        meta = json.loads(str(data.pop("meta")))
        if meta.get("version") != VERSION:
            raise StateError(path, f"checkpoint version {meta.get('version')!r}")
        det = {k[len(_DET) :]: v for k, v in data.items() if k.startswith(_DET)}
        pend = {k[len(_PENDING) :]: v for k, v in data.items() if k.startswith(_PENDING)}
        sensors = tuple(meta["sensors"])
        pending = Anomalies(**pend, sensors=sensors) if pend else None
        episode_state = {k[len(_EPISODES) :]: v for k, v in data.items() if k.startswith(_EPISODES)}
        pending_episodes = (
            Episodes.from_arrays(data, _PENDING_EPISODES)
            if f"{_PENDING_EPISODES}sensors" in data
            else None
        )
        return Checkpoint(
            partition=int(meta["partition"]),
            offset=int(meta["offset"]),
            detector_state=det,
            store_position=meta["store_position"],
            pending=pending,
            last_batch={(p, int(g)): int(b) for p, g, b in meta["last_batch"]},
            sensors=sensors,
            episode_state=episode_state,
            pending_episodes=pending_episodes,
        )
