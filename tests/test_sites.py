"""Sites without a broker: configurations, the checkpoint round trip, record checks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from consumers.checkpoint import CheckpointDir
from consumers.partition_state import (
    apply_checkpoint,
    checkpoint_of,
    new_partition,
    new_site,
    store_dir,
)
from consumers.records import RecordChecker
from pipeline.config import DetectorConfig, load_config, load_site_configs
from pipeline.errors import ConfigError
from pipeline.metrics import DetectorMetrics
from pipeline.runner import config_for
from pipeline.sites import SiteConfigs
from pipeline.wire import BINARY_TYPE, BatchMeta, WireError, encode_batch

SKAB = ("Accelerometer1RMS", "Pressure", "Temperature")
LHB = ("pitch", "power", "wind_speed")


def _config_files(tmp_path):
    (tmp_path / "lhb.toml").write_text('false_alarm_rate = 1e-6\nsensors = ["pitch", "power"]\n')
    main = tmp_path / "service.toml"
    main.write_text(
        "max_sites = 3\nmin_samples = 40\n\n"
        "[sites.skab]\nfalse_alarm_rate = 1e-3\n\n"
        '[sites.lhb]\nconfig = "lhb.toml"\nmin_samples = 50\n'
    )
    return main


def test_site_tables_inherit_the_top_level_or_read_their_file(tmp_path):
    sites = load_site_configs(_config_files(tmp_path))
    assert sites.known == ("default", "lhb", "skab") and sites.max_sites == 3
    assert sites.config_of("skab").min_samples == 40  # inherited
    assert sites.config_of("skab").false_alarm_rate == 1e-3
    lhb = sites.config_of("lhb")
    assert (lhb.false_alarm_rate, lhb.min_samples, lhb.sensors) == (1e-6, 50, ("pitch", "power"))
    assert sites.config_of("elsewhere") is sites.default
    # The embedded run picks one site; without a site, the top level.
    main = tmp_path / "service.toml"
    assert load_config(main, "lhb").false_alarm_rate == 1e-6
    assert load_config(main).false_alarm_rate == 1e-4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_sites = 1\n[sites.a]\n", "2 sites configured"),
        ('[sites."../x"]\n', "a site name is"),
        ("sites = 3\n", "one table of settings per site"),
        ('max_sites = "8"\n', "max_sites: an integer"),
        ("[sites.a]\nfalse_alarm_rate = 2\n", "sites.a: false_alarm_rate"),
    ],
)
def test_bad_site_configurations_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_site_configs(path)
    assert str(path) in str(err.value)


def test_unknown_sites_are_admitted_up_to_max_sites_with_room_kept_for_configured():
    sites = SiteConfigs(DetectorConfig(), {"lhb": DetectorConfig()}, max_sites=3)
    assert sites.admits("lhb", {"default", "x"})  # configured: always
    assert sites.admits("x", {"default"})
    assert not sites.admits("y", {"default", "x"})  # 'lhb' keeps its room
    assert sites.admits("x", {"default", "x", "lhb"})  # already present


def _score(site, partition, rng, n_steps, start):
    """Score n_steps of 5 turbines into a site (learning, then a fault that alarms)."""
    d = len(site.sensors)
    if site.detector is None:
        from pipeline.detector import Detector

        site.detector = Detector(config_for(site.config, site.sensors, "test"))
    ts = np.repeat(np.arange(start, start + n_steps, dtype=np.float64), 5)
    ids = np.tile(np.arange(5, dtype=np.int64), n_steps)
    values = rng.normal(size=(ts.size, d))
    values[-5:] += 50.0  # the last step alarms
    from pipeline.episodes import EpisodeTracker

    if site.episodes is None:
        site.episodes = EpisodeTracker(site.sensors, site.config.episode_gap)
    for part in (slice(0, ts.size - 5), slice(ts.size - 5, ts.size)):  # two engine batches
        result = site.detector.process(ts[part], ids[part], values[part])
        offsets = np.full(result.n_readings, start, dtype=np.int64)
        rows = np.arange(result.n_readings)
        site.store.append(result, partitions=partition, offsets=offsets, rows=rows)
        site.store.append_episodes(site.episodes.update_result(result).closed)
    return result


def test_two_sites_round_trip_through_one_checkpoint(tmp_path, rng):
    sites = SiteConfigs(
        DetectorConfig(min_samples=20), {"lhb": DetectorConfig(min_samples=30, sensors=LHB)}
    )
    root = tmp_path / "st"
    state = new_partition(root, 2, sites)
    state.default.sensors = SKAB
    state.sites["lhb"] = new_site(root, 2, "lhb", sites)
    state.sites["lhb"].sensors = LHB
    for site in state.sites.values():
        result = _score(site, 2, rng, 60, 0)
        assert result.n_anomalies > 0
    state.sites["lhb"].store.flush()  # one site flushed, the other's anomalies pending
    state.next_offset = 61
    state.last_batch = {("replay-a", 0): 7, ("replay-b", 0): 9}
    cps = CheckpointDir(tmp_path / "cp", "readings")
    cps.save(checkpoint_of(state, 61))

    cp = cps.load(2)
    assert sorted(cp.all_sites()) == ["default", "lhb"] and cp.site_part("other") is None
    again = new_partition(root, 2, sites)
    apply_checkpoint(again, cp, cps.path(2), root, sites)
    assert (again.next_offset, again.last_batch) == (61, state.last_batch)
    assert again.sites["lhb"].store.directory == store_dir(root, 2, "lhb")
    assert store_dir(root, 2, "lhb") == root / "sites" / "lhb" / "partition-0002"
    for name, site in state.sites.items():
        back = again.sites[name]
        assert back.sensors == site.sensors and back.config == site.config
        before, after = site.detector.state(), back.detector.state()
        assert before.keys() == after.keys()
        for k in before:
            np.testing.assert_array_equal(before[k], after[k])
        assert len(back.store.pending()) == len(site.store.pending())
        assert back.store.position() == site.store.position()
        opened, reopened = site.episodes.state(), back.episodes.state()
        assert opened.keys() == reopened.keys()
        for k in opened:
            np.testing.assert_array_equal(opened[k], reopened[k])
        assert site.episodes.in_progress.turbine_ids.size > 0
    # The restored sites score on exactly as the originals do.
    for name in state.sites:
        a = _score(state.sites[name], 2, np.random.default_rng(5), 10, 61)
        b = _score(again.sites[name], 2, np.random.default_rng(5), 10, 61)
        np.testing.assert_array_equal(a.distances, b.distances)


def test_a_version_1_checkpoint_is_the_default_site_and_a_site_store_it_does_not_know_restarts(
    tmp_path, rng
):
    sites = SiteConfigs(DetectorConfig(min_samples=20))
    root = tmp_path / "st"
    state = new_partition(root, 0, sites)
    state.default.sensors = SKAB
    _score(state.default, 0, rng, 40, 0)
    cps = CheckpointDir(tmp_path / "cp", "readings")
    path = cps.save(checkpoint_of(state, 41))
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    meta["version"] = 1
    del meta["sites"]
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(path, **arrays)
    # A site store written after that checkpoint (its records are read again).
    late = new_site(root, 0, "late", sites)
    late.sensors = LHB
    _score(late, 0, rng, 40, 50)
    late.store.flush()
    assert late.store.chunks

    again = new_partition(root, 0, sites)
    apply_checkpoint(again, cps.load(0), path, root, sites)
    assert list(again.sites) == ["default"]
    assert again.default.detector.state()["turbine_ids"].size == 5
    assert not new_site(root, 0, "late", sites).store.chunks  # started afresh


def _record(site, sensors, batch=1, producer="p", n=4, offset=0, group=0):
    meta = BatchMeta(
        site=site, sensors=list(sensors), producer_id=producer, batch=batch, n=n, group=group
    )
    value = encode_batch(
        meta,
        np.arange(n, dtype=np.float64) + 1.7e9,
        np.arange(n, dtype=np.int64),
        np.zeros((n, len(sensors))),
    )
    return SimpleNamespace(
        value=value,
        headers=[("content-type", BINARY_TYPE.encode())],
        offset=offset,
        topic="t",
        partition=0,
        key=b"group-0",
        timestamp=0,
    )


@pytest.mark.parametrize(
    ("site", "sensors", "reason"),
    [
        ("lhb", SKAB, "sensor_mismatch"),  # a configured site's schema
        ("default", LHB, "sensor_mismatch"),  # fixed by the site's first batch
        ("third", SKAB, "too_many_sites"),
        ("../etc", SKAB, "bad_site"),
        ("lhb", LHB, None),
        ("default", SKAB, None),
    ],
)
def test_a_record_is_checked_against_its_own_site(tmp_path, site, sensors, reason):
    sites = SiteConfigs(DetectorConfig(), {"lhb": DetectorConfig(sensors=LHB)}, max_sites=2)
    state = new_partition(tmp_path, 0, sites)
    state.default.sensors = SKAB
    checker = RecordChecker(
        SimpleNamespace(
            max_record_bytes=1 << 20,
            min_timestamp=0.0,
            max_timestamp=4e9,
            nan_flood_fraction=0.5,
        ),
        sites,
    )
    record = _record(site, sensors)
    if reason is None:
        assert checker.check(state, record, {}).meta.site == site
        return
    with pytest.raises(WireError) as err:
        checker.check(state, record, {})
    assert err.value.reason == reason


def test_configured_sites_start_at_zero_and_the_site_label_is_bounded():
    reg = CollectorRegistry()
    m = DetectorMetrics(reg, sites=("default", "lhb", "skab"), max_site_labels=4)
    for s in ("default", "lhb", "skab"):
        assert reg.get_sample_value("turbine_readings_total", {"site": s}) == 0.0
    assert [m.site_label(s) for s in ("x", "y", "lhb")] == ["x", "other", "lhb"]
    m.count_anomalies(np.array([3]), None, False, site="y")
    labels = {"turbine": "3", "fault_kind": "unknown", "site": "other"}
    assert reg.get_sample_value("turbine_anomalies_total", labels) == 1.0


def test_the_shipped_sites_configuration_loads():
    from tests.conftest import REPO

    sites = load_site_configs(REPO / "deploy" / "configs" / "sites.toml")
    assert sites.known == ("default", "lhb", "skab")
    assert sites.config_of("lhb") == load_config(
        REPO / "deploy" / "configs" / "la-haute-borne.toml"
    )
    assert sites.config_of("skab").chart == "mewma"
    # the simulator's stream: fleet-relative, one key group (the stacks' default fleet)
    default = sites.config_of("default")
    assert default.key_groups == 1 and default.fleet_relative == default.sensors
    assert sites.config_of("skab").fleet_relative == ()  # [sites.default] is not inherited


def test_the_shipped_simulator_configuration_is_the_stacks_fleet(tmp_path):
    """deploy/configs/simulator.json is what the stacks' default simulation writes (100
    turbines, seed 42), so `turbine detect --config deploy/configs/sites.toml` scores it."""
    import json

    from tests.cli_support import turbine
    from tests.conftest import REPO

    out = tmp_path / "simulator.json"
    done = turbine(*("simulate", "--turbines", 100, "--seed", 42, "--fleet-relative"),
                   "--write-config", out, env={"TURBINE_BOOTSTRAP_SERVERS": ""})  # fmt: skip
    assert "wrote the configuration" in done.stdout and not list(tmp_path.glob("*.npz"))
    shipped = REPO / "deploy" / "configs" / "simulator.json"
    assert json.loads(shipped.read_text()) == json.loads(out.read_text())


def test_an_offline_rebaseline_reaches_every_site_of_a_checkpoint(tmp_path, rng):
    from pipeline.statefiles import rebaseline_files

    sites = SiteConfigs(DetectorConfig(min_samples=20), {"lhb": DetectorConfig(min_samples=20)})
    root = tmp_path / "st"
    state = new_partition(root, 0, sites)
    state.default.sensors = SKAB
    state.sites["lhb"] = new_site(root, 0, "lhb", sites)
    state.sites["lhb"].sensors = LHB
    for site in state.sites.values():
        _score(site, 0, rng, 40, 0)
    cps = CheckpointDir(root / "checkpoints", "readings")
    cps.save(checkpoint_of(state, 41))
    done = rebaseline_files(root, ["3"])
    assert done == [(cps.path(0), ["3"])]
    cp = cps.load(0)
    for name, part in cp.all_sites().items():
        det = state.sites[name].detector.from_state(
            part.detector_state, config_for(sites.config_of(name), part.sensors, "t")
        )
        assert det.turbine_model(3).count == 0 and det.turbine_model(2).count > 30, name
    assert len(cp.sites["lhb"].pending) == len(state.sites["lhb"].store.pending())


def test_a_fleet_relative_site_split_by_key_group_is_reported_once(tmp_path, caplog):
    """A fleet-relative site needs each batch's whole fleet in one record: a producer
    keyed by several groups is scored, and the log says once what to change."""
    relative = DetectorConfig(sensors=SKAB, fleet_relative=SKAB, key_groups=1)
    sites = SiteConfigs(DetectorConfig(), {"fleet": relative})
    state = new_partition(tmp_path, 0, sites)
    limits = SimpleNamespace(
        max_record_bytes=1 << 20, min_timestamp=0.0, max_timestamp=4e9, nan_flood_fraction=0.5
    )
    checker = RecordChecker(limits, sites)
    with caplog.at_level("WARNING", logger="consumers.records"):
        checker.check(state, _record("fleet", SKAB, group=0), {})  # one record per batch
        checker.check(state, _record("default", SKAB, group=3), {})  # not fleet-relative
        assert not caplog.records
        for batch in (1, 2):
            checker.check(state, _record("fleet", SKAB, batch=batch, group=3), {})
    split = [r.getMessage() for r in caplog.records if "fleet_relative_split" in r.getMessage()]
    assert len(split) == 1 and "site=fleet producer=p group=3" in split[0], split
    assert "--key-groups 1" in split[0]
