"""Episode events: one JSON document when an alarm episode opens and one when it closes.

They go to their own topic (``turbine.episodes`` by default, the service's
``episodes_topic``), keyed by turbine like the anomaly events, so a consumer
of one-event-per-anomaly never meets a document of another shape::

    {"event": "episode_closed", "event_id": "episode_closed:42:1767225600.0",
     "episode_id": "42:1767225600.0", "turbine_id": 42, "turbine": 42,
     "start": 1767225600.0, "start_time": "2026-01-01T00:00:00.000Z",
     "end": 1767225900.0, "end_time": "2026-01-01T00:05:00.000Z", "duration_s": 300.0,
     "alarms": 31, "peak_distance2": 210.4, "peak_time": "2026-01-01T00:02:10.000Z",
     "top_sensors": [{"sensor": "vibration", "contribution": 1520.7}, ...],
     "state": "normal", "producer_id": "sim-7", "site": "north",
     "detected_at": 1767225931.2}

``episode_opened`` is sent for the batch holding the episode's first alarm and
carries the episode as it stands at the end of that batch (``end``,
``alarms`` and ``peak_distance2`` so far); ``episode_closed`` carries the
complete episode (see ``pipeline/episodes.py`` for when that is).  Both ids
are deterministic (the turbine and the start), so the duplicates an
at-least-once replay may publish can be dropped.  ``top_sensors`` holds the
(up to) three largest contributions summed over the episode's alarms.
Non-finite numbers are ``null``.
``turbine_id`` is the int64 id and ``turbine`` how to show it, as in the
anomaly events (the integer, or a named turbine's name: ``"R80711"``).
"""

from __future__ import annotations

import json
import math

import numpy as np

from consumers.events import turbine_fields
from pipeline.episodes import TOP_SENSORS, Episodes
from pipeline.names import TurbineNames

OPENED = "episode_opened"
CLOSED = "episode_closed"


def _iso(ts: float) -> str:
    return str(np.datetime64(int(round(ts * 1000)), "ms")) + "Z"


def _number(x: float) -> float | None:
    return x if math.isfinite(x) else None


def render_episode_events(
    episodes: Episodes,
    kind: str,
    *,
    producer_id: str,
    site: str,
    detected_at: float,
    names: TurbineNames | None = None,
) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Episodes (k,) as events of ``kind`` (``episode_opened`` or ``episode_closed``).

    Returns (keys, values, event ids), lists of k bytes; keys are the turbine ids.
    One ``json.dumps`` per episode: episodes are few beside the readings.

    >>> from pipeline.episodes import EpisodeTracker
    >>> tr = EpisodeTracker(("a", "b"), gap=60.0)
    >>> up = tr.update([0.0], [7], [True], [30.0], [[25.0, 5.0]])
    >>> keys, values, ids = render_episode_events(
    ...     up.opened, OPENED, producer_id="p", site="s", detected_at=1.0)
    >>> keys, ids, json.loads(values[0])["top_sensors"][0]
    ([b'7'], [b'episode_opened:7:0.0'], {'sensor': 'a', 'contribution': 25.0})
    """
    if kind not in (OPENED, CLOSED):
        raise ValueError(f"episode event kind {kind!r}")
    if len(episodes) == 0:
        return [], [], []
    contrib = episodes.contributions
    m = min(TOP_SENSORS, contrib.shape[1])
    top = np.argsort(-contrib, axis=1, kind="stable")[:, :m]
    shown = [json.loads(text) for text in turbine_fields(episodes.turbine_ids, names)]
    keys, values, ids = [], [], []
    for i, episode_id in enumerate(episodes.ids()):  # one event per episode
        start, end = float(episodes.starts[i]), float(episodes.ends[i])
        event_id = f"{kind}:{episode_id}"
        doc = {
            "event": kind,
            "event_id": event_id,
            "episode_id": episode_id,
            "turbine_id": int(episodes.turbine_ids[i]),
            "turbine": shown[i],
            "start": start,
            "start_time": _iso(start),
            "end": end,
            "end_time": _iso(end),
            "duration_s": end - start,
            "alarms": int(episodes.alarms[i]),
            "peak_distance2": _number(float(episodes.peak_distances[i])),
            "peak_time": _iso(float(episodes.peak_times[i])),
            "top_sensors": [
                {"sensor": episodes.sensors[j], "contribution": _number(float(contrib[i, j]))}
                for j in top[i].tolist()
            ],
            "state": str(episodes.states[i]),
            "producer_id": producer_id,
            "site": site,
            "detected_at": detected_at,
        }
        keys.append(str(int(episodes.turbine_ids[i])).encode())
        values.append(json.dumps(doc).encode())
        ids.append(event_id.encode())
    return keys, values, ids
