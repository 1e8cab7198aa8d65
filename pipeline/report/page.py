"""The report's HTML page, and ``write_report`` that puts everything together."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pipeline.config import DetectorConfig
from pipeline.detector import Detector
from pipeline.durable import atomic_file
from pipeline.episodes import Episodes, own_episode_starts
from pipeline.errors import ConfigError
from pipeline.evaluation import Confusion
from pipeline.names import TurbineNames
from pipeline.recordings import RecordingSpec
from pipeline.report.common import (
    CONTRIBUTIONS,
    CORRELATION,
    F64,
    HEATMAP,
    TIMELINE,
    ReportOptions,
    iso,
    worst,
)
from pipeline.report.data import (
    FaultKinds,
    FleetSummary,
    bucket_name,
    load_model,
    open_stores,
    recorded_config,
    rescore,
    stored_series,
    summarise,
)
from pipeline.report.figures import (
    _save,
    contributions_figure,
    correlation_figure,
    heatmap_figure,
    timeline_figure,
)
from pipeline.runner import DEFAULT_BATCH_STEPS, RunReport
from pipeline.similarity import SeenBefore
from pipeline.store import Anomalies, AnomalyStore, episodes_in_progress


@dataclass
class Report:
    """What :func:`write_report` wrote."""

    index: Path
    figures: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Start of each worst event's own episode, left out of its "seen before" matches.
    own_episodes: F64 = field(default_factory=lambda: np.zeros(0))


def _pointing_the_same_way(matches: Anomalies, sim: F64) -> tuple[Anomalies, F64]:
    """The matches with a positive cosine similarity (the others point elsewhere)."""
    keep = np.flatnonzero(sim > 0)
    return matches.select(keep), sim[keep]


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    if header is None:
        body = "".join(
            f"<tr><th>{html.escape(str(row[0]))}</th>"
            + "".join(f"<td>{html.escape(str(c))}</td>" for c in row[1:])
            + "</tr>"
            for row in rows
        )
        return f"<table><tbody>{body}</tbody></table>"
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# A figure that fails to load says so in the browser's console; one that loads is marked.
_IMG_EVENTS = (
    "onload=\"this.dataset.loaded='yes'\" "
    "onerror=\"this.dataset.loaded='no'; console.error('figure failed to load: ' + this.src)\""
)


def _figure(name: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(alt)}" {_IMG_EVENTS}>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


CONTRIBUTIONS_NOTE = (
    "Contributions are signed shares of d\u00b2: each event's shares add up to its d\u00b2 "
    "(column 'sum of shares'). One share can exceed d\u00b2 and another be negative when "
    "correlated sensors deviate against their usual relation: the negative share is the part "
    "of one sensor's deviation that the other's explains."
)


def event_id_note(ids: Sequence[str]) -> str:
    """What an event id ``partition:offset:row`` means, said for the ids on the page.

    >>> "-1 is an embedded run" in event_id_note(["-1:4:0"])
    True
    """
    note = (
        "Event ids are partition:offset:row: the Kafka partition the readings came from, the "
        "offset of their record in it, and the reading's row in that record. "
    )
    if any(i.startswith("-1:") for i in ids):
        note += (
            "Partition -1 is an embedded run (turbine detect --input, no Kafka): its offset is "
            "the engine batch, counted from 0, and the row the reading's place in the batch. "
        )
    return note + (
        "turbine anomalies STORE --similar-to ID finds one; Kafka events carry the same id "
        "after their topic (topic:partition:offset:row)."
    )


def _top_sensors(contrib: F64, sensors: tuple[str, ...], n: int = 2) -> str:
    order = np.argsort(-contrib, kind="stable")[:n]
    return ", ".join(f"{sensors[j]} {contrib[j]:+.1f}" for j in order.tolist())


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


FAULT_DEFINITION = (
    "A fault is a labelled run: consecutive labelled readings of one turbine, as "
    "turbine simulate and turbine evaluate count them; its kind is that of its first reading."
)


def evaluation_rows(c: Confusion) -> list[tuple[str, str]]:
    """The evaluation table's rows, as ``turbine evaluate`` prints them, then per fault kind.

    >>> evaluation_rows(Confusion(tp=8, fp=2, fn=2, tn=88))[:3]
    [('precision', '0.800'), ('recall', '0.800'), ('F1 (SKAB)', '0.800')]
    >>> evaluation_rows(Confusion(fault_kinds=(("drift", True), ("spike", False))))[-2:]
    [('faults detected: drift', '1 of 1'), ('faults detected: spike', '0 of 1')]
    """
    faults = len(c.delays) + c.missed_faults
    return [
        ("precision", _fmt(c.precision)),
        ("recall", _fmt(c.recall)),
        ("F1 (SKAB)", _fmt(c.f1)),
        ("FAR (% of normal readings flagged)", _fmt(c.far, 2)),
        ("MAR (% of faulty readings missed)", _fmt(c.mar, 2)),
        ("mean detection delay (s)", _fmt(c.mean_delay, 1)),
        ("faults detected", f"{faults - c.missed_faults} of {faults}"),
        ("TP / FP / FN / TN", f"{c.tp:,} / {c.fp:,} / {c.fn:,} / {c.tn:,}"),
    ] + [
        (f"faults detected: {kind}", f"{hit} of {total}")
        for kind, (hit, total) in c.by_kind().items()
        if kind
    ]


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f0f0f0; } .note { color: #555; } .warn { color: #a00; font-weight: bold; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


def write_report(
    store: str | Path,
    output: str | Path,
    input_path: str | Path | None = None,
    spec: RecordingSpec | None = None,
    batch_steps: int | None = None,
    checkpoint_dir: str | Path | None = None,
    options: ReportOptions | None = None,
    site: str = "default",
) -> Report:
    """Write ``OUTPUT/index.html`` and its PNG figures for the store under ``store``.

    Parameters
    ----------
    store : path
        One store, or a directory of ``partition-*`` stores.
    output : path
        Created if missing; the report's files are replaced.
    input_path : path, optional
        The recorded file the store was written from: re-scored to draw
        every reading's distance (and labels, and the evaluation table).
    spec : RecordingSpec, optional
        How to read ``input_path``.
    batch_steps : int, optional
        Time steps per engine batch; default the manifest's, else 10.
    checkpoint_dir : path, optional
        The Kafka detectors' checkpoints (default ``STORE/checkpoints``).
    site : str
        The site whose part of the checkpoints is read (``store`` is then that
        site's stores, ``STORE/sites/NAME``, and ``checkpoint_dir`` is given).
    """
    opts = options or ReportOptions()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    stores = open_stores(store)
    summary = summarise(stores, opts)
    model = load_model(store, checkpoint_dir, site)
    names = TurbineNames()
    for st in stores:
        names.merge(st.names)
    if model is not None:
        names.merge(model.names)
    report = Report(index=out / "index.html")
    notes = report.notes
    worst_ids = worst(summary.turbines, summary.counts, opts.worst_turbines)
    count_of = dict(zip(summary.turbines.tolist(), summary.counts.tolist(), strict=True))
    config: DetectorConfig | None = None
    try:
        config = recorded_config(stores, model)
    except ConfigError:
        if input_path is not None:
            raise
    statistic = statistic_name(config)
    threshold = float(summary.thresholds.max()) if summary.thresholds.size else math.nan
    # A Kafka detector's episodes still in progress are in its checkpoints, drawn as they stand.
    ongoing = episodes_in_progress(store, checkpoint_dir=checkpoint_dir, site=site)
    episodes = Episodes.concat(
        [*(st.episodes() for st in stores), ongoing], summary.sensors
    ).chronological()

    # 1. timelines
    run: RunReport | None = None
    kinds: FaultKinds | None = None
    if input_path is not None and config is not None:
        steps = batch_steps or next(
            (s.batch_steps for s in stores if s.batch_steps), DEFAULT_BATCH_STEPS
        )
        train_rows = next((s.train_rows for s in stores if s.train_rows), 0)
        run, series, kinds = rescore(
            input_path,
            spec or RecordingSpec(),
            config,
            steps,
            worst_ids,
            summary.sensors,
            train_rows,
        )
        if math.isfinite(run.threshold):
            threshold = run.threshold
        if run.anomalies != summary.anomalies:
            notes.append(
                f"warning: re-scoring {input_path} gives {run.anomalies:,} anomalies, the "
                f"store holds {summary.anomalies:,}: the input may not be the file the store "
                "was written from (or not all of it, or a different batch size)."
            )
    else:
        series = stored_series(stores, worst_ids)
    if series:
        fig = timeline_figure(
            series,
            count_of,
            threshold,
            run is not None,
            statistic,
            opts.max_points,
            None if run is not None else (float(summary.edges[0]), float(summary.edges[-1])),
            episodes=episodes,
            names=names,
        )
        report.figures[TIMELINE] = _save(fig, out / TIMELINE, opts.dpi)

    # 2. heatmap
    if summary.anomalies:
        fig = heatmap_figure(summary, opts.heatmap_turbines, names)
        report.figures[HEATMAP] = _save(fig, out / HEATMAP, opts.dpi)

    # 3. contributions and seen before
    similar: list[tuple[Anomalies, F64]] = []
    if len(summary.top):
        fig = contributions_figure(summary.top, names=names)
        report.figures[CONTRIBUTIONS] = _save(fig, out / CONTRIBUTIONS, opts.dpi)
        gap = config.episode_gap if config is not None else DetectorConfig().episode_gap
        own = own_episode_starts(episodes, summary.top.turbine_ids, summary.top.timestamps, gap)
        seen = SeenBefore(
            summary.top.contributions,
            opts.similar,
            summary.top.timestamps,
            own=(summary.top.turbine_ids, own),
        )
        latest = float(summary.top.timestamps.max())
        for st in stores:
            for chunk in st.iter_matrices(until=latest):
                seen.update(chunk)
        similar = [_pointing_the_same_way(*seen.matches(i)) for i in range(len(summary.top))]
        report.own_episodes = own

    # 5. correlation
    if model is not None:
        fig_c = correlation_figure(model, opts.correlation_groups)
        if fig_c is not None:
            report.figures[CORRELATION] = _save(fig_c, out / CORRELATION, opts.dpi)

    page = _page(
        store,
        input_path,
        stores,
        summary,
        config,
        run,
        report,
        similar,
        model,
        opts,
        names,
        episodes,
        kinds if kinds is not None and kinds.seen else None,
    )
    with atomic_file(report.index) as f:
        f.write(page.encode("utf-8"))
    return report


def _page(
    store: str | Path,
    input_path: str | Path | None,
    stores: Sequence[AnomalyStore],
    summary: FleetSummary,
    config: DetectorConfig | None,
    run: RunReport | None,
    report: Report,
    similar: list[tuple[Anomalies, F64]],
    model: Detector | None,
    opts: ReportOptions,
    names: TurbineNames | None = None,
    episodes: Episodes | None = None,
    kinds: FaultKinds | None = None,
) -> str:
    esc = html.escape
    name_of = (names or TurbineNames()).name_of
    if episodes is None:
        episodes = Episodes.empty(summary.sensors)
    parts: list[str] = []
    add = parts.append
    add("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>")
    add(f"<title>Anomaly report: {esc(str(store))}</title><style>{_CSS}</style></head><body>")
    add("<h1>Anomaly report</h1>")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    add(f"<p class='note'>store <code>{esc(str(store))}</code>, generated {generated}</p>")
    source = config.recording.attribution if config and config.recording else None
    if run is not None and run.attribution:
        source = run.attribution
    if source:
        add(f"<p class='note'>Data: {esc(source)}</p>")
    for note in report.notes:
        add(f"<p class='warn'>{esc(note)}</p>")
    t0, t1 = float(summary.edges[0]), float(summary.edges[-1])
    facts: list[tuple[str, object]] = [
        ("stores", f"{len(stores)} ({'partitioned' if len(stores) > 1 else 'one store'})"),
        ("chunks", summary.chunks),
        ("readings scored", f"{summary.readings:,}"),
        ("anomalies", f"{summary.anomalies:,}"),
        ("alarm episodes", f"{len(episodes):,}"),
        ("turbines with anomalies", f"{int(np.count_nonzero(summary.counts)):,}"),
        ("sensors", ", ".join(summary.sensors)),
    ]
    if names is not None and len(names):
        facts.append(("turbine names", ", ".join(n for _, n in names.items())))
    if summary.invalid_times:
        facts.append(
            (
                "anomalies not drawn",
                f"{summary.invalid_times:,} with a timestamp no date can show "
                "(listed as invalid:... by turbine anomalies)",
            )
        )
    if run is not None:
        q = run.quirks
        sentinel = ", ".join(f"{s} {k:,}" for s, k in sorted(q.sentinel.items()))
        facts.append(
            (
                "data quirks (input)",
                f"{q.duplicate:,} duplicate readings dropped, {q.out_of_order:,} out of order "
                f"dropped, {q.sentinels:,} sentinel values read as missing"
                + (f" ({sentinel})" if sentinel else ""),
            )
        )
    if summary.anomalies:
        facts.append(("time range of the anomalies", f"{iso(t0)} to {iso(t1)} UTC"))
    if summary.thresholds.size:
        facts.append(("threshold", ", ".join(f"{x:.3f}" for x in summary.thresholds.tolist())))
    if config is not None:
        shown = {
            k: v
            for k, v in json.loads(config.model_dump_json()).items()
            if k
            in (
                "chart",
                "mewma_lambda",
                "false_alarm_rate",
                "min_samples",
                "key_groups",
                "per_turbine",
                "memory",
            )
        }
        facts.append(
            (
                "detector configuration",
                ", ".join(f"{k} {v}" for k, v in shown.items() if v is not None),
            )
        )
    if input_path is not None and run is not None:
        facts.append(
            (
                "input re-scored",
                f"{input_path}: {run.readings:,} readings, {run.anomalies:,} anomalies",
            )
        )
    add("<h2>Summary</h2>" + _table(None, facts))

    add("<h2>1. Turbines with the most anomalies</h2>")
    if TIMELINE in report.figures:
        if run is not None:
            caption = (
                "Every scored reading's distance (line, log scale) against the threshold "
                "(dashed); anomalies in red"
                + (", labelled faults shaded" if run.confusion is not None else "")
                + (", each with its fault kind" if kinds is not None else "")
                + f". Re-scored from {input_path} with the store's configuration."
            )
        else:
            caption = (
                "The stored anomalies' distances (log scale) against the threshold (dashed). "
                "Pass --input FILE to draw every reading and the labelled faults."
            )
        if len(episodes):
            caption += " Green bars along the top: alarm episodes (section 6)."
        add(_figure(TIMELINE, "distance timelines of the worst turbines", caption))
    else:
        add("<p class='note'>No anomalies in the store.</p>")

    add("<h2>2. Fleet heatmap</h2>")
    if HEATMAP in report.figures:
        add(
            _figure(
                HEATMAP,
                "heatmap of anomaly counts per turbine and time bucket",
                f"Anomalies per turbine and {bucket_name(summary.bucket)} bucket (UTC clock "
                "intervals); blank cells have none.",
            )
        )
    else:
        add("<p class='note'>No anomalies in the store.</p>")

    add("<h2>3. Worst events and what they looked like before</h2>")
    if CONTRIBUTIONS in report.figures:
        add(
            _figure(
                CONTRIBUTIONS,
                "per-sensor contributions of the worst events",
                "The largest anomaly of each of the worst turbines: each sensor's share of its "
                "squared distance (red adds, blue subtracts).",
            )
        )
        add(f"<p class='note contributions'>{esc(CONTRIBUTIONS_NOTE)}</p>")
        top = summary.top
        ids = top.event_ids()
        rows: list[tuple[object, ...]] = [
            (
                ids[i],
                iso(float(top.timestamps[i])),
                name_of(int(top.turbine_ids[i])),
                f"{float(top.distances[i]):,.1f}",
                _top_sensors(top.contributions[i], top.sensors),
                f"{float(top.contributions[i].sum()):,.1f}",
            )
            for i in range(len(top))  # a few events
        ]
        header: tuple[str, ...] = ("event", "time (UTC)", "turbine", statistic_name(config))
        header += ("top sensors", "sum of shares")
        if kinds is not None:
            header += ("fault kind",)
            rows = [
                (*row, kind or "none")
                for row, kind in zip(rows, kinds.at(top.turbine_ids, top.timestamps), strict=True)
            ]
        add(_table(header, rows))
        add(f"<p class='note event-ids'>{esc(event_id_note(ids))}</p>")
        add(
            "<h3>Seen before</h3><p class='note'>For each event, the earlier anomalies "
            "whose per-sensor contributions point the same way (cosine similarity above 0), "
            "leaving out the event's own episode: its turbine's alarms less than "
            "<code>episode_gap</code> apart, which are the same fault seconds earlier "
            f"(<code>turbine anomalies STORE --similar-to EVENT --top {opts.similar}</code> "
            "lists those too).</p>"
        )
        for i, (matches, sim) in enumerate(similar):
            add(f"<h4>{esc(ids[i])} (turbine {esc(name_of(int(top.turbine_ids[i])))})</h4>")
            if len(matches) == 0:
                since = iso(float(report.own_episodes[i])) if report.own_episodes.size else "?"
                add(
                    "<p class='note seen-none'>Nothing else similar: no earlier anomaly outside "
                    f"this event's own episode (turbine {esc(name_of(int(top.turbine_ids[i])))} "
                    f"since {esc(since)} UTC) points the same way.</p>"
                )
                continue
            mids = matches.event_ids()
            m_rows: list[tuple[object, ...]] = [
                (
                    f"{float(sim[j]):.4f}",
                    mids[j],
                    iso(float(matches.timestamps[j])),
                    name_of(int(matches.turbine_ids[j])),
                    f"{float(matches.distances[j]):,.1f}",
                    _top_sensors(matches.contributions[j], matches.sensors),
                )
                for j in range(len(matches))  # at most k rows
            ]
            m_head: tuple[str, ...] = ("similarity", "event", "time (UTC)", "turbine", "d\u00b2")
            m_head += ("top sensors",)
            if kinds is not None:
                m_head += ("fault kind",)
                found = kinds.at(matches.turbine_ids, matches.timestamps)
                m_rows = [(*row, k or "none") for row, k in zip(m_rows, found, strict=True)]
            add(_table(m_head, m_rows))
    else:
        add("<p class='note'>No anomalies in the store.</p>")

    add("<h2>4. Evaluation against the labels</h2>")
    if run is not None and run.confusion is not None:
        add(_table(("score", "value"), evaluation_rows(run.confusion)))
        add(
            "<p class='note'>Point-wise, as <code>turbine evaluate</code> (SKAB's "
            f"definitions), over the re-scored input. {esc(FAULT_DEFINITION)}</p>"
        )
    elif run is not None:
        add("<p class='note'>The input has no label column (set --label-col).</p>")
    else:
        add("<p class='note'>Pass --input FILE with labels to score the anomalies.</p>")

    add("<h2>5. Model correlations per turbine group</h2>")
    if CORRELATION in report.figures:
        add(
            _figure(
                CORRELATION,
                "correlation matrices of the key groups' fleet models",
                "What each group's model has learned: a fault that breaks one of these "
                "correlations is what a per-sensor threshold cannot see.",
            )
        )
    elif model is None:
        add(
            "<p class='note'>No model state: neither STORE/model.npz (written by "
            "<code>turbine detect --input</code>) nor Kafka checkpoints.</p>"
        )
    else:
        add("<p class='note'>The models have not learned enough readings yet.</p>")
    add("<h2>6. Alarm episodes</h2>")
    add(episode_section(episodes, config, opts.top_events * 2, names, kinds))
    add("</body></html>\n")
    return "\n".join(parts)


def episode_section(
    episodes: Episodes,
    config: DetectorConfig | None,
    n: int,
    names: TurbineNames | None = None,
    kinds: FaultKinds | None = None,
) -> str:
    """The longest episodes as a table (``turbine anomalies STORE --episodes`` lists all)."""
    if len(episodes) == 0:
        return "<p class='note'>No alarm episodes in the store.</p>"
    gap = config.episode_gap if config is not None else None
    longest = episodes.select(np.argsort(-episodes.durations, kind="stable")[:n])
    top = longest.top_sensors()
    rows: list[tuple[object, ...]] = [
        (
            (names or TurbineNames()).name_of(int(longest.turbine_ids[i])),
            iso(float(longest.starts[i])),
            iso(float(longest.ends[i])),
            _duration(float(longest.durations[i])),
            int(longest.alarms[i]),
            f"{float(longest.peak_distances[i]):,.1f}",
            ", ".join(top[i]),
            str(longest.states[i]),
        )
        for i in range(len(longest))  # at most n rows
    ]
    intro = (
        f"<p class='note'>{len(episodes):,} episodes: a turbine's alarms less than "
        + (f"{gap:g} s" if gap is not None else "the configured gap")
        + " apart count as one (<code>episode_gap</code>). The longest "
        f"{len(longest)}; <code>turbine anomalies STORE --episodes</code> lists them all.</p>"
    )
    header: tuple[str, ...] = (
        "turbine",
        "start (UTC)",
        "end (UTC)",
        "duration",
        "alarms",
        "peak",
        "top sensors",
        "state",
    )
    if kinds is not None:
        header += ("fault kinds",)
        found = kinds.during(longest.turbine_ids, longest.starts, longest.ends)
        rows = [(*row, k or "none") for row, k in zip(rows, found, strict=True)]
    return intro + _table(header, rows)


def _duration(seconds: float) -> str:
    """A duration for people.

    >>> _duration(42.0), _duration(5400.0), _duration(200000.0)
    ('42 s', '1.5 h', '2.3 d')
    """
    if seconds < 3600:
        return f"{seconds:.0f} s"
    if seconds < 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"


def statistic_name(config: DetectorConfig | None) -> str:
    """Column title of the anomaly statistic.

    >>> statistic_name(None)
    'd²'
    """
    return "MEWMA statistic" if config is not None and config.chart == "mewma" else "d\u00b2"
