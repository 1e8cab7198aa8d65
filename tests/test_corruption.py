"""The corruption suite: every state file truncated, garbled and deleted.

State files: a partition's checkpoint, a store's manifest, a store chunk.
Whatever is done to one of them, no partition is silently skipped, no stored
anomaly is lost by the detector (a damaged chunk loses only what it held, and
says so), and the failure is an error naming the file, a metric, an exit code.
The Kafka cases run the detector service in this process against the real
broker (so its metrics can be read), with a fresh topic and group per test.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline import Detector, DetectorConfig, StoreError
from pipeline.store import MANIFEST, AnomalyStore, read_anomalies
from tests.cli_support import turbine


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path: Path) -> None:
    """Flip every bit of 64 bytes in the middle of the file (its size is unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "garbled": garble,
    "deleted": delete,
}


def small_store(directory: Path, rng: np.random.Generator, chunks: int = 4) -> AnomalyStore:
    """A store of several chunks written by a real detector (anomalies injected)."""
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    n_turbines, d = 10, 3
    det.learn(np.zeros(1000), np.tile(np.arange(n_turbines), 100), rng.normal(size=(1000, d)))
    store = AnomalyStore(directory, sensors=("a", "b", "c"), chunk_size=8)
    for b in range(12 * chunks):
        ids = np.tile(np.arange(n_turbines), 5)
        ts = 1000.0 + b * 5 + np.repeat(np.arange(5.0), n_turbines)
        x = rng.normal(size=(ids.size, d))
        x[rng.random(ids.size) < 0.04] += 9.0
        store.append(det.process(ts, ids, x), partitions=0, offsets=b)
        store.advance({0: b + 1})
    store.flush()
    assert len(store.chunks) >= chunks
    return store


# ---------------------------------------------------------------------- chunks
@pytest.mark.parametrize("member", ["distance", "contrib", "meta"])
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_damaged_chunk_is_a_store_error_naming_it(tmp_path, rng, how, member):
    store = small_store(tmp_path / "s", rng)
    victim = tmp_path / "s" / f"{store.chunks[1]['name']}-{member}.npz"
    CORRUPTIONS[how](victim)
    reopened = AnomalyStore(tmp_path / "s")
    reopened.read_chunk(reopened.chunks[0])  # the other chunks still read
    with pytest.raises(StoreError, match=str(victim)) as info:
        reopened.read_chunk(reopened.chunks[1])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_turbine_anomalies_on_a_damaged_chunk_is_one_line_exit_2(tmp_path, rng, how):
    store = small_store(tmp_path / "s", rng)
    victim = tmp_path / "s" / f"{store.chunks[2]['name']}-distance.npz"
    CORRUPTIONS[how](victim)
    proc = turbine("anomalies", tmp_path / "s", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(victim) in lines[0], proc.stderr


# ---------------------------------------------------------------------- manifests
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_damaged_manifest_is_a_store_error_naming_it(tmp_path, rng, how):
    small_store(tmp_path / "s", rng)
    victim = tmp_path / "s" / MANIFEST
    CORRUPTIONS[how](victim)
    with pytest.raises(StoreError, match=str(tmp_path / "s")) as info:
        AnomalyStore(tmp_path / "s")
    assert "\n" not in str(info.value)
    proc = turbine("anomalies", tmp_path / "s", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_a_manifest_that_is_valid_json_but_no_manifest_is_a_store_error(tmp_path, rng):
    small_store(tmp_path / "s", rng)
    (tmp_path / "s" / MANIFEST).write_text(json.dumps({"version": 1, "chunks": 3}))
    with pytest.raises(StoreError, match="not a store manifest"):
        AnomalyStore(tmp_path / "s")


def test_replayed_readings_below_the_floor_are_counted_once(tmp_path, rng):
    """A partition rebuilding its models replays records already stored: no double count."""
    store = small_store(tmp_path / "s", rng, chunks=1)
    before, anomalies = store.readings, len(read_anomalies(tmp_path / "s"))
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    det.learn(np.zeros(1000), np.tile(np.arange(10), 100), rng.normal(size=(1000, 3)))
    x = rng.normal(size=(50, 3))
    x[::7] += 9.0
    result = det.process(np.full(50, 1000.0), np.tile(np.arange(10), 5), x)
    assert store.append(result, partitions=0, offsets=3) == 0  # below the floor: dropped
    store.flush()
    assert store.readings == before
    assert len(read_anomalies(tmp_path / "s")) == anomalies
