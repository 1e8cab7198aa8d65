"""Per-partition checkpoints: model state, store position, pending anomalies, offset,
and the alarm episodes in progress (the tracker's state) and those not yet stored.

One checkpoint holds every site of its partition (``pipeline/sites.py``): the
default site's parts at the top level (as version 1 wrote them), each other
site's under ``siteN__`` prefixes, named in the metadata's ``sites`` list
(version 2).  Version 1 files load as the default site alone.

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

VERSION = 2
READABLE = (1, 2)
DEFAULT_SITE = "default"  # pipeline.sites.DEFAULT_SITE (no import: this module is the format)
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
class SitePart:
    """One site's share of a partition's checkpoint: its models, store and episodes."""

    detector_state: dict[str, np.ndarray]
    store_position: dict
    pending: Anomalies | None
    sensors: tuple[str, ...] = ()
    episode_state: dict[str, np.ndarray] = field(default_factory=dict)
    pending_episodes: Episodes | None = None


@dataclass
class Checkpoint:
    """Everything one partition needs to resume exactly where it was.

    The top-level model, store and episode fields are the default site's;
    ``sites`` holds the other sites' (name -> :class:`SitePart`).
    """

    partition: int
    offset: int
    detector_state: dict[str, np.ndarray]
    store_position: dict
    pending: Anomalies | None
    last_batch: dict[tuple[str, int], int] = field(default_factory=dict)
    sensors: tuple[str, ...] = ()
    episode_state: dict[str, np.ndarray] = field(default_factory=dict)
    pending_episodes: Episodes | None = None
    sites: dict[str, SitePart] = field(default_factory=dict)

    def site_part(self, site: str = DEFAULT_SITE) -> SitePart | None:
        """A site's part (None: the partition has never held that site)."""
        return self.default_part() if site == DEFAULT_SITE else self.sites.get(site)

    def default_part(self) -> SitePart:
        return SitePart(
            self.detector_state,
            self.store_position,
            self.pending,
            self.sensors,
            self.episode_state,
            self.pending_episodes,
        )

    def all_sites(self) -> dict[str, SitePart]:
        """Every site's part, the default site's first."""
        return {DEFAULT_SITE: self.default_part(), **self.sites}


def _part_arrays(part: SitePart, prefix: str) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        f"{prefix}{_DET}{k}": v for k, v in part.detector_state.items()
    }
    if part.pending is not None and len(part.pending):
        for name in ARRAY_FIELDS:
            arrays[f"{prefix}{_PENDING}{name}"] = getattr(part.pending, name)
    arrays.update({f"{prefix}{_EPISODES}{k}": v for k, v in part.episode_state.items()})
    if part.pending_episodes is not None and len(part.pending_episodes):
        arrays.update(part.pending_episodes.arrays(f"{prefix}{_PENDING_EPISODES}"))
    return arrays


def _part_of(data: dict[str, np.ndarray], prefix: str, sensors: tuple[str, ...], store: dict):
    def strip(kind: str) -> dict[str, np.ndarray]:
        head = f"{prefix}{kind}"
        return {k[len(head) :]: v for k, v in data.items() if k.startswith(head)}

    if not prefix:  # the default site: not the other sites' arrays
        data = {k: v for k, v in data.items() if not k.startswith("site")}
    pend = strip(_PENDING)
    pending_key = f"{prefix}{_PENDING_EPISODES}"
    return SitePart(
        detector_state=strip(_DET),
        store_position=store,
        pending=Anomalies(**pend, sensors=sensors) if pend else None,
        sensors=sensors,
        episode_state=strip(_EPISODES),
        pending_episodes=(
            Episodes.from_arrays(data, pending_key) if f"{pending_key}sensors" in data else None
        ),
    )


class CheckpointDir:
    """Reads and writes the checkpoints of one topic under ``directory``."""

    def __init__(self, directory: str | Path, topic: str) -> None:
        self.directory = Path(directory)
        self.topic = topic
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, partition: int) -> Path:
        return self.directory / f"{self.topic}-{partition:04d}.npz"

    def save(self, cp: Checkpoint) -> Path:
        arrays = _part_arrays(cp.default_part(), "")
        sites = []
        for i, (name, part) in enumerate(sorted(cp.sites.items())):
            arrays.update(_part_arrays(part, f"site{i}__"))
            sites.append(
                {"name": name, "sensors": list(part.sensors), "store_position": part.store_position}
            )
        meta = {
            "version": VERSION,
            "topic": self.topic,
            "partition": cp.partition,
            "offset": cp.offset,
            "store_position": cp.store_position,
            "last_batch": [[p, g, b] for (p, g), b in sorted(cp.last_batch.items())],
            "sensors": list(cp.sensors),
            "sites": sites,
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
        if meta.get("version") not in READABLE:
            raise StateError(path, f"checkpoint version {meta.get('version')!r}")
        default = _part_of(data, "", tuple(meta["sensors"]), meta["store_position"])
        sites = {
            str(s["name"]): _part_of(data, f"site{i}__", tuple(s["sensors"]), s["store_position"])
            for i, s in enumerate(meta.get("sites", []))
        }
        return Checkpoint(
            partition=int(meta["partition"]),
            offset=int(meta["offset"]),
            detector_state=default.detector_state,
            store_position=default.store_position,
            pending=default.pending,
            last_batch={(p, int(g)): int(b) for p, g, b in meta["last_batch"]},
            sensors=default.sensors,
            episode_state=default.episode_state,
            pending_episodes=default.pending_episodes,
            sites=sites,
        )
