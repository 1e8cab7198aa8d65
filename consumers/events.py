"""Anomaly events: one JSON document per anomaly, rendered for a whole batch at once.

An event (the anomalies topic's value, content type ``application/json``)::

    {"event_id": "turbine.readings:3:1050:17", "turbine_id": 42, "turbine": 42,
     "timestamp": 1767225600.0, "time": "2026-01-01T00:00:00.000Z",
     "distance2": 31.2, "threshold": 18.47, "model": "turbine",
     "top_sensors": [{"sensor": "vibration", "contribution": 20.1}, ...],
     "fault_kind": "spike", "producer_id": "sim-7", "site": "north",
     "produced_at": 1767225600.01, "detected_at": 1767225600.03}

``turbine_id`` is the turbine's int64 id; ``turbine`` is how to show it: the
same JSON integer for a turbine known by an integer id, its name as a JSON
string for a named one (``"R80711"``; its id is ``pipeline.names.turbine_id``).
``event_id`` is ``topic:partition:offset:row`` of the reading: deterministic,
so a consumer drops the duplicates an at-least-once replay may publish.
``distance2`` is the squared Mahalanobis distance (or MEWMA statistic) and
``threshold`` its alarm level; ``model`` says which model scored the reading
(``turbine``, or ``fleet``: its key group's model, for a turbine still
warming up or with per-turbine models turned off);
``top_sensors`` holds the (up to) three largest per-sensor shares of
``distance2``; ``fault_kind`` is the producer's label (``null``: none).
``produced_at`` is the Kafka timestamp of the record that carried the
reading and ``detected_at`` when its batch was scored (latency tracing).
Numbers that are not finite are written as ``null`` (strict JSON).

With ``event_records = "batch"`` (``TURBINE_EVENT_RECORDS=batch``) the
same events travel as one record per engine batch and anomalies-topic
partition: the value is the events one per line (JSON Lines, content type
``application/x-ndjson``), in the order they would have been sent, and a
turbine's events still all go to its key's partition, so per-turbine order
holds.  The record has no key; its headers carry ``event-count`` and the
first and last event ids.  :func:`read_events` reads either shape.

Why not ``json.dumps`` of a dict per event: at the simulator's default fault
rate the events dominate the detector's time, and filling one ``%`` template
per event from columns converted once per batch is several times cheaper.
``tests/test_events.py`` checks the result against ``json.dumps``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from pipeline.detector import BatchResult
from pipeline.names import TurbineNames

TOP_SENSORS = 3
EVENT_TYPE = "application/json"
EVENTS_TYPE = "application/x-ndjson"  # one record of many events, one per line
_HEAD = (
    '{"event_id":%s%s","turbine_id":%s,"turbine":%s,"timestamp":%s,"time":"%sZ","distance2":%s,'
    '"threshold":%s,"model":"%s","top_sensors":['
)
_TAIL = '],"fault_kind":%s,"producer_id":%s,"site":%s,"produced_at":%s,"detected_at":%s}'
_TOP = "%s%s}"  # '{"sensor":NAME,"contribution":' and the share


def _template(m: int) -> str:
    """The %-template of one event with ``m`` top sensors (two fields each)."""
    return _HEAD + ",".join([_TOP] * m) + _TAIL


def json_numbers(values: NDArray[np.float64]) -> list[str]:
    """JSON texts of floats, as ``json.dumps`` writes them; ``null`` where not finite.

    Parameters
    ----------
    values : ndarray of shape (n,)
    """
    texts = list(map(repr, np.asarray(values, dtype=np.float64).tolist()))
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        texts[i] = "null"
    return texts


def render_events(
    result: BatchResult,
    *,
    sensors: Sequence[str],
    topic: str,
    partition: int,
    offsets: NDArray[np.int64],
    rows: NDArray[np.int64],
    produced: NDArray[np.float64],
    kinds: NDArray[np.str_] | None,
    producer_id: str,
    site: str,
    detected_at: float,
    names: TurbineNames | None = None,
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The anomalies of one engine batch as events: (keys, values, event ids).

    Parameters
    ----------
    result : BatchResult
        The engine's result; its ``anomaly_index`` (k,) picks the events.
    sensors : sequence of str, length D
    topic, partition : the readings' topic and partition (the event ids).
    offsets : ndarray of shape (n,)
        Kafka offset of the record that carried each reading of the batch.
    rows : ndarray of shape (n,)
        Each reading's row within its record.
    produced : ndarray of shape (n,)
        Kafka timestamp (seconds) of each reading's record.
    kinds : ndarray of shape (n,) of str, optional
        Labelled fault kind per reading ('' for none).
    producer_id, site : str
        From the batch's metadata.
    detected_at : float
        Seconds since the epoch, the same for every event of the batch.
    names : TurbineNames, optional
        The names of named turbines (the ``turbine`` field).

    Returns
    -------
    keys, values, ids : lists of k bytes
        Keys are the turbine ids (events of a turbine stay in order).
    """
    hit = result.anomaly_index
    k = int(hit.size)
    if k == 0:
        return [], [], []
    contrib = result.contributions  # (k, D)
    m = min(TOP_SENSORS, contrib.shape[1])
    top = np.argsort(-contrib, axis=1, kind="stable")[:, :m]  # (k, m)
    stamps = result.timestamps[hit]
    # Every float of the batch's events in one pass: m top shares per event (column by
    # column), then the timestamps, distances and record times, then the two scalars.
    numbers = json_numbers(
        np.concatenate(
            [
                contrib[np.arange(k)[:, None], top].T.ravel(),
                stamps,
                result.distances[hit],
                produced[hit],
                [result.threshold, detected_at],
            ]
        )
    )
    threshold, detected = numbers[-2:]
    stamp_texts = numbers[m * k : (m + 1) * k]
    distances = numbers[(m + 1) * k : (m + 2) * k]
    sent = numbers[(m + 2) * k : (m + 3) * k]
    opening = [f'{{"sensor":{json.dumps(name)},"contribution":' for name in sensors]
    tops: list[list[str]] = []
    for c in range(m):  # per top slot: the sensor's opening, then its share
        tops.append([opening[t] for t in top[:, c].tolist()])
        tops.append(numbers[c * k : (c + 1) * k])
    times = np.datetime_as_string(np.round(stamps * 1000).astype("datetime64[ms]"), unit="ms")
    turbines = result.turbine_ids[hit].tolist()
    shown = turbine_fields(result.turbine_ids[hit], names)
    models = np.where(result.scored_by[hit] == 1, "turbine", "fleet").tolist()
    if kinds is None:
        faults = ["null"] * k
    else:
        kind_list = kinds[hit].tolist()
        quoted = {kind: json.dumps(kind) if kind else "null" for kind in set(kind_list)}
        faults = [quoted[kind] for kind in kind_list]
    prefix = json.dumps(f"{topic}:{partition}:")[:-1]  # the opening quote, no closing one
    id_tails = [f"{o}:{r}" for o, r in zip(offsets[hit].tolist(), rows[hit].tolist(), strict=True)]
    producer, site_json = json.dumps(producer_id), json.dumps(site)
    template = _template(m)
    values = [
        (
            template
            % (prefix, *first, threshold, *shares, fault, producer, site_json, sent_, detected)
        ).encode()
        for *first, shares, fault, sent_ in zip(
            id_tails,
            turbines,
            shown,
            stamp_texts,
            times.tolist(),
            distances,
            zip(models, *tops, strict=True),  # the model, then the top sensors' fields
            faults,
            sent,
            strict=True,
        )
    ]
    keys = [str(t).encode() for t in turbines]
    id_head = f"{topic}:{partition}:"
    ids = [(id_head + tail).encode() for tail in id_tails]
    return keys, values, ids


def turbine_fields(ids: NDArray[np.int64], names: TurbineNames | None) -> list[str]:
    """JSON texts of the ``turbine`` field: the integer id, or a named turbine's name.

    Parameters
    ----------
    ids : ndarray of shape (k,)

    >>> names = TurbineNames()
    >>> turbine_fields(names.ids_of(["R80711", "7"]), names)
    ['"R80711"', '7']
    """
    if names is None or not len(names):
        return [str(t) for t in ids.tolist()]
    uniq, inverse = np.unique(ids, return_inverse=True)
    texts = [json.dumps(names.name_of(t)) if t in names else str(t) for t in uniq.tolist()]
    return [texts[i] for i in inverse.ravel().tolist()]


def batched(
    values: Sequence[bytes], ids: Sequence[bytes], partitions: Sequence[int]
) -> list[tuple[int, bytes, list[tuple[str, bytes]]]]:
    """Events as one record per destination partition: (partition, value, headers).

    A partition's events keep their order; partitions come in the order of
    their first event.  ``values``, ``ids`` and ``partitions`` are parallel
    (one per event, as :func:`render_events` and the key's partition give them).

    >>> records = batched([b'{"a":1}', b'{"a":2}', b'{"a":3}'], [b"x", b"y", b"z"], [1, 0, 1])
    >>> [(p, v) for p, v, _ in records]
    [(1, b'{"a":1}\\n{"a":3}'), (0, b'{"a":2}')]
    """
    groups: dict[int, list[int]] = {}
    for i, part in enumerate(partitions):
        groups.setdefault(part, []).append(i)
    out = []
    for part, members in groups.items():
        headers = [
            ("content-type", EVENTS_TYPE.encode()),
            ("event-count", str(len(members)).encode()),
            ("first-event-id", ids[members[0]]),
            ("last-event-id", ids[members[-1]]),
        ]
        out.append((part, b"\n".join(values[i] for i in members), headers))
    return out


def read_events(value: bytes, content_type: str | None) -> list[dict[str, object]]:
    """The events of one anomalies-topic record, whichever shape it has.

    ``content_type`` is the record's ``content-type`` header (None: one event).
    Raises ValueError on a value that is not events.

    >>> read_events(b'{"event_id":"t:0:1:2"}\\n{"event_id":"t:0:1:3"}', EVENTS_TYPE)
    [{'event_id': 't:0:1:2'}, {'event_id': 't:0:1:3'}]
    """
    lines = value.split(b"\n") if content_type == EVENTS_TYPE else [value]
    events = [json.loads(line) for line in lines if line]
    if not all(isinstance(e, dict) for e in events):
        raise ValueError("an anomalies-topic record holds JSON objects")
    return events
