"""A partition's state: one model family, store and episode tracker per site.

Everything here is explicit and serialisable: :func:`checkpoint_of` turns a
:class:`PartitionState` into a :class:`Checkpoint` and :func:`apply_checkpoint`
puts one back, every site's part of it (``consumers/checkpoint.py``).  No
Kafka here: the consumer calls (seek, pause) are the caller's
(``consumers/assignment.py``).

Stores: the default site's is ``STORE/partition-NNNN`` (the layout before
sites), any other site's ``STORE/sites/NAME/partition-NNNN``, so each store
holds one sensor schema and ``turbine anomalies STORE/sites/NAME`` reads one
site.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from consumers.checkpoint import Checkpoint, SitePart, StateError, one_line
from pipeline.config import DetectorConfig
from pipeline.detector import Detector
from pipeline.episodes import EpisodeTracker
from pipeline.errors import StoreError
from pipeline.runner import config_for
from pipeline.sites import DEFAULT_SITE, SiteConfigs
from pipeline.store import MANIFEST, AnomalyStore

log = logging.getLogger(__name__)

EMPTY_POSITION = {"chunks": 0, "positions": {}, "readings": 0, "turbines": 0}


@dataclass
class SiteState:
    """One site's models, store and episodes in one partition."""

    site: str
    store: AnomalyStore
    config: DetectorConfig
    detector: Detector | None = None
    sensors: tuple[str, ...] = ()
    episodes: EpisodeTracker | None = None

    def expected_sensors(self) -> tuple[str, ...]:
        """The site's schema: fixed by its first batch, else its configuration's (or none)."""
        return self.sensors or tuple(self.config.sensors or ())

    def part(self) -> SitePart:
        return SitePart(
            detector_state=self.detector.state() if self.detector is not None else {},
            store_position=self.store.position(),
            pending=self.store.pending(),
            sensors=self.sensors,
            episode_state=self.episodes.state() if self.episodes is not None else {},
            pending_episodes=self.store.pending_episodes(),
        )


@dataclass
class PartitionState:
    """A partition's sites (the default site always), offset and batch numbers seen."""

    partition: int
    sites: dict[str, SiteState]
    next_offset: int | None = None
    last_batch: dict[tuple[str, int], int] = field(default_factory=dict)
    last_flush: float = field(default_factory=time.monotonic)

    @property
    def default(self) -> SiteState:
        return self.sites[DEFAULT_SITE]

    @property
    def stores(self) -> list[AnomalyStore]:
        return [s.store for s in self.sites.values()]

    def advance(self) -> None:
        """Every site's store has seen the partition up to its next offset."""
        for store in self.stores:
            store.advance({self.partition: self.next_offset or 0})

    def flush(self) -> None:
        for store in self.stores:
            store.flush()
        self.last_flush = time.monotonic()


def store_dir(root: Path, partition: int, site: str = DEFAULT_SITE) -> Path:
    base = root if site == DEFAULT_SITE else root / "sites" / site
    return base / f"partition-{partition:04d}"


def site_stores_on_disk(root: Path, partition: int) -> dict[str, Path]:
    """The other sites' store directories of a partition found under ``root/sites``."""
    sites = root / "sites"
    if not sites.is_dir():
        return {}
    name = f"partition-{partition:04d}"
    return {d.parent.name: d for d in sorted(sites.glob(f"*/{name}")) if d.is_dir()}


def open_store(directory: Path, config: DetectorConfig) -> AnomalyStore:
    """The store at ``directory``; a StoreError carries ``path`` (its manifest)."""
    try:
        return AnomalyStore(directory, config=config)
    except StoreError as exc:
        if not hasattr(exc, "path"):
            exc.path = directory / MANIFEST  # type: ignore[attr-defined]
        raise


def new_site(root: Path, partition: int, site: str, sites: SiteConfigs) -> SiteState:
    config = sites.config_of(site)
    return SiteState(site, open_store(store_dir(root, partition, site), config), config)


def new_partition(root: Path, partition: int, sites: SiteConfigs) -> PartitionState:
    """A partition with its default site's store opened (StoreError naming a bad manifest)."""
    return PartitionState(partition, {DEFAULT_SITE: new_site(root, partition, DEFAULT_SITE, sites)})


def checkpoint_of(state: PartitionState, offset: int) -> Checkpoint:
    """The partition's state as a checkpoint at ``offset`` (its next offset)."""
    default = state.default.part()
    return Checkpoint(
        partition=state.partition,
        offset=offset,
        detector_state=default.detector_state,
        store_position=default.store_position,
        pending=default.pending,
        last_batch=state.last_batch,
        sensors=default.sensors,
        episode_state=default.episode_state,
        pending_episodes=default.pending_episodes,
        sites={n: s.part() for n, s in state.sites.items() if n != DEFAULT_SITE},
    )


def apply_checkpoint(
    state: PartitionState, cp: Checkpoint, path: Path, root: Path, sites: SiteConfigs
) -> None:
    """Restore every site of a checkpoint into ``state`` (StateError naming a bad file).

    A site store on disk that the checkpoint does not know was written after
    it (the site's first records came later, and are read again): it starts
    afresh.
    """
    parts = cp.all_sites()
    for name, directory in site_stores_on_disk(root, state.partition).items():
        if name not in parts:
            reset_store(open_store(directory, sites.config_of(name)), state.partition, name)
    for name, part in parts.items():
        site = state.sites.get(name) or new_site(root, state.partition, name, sites)
        _apply_part(site, part, path, state.partition)
        state.sites[name] = site
    state.next_offset = cp.offset
    state.last_batch = dict(cp.last_batch)


def _apply_part(site: SiteState, part: SitePart, path: Path, partition: int) -> None:
    try:
        stored = len(site.store.chunks)
        expected = int(part.store_position["chunks"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(path, f"unreadable store position ({one_line(exc)})") from None
    if expected > stored:
        # The manifest lost chunks the checkpoint counts: truncating to the
        # checkpoint would write that loss down for good.
        raise StateError(
            site.store.directory / MANIFEST,
            f"lists {stored} chunks but the checkpoint {path} was taken with {expected}",
        )
    try:
        detector = None
        if "turbine_means" in part.detector_state or part.sensors:
            detector = Detector.from_state(
                part.detector_state, config_for(site.config, part.sensors, "checkpoint")
            )
        site.store.truncate(part.store_position)
        site.store.restore_pending(part.pending)
        site.store.restore_pending_episodes(part.pending_episodes)
        episodes = (
            EpisodeTracker.from_state(part.episode_state, gap=site.config.episode_gap)
            if part.episode_state
            else None
        )
    except StoreError:
        raise
    except Exception as exc:  # arrays of the wrong shape, dtype, keys...
        raise StateError(path, f"checkpoint does not restore ({one_line(exc)})") from None
    site.detector = detector
    if episodes is not None:
        site.episodes = episodes
    site.sensors = part.sensors


def reset_store(store: AnomalyStore, partition: int, site: str = DEFAULT_SITE) -> None:
    """Empty a store whose records are all read again (never checkpointed)."""
    if store.chunks or store.readings:
        log.warning(
            "store_reset partition=%d reason=never_checkpointed chunks=%d site=%s",
            partition,
            len(store.chunks),
            site,
        )
        store.truncate(dict(EMPTY_POSITION))


def start_afresh(state: PartitionState, root: Path, sites: SiteConfigs) -> None:
    """No committed offset: every site's store of the partition starts empty."""
    reset_store(state.default.store, state.partition)
    for name, directory in site_stores_on_disk(root, state.partition).items():
        reset_store(open_store(directory, sites.config_of(name)), state.partition, name)
    log.info("partition_assigned partition=%d checkpoint=none", state.partition)


def keep_for_rebuild(state: PartitionState, root: Path, sites: SiteConfigs) -> list[int]:
    """Checkpoint lost: every site's store kept whole, its floor past what it holds.

    The sites found on disk are opened (their models rebuilt from the
    replayed records).  Returns each store's floor, the default site's first.
    """
    for name, directory in site_stores_on_disk(root, state.partition).items():
        config = sites.config_of(name)
        state.sites.setdefault(name, SiteState(name, open_store(directory, config), config))
    floors = []
    for site in state.sites.values():
        store = site.store
        floor = max(store.positions.get(state.partition, 0), _after_last_stored(store))
        store.advance({state.partition: floor})
        store.skip_stored_episodes()
        floors.append(floor)
    return floors


def _after_last_stored(store: AnomalyStore) -> int:
    """One past the highest source offset of the store's last chunk (0 when empty).

    A chunk can be written in the middle of a poll, before the store's floor
    is raised: a store's floor alone may be below anomalies it holds.
    """
    if not store.chunks:
        return 0
    offsets = store.load_chunk(store.chunks[-1]).offsets
    return int(offsets.max()) + 1 if offsets.size else 0
