"""Detector state files on disk: an embedded run's ``model.npz`` and the Kafka checkpoints.

Both hold :meth:`pipeline.detector.Detector.state` as plain ``.npz`` arrays;
a checkpoint prefixes them with ``det__`` beside its own metadata.  This
module finds them under a store and rewrites them, for operator actions on a
stopped detector such as ``turbine rebaseline``.  Nothing is ever unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.detector import Detector
from pipeline.durable import atomic_file
from pipeline.errors import SchemaError, StoreError
from pipeline.names import turbine_id
from pipeline.store import CORRUPT_NPZ_ERRORS

_PREFIXES = ("", "det__")


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
        prefix = next((p for p in _PREFIXES if f"{p}turbine_ids" in arrays), None)
        if prefix is None:
            continue
        state = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        try:
            det = Detector.from_state(state)
        except (SchemaError, ValueError, KeyError) as exc:
            raise StoreError(f"{file}: not a detector state ({exc})") from None
        present = [t for t in wanted if det.turbines.find(np.array([t], dtype=np.int64))[0] >= 0]
        if not present:
            continue
        det.rebaseline(np.array(present, dtype=np.int64))
        seen.update(present)
        new = {f"{prefix}{k}": v for k, v in det.state().items()}
        # A checkpoint keeps its metadata and pending anomalies beside the state.
        others = {k: v for k, v in arrays.items() if prefix and not k.startswith(prefix)}
        with atomic_file(file) as f:
            np.savez(f, **{**others, **new})  # type: ignore[arg-type]
        done.append((file, [det.names.name_of(t) for t in present]))
    missing = [name for t, name in wanted.items() if t not in seen]
    if missing:
        raise StoreError(f"{path}: no state of turbine {missing[0]!r} to re-baseline")
    return done
