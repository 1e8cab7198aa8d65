"""Prometheus metrics of the detector service, built on a registry passed in.

Naming: one namespace (``turbine_``), ``_total`` on counters, base units
(``_seconds``, ``_bytes``), low-cardinality labels: the ``turbine`` label is
capped at ``max_turbine_labels`` distinct values (then ``other``), the ``site``
label at ``max_site_labels`` (the service's ``max_sites``; then ``other``).  Everything
is updated once per batch, never per reading: per-reading distributions go
through :class:`BulkHistogram`, which bins a whole batch with NumPy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from pipeline.inject import FAULT_KINDS as INJECTED_FAULT_KINDS
from pipeline.names import TurbineNames
from pipeline.simulator import FAULT_KINDS as SIMULATED_FAULT_KINDS

NAMESPACE = "turbine"
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
DISTANCE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 64, 128, 256, 1024, 4096)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30, 60)
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


REBASELINE_REASONS = ("operator", "persistent_alarm")
# Every reason a record can be dead-lettered for (README, "Dead letters"; a test reads the
# sources for any other). Known label values start at 0: a child created on first use
# appears at its first burst's count, which increase() and rate() never see.
DEAD_LETTER_REASONS = (
    "too_large",
    "empty",
    "truncated",
    "bad_magic",
    "shape_mismatch",
    "bad_metadata",
    "bad_json",
    "unknown_schema_version",
    "unknown_content_type",
    "bad_header",
    "bad_timestamp",
    "bad_turbine_id",
    "sensor_mismatch",
    "nan_flood",
    "duplicate",
    "schema",
    "undecodable",
    "internal_error",
    "bad_control",
    "too_many_sites",
    "bad_site",
)
# The fault kinds the anomalies of labelled data are counted under ("none": a reading not
# labelled faulty, "unknown": unlabelled data), those of the simulator and of `turbine inject`.
FAULT_KIND_LABELS = tuple(
    dict.fromkeys(("none", "unknown", *SIMULATED_FAULT_KINDS, *INJECTED_FAULT_KINDS))
)


class BulkHistogram(Collector):
    """A histogram fed a whole array at a time (``np.searchsorted``, no loop).

    >>> reg = CollectorRegistry()
    >>> h = BulkHistogram("demo_seconds", "demo", (1.0, 2.0), reg)
    >>> h.observe_many([0.5, 1.5, 7.0])
    >>> reg.get_sample_value("demo_seconds_bucket", {"le": "2.0"})
    2.0
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(self.bounds.size + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: ArrayLike, times: ArrayLike | None = None) -> None:
        """Observe ``values`` (n,), each ``times`` (n,) times when given (e.g. per record).

        >>> reg = CollectorRegistry()
        >>> h = BulkHistogram("demo_seconds", "demo", (1.0,), reg)
        >>> h.observe_many([0.5, 3.0], times=[10, 2])
        >>> reg.get_sample_value("demo_seconds_count"), reg.get_sample_value("demo_seconds_sum")
        (12.0, 11.0)
        """
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        ok = np.isfinite(v)
        w = None if times is None else np.asarray(times, dtype=np.int64).reshape(-1)[ok]
        v = v[ok]
        if v.size == 0:
            return
        if w is None:
            # Cumulative counts, one vectorised comparison per bound: five times
            # faster than a binary search per value for a dozen bounds.
            at_most = [np.count_nonzero(v <= b) for b in self.bounds.tolist()]
            cumulative = np.asarray([0, *at_most, v.size], dtype=np.int64)
            counts = cumulative[1:] - cumulative[:-1]
            total = float(v.sum())
        else:
            slots = np.searchsorted(self.bounds, v, side="left")
            counts = np.bincount(slots, weights=w, minlength=self.bounds.size + 1).astype(np.int64)
            total = float(v @ w)
        with self._lock:
            self._counts += counts
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        buckets = [
            (repr(float(b)), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)
        ]
        buckets.append(("+Inf", float(cumulative[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class DetectorMetrics:
    """Every metric the detector exports.

    >>> reg = CollectorRegistry()
    >>> m = DetectorMetrics(reg)
    >>> m.count_anomalies(np.array([3, 3, 900]), np.array(["drift", "drift", ""]), labelled=True)
    >>> labels = {"turbine": "3", "fault_kind": "drift", "site": "default"}
    >>> reg.get_sample_value("turbine_anomalies_total", labels)
    2.0
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        max_turbine_labels: int = 200,
        sites: Sequence[str] = ("default",),
        max_site_labels: int = 8,
    ) -> None:
        ns = NAMESPACE
        self.max_turbine_labels = max_turbine_labels
        self._turbine_labels: set[str] = set()
        self.max_site_labels = max(max_site_labels, len(sites))
        self._site_labels: set[str] = set()
        # (turbine as shown, fault kind, site label) -> its child of `anomalies`
        self._anomaly_children: dict[tuple[int | str, str, str], Counter] = {}
        self.readings = Counter(
            "readings", "Readings processed, by site", ["site"], namespace=ns, registry=registry
        )
        self.readings_skipped = Counter(
            "readings_skipped", "Readings skipped as NaN/inf", namespace=ns, registry=registry
        )
        self.batches = Counter("batches", "Batches processed", namespace=ns, registry=registry)
        self.anomalies = Counter(
            "anomalies",
            "Anomalies flagged, by turbine (capped set), labelled fault kind and site",
            ["turbine", "fault_kind", "site"],
            namespace=ns,
            registry=registry,
        )
        self.dead_letters = Counter(
            "dead_letters",
            "Records sent to the dead-letter topic",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        for reason in DEAD_LETTER_REASONS:  # known label values start at 0
            self.dead_letters.labels(reason=reason)
        self.anomalies_by_kind = Counter(
            "anomalies_by_kind",
            "Anomalies flagged, by labelled fault kind (every known kind from 0)",
            ["fault_kind"],
            namespace=ns,
            registry=registry,
        )
        for kind in FAULT_KIND_LABELS:
            self.anomalies_by_kind.labels(fault_kind=kind)
        self.duplicates = Counter(
            "duplicate_batches",
            "Batches dropped as already processed (replays, retries)",
            namespace=ns,
            registry=registry,
        )
        self.events_published = Counter(
            "anomaly_events_published",
            "Anomaly events sent to the anomalies topic",
            namespace=ns,
            registry=registry,
        )
        self.publish_errors = Counter(
            "anomaly_event_errors",
            "Anomaly events or dead letters that failed to send",
            namespace=ns,
            registry=registry,
        )
        self.checkpoints = Counter(
            "checkpoints", "Checkpoints written", namespace=ns, registry=registry
        )
        self.batch_seconds = Histogram(
            "batch_processing_seconds",
            "Engine time per batch (decode to stored)",
            namespace=ns,
            registry=registry,
            buckets=TIME_BUCKETS,
        )
        self.lag_seconds = BulkHistogram(
            f"{ns}_scoring_lag_seconds",
            "Delay from a reading's timestamp to its scoring",
            LAG_BUCKETS,
            registry,
        )
        self.latency_seconds = BulkHistogram(
            f"{ns}_pipeline_latency_seconds",
            "Delay from a record's Kafka timestamp (set by the producer) to its readings' scoring",
            LATENCY_BUCKETS,
            registry,
        )
        self.distance = BulkHistogram(
            f"{ns}_squared_distance",
            "Squared Mahalanobis distance of scored readings",
            DISTANCE_BUCKETS,
            registry,
        )
        self.consumer_lag = Gauge(
            "consumer_lag_records",
            "Records behind the end of each partition",
            ["partition"],
            namespace=ns,
            registry=registry,
        )
        self.model_samples = Gauge(
            "model_samples",
            "Readings learned: fleet model, and least/median per turbine",
            ["model"],
            namespace=ns,
            registry=registry,
        )
        self.turbines = Gauge("turbines", "Turbines known", namespace=ns, registry=registry)
        self.warming_up = Gauge(
            "turbines_warming_up",
            "Turbines whose own model is not yet warm",
            namespace=ns,
            registry=registry,
        )
        self.condition = Gauge(
            "covariance_condition_max",
            "Worst condition number over warm turbine models",
            namespace=ns,
            registry=registry,
        )
        self.last_reading = Gauge(
            "last_reading_timestamp_seconds",
            "Timestamp of the newest reading processed",
            namespace=ns,
            registry=registry,
        )
        self.store_bytes = Gauge(
            "store_bytes", "Anomaly store size on disk", namespace=ns, registry=registry
        )
        self.store_anomalies = Gauge(
            "store_anomalies",
            "Anomalies (CSR non-zeros) in the store, flushed and pending",
            namespace=ns,
            registry=registry,
        )
        self.partitions = Gauge(
            "partitions_owned", "Partitions this detector owns", namespace=ns, registry=registry
        )
        self.rebalances = Counter(
            "consumer_rebalances",
            "Partition assignments this detector received from its consumer group",
            namespace=ns,
            registry=registry,
        )
        self.state_errors = Counter(
            "partition_state_errors",
            "Partition assignments whose checkpoint or store did not load (partition paused)",
            namespace=ns,
            registry=registry,
        )
        self.partitions_paused = Gauge(
            "partitions_paused",
            "Partitions owned but not consumed: their checkpoint or store does not load",
            namespace=ns,
            registry=registry,
        )
        self.partition_rebuilds = Counter(
            "partition_rebuilds",
            "Partitions whose checkpoint was lost while offsets were committed: store kept, "
            "models rebuilt from the earliest retained offset",
            namespace=ns,
            registry=registry,
        )
        self.rebaselines = Counter(
            "rebaselines",
            "Turbine models re-baselined: by an operator's control record, or after a "
            "persistent, steady alarm",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        for reason in REBASELINE_REASONS:  # known label values start at 0 (alerts see a jump)
            self.rebaselines.labels(reason=reason)
        self.readings_in_state = Counter(
            "readings_in_state",
            "Readings in an operating state (learn_when: stopped, curtailed...): neither "
            "learned nor scored, not anomalies",
            ["state"],
            namespace=ns,
            registry=registry,
        )
        self.up_since = Gauge(
            "start_time_seconds", "When this detector started", namespace=ns, registry=registry
        )
        for site in sites:  # the configured sites start at 0: alerts see their first burst
            self.readings.labels(site=self.site_label(site))

    def site_label(self, site: str) -> str:
        if site in self._site_labels:
            return site
        if len(self._site_labels) < self.max_site_labels:
            self._site_labels.add(site)
            return site
        return "other"

    def turbine_label(self, turbine: int | str) -> str:
        key = str(turbine)
        if key in self._turbine_labels:
            return key
        if len(self._turbine_labels) < self.max_turbine_labels:
            self._turbine_labels.add(key)
            return key
        return "other"

    def count_anomalies(
        self,
        turbines: np.ndarray,
        kinds: np.ndarray | None,
        labelled: bool,
        names: TurbineNames | None = None,
        site: str = "default",
    ) -> None:
        """Count a batch's anomalies: turbine ids (k,) and fault kinds (k,) ('' = normal).

        The ``turbine`` label is the turbine's name when ``names`` knows one.
        """
        site = self.site_label(site)
        if turbines.size == 0:
            return
        if kinds is None or not labelled:
            kind_names, codes = ["unknown"], np.zeros(turbines.size, dtype=np.intp)
        else:
            uniq_kinds, codes = np.unique(kinds, return_inverse=True)
            kind_names = ["none" if k == "" else k for k in uniq_kinds.tolist()]
        # (turbine, kind) pairs as small integers: one 1-d unique, no per-reading loop.
        uniq_turbines, which = np.unique(turbines, return_inverse=True)
        pair_codes, counts = np.unique(
            which.ravel() * len(kind_names) + codes.ravel(), return_counts=True
        )
        turbine_list = uniq_turbines.tolist()
        children = self._anomaly_children
        for code, n in zip(pair_codes.tolist(), counts.tolist(), strict=True):  # per label pair
            t, c = divmod(code, len(kind_names))
            shown = turbine_list[t] if names is None else names.name_of(turbine_list[t])
            key = (shown, kind_names[c], site)
            child = children.get(key)
            if child is None:
                label = self.turbine_label(shown)  # decided once: the label set only grows
                child = self.anomalies.labels(turbine=label, fault_kind=kind_names[c], site=site)
                children[key] = child
            child.inc(n)
        for c, n in enumerate(np.bincount(codes.ravel(), minlength=len(kind_names)).tolist()):
            if n:
                self.anomalies_by_kind.labels(fault_kind=kind_names[c]).inc(n)


class ProducerMetrics:
    """Metrics of the producers (simulator, replayer)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        ns = NAMESPACE
        self.readings = Counter(
            "producer_readings_sent", "Readings handed to Kafka", namespace=ns, registry=registry
        )
        self.records = Counter(
            "producer_records_sent", "Records handed to Kafka", namespace=ns, registry=registry
        )
        self.bytes = Counter(
            "producer_sent_bytes", "Record bytes handed to Kafka", namespace=ns, registry=registry
        )
        self.delivered = Counter(
            "producer_records_delivered",
            "Records acknowledged by the broker",
            namespace=ns,
            registry=registry,
        )
        self.errors = Counter(
            "producer_delivery_errors",
            "Records the broker did not acknowledge",
            namespace=ns,
            registry=registry,
        )
        self.last_reading = Gauge(
            "producer_last_reading_timestamp_seconds",
            "Timestamp of the newest reading sent",
            namespace=ns,
            registry=registry,
        )


def serve_metrics(
    registry: CollectorRegistry, address: str | None = None, port: int | None = None
) -> int | None:
    """Serve ``/metrics`` for ``registry`` on address:port (env TURBINE_METRICS_ADDRESS and
    TURBINE_METRICS_PORT when not given); returns the port, None when disabled."""
    import os

    from prometheus_client import start_http_server

    if port is None:
        env = os.environ.get("TURBINE_METRICS_PORT")
        port = int(env) if env else None
    if port is None:
        return None
    addr = address or os.environ.get("TURBINE_METRICS_ADDRESS", "127.0.0.1")
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_port)
