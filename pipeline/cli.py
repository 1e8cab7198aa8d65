"""The ``turbine`` command.

Engine subcommands run here; the Kafka ones (``--bootstrap-servers``,
``replay``, ``record``) import ``producers``/``consumers`` lazily, so the
engine package itself never imports Kafka code.  Bad input, configuration or
store problems print one line and exit with code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.config import DetectorConfig, load_config, load_site_configs, make_config
from pipeline.episodes import Episodes
from pipeline.errors import ConfigError, InputError, TurbineError
from pipeline.evaluation import (
    Confusion,
    DelayTracker,
    EpisodeScores,
    LabelRuns,
    alarm_mask,
    fault_kinds,
    score_episodes,
)
from pipeline.memory import limit_blas_threads, tune_malloc
from pipeline.names import TurbineNames, turbine_id
from pipeline.quirks import Quirks
from pipeline.recordings import Chunk, RecordingSpec, RecordingWriter, read_recording
from pipeline.runner import DEFAULT_BATCH_STEPS, RunReport, run_file
from pipeline.simulator import FAULT_KINDS, FleetSimulator, SimulationParams
from pipeline.sites import SiteConfigs
from pipeline.store import (
    Anomalies,
    AnomalyStore,
    episodes_in_progress,
    find_event,
    read_anomalies,
    read_episodes,
    store_paths,
)

log = logging.getLogger("turbine")
EXIT_BAD_INPUT = 2
EXIT_OS_ERROR = 3  # the system refused (a full disk, a read-only directory): run again with room


# ---------------------------------------------------------------------- helpers
# Timestamps ISO 8601 can show: years 1 to 9999 (seconds since the epoch).
_ISO_RANGE = (-62_135_596_800.0, 253_402_300_800.0)


def iso(ts: float) -> str:
    """Seconds since the epoch as ISO 8601 UTC (to the millisecond when fractional).

    A timestamp no date can show (NaN, inf, beyond year 9999: a store written
    before timestamps were validated) is flagged, never fatal:

    >>> iso(1767225600.0), iso(1767225600.5), iso(1e300), iso(float("nan"))
    ('2026-01-01T00:00:00Z', '2026-01-01T00:00:00.500Z', 'invalid:1e+300', 'invalid:nan')
    """
    value = float(ts)
    if not (_ISO_RANGE[0] <= value < _ISO_RANGE[1]):
        return f"invalid:{value!r}"
    if value.is_integer():
        return str(np.datetime64(int(value), "s")) + "Z"
    return str(np.datetime64(int(round(value * 1000)), "ms")) + "Z"


def parse_time(text: str) -> float:
    """Epoch seconds, or an ISO 8601 date/time (its offset honoured; none: UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    from pipeline.recordings.isotime import TimeFormatError, parse_times

    try:
        return float(parse_times([text])[0])
    except TimeFormatError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (epoch seconds or ISO 8601)"
        ) from None


def add_recording_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("recorded file (defaults: the configuration's [recording] table)")
    g.add_argument("--sep", help="CSV separator (default ',')")
    g.add_argument("--time-col", help="time column (default 'timestamp')")
    g.add_argument("--id-col", help="turbine id or name column; absent: one machine")
    g.add_argument("--label-col", help="label column (default 'label' if present)")
    g.add_argument("--drop-col", action="append", default=[], help="column to ignore (repeat)")
    g.add_argument("--chunk-rows", type=int, help="rows read at a time (default 65536)")
    g.add_argument("--max-sensors", type=int, help="most sensor columns accepted (default 4096)")
    g.add_argument(
        "--sensors",
        dest="sensor_cols",
        metavar="COL[=NAME],...",
        help="sensor columns to read, in order, optionally renamed (default: every numeric column)",
    )
    g.add_argument(
        "--sentinel",
        action="append",
        default=[],
        metavar="SENSOR=V[;V...]",
        help="values of SENSOR that mean 'no reading' (read as missing; repeat)",
    )


def recording_spec(args: argparse.Namespace, config: DetectorConfig | None = None) -> RecordingSpec:
    """The recorded-file options over the configuration's; ``--sep '\\t'`` is a tab."""
    given: dict[str, object] = {}
    if args.sep is not None:
        try:
            given["sep"] = args.sep.encode().decode("unicode_escape")
        except UnicodeDecodeError:
            raise ConfigError(f"--sep {args.sep!r}: not a separator") from None
    for key, value in (
        ("time_col", args.time_col),
        ("id_col", args.id_col),
        ("label_col", args.label_col),
        ("chunk_rows", args.chunk_rows),
        ("max_sensors", getattr(args, "max_sensors", None)),
        ("sensors", getattr(args, "sensor_cols", None)),
    ):
        if value is not None:
            given[key] = value
    if args.drop_col:
        given["drop_cols"] = tuple(args.drop_col)
    if getattr(args, "sentinel", None):
        given["sentinels"] = ",".join(args.sentinel)
    base = config.recording if config is not None and config.recording is not None else None
    try:
        return RecordingSpec.model_validate({**(base.model_dump() if base else {}), **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        error = first.get("ctx", {}).get("error")
        if isinstance(error, ConfigError):  # already names its field
            raise ConfigError(f"recording options: {error}") from None
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"recording options: {loc}: {first['msg']}") from None


class RecordingEnv(BaseSettings):
    """Recorded-file options from ``TURBINE_RECORDING_*`` variables (the compose ``replay``
    service sets them): used where the option is not given; an empty variable is unset."""

    model_config = SettingsConfigDict(env_prefix="TURBINE_RECORDING_", extra="ignore")

    sep: str = ""
    time_col: str = ""
    id_col: str = ""
    label_col: str = ""
    drop_cols: str = Field("", description="comma-separated columns to ignore")
    sensors: str = Field("", description="COL[=NAME],...")
    sentinels: str = Field("", description="SENSOR=V[;V...], comma-separated")
    chunk_rows: str = ""


def apply_recording_env(args: argparse.Namespace) -> None:
    """Fill the recorded-file options not given on the command line from the environment."""
    env = RecordingEnv()
    for attr, value in (
        ("sep", env.sep),
        ("time_col", env.time_col),
        ("id_col", env.id_col),
        ("label_col", env.label_col),
        ("sensor_cols", env.sensors),
    ):
        if value and getattr(args, attr, None) is None:
            setattr(args, attr, value)
    if env.chunk_rows and args.chunk_rows is None:
        try:
            args.chunk_rows = int(env.chunk_rows)
        except ValueError:
            raise ConfigError(
                f"TURBINE_RECORDING_CHUNK_ROWS={env.chunk_rows!r}: not an integer"
            ) from None
    if env.drop_cols and not args.drop_col:
        args.drop_col = [c.strip() for c in env.drop_cols.split(",") if c.strip()]
    if env.sentinels and not args.sentinel:
        args.sentinel = [env.sentinels]


def add_detector_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("detector")
    g.add_argument("--config", type=Path, help="detector configuration (JSON or TOML)")
    g.add_argument("--false-alarm-rate", type=float, help="chi-square tail probability")
    g.add_argument("--chart", choices=("none", "mewma"), help="'mewma' for persistent shifts")
    g.add_argument("--mewma-lambda", type=float, help="EWMA weight of the newest reading")
    g.add_argument("--min-samples", type=int, help="readings before a turbine model scores")
    g.add_argument("--key-groups", type=int, help="turbine groups (Kafka keys, fleet models)")
    g.add_argument(
        "--batch-steps",
        type=int,
        default=DEFAULT_BATCH_STEPS,
        help=f"time steps per engine batch (default {DEFAULT_BATCH_STEPS})",
    )


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        "false_alarm_rate": args.false_alarm_rate,
        "chart": args.chart,
        "mewma_lambda": args.mewma_lambda,
        "min_samples": args.min_samples,
        "key_groups": args.key_groups,
    }


def detector_config(args: argparse.Namespace) -> DetectorConfig:
    """The configuration (of ``--site``'s ``[sites.NAME]`` table, when the command has one)."""
    overrides = _overrides(args)
    if args.config is not None:
        return load_config(args.config, getattr(args, "site", None), **overrides)
    return make_config({k: v for k, v in overrides.items() if v is not None}, "options")


def site_configs(args: argparse.Namespace) -> SiteConfigs:
    """Every site's configuration, for the Kafka detector."""
    if args.config is not None:
        return load_site_configs(args.config, **_overrides(args))
    return SiteConfigs(detector_config(args))


def print_summary(report: RunReport, out=sys.stdout) -> None:
    w = out.write
    name = report.names.name_of
    if report.attribution:
        w(f"data: {report.attribution}\n")
    w(f"{report.path}: {report.readings:,} readings scored")
    if report.learned_only:
        w(f" (+{report.learned_only:,} learned only)")
    w(f", {report.skipped:,} skipped (NaN/inf), {report.anomalies:,} anomalies")
    if report.states:
        w(" (not scored: " + ", ".join(f"{n} {c:,}" for n, c in report.states.items()) + ")")
    w(f" in {report.seconds:.2f} s")
    if report.seconds > 0:
        w(f" ({(report.readings + report.learned_only) / report.seconds / 1e6:.2f} M readings/s)")
    w("\n")
    q = report.quirks
    if q.duplicate or q.out_of_order or q.sentinels:
        w(
            f"data quirks: {q.duplicate:,} duplicate readings (same turbine and UTC time; "
            f"the first kept), {q.out_of_order:,} out of order (skipped), "
            f"{q.sentinels:,} sentinel values read as missing"
        )
        if q.sentinel:
            w(" (" + ", ".join(f"{s}: {k:,}" for s, k in sorted(q.sentinel.items())) + ")")
        w("\n")
    if report.anomalies:
        w(f"threshold (squared distance): {report.threshold:.3f}\n")
        busiest = sorted(report.per_turbine.items(), key=lambda kv: -kv[1])[:10]
        w("anomalies per turbine (top 10): ")
        w(", ".join(f"{name(t)}: {c}" for t, c in busiest) + "\n")
        w("worst events:\n")
        for dist, ts, turbine, contrib in report.top.rows:
            order = np.argsort(contrib)[::-1][:2]
            top = ", ".join(f"{report.sensors[j]} {contrib[j]:.1f}" for j in order)
            w(f"  {iso(ts)}  turbine {name(turbine):>5}  distance^2 {dist:10.1f}  ({top})\n")
    if report.rebaselined:
        w(f"re-baselined: {len(report.rebaselined)} model restarts after persistent alarms\n")
    if report.episodes is not None and len(report.episodes):
        e = report.episodes
        i = int(np.argmax(e.durations))
        w(
            f"alarm episodes: {len(e):,} (longest: turbine {name(int(e.turbine_ids[i]))}, "
            f"{float(e.durations[i]):,.0f} s from {iso(float(e.starts[i]))})\n"
        )
    if report.confusion is not None:
        c = report.confusion
        w(
            f"against labels: precision {c.precision:.3f}, recall {c.recall:.3f}, "
            f"F1 {c.f1:.3f}, FAR {c.far:.2f} %, MAR {c.mar:.2f} %\n"
        )
    if report.episode_scores is not None:
        w(episode_summary(report.episode_scores) + "\n")


# ---------------------------------------------------------------------- commands
def simulation_params(args: argparse.Namespace, streamed: bool) -> SimulationParams:
    """The simulation of ``turbine simulate``'s options.

    A stream starts at the current time, so that the data-time lag is real (at
    ``--speed 1``); a file is the same file whenever it is written; ``--start`` sets either.
    """
    default_start = float(int(time.time())) if streamed else SimulationParams().start
    return SimulationParams(
        start=parse_instant_option(args.start, default_start),
        turbines=args.turbines,
        sensors=args.sensors,
        steps=args.steps,
        seed=args.seed,
        interval=args.interval,
        fault_fraction=args.fault_fraction,
        magnitude=args.magnitude,
        kinds=tuple(args.kinds.split(",")) if args.kinds else FAULT_KINDS,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.key_groups is None:
        args.key_groups = 12
    streamed = _kafka_mode(args)
    params = simulation_params(args, streamed)
    if streamed:
        from producers.commands import stream_simulation

        return stream_simulation(args, params)
    if args.output is None:
        raise ConfigError("simulate needs --output FILE (or --bootstrap-servers to stream)")
    sim = FleetSimulator(params)
    if args.write_config:
        cal = sim.fleet.calibration(fleet_relative=args.fleet_relative)
        Path(args.write_config).write_text(json.dumps(cal, indent=1) + "\n")
    with RecordingWriter(args.output, sim.fleet.sensors, labels=True, kinds=True) as writer:

        def written() -> Iterator[Chunk]:
            for chunk in sim.chunks():
                writer.write(chunk)
                yield chunk

        # Faults as the evaluation and the report count them: labelled runs per turbine.
        # An injected episode may give several (a correlation break is labelled only where
        # it shows) and overlapping ones give one.
        faults = fault_kinds(written())
    by_kind = Confusion(fault_kinds=tuple(faults.kinds)).by_kind()
    kinds = ", ".join(f"{k} {n}" for k, (_, n) in by_kind.items())
    print(
        f"wrote {writer.rows:,} readings ({params.turbines} turbines x {params.steps} steps, "
        f"{params.sensors} sensors, {len(faults.kinds)} faults: labelled runs per turbine, "
        f"from {len(sim.episodes)} injected episodes) to {args.output}"
        + (f"; by kind: {kinds}" if kinds else "")
    )
    return 0


def _kafka_mode(args: argparse.Namespace) -> bool:
    import os

    return bool(args.bootstrap_servers) or (
        getattr(args, "input", None) is None and bool(os.environ.get("TURBINE_BOOTSTRAP_SERVERS"))
    )


def cmd_detect(args: argparse.Namespace) -> int:
    if _kafka_mode(args):
        from consumers.service import ServiceSettings, run_service

        if args.site != "default":
            raise ConfigError(
                "--site picks one site's configuration for an embedded run; "
                "the Kafka detector scores every site ([sites.NAME] tables)"
            )

        given = {
            "bootstrap_servers": args.bootstrap_servers,
            "topic": args.topic,
            "anomalies_topic": args.anomalies_topic,
            "episodes_topic": args.episodes_topic,
            "dlq_topic": args.dlq_topic,
            "group": args.group,
            "store": args.store,
            "checkpoint_dir": args.checkpoint_dir,
            "checkpoint_every_batches": args.checkpoint_every_batches,
            "checkpoint_every_seconds": args.checkpoint_every_seconds,
            "stop_after_idle": args.stop_after_idle,
            "metrics_address": args.metrics_address,
            "metrics_port": args.metrics_port,
            "max_record_bytes": args.max_record_bytes,
            "partitions": args.partitions,
            "instance_id": args.instance_id,
            "event_records": args.event_records,
        }
        settings = ServiceSettings(**{k: v for k, v in given.items() if v is not None})
        return run_service(settings, site_configs(args))
    config = detector_config(args)
    if args.input is None:
        raise ConfigError("detect needs --input FILE (or --bootstrap-servers for Kafka)")
    if args.store is None:
        raise ConfigError("detect needs --store DIR")
    report, _ = run_file(
        args.input,
        recording_spec(args, config),
        config,
        store_dir=args.store,
        batch_steps=args.batch_steps,
        train_rows=args.train_rows,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    print_summary(report)
    store = AnomalyStore(args.store)
    s = store.stats()
    print(
        f"anomaly store {args.store}: {s['anomalies']:,} anomalies in {s['chunks']} chunks, "
        f"{s['bytes']:,} bytes"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    config = detector_config(args)
    spec = recording_spec(args, config)
    total = Confusion()
    total_episodes = EpisodeScores()
    per_file = []
    states: dict[str, int] = {}
    if args.store is not None:
        for st in (AnomalyStore(p) for p in store_paths(args.store)):
            for name, count in st.states.items():
                states[name] = states.get(name, 0) + count
    for path in args.input:
        if args.store is not None:
            confusion, episodes = evaluate_store(path, spec, args.store, args.train_rows)
        else:
            report, _ = run_file(
                path, spec, config, train_rows=args.train_rows, batch_steps=args.batch_steps
            )
            if report.confusion is None or report.episode_scores is None:
                raise InputError("no label column (set --label-col)", path=str(path))
            confusion, episodes = report.confusion, report.episode_scores
            for name, count in report.states.items():
                states[name] = states.get(name, 0) + count
        total.merge(confusion)
        total_episodes.merge(episodes)
        per_file.append({"file": str(path), **confusion.as_dict(), "episodes": episodes.as_dict()})
    result: dict[str, object] = {
        **total.as_dict(),
        "files": len(args.input),
        "episodes": total_episodes.as_dict(),
        # Readings in an operating state (learn_when): neither scored nor counted above.
        "not_scored": dict(sorted(states.items())),
    }
    if args.format == "json":
        if args.per_file:
            result["per_file"] = per_file
        print(json.dumps(result, indent=1, default=_json_number))
    else:
        print(
            f"{len(args.input)} file(s): precision {total.precision:.3f}  "
            f"recall {total.recall:.3f}  "
            f"F1 {total.f1:.3f}  FAR {total.far:.2f} %  MAR {total.mar:.2f} %  "
            f"mean detection delay {total.mean_delay:.1f} s "
            f"({total.missed_faults} of {len(total.delays) + total.missed_faults} faults missed)"
        )
        print(episode_summary(total_episodes))
        if states:
            print(
                "not scored (operating states, not in the figures above): "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(states.items()))
            )
    return 0


def episode_summary(s: EpisodeScores) -> str:
    """The ``episodes`` figures of ``turbine evaluate`` as one line of text."""
    return (
        f"episodes: {s.detected} of {s.faults} faults detected, {s.episodes} episodes, "
        f"{s.false_episodes} false ({s.false_per_turbine_month:.2f} per turbine-month over "
        f"{s.turbine_months:.2f} turbine-months), delay median {s.delay_median_s:.1f} s, "
        f"p90 {s.delay_p90_s:.1f} s"
    )


def evaluate_store(
    path: Path, spec: RecordingSpec, store: Path, train_rows: int
) -> tuple[Confusion, EpisodeScores]:
    """Labels of a recorded file against the alarms and episodes a store holds."""
    anomalies = read_anomalies(store)
    confusion = Confusion()
    delays = DelayTracker()
    runs = LabelRuns()
    seen = 0
    with read_recording(path, spec) as rec:
        if not rec.has_labels:
            raise InputError("no label column (set --label-col)", path=str(path))
        # The readings the detector saw: the same quirks dropped and blanked.
        for chunk in Quirks.for_spec(spec, rec.sensors).filter(rec):
            skip = max(0, min(len(chunk), train_rows - seen))
            seen += len(chunk)
            part = chunk.take(slice(skip, None))
            if len(part) == 0:
                continue
            ok = np.isfinite(part.values).all(axis=1)
            part = part.take(np.flatnonzero(ok))
            alarms = alarm_mask(
                part.timestamps, part.turbine_ids, anomalies.timestamps, anomalies.turbine_ids
            )
            labels = part.labels.astype(bool)  # type: ignore[union-attr]
            confusion.add(labels, alarms)
            delays.update(part.timestamps, part.turbine_ids, labels, alarms, part.kinds)
            runs.update(part.timestamps, part.turbine_ids, labels)
    delays.finish()
    confusion.delays = tuple(delays.delays)
    confusion.missed_faults = delays.missed
    confusion.fault_kinds = tuple(delays.kinds)
    # The store's episodes within the file's scored time span (a store may hold others).
    lo = float(runs.first_seen.min(initial=np.inf))
    hi = float(runs.last_seen.max(initial=-np.inf))
    # Those still open in a Kafka detector's checkpoints count as closed at the end, as the
    # embedded run closes them at the end of its file.
    stored = read_episodes(store, since=lo, until=hi)
    eps = Episodes.concat([stored, episodes_in_progress(store, since=lo, until=hi)], stored.sensors)
    eps = eps.select(np.isin(eps.turbine_ids, runs.covered_turbines))
    scores = score_episodes(
        *runs.finish(), eps.turbine_ids, eps.starts, eps.ends, runs.turbine_months
    )
    return confusion, scores


def _json_number(x: object) -> object:
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _site_store(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """(the store to read, the checkpoint directory) for ``--site``: ``STORE/sites/NAME``
    and ``STORE/checkpoints`` (the default site: STORE itself and its default)."""
    from pipeline.sites import DEFAULT_SITE, site_store, valid_site

    site = args.site
    if not valid_site(site):
        raise ConfigError(f"--site {site!r}: letters, digits, '_', '-', '.' (at most 64)")
    checkpoints = getattr(args, "checkpoint_dir", None)
    if site == DEFAULT_SITE:
        return args.store, checkpoints
    return site_store(args.store, site), checkpoints or args.store / "checkpoints"


def cmd_anomalies(args: argparse.Namespace) -> int:
    args.store, checkpoint_dir = _site_store(args)
    stores = [AnomalyStore(p) for p in store_paths(args.store)]
    sensors = next((st.sensors for st in stores if st.sensors), ())
    names = TurbineNames()
    for st in stores:
        names.merge(st.names)
    args.turbine = None if args.turbine is None else turbine_id(args.turbine)
    if args.similar_to is not None:
        return similar_anomalies(args, stores, sensors, names)
    if args.episodes:
        episodes = read_episodes(args.store, args.turbine, args.since, args.until)
        ongoing = episodes_in_progress(
            args.store, args.turbine, args.since, args.until, checkpoint_dir, site=args.site
        )
        write_episodes(sys.stdout, args.format, episodes, names, ongoing)
        return 0
    rows = AnomalyRows(sys.stdout, args.format, sensors, names=names)
    for st in stores:
        for table in st.iter_chunks(args.turbine, args.since, args.until):
            rows.write(table)
    rows.close()
    return 0


def cmd_rebaseline(args: argparse.Namespace) -> int:
    if (args.path is None) == (args.bootstrap_servers is None):
        raise ConfigError("rebaseline needs a store or state file, or --bootstrap-servers")
    if args.bootstrap_servers is not None:
        from producers.control import send_control
        from producers.kafka_client import KafkaSettings

        settings = KafkaSettings(bootstrap_servers=args.bootstrap_servers)
        n = send_control(
            settings, args.topic, "rebaseline", args.turbine, args.key_groups, args.reason
        )
        print(
            f"{args.topic}: {n} control record(s) sent; the detectors owning "
            f"{', '.join(args.turbine)} re-baseline them in order with their readings"
        )
        return 0
    from pipeline.statefiles import rebaseline_files

    for path, names in rebaseline_files(args.path, args.turbine):
        print(f"{path}: re-baselined {', '.join(names)}")
    return 0


def similar_anomalies(
    args: argparse.Namespace,
    stores: list[AnomalyStore],
    sensors: tuple[str, ...],
    names: TurbineNames | None = None,
) -> int:
    """``anomalies --similar-to EVENT``: the earlier anomalies most like it, best first."""
    from pipeline.similarity import SeenBefore

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    event = find_event(args.store, args.similar_to)
    before = float(event.timestamps[0])
    until = before if args.until is None else min(before, args.until)
    seen = SeenBefore(event.contributions, args.top, before=event.timestamps)
    for st in stores:
        for chunk in st.iter_matrices(args.turbine, args.since, until):
            allowed = None
            if args.turbine is not None or args.since is not None or args.until is not None:
                ts = chunk.timestamps
                allowed = np.ones(ts.size, dtype=bool)
                if args.turbine is not None:
                    allowed &= chunk.turbine_ids == args.turbine
                if args.since is not None:
                    allowed &= ts >= args.since
                if args.until is not None:
                    allowed &= ts <= args.until
            seen.update(chunk, allowed)
    matches, similarity = seen.matches(0)
    rows = AnomalyRows(sys.stdout, args.format, sensors, similarity=True, names=names)
    rows.write(matches, similarity)
    rows.close()
    return 0


EPISODE_COLUMNS = (
    "episode",
    "turbine_id",
    "turbine",
    "start",
    "end",
    "duration_s",
    "alarms",
    "peak_distance2",
    "peak_time",
    "top_sensors",
    "state",
    "open",
)


def write_episodes(
    out: TextIO,
    fmt: str,
    closed: Episodes,
    names: TurbineNames | None = None,
    ongoing: Episodes | None = None,
) -> None:
    """``anomalies --episodes``: one row (CSV) or object (JSON) per episode, by start.

    ``turbine_id`` is the int64 id, ``turbine`` its name (the id in decimal when
    it has none); ``open`` is true for an episode still in progress (in a Kafka
    detector's checkpoint), whose end and figures are as of that checkpoint.
    Times are ISO 8601 UTC; CSV joins the top sensors with ``;``.
    """
    ongoing = ongoing if ongoing is not None and len(ongoing) else None
    table = closed if ongoing is None else Episodes.concat([closed, ongoing], closed.sensors)
    is_open = np.zeros(len(table), dtype=bool)
    if ongoing is not None:
        is_open[len(closed) :] = True
        order = np.lexsort((table.turbine_ids, table.starts))
        table, is_open = table.select(order), is_open[order]
    top = table.top_sensors()
    rows = [
        dict(zip(EPISODE_COLUMNS, values, strict=True))
        for values in zip(
            table.ids(),
            table.turbine_ids.tolist(),
            (names or TurbineNames()).labels(table.turbine_ids),
            [iso(t) for t in table.starts.tolist()],
            [iso(t) for t in table.ends.tolist()],
            table.durations.tolist(),
            table.alarms.tolist(),
            table.peak_distances.tolist(),
            [iso(t) for t in table.peak_times.tolist()],
            top,
            table.states.tolist(),
            is_open.tolist(),
            strict=True,
        )
    ]
    if fmt == "json":
        out.write(json.dumps(rows, indent=1, default=_json_number) + "\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EPISODE_COLUMNS)
    for row in rows:  # output formatting, one line per episode
        writer.writerow([";".join(v) if k == "top_sensors" else v for k, v in row.items()])


class AnomalyRows:
    """Anomaly tables written as CSV rows or one JSON array, table after table.

    Each row carries the turbine's int64 id (``turbine_id``) and its name
    (``turbine``: ``R80711``, or the id in decimal when it has no name).
    """

    def __init__(
        self,
        out: TextIO,
        fmt: str,
        sensors: tuple[str, ...],
        similarity: bool = False,
        names: TurbineNames | None = None,
    ) -> None:
        self.out, self.format, self.sensors = out, fmt, sensors
        self.names = names if names is not None else TurbineNames()
        self.similarity = similarity
        self.first = True
        if fmt == "csv":
            self.writer = csv.writer(out, lineterminator="\n")
            self.writer.writerow(
                (["similarity"] if similarity else [])
                + ["event", "timestamp", "time", "turbine_id", "turbine", "distance2"]
                + ["threshold", "model"]
                + [f"contribution_{s}" for s in sensors]
            )
        else:
            out.write("[")

    def write(self, table: Anomalies, similarity: np.ndarray | None = None) -> None:
        ids = table.event_ids()
        turbines = self.names.labels(table.turbine_ids)
        for i in range(len(table)):  # output formatting, one line per anomaly
            model = "turbine" if table.scored_by[i] == 1 else "fleet"
            if self.format == "csv":
                self.writer.writerow(
                    ([repr(float(similarity[i]))] if similarity is not None else [])
                    + [
                        ids[i],
                        repr(float(table.timestamps[i])),
                        iso(table.timestamps[i]),
                        int(table.turbine_ids[i]),
                        turbines[i],
                        repr(float(table.distances[i])),
                        repr(float(table.thresholds[i])),
                        model,
                    ]
                    + [repr(float(v)) for v in table.contributions[i]]
                )
            else:
                row: dict[str, object] = {}
                if similarity is not None:
                    row["similarity"] = float(similarity[i])
                row.update(
                    {
                        "event": ids[i],
                        "timestamp": float(table.timestamps[i]),
                        "time": iso(table.timestamps[i]),
                        "turbine_id": int(table.turbine_ids[i]),
                        "turbine": turbines[i],
                        "distance2": float(table.distances[i]),
                        "threshold": float(table.thresholds[i]),
                        "model": model,
                        "contributions": dict(
                            zip(self.sensors, table.contributions[i].tolist(), strict=True)
                        ),
                    }
                )
                self.out.write(("\n" if self.first else ",\n") + json.dumps(row))
                self.first = False

    def close(self) -> None:
        if self.format == "json":
            self.out.write("\n]\n" if not self.first else "]\n")


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from pipeline.report import ReportOptions, write_report
    except ImportError as exc:
        raise ConfigError(
            f"report needs matplotlib ({exc}): pip install 'turbine-watch[report]'"
        ) from None
    options = ReportOptions(
        worst_turbines=args.worst, top_events=args.top_events, similar=args.similar
    )
    args.store, checkpoint_dir = _site_store(args)
    # The store's configuration may say how to read its input (its [recording] table).
    recorded = next((AnomalyStore(p).config for p in store_paths(args.store)), None)
    report = write_report(
        args.store,
        args.output,
        input_path=args.input,
        spec=recording_spec(args, recorded) if args.input is not None else None,
        batch_steps=args.batch_steps,
        checkpoint_dir=checkpoint_dir,
        options=options,
        site=args.site,
    )
    for note in report.notes:
        print(f"turbine: {note}", file=sys.stderr)
    print(f"wrote {report.index} ({len(report.figures)} figures: {', '.join(report.figures)})")
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    from pipeline.inject import load_plan, make_plan, parse_duration, parse_kinds, random_plan
    from pipeline.recordings.injected import inject_file, survey

    config = load_config(args.config) if args.config is not None else None
    spec = recording_spec(args, config)
    single = [args.kind is not None, args.plan is not None, args.random is not None]
    if sum(single) != 1:
        raise ConfigError("inject needs one of --kind (one fault), --plan FILE or --random N")
    if args.plan is not None:
        plan = load_plan(args.plan)
    elif args.kind is not None:
        missing = [o for o, v in (("--start", args.start), ("--duration", args.duration)) if not v]
        if args.turbine is None:
            missing.insert(0, "--turbine")
        if missing:
            raise ConfigError(f"inject --kind needs {', '.join(missing)}")
        fault = {
            "kind": args.kind,
            "turbine": args.turbine,
            "start": args.start,
            "duration": args.duration,
            "size": args.size if args.size is not None else 0.0,
            "above": args.above,
        }
        if args.sensor is not None:
            fault["sensor"] = args.sensor
        plan = make_plan([fault], source="options")
    else:
        if args.kinds is None:
            raise ConfigError("inject --random needs --kinds KIND[:SENSOR[:SIZE]],...")
        if args.duration is None:
            raise ConfigError("inject --random needs --duration (e.g. 14d)")
        found = survey(args.input, spec)
        turbines = found.turbines if args.turbine is None else args.turbine.split(",")
        since = parse_instant_option(args.since, found.since)
        until = parse_instant_option(args.until, found.until + 1.0)
        plan = random_plan(
            turbines,
            since,
            until,
            args.random,
            parse_kinds(args.kinds),
            parse_duration(args.duration),
            args.seed,
            gap=parse_duration(args.gap, allow_zero=True),
            max_concurrent=args.max_concurrent,
        )
    if args.write_plan is not None:
        Path(args.write_plan).write_text(plan.to_json() + "\n", encoding="utf-8")
    report = inject_file(args.input, args.output, spec, plan)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(plan.kind_counts().items()))
    print(
        f"wrote {report.rows:,} readings to {args.output}: {len(plan.faults)} faults ({kinds}), "
        f"{report.labelled:,} readings labelled"
    )
    return 0


def parse_instant_option(text: str | None, default: float) -> float:
    from pipeline.inject import parse_instant

    return default if text is None else parse_instant(text)


def cmd_replay(args: argparse.Namespace) -> int:
    from producers.commands import replay

    apply_recording_env(args)
    config = load_config(args.config) if args.config is not None else None
    if args.key_groups is None:
        args.key_groups = config.key_groups if config is not None else 12
    return replay(args, recording_spec(args, config))


def cmd_record(args: argparse.Namespace) -> int:
    from consumers.record import record_topic
    from producers.commands import kafka_settings

    written, refused = record_topic(
        kafka_settings(args), args.topic, args.output, idle_seconds=args.idle_seconds
    )
    print(f"wrote {written:,} readings to {args.output} ({refused} records refused)")
    return 0


# ---------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="turbine",
        description="Streaming sensor-anomaly detection for a fleet of wind turbines.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="simulate a fleet with labelled faults")
    p.add_argument("--turbines", type=int, default=100)
    p.add_argument("--sensors", type=int, default=4)
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between steps")
    p.add_argument(
        "--start",
        help="first reading's time, ISO 8601 or epoch seconds (default: streamed, the current "
        "time; written to a file, 2026-01-01T00:00:00Z so that the file is reproducible)",
    )
    p.add_argument("--fault-fraction", type=float, default=0.02)
    p.add_argument("--magnitude", type=float, default=4.0, help="fault size in sigmas")
    p.add_argument(
        "--kinds", help=f"comma-separated fault kinds (default all: {','.join(FAULT_KINDS)})"
    )
    p.add_argument("--output", type=Path, help="recorded file to write (.csv, .npz or .parquet)")
    p.add_argument("--write-config", type=Path, help="also write the matching calibration (JSON)")
    p.add_argument(
        "--fleet-relative",
        action="store_true",
        help="the written configuration scores every sensor against the fleet's median at the "
        "same time, in one key group (the shared wind cancels: no fleet-wide false alarms; "
        "stream it with --key-groups 1)",
    )
    _add_stream_options(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("detect", help="detect anomalies in a recorded file or a Kafka topic")
    p.add_argument("--input", type=Path, help="recorded file (embedded run)")
    p.add_argument("--store", type=Path, help="anomaly store directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--train-rows",
        type=int,
        default=0,
        help="embedded run: leading rows learned, not scored (SKAB's protocol)",
    )
    _add_site_option(p, "embedded run: score with this [sites.NAME] table's configuration")
    add_recording_options(p)
    add_detector_options(p)
    _add_service_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser(
        "evaluate", help="score labelled recordings: precision, recall, F1, FAR, MAR"
    )
    p.add_argument("--input", type=Path, nargs="+", required=True)
    p.add_argument("--train-rows", type=int, default=0, help="leading rows learned, not scored")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--per-file", action="store_true", help="JSON: include each file's scores")
    p.add_argument(
        "--store",
        type=Path,
        help="score the anomalies already in this store (e.g. the Kafka detector's) "
        "against the files' labels, instead of running the engine",
    )
    add_recording_options(p)
    add_detector_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "inject", help="write a copy of a recorded file with labelled faults injected"
    )
    p.add_argument(
        "--input", type=Path, required=True, help="recorded file (.csv, .npz or .parquet)"
    )
    p.add_argument(
        "--output", type=Path, required=True, help="the copy with faults (.csv, .npz, .parquet)"
    )
    p.add_argument("--config", type=Path, help="configuration whose [recording] table reads it")
    g = p.add_argument_group("one fault")
    g.add_argument("--kind", choices=("derating", "offset", "gain", "stuck", "drift"))
    g.add_argument("--turbine", help="turbine name or id (--random: comma-separated choice)")
    g.add_argument("--sensor", help="sensor (name or column; derating: default 'power')")
    g.add_argument("--start", help="fault start: ISO 8601 (offset honoured) or epoch seconds")
    g.add_argument("--duration", help="fault length: 14d, 6h, 30m, 90s or seconds")
    g.add_argument(
        "--size",
        type=float,
        help="derating/gain: a fraction (0.06); offset/drift: sensor units",
    )
    g.add_argument(
        "--above", type=float, default=0.0, help="derating acts while power > this (default 0)"
    )
    g = p.add_argument_group("many faults")
    g.add_argument("--plan", type=Path, help="TOML ([[fault]] tables) or JSON list of faults")
    g.add_argument("--random", type=int, metavar="N", help="N faults drawn from --seed")
    g.add_argument(
        "--kinds",
        metavar="KIND[:SENSOR[:SIZE]],...",
        help="--random: the kinds, used in turn (e.g. derating::0.06,gain:wind_speed:0.07)",
    )
    g.add_argument("--seed", type=int, default=0, help="--random: the seed (default 0)")
    g.add_argument("--since", help="--random: earliest start (default: the file's first time)")
    g.add_argument("--until", help="--random: latest end (default: the file's last time)")
    g.add_argument(
        "--gap", default="0", help="--random: least time between faults of a turbine (e.g. 2d)"
    )
    g.add_argument(
        "--max-concurrent",
        type=int,
        metavar="N",
        help="--random: at most N turbines faulty at a time (default: no limit)",
    )
    g.add_argument("--write-plan", type=Path, help="also write the plan used (JSON)")
    add_recording_options(p)
    p.set_defaults(func=cmd_inject)

    p = sub.add_parser("replay", help="replay a recorded file to Kafka")
    p.add_argument("file", type=Path)
    p.add_argument(
        "--config",
        type=Path,
        help="the detectors' configuration: its [recording] table and its key_groups",
    )
    add_recording_options(p)
    _add_stream_options(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("record", help="write a Kafka topic to a recorded file")
    p.add_argument("--bootstrap-servers", help="HOST:PORT[,HOST:PORT...]")
    p.add_argument("--topic", default="turbine.readings")
    p.add_argument(
        "--output", type=Path, required=True, help="recorded file (.npz, .parquet or .csv)"
    )
    p.add_argument("--idle-seconds", type=float, default=5.0, help="stop when nothing arrives")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("anomalies", help="list anomalies from a store")
    p.add_argument("store", type=Path)
    p.add_argument("--turbine", help="a turbine name (R80711) or integer id")
    p.add_argument("--since", type=parse_time)
    p.add_argument("--until", type=parse_time)
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.add_argument(
        "--similar-to",
        metavar="EVENT",
        help="list the earlier anomalies most similar to this one (event id partition:offset:row "
        "or topic:partition:offset:row), by the cosine similarity of their sensor contributions",
    )
    p.add_argument("--top", type=int, default=5, help="with --similar-to: how many (default 5)")
    _add_site_option(p, "the site whose stores are read (a Kafka detector's STORE/sites/NAME)")
    p.add_argument(
        "--episodes",
        action="store_true",
        help="list alarm episodes instead (turbine, start, end, duration, alarms, peak, "
        "top sensors, state); --since/--until keep the episodes overlapping the range",
    )
    p.set_defaults(func=cmd_anomalies)

    p = sub.add_parser(
        "rebaseline",
        help="forget turbines' models after maintenance (a store or state file of a stopped "
        "detector; the running service takes the control topic)",
    )
    p.add_argument(
        "path", type=Path, nargs="?", help="store directory, model.npz or a checkpoint file"
    )
    p.add_argument(
        "--turbine", action="append", required=True, help="turbine name or id (repeatable)"
    )
    p.add_argument("--bootstrap-servers", help="the running service: send a control record instead")
    p.add_argument(
        "--topic", default="turbine.readings", help="readings topic (default %(default)s)"
    )
    p.add_argument(
        "--key-groups", type=int, default=12, help="the producers' key groups (default 12)"
    )
    p.add_argument("--reason", default="", help="a note carried by the event (e.g. the repair)")
    p.set_defaults(func=cmd_rebaseline)

    p = sub.add_parser(
        "report", help="write an HTML anomaly report with figures (timelines, heatmap, ...)"
    )
    p.add_argument("--store", type=Path, required=True, help="anomaly store (or partition stores)")
    p.add_argument("--output", type=Path, required=True, help="report directory (index.html)")
    p.add_argument(
        "--input", type=Path, help="the recorded file the store was written from: re-scored"
    )
    p.add_argument(
        "--batch-steps", type=int, help="time steps per engine batch (default: the store's)"
    )
    p.add_argument(
        "--checkpoint-dir", type=Path, help="Kafka detectors' checkpoints (STORE/checkpoints)"
    )
    p.add_argument("--worst", type=int, default=6, help="turbines with timelines (default 6)")
    p.add_argument("--top-events", type=int, default=6, help="worst events shown (default 6)")
    p.add_argument("--similar", type=int, default=5, help="similar past anomalies per event")
    _add_site_option(p, "the site whose stores and checkpoint parts are read")
    add_recording_options(p)
    p.set_defaults(func=cmd_report)
    return parser


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka producer")
    g.add_argument(
        "--bootstrap-servers", help="HOST:PORT[,HOST:PORT...] (or TURBINE_BOOTSTRAP_SERVERS)"
    )
    g.add_argument(
        "--topic", default="turbine.readings", help="readings topic (default turbine.readings)"
    )
    g.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="times the recorded pace; 0 = as fast as possible (default 0)",
    )
    g.add_argument(
        "--key-groups",
        type=int,
        help="turbine groups, the record keys (default: the configuration's, else 12)",
    )
    g.add_argument(
        "--batch-steps",
        type=int,
        default=DEFAULT_BATCH_STEPS,
        help="time steps per batch (the detector's engine batches)",
    )
    g.add_argument("--producer-id", help="stable id of this stream (default from the source)")
    _add_site_option(g, "the site the readings belong to (the wire metadata's site)")
    g.add_argument("--partitions", type=int, help="create the topic with this many partitions")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_metrics_options(g)


def _add_site_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    p.add_argument(
        "--site", default="default", metavar="NAME", help=f"{what} (default %(default)s)"
    )


def _add_metrics_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--metrics-address", help="bind address of /metrics (default 127.0.0.1)")
    g.add_argument("--metrics-port", type=int, help="serve /metrics on this port")


def _add_service_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka service (settings also from TURBINE_* variables)")
    g.add_argument("--bootstrap-servers", help="HOST:PORT[,HOST:PORT...]")
    g.add_argument("--topic", help="readings topic (default turbine.readings)")
    g.add_argument("--anomalies-topic", help="default turbine.anomalies")
    g.add_argument("--episodes-topic", help="episode events (default turbine.episodes)")
    g.add_argument("--dlq-topic", help="dead letters (default turbine.readings.dlq)")
    g.add_argument("--group", help="consumer group (default turbine-detectors)")
    g.add_argument(
        "--checkpoint-dir", type=Path, help="shared by the group (default STORE/checkpoints)"
    )
    g.add_argument("--checkpoint-every-batches", type=int)
    g.add_argument("--checkpoint-every-seconds", type=float)
    g.add_argument(
        "--stop-after-idle",
        type=float,
        help="exit once caught up this long (s): 0, or 2 if a partition's state did not load",
    )
    g.add_argument("--max-record-bytes", type=int)
    g.add_argument("--partitions", type=int, help="partitions of topics it creates (default 6)")
    g.add_argument("--instance-id", help="static group membership id (fast restarts)")
    g.add_argument(
        "--event-records",
        choices=("anomaly", "batch"),
        help="anomalies-topic records: one per anomaly (default), or one per engine batch "
        "and partition holding its events as JSON lines",
    )
    _add_metrics_options(g)


def _join_event_ids(argv: Sequence[str]) -> list[str]:
    """``--similar-to -1:5:3`` as ``--similar-to=-1:5:3`` (argparse takes -1:... for an option).

    >>> _join_event_ids(["anomalies", "s", "--similar-to", "-1:5:3"])
    ['anomalies', 's', '--similar-to=-1:5:3']
    """
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--similar-to":
            nxt = next(it, None)
            if nxt is None:
                out.append(arg)
            elif re.fullmatch(r"-\d+:\d+:\d+", nxt):
                out.append(f"{arg}={nxt}")
            else:
                out += [arg, nxt]
        else:
            out.append(arg)
    return out


class OneLineLibraryErrors(logging.Filter):
    """The Kafka client's own exceptions as one line each, not a traceback.

    kafka-python logs a dropped connection with its traceback (a broker
    outage prints one per retry); for an operator the exception's type and
    message say it all. The project's own loggers keep their tracebacks.

    >>> rec = logging.LogRecord("kafka.net", logging.ERROR, "", 0, "lost", None,
    ...                         (ConnectionResetError, ConnectionResetError(104, "reset"), None))
    >>> OneLineLibraryErrors().filter(rec), rec.getMessage(), rec.exc_info
    (True, 'lost (ConnectionResetError: [Errno 104] reset)', None)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.name.split(".")[0] == "kafka":
            _, exc, _ = record.exc_info
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_event_ids(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(OneLineLibraryErrors())
    tune_malloc()
    limit_blas_threads()
    try:
        return int(args.func(args) or 0)
    except TurbineError as exc:
        print(f"turbine: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("turbine: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        # A full disk, a read-only or vanished directory: what the system said, on one
        # line. Outputs are written to temporary files and renamed into place, and the
        # detector commits offsets only after its checkpoint is written, so nothing
        # already accepted is lost; the command can be run again once there is room.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"turbine: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_OS_ERROR


if __name__ == "__main__":
    sys.exit(main())
