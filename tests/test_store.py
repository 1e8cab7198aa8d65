"""The CSR anomaly store: chunks on disk, queries, idempotent appends, rollback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import sparse

from pipeline import Detector, DetectorConfig, StoreError
from pipeline.store import AnomalyStore, _dense_to_csr


def noisy_results(rng, batches=30, n_turbines=20, d=3):
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    det.learn(np.zeros(2000), np.tile(np.arange(n_turbines), 100), rng.normal(size=(2000, d)))
    out = []
    for b in range(batches):
        ids = np.tile(np.arange(n_turbines), 5)
        ts = 1000.0 + b * 5 + np.repeat(np.arange(5.0), n_turbines)
        x = rng.normal(size=(ids.size, d))
        x[rng.random(ids.size) < 0.05] += 8.0
        out.append(det.process(ts, ids, x))
    return out


def test_store_round_trip_with_small_chunks(tmp_path, rng):
    results = noisy_results(rng)
    store = AnomalyStore(tmp_path / "s", sensors=("a", "b", "c"), chunk_size=16)
    for k, r in enumerate(results):
        store.append(r, partitions=0, offsets=k)
    store.flush()
    assert len(store.chunks) > 2
    got = store.query()
    expected_ts = np.concatenate([r.timestamps[r.anomaly_index] for r in results])
    expected_d = np.concatenate([r.distances[r.anomaly_index] for r in results])
    assert len(got) == expected_d.size
    # Within a chunk anomalies are ordered by (time step, turbine column): compare as sets.
    key = np.lexsort((got.distances, got.timestamps))
    ref = np.lexsort((expected_d, expected_ts))
    np.testing.assert_array_equal(got.timestamps[key], expected_ts[ref])
    np.testing.assert_array_equal(got.distances[key], expected_d[ref])
    np.testing.assert_allclose(got.contributions.sum(axis=1), got.distances, rtol=1e-8)
    reopened = AnomalyStore(tmp_path / "s")
    assert len(reopened.query()) == len(got)


def test_chunks_are_csr_files_loadable_without_pickle(tmp_path, rng):
    store = AnomalyStore(tmp_path / "s", sensors=("a", "b", "c"))
    for r in noisy_results(rng, batches=5):
        store.append(r)
    store.flush()
    name = store.chunks[0]["name"]
    m = sparse.load_npz(tmp_path / "s" / f"{name}-distance.npz")
    assert m.format == "csr" and m.nnz == store.stats()["anomalies"]
    # rows are time steps with anomalies only: the store grows with anomalies, not readings
    assert m.shape[0] == np.unique(store.query().timestamps).size
    with np.load(tmp_path / "s" / f"{name}-meta.npz", allow_pickle=False) as meta:
        assert meta["offsets"].shape == (m.nnz,)


def test_queries_filter_by_turbine_and_time(tmp_path, rng):
    store = AnomalyStore(tmp_path / "s", sensors=("a", "b", "c"), chunk_size=10)
    for r in noisy_results(rng):
        store.append(r)
    store.flush()
    everything = store.query()
    t = int(everything.turbine_ids[0])
    mid = float(np.median(everything.timestamps))
    sub = store.query(turbine=t, since=mid)
    assert (sub.turbine_ids == t).all() and (sub.timestamps >= mid).all()
    assert len(sub) == int(((everything.turbine_ids == t) & (everything.timestamps >= mid)).sum())


def test_replayed_batches_add_no_duplicates(tmp_path, rng):
    results = noisy_results(rng, batches=10)
    store = AnomalyStore(tmp_path / "s", sensors=("a", "b", "c"))
    for k, r in enumerate(results):
        store.append(r, partitions=3, offsets=k)
    store.advance({3: 10})
    store.flush()
    n = store.stats()["anomalies"]
    for k, r in enumerate(results):  # a replay after a crash
        assert store.append(r, partitions=3, offsets=k) == 0
    store.flush()
    assert store.stats()["anomalies"] == n


def test_truncate_rolls_back_to_a_checkpoint(tmp_path, rng):
    results = noisy_results(rng, batches=12)
    store = AnomalyStore(tmp_path / "s", sensors=("a", "b", "c"), chunk_size=8)
    for k, r in enumerate(results[:6]):
        store.append(r, partitions=0, offsets=k)
    store.advance({0: 6})
    store.flush()
    saved = json.loads(json.dumps(store.position()))
    before = store.stats()["anomalies"]
    for k, r in enumerate(results[6:], start=6):
        store.append(r, partitions=0, offsets=k)
    store.advance({0: 12})
    store.flush()
    dropped = store.truncate(saved)
    assert dropped > 0 and store.stats()["anomalies"] == before
    for k, r in enumerate(results[6:], start=6):  # replayed from the checkpoint
        store.append(r, partitions=0, offsets=k)
    store.flush()
    fresh = AnomalyStore(tmp_path / "t", sensors=("a", "b", "c"), chunk_size=8)
    for k, r in enumerate(results):
        fresh.append(r, partitions=0, offsets=k)
    fresh.flush()
    assert sorted(store.query().event_ids()) == sorted(fresh.query().event_ids())
    names = {p.name for p in (tmp_path / "s").iterdir()}
    assert all(f"{c['name']}-distance.npz" in names for c in store.chunks)


def test_store_refuses_other_sensors_and_foreign_directories(tmp_path):
    AnomalyStore(tmp_path / "s", sensors=("a", "b"))
    with pytest.raises(StoreError, match="holds sensors"):
        AnomalyStore(tmp_path / "s", sensors=("x", "y"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("hi")
    with pytest.raises(StoreError, match="not empty"):
        AnomalyStore(tmp_path / "other")
    (tmp_path / "s" / "manifest.json").write_text("{broken")
    with pytest.raises(StoreError, match="unreadable manifest"):
        AnomalyStore(tmp_path / "s")


def test_pending_restored_into_a_fresh_manifest_keeps_the_sensors(tmp_path, rng):
    """A run killed before its first chunk: the checkpoint's pending anomalies carry the names."""
    results = noisy_results(rng, batches=5)
    first = AnomalyStore(tmp_path / "s")  # as the service opens it: sensors not known yet
    for k, r in enumerate(results):
        first.append(r, partitions=0, offsets=k)
    pending = first.pending()
    assert len(pending) and pending.sensors
    reopened = AnomalyStore(tmp_path / "s")  # the manifest on disk never got the sensors
    reopened.truncate({"chunks": 0, "positions": {}, "readings": 0, "turbines": 0})
    reopened.restore_pending(pending)
    reopened.flush()
    assert AnomalyStore(tmp_path / "s").sensors == pending.sensors
    assert len(AnomalyStore(tmp_path / "s").query()) == len(pending)


@pytest.mark.parametrize("fortran", [False, True])
@pytest.mark.parametrize("zeros", [0.0, 0.3])  # none (the usual case) and some
@pytest.mark.parametrize("shape", [(0, 4), (1, 1), (7, 3), (200, 16)])
def test_contribution_matrix_is_scipys_csr(rng, shape, zeros, fortran):
    dense = rng.normal(size=shape)
    dense[rng.random(shape) < zeros] = 0.0
    if fortran:
        dense = np.asfortranarray(dense)
    got, want = _dense_to_csr(dense), sparse.csr_array(dense)
    for field in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        assert getattr(got, field).dtype == getattr(want, field).dtype
    assert got.shape == want.shape
