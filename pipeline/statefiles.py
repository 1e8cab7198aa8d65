"""Detector state files on disk: an embedded run's ``model.npz`` and the Kafka checkpoints.

Both hold :meth:`pipeline.detector.Detector.state` as plain ``.npz`` arrays;
a checkpoint prefixes them with ``det__`` beside its own metadata (the default
site's), and each other site's with ``siteN__det__`` (``consumers/checkpoint.py``).  This
module finds them under a store and rewrites them, for operator actions on a
stopped detector such as ``turbine rebaseline``.  Nothing is ever unpickled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.detector import Detector
from pipeline.durable import atomic_file
from pipeline.errors import SchemaError, StoreError
from pipeline.names import turbine_id
from pipeline.store import CORRUPT_NPZ_ERRORS

_PREFIXES = ("", "det__")
_SITE_STATE = re.compile(r"(site\d+__det__)turbine_ids")


def _state_prefixes(arrays: dict[str, np.ndarray]) -> list[str]:
    """The prefixes of the detector states in a file: one per site of a checkpoint."""
    heads = [p for p in _PREFIXES if f"{p}turbine_ids" in arrays][:1]
    sites = {m.group(1) for k in arrays if (m := _SITE_STATE.fullmatch(k))}
    return heads + sorted(sites)


def state_files(path: str | Path) -> list[Path]:
    """The state files at ``path``: the file itself, or a store's model and checkpoints."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise StoreError(f"{p}: no such state file or store directory")
    found = [p / "model.npz"] if (p / "model.npz").is_file() else []
    found += sorted((p / "checkpoints").glob("*.npz")) if (p / "checkpoints").is_dir() else []
    if not found:
        raise StoreError(f"{p}: no model.npz and no checkpoints/*.npz (not a store?)")
    return found


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except CORRUPT_NPZ_ERRORS as exc:
        raise StoreError(f"{path}: not a readable state file ({exc})") from None


def rebaseline_files(path: str | Path, turbines: Sequence[str]) -> list[tuple[Path, list[str]]]:
    """Re-baseline ``turbines`` (names or ids) in every state file at ``path``.

    Each file is rewritten atomically with the turbines' models forgotten (they
    warm up afresh when the detector resumes from it).  Returns, per file
    changed, the turbines re-baselined in it; a turbine found in no file is an
    error naming it.
    """
    wanted = {turbine_id(t): t for t in turbines}
    done: list[tuple[Path, list[str]]] = []
    seen: set[int] = set()
    for file in state_files(path):
        arrays = _load(file)
        out = dict(arrays)
        names: list[str] = []
        for prefix in _state_prefixes(arrays):  # every site's models in a checkpoint
            state = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            try:
                det = Detector.from_state(state)
            except (SchemaError, ValueError, KeyError) as exc:
                raise StoreError(f"{file}: not a detector state ({exc})") from None
            ids = np.array(list(wanted), dtype=np.int64)
            present = ids[det.turbines.find(ids) >= 0].tolist()
            if not present:
                continue
            det.rebaseline(np.array(present, dtype=np.int64))
            seen.update(present)
            # A checkpoint keeps its metadata, pending anomalies and other sites.
            out = {k: v for k, v in out.items() if not k.startswith(prefix)}
            out.update({f"{prefix}{k}": v for k, v in det.state().items()})
            names += [det.names.name_of(t) for t in present if det.names.name_of(t) not in names]
        if names:
            with atomic_file(file) as f:
                np.savez(f, **out)  # type: ignore[arg-type]
            done.append((file, names))
    missing = [name for t, name in wanted.items() if t not in seen]
    if missing:
        raise StoreError(f"{path}: no state of turbine {missing[0]!r} to re-baseline")
    return done
