"""``turbine simulate --bootstrap-servers`` and ``turbine replay``: files and fleets to Kafka."""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from pipeline.batching import iter_batches
from pipeline.errors import ConfigError
from pipeline.metrics import ProducerMetrics
from pipeline.names import TurbineNames
from pipeline.quirks import Quirks
from pipeline.recordings import RecordingSpec, read_recording
from pipeline.simulator import FleetSimulator, SimulationParams
from pipeline.sites import DEFAULT_SITE, valid_site
from producers.kafka_client import KafkaSettings, ensure_topics
from producers.publisher import BatchPublisher, send_batches

log = logging.getLogger(__name__)


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """Connection settings: options over ``TURBINE_*`` environment variables over defaults."""
    given = {"bootstrap_servers": getattr(args, "bootstrap_servers", None)}
    return KafkaSettings(**{k: v for k, v in given.items() if v is not None})


def start_metrics_server(args: argparse.Namespace, registry: CollectorRegistry) -> None:
    """Serve /metrics when a port is set (option or TURBINE_METRICS_PORT)."""
    from pipeline.metrics import serve_metrics

    serve_metrics(
        registry, getattr(args, "metrics_address", None), getattr(args, "metrics_port", None)
    )


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=" readings", unit_scale=True, desc=desc, file=sys.stderr)


def _publish(
    args: argparse.Namespace,
    sensors: tuple[str, ...],
    batches: Any,
    producer_id: str,
    total: int | None,
    desc: str,
    names: TurbineNames | None = None,
) -> int:
    settings = kafka_settings(args)
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry)
    start_metrics_server(args, registry)
    if args.partitions:
        ensure_topics(settings, {args.topic: args.partitions})
    bar = _progress(total, desc, not args.quiet and sys.stderr.isatty())
    site = getattr(args, "site", DEFAULT_SITE)
    if not valid_site(site):
        raise ConfigError(f"--site {site!r}: letters, digits, '_', '-', '.' (at most 64)")
    with BatchPublisher(
        settings,
        args.topic,
        sensors,
        args.key_groups,
        producer_id,
        site=site,
        metrics=metrics,
        names=names,
    ) as pub:
        sent, stopped = send_batches(pub, batches, args.speed, bar)
    if bar is not None:
        bar.close()
    status = "stopped by signal" if stopped else "done"
    print(
        f"{status}: sent {sent:,} readings in {pub.sent_records:,} records to {args.topic}, "
        f"{pub.delivered:,} acknowledged, {pub.errors:,} delivery errors (site {site})",
        file=sys.stderr,
    )
    return 1 if pub.errors else 0


def stream_simulation(args: argparse.Namespace, params: SimulationParams) -> int:
    """Stream a simulated fleet: real time (--speed 1), faster, or as fast as possible (0)."""
    sim = FleetSimulator(params)
    batches = iter_batches(sim.chunks(), args.batch_steps)
    producer_id = args.producer_id or f"simulate-seed{params.seed}" + _site_suffix(args)
    return _publish(
        args, sim.fleet.sensors, batches, producer_id, params.steps * params.turbines, "simulate"
    )


def _site_suffix(args: argparse.Namespace) -> str:
    site = getattr(args, "site", DEFAULT_SITE)
    return "" if site == DEFAULT_SITE else f"-{site}"


def content_producer_id(path: Path, *context: object) -> str:
    """The default producer id of a replay: a hash of the file's whole content.

    The same file replayed twice (under any name) is the same stream, so its
    batches are de-duplicated; two different files never are.  ``context``
    (the batch size, the reading options) is hashed too: the same file cut
    into other batches is another stream.
    """
    digest = hashlib.blake2b(digest_size=12)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    digest.update(repr(context).encode())
    return f"replay-{digest.hexdigest()}"


def replay(args: argparse.Namespace, spec: RecordingSpec) -> int:
    """Replay a recorded file at its recorded pace times --speed (0: as fast as possible)."""
    with read_recording(args.file, spec) as rec:
        # Another site is another stream: the same file replayed under two sites
        # is scored twice, never de-duplicated against itself.
        context = (args.batch_steps, spec) + ((args.site,) if _site_suffix(args) else ())
        producer_id = args.producer_id or content_producer_id(args.file, *context)
        # The readings the embedded run scores: duplicates and steps back dropped,
        # sentinels blanked (pipeline/quirks.py), so the service learns nothing twice.
        quirks = Quirks.for_spec(spec, rec.sensors)
        return _publish(
            args,
            rec.sensors,
            iter_batches(quirks.filter(rec), args.batch_steps),
            producer_id,
            getattr(rec, "n_rows", None),
            args.file.name,
            getattr(rec, "names", None),
        )
