"""A copy of a recording with a fault plan injected (``turbine inject``).

CSV in, CSV out: every line is copied as it is (its columns, its time
format, its turbine names, its unselected columns) except the cells a fault
changed, and two columns are added at the end, ``label`` (0/1) and
``fault_kind`` (or the file's own label and kind columns are updated), so the
options that read the input read the output.  Any other pair of formats (CSV,
``.npz``, Parquet) goes through :class:`RecordingWriter` (an ``.npz`` input
keeps all its sensors).
Missing readings and sentinel values are left as they are.  The output
appears only when complete, and a fault that matches no reading is an error
(a misspelt turbine, a start outside the file) that leaves no output.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.durable import atomic_file
from pipeline.errors import ConfigError, InputError
from pipeline.inject import FaultPlan, Injector
from pipeline.quirks import blank_sentinels, sentinel_table
from pipeline.recordings import CsvRecording, RecordingWriter, read_recording, recording_format
from pipeline.recordings.spec import LABEL_COL, Chunk, RecordingSpec


@dataclass
class InjectReport:
    """What an injection wrote."""

    path: Path
    rows: int = 0
    labelled: int = 0
    per_fault: list[int] = field(default_factory=list)


@dataclass
class Survey:
    """The turbines (names, as the file spells them) and time span of a recording."""

    turbines: list[str]
    since: float
    until: float


def survey(path: str | Path, spec: RecordingSpec) -> Survey:
    """One pass over a recording: its turbines and its first and last times."""
    ids: set[int] = set()
    lo, hi = np.inf, -np.inf
    with read_recording(path, spec) as rec:
        for chunk in rec:
            ids.update(np.unique(chunk.turbine_ids).tolist())
            lo, hi = min(lo, float(chunk.timestamps.min())), max(hi, float(chunk.timestamps.max()))
        names = rec.names.labels(np.array(sorted(ids), dtype=np.int64))
    return Survey(sorted(names), lo, hi)


def inject_file(
    src: str | Path, dst: str | Path, spec: RecordingSpec, plan: FaultPlan
) -> InjectReport:
    """Write ``dst``: ``src`` with ``plan``'s faults injected and labelled."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ConfigError(f"{dst}: the output must not be the input")
    csv_out = dst.suffix.lower() not in (".npz", ".parquet")
    if recording_format(src) == "csv" and csv_out:
        return _rewrite_csv(src, dst, spec, plan)
    return _write_copy(src, dst, spec, plan)


def _columns(spec: RecordingSpec) -> tuple[dict[str, str], tuple[str, ...] | None]:
    pairs = spec.sensors or ()
    return {col: name for col, name in pairs}, tuple(c for c, _ in pairs) if pairs else None


def _check_matched(report: InjectReport, plan: FaultPlan, injector: Injector, path: Path) -> None:
    report.per_fault = injector.labelled.tolist()
    report.labelled = int(injector.labelled.sum())
    for i, k in enumerate(report.per_fault):
        if k == 0:
            raise InputError(
                f"fault {i + 1} ({plan.faults[i].describe()}) matches no reading "
                "(unknown turbine, or outside the file's times)",
                path=str(path),
            )


def _rewrite_csv(src: Path, dst: Path, spec: RecordingSpec, plan: FaultPlan) -> InjectReport:
    rec = CsvRecording(src, spec)
    try:
        aliases, columns = _columns(spec)
        injector = Injector(plan, rec.sensors, aliases)
        sentinels = sentinel_table(spec.sentinels, rec.sensors, columns)
        sep = spec.sep
        names = rec.columns
        label_col = spec.label_col or LABEL_COL
        extra = []
        if rec.label_index is None:
            if label_col in names:
                raise ConfigError(f"{src}: a column is named {label_col!r} already")
            extra.append(label_col)
        if rec.kind_index is None:
            if spec.kind_col in names:
                raise ConfigError(f"{src}: a column is named {spec.kind_col!r} already")
            extra.append(spec.kind_col)
        label_at = rec.label_index if rec.label_index is not None else len(names)
        kind_at = rec.kind_index if rec.kind_index is not None else len(names) + len(extra) - 1
        plain = "".join(sep + ("0" if c == label_col else "") for c in extra)
        report = InjectReport(dst)
        with atomic_file(dst) as raw:
            out = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            out.write(sep.join([*names, *extra]) + "\n")
            for chunk, texts in rec.iter_text():
                clean, _ = blank_sentinels(chunk.values, sentinels)
                values, labels, kinds = injector.apply(chunk.timestamps, chunk.turbine_ids, clean)
                changed = np.isfinite(clean) & (values != clean)
                faulty = np.flatnonzero(labels)
                lines = [t + plain for t in texts]
                for r in faulty.tolist():  # only the faulty lines are taken apart
                    cells = texts[r].split(sep) + [""] * len(extra)
                    for j in np.flatnonzero(changed[r]).tolist():
                        cells[rec.sensor_index[j]] = repr(float(values[r, j]))
                    cells[label_at] = "1"
                    cells[kind_at] = str(kinds[r])
                    lines[r] = sep.join(cells)
                out.write("\n".join(lines) + "\n")
                report.rows += len(chunk)
            out.flush()
            out.detach()
            _check_matched(report, plan, injector, src)
        return report
    finally:
        rec.close()


def _write_copy(src: Path, dst: Path, spec: RecordingSpec, plan: FaultPlan) -> InjectReport:
    aliases, columns = _columns(spec)
    binary_in = recording_format(src) == "npz"
    # An .npz keeps every sensor it has: faults may name the renamed sensors.
    read_spec = spec.model_copy(update={"sensors": None}) if binary_in else spec
    if binary_in:
        aliases = {name: col for col, name in (spec.sensors or ())}
        columns = None
    with read_recording(src, read_spec) as rec:
        injector = Injector(plan, rec.sensors, aliases)
        sentinels = sentinel_table(
            [(aliases.get(k, k), v) for k, v in spec.sentinels] if binary_in else spec.sentinels,
            rec.sensors,
            columns,
        )
        report = InjectReport(dst)
        writer = RecordingWriter(dst, rec.sensors, labels=True, kinds=True, names=rec.names)
        try:
            for chunk in rec:
                clean, _ = blank_sentinels(chunk.values, sentinels)
                values, labels, kinds = injector.apply(chunk.timestamps, chunk.turbine_ids, clean)
                # Missing and sentinel readings are written as they were.
                values = np.where(np.isnan(clean), chunk.values, values)
                writer.write(_labelled(chunk, values, labels, kinds))
                report.rows += len(chunk)
            _check_matched(report, plan, injector, src)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    return report


def _labelled(
    chunk: Chunk, values: NDArray[np.float64], labels: NDArray[np.int8], kinds: NDArray[np.str_]
) -> Chunk:
    """The chunk with injected values, its own labels and kinds kept outside the faults."""
    if chunk.labels is not None:
        labels = np.maximum(labels, chunk.labels)
    if chunk.kinds is not None:
        kinds = np.where(kinds == "", chunk.kinds, kinds)
    return Chunk(chunk.timestamps, chunk.turbine_ids, values, labels, kinds, chunk.lines)
