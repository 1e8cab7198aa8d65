"""SKAB valve1: the steadiness of every window of persistent alarms, by where it falls.

Re-baselining accepts a run of alarms as the new normal when its two halves'
means differ by at most ``rebaseline_steady`` standard deviations of the
model.  Whether any rule of that kind can tell a new normal from a fault is a
question about the windows themselves: here every window of
``rebaseline_after`` seconds (slid by :data:`STEP` seconds) in which alarms
make up ``rebaseline_share`` of the readings, scored by the detector with the
README's SKAB settings and no re-baselining, gets the statistic the test
uses (the windows a run could be: more than D readings in each half, no
pause in the readings beyond the share), and is placed before the labelled
fault, inside it or after it (windows across either end are left out).

The statistic is the one of :meth:`pipeline.rebaseline.RebaselineRuns.settle`
(the Mahalanobis distance between the halves' mean smoothed readings) with
the detector's model after the window's last batch as its yardstick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import solve_triangular

from pipeline.charts import ewma_by_count
from pipeline.config import make_config
from pipeline.detector import Detector
from pipeline.mahalanobis import regularised_cholesky
from pipeline.recordings import Chunk, RecordingSpec, read_recording
from pipeline.results import BatchResult
from pipeline.runner import config_for, run_recording

F64 = NDArray[np.float64]
STEP = 5.0


@dataclass(frozen=True)
class Window:
    """One window of persistent alarms: its file, where it lies, its end and its statistic."""

    name: str
    where: str  # "before", "inside" or "after" the labelled fault
    end: float  # seconds from the fault's start
    steadiness: float


def half_shift(x: F64, t: F64, end: float, span: float, chol: F64) -> float:
    """Mahalanobis distance between the means of the two halves of ``(end - span, end]``.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        Smoothed readings.
    t : ndarray of shape (n,)
    chol : ndarray of shape (D, D)
        Lower Cholesky factor of the yardstick covariance.

    >>> x = np.r_[np.zeros((5, 1)), np.full((5, 1), 2.0)]
    >>> half_shift(x, np.arange(10.0), 9.0, 10.0, np.eye(1))
    2.0
    """
    late = (t > end - span / 2) & (t <= end)
    early = (t > end - span) & (t <= end - span / 2)
    shift = x[late].mean(axis=0) - x[early].mean(axis=0)
    return float(np.linalg.norm(solve_triangular(chol, shift, lower=True)))


def windows(
    path: Path, spec: RecordingSpec, settings: dict[str, object], train_rows: int
) -> list[Window]:
    """The windows of persistent alarms of one file, scored without re-baselining."""
    plain = {k: v for k, v in settings.items() if not k.startswith("rebaseline")}
    cfg = make_config(settings, "bench.skab")
    if cfg.rebaseline_after is None:
        raise ValueError("the settings name no rebaseline_after: no window to measure")
    span = float(cfg.rebaseline_after)
    parts: list[tuple[F64, F64, NDArray[np.bool_], NDArray[np.bool_], NDArray[np.intp]]] = []
    factors: list[F64] = []

    with read_recording(path, spec) as rec:
        det = Detector(config_for(make_config(plain, "bench.skab"), rec.sensors, str(path)))

        def keep(batch: Chunk, result: BatchResult) -> None:
            assert batch.labels is not None  # noqa: S101 (the spec names the label column)
            # The test's yardstick: the model after the batch learned, as at its settle.
            model = det.turbine_model(int(batch.turbine_ids[0]))
            factors.append(regularised_cholesky(model.covariance, cfg.ridge)[0])
            which = np.full(len(batch), len(factors) - 1, dtype=np.intp)
            labels = batch.labels.astype(bool)
            parts.append((batch.timestamps, batch.values, labels, result.is_anomaly, which))

        run_recording(rec, det, None, train_rows=train_rows, on_batch=keep)
    with read_recording(path, spec) as rec:
        head = np.concatenate([c.values for c in rec])[:train_rows]
    t, raw, labels, alarms, batch_of = (np.concatenate(a) for a in zip(*parts, strict=True))
    # The detector's smoothing: one EWMA from the first learned reading on.
    x = ewma_by_count(
        np.zeros(len(head) + len(raw), dtype=np.intp),
        np.ascontiguousarray(np.concatenate((head, raw)).T),
        cfg.mewma_lambda,
        np.zeros((1, raw.shape[1])),
        np.zeros(1, dtype=bool),
    ).T[train_rows:]
    start, stop = t[labels][0], t[labels][-1]
    pause = (1 - cfg.rebaseline_share) * span
    out = []
    for end in np.arange(t[0] + span, t[-1] + 1e-9, STEP):
        inside = (t > end - span) & (t <= end)
        late = np.count_nonzero(inside & (t > end - span / 2))
        early = np.count_nonzero(inside) - late
        # As the test's runs: persistent, more than D readings a half, no pause beyond the share.
        if (
            min(early, late) <= x.shape[1]
            or np.diff(t[inside]).max() > pause
            or alarms[inside].mean() < cfg.rebaseline_share
        ):
            continue
        if end <= start:
            where = "before"
        elif end - span >= start and end <= stop:
            where = "inside"
        elif end - span >= stop:
            where = "after"
        else:
            continue
        chol = factors[int(batch_of[np.flatnonzero(inside)[-1]])]
        out.append(Window(path.stem, where, end - start, half_shift(x, t, end, span, chol)))
    return out


def steadiness_lines(found: list[Window], tolerance: float, span: str) -> list[str]:
    """The report's section: the statistic's spread by where the windows lie."""
    lines = [
        "## Steadiness of every window of persistent alarms",
        "",
        f"Every {span} window (slid by {STEP:g} s) that a run could be (alarms on the share "
        "above of its readings, more than D readings a half, no longer pause), scored without "
        "re-baselining, with the statistic of the steadiness test and the detector's model "
        "of the time as its yardstick (`bench/skab_steadiness.py`).",
        "",
        f"| windows | number | files | smallest | median | at most {tolerance:g} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for where in ("before", "inside", "after"):
        w = [f for f in found if f.where == where]
        s = np.array([f.steadiness for f in w])
        if not w:
            lines.append(f"| {where} the fault | 0 | 0 | - | - | 0 |")
            continue
        lines.append(
            f"| {where} the fault | {len(w)} | {len({f.name for f in w})} | {s.min():.2f} "
            f"| {np.median(s):.2f} | {int(np.count_nonzero(s <= tolerance))} |"
        )
    inside = [f.steadiness for f in found if f.where == "inside"]
    after = [f for f in found if f.where == "after"]
    calmer = [f for f in after if inside and f.steadiness < min(inside)]
    if calmer:
        f = min(calmer, key=lambda w: w.end)
        lines += [
            "",
            f"A tolerance below every window inside a fault (smallest {min(inside):.2f}) "
            f"accepts no window after a fault before the one that ends {f.end:.0f} s after "
            f"file {f.name}'s fault began, whether the runs slide or not.",
        ]
    return lines
