"""The report's figures, drawn on matplotlib's Agg canvas (headless, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.detector import Detector
from pipeline.episodes import Episodes
from pipeline.names import TurbineNames
from pipeline.report.common import correlations, iso, thin, to_datetime64
from pipeline.report.data import FleetSummary, Series, bucket_name
from pipeline.store import Anomalies


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def _date_axis(ax: Axes) -> None:
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def timeline_figure(
    series: dict[int, Series],
    counts: dict[int, int],
    threshold: float,
    every_reading: bool,
    statistic: str = "squared distance",
    max_points: int = 20_000,
    xlim: tuple[float, float] | None = None,
    names: TurbineNames | None = None,
    episodes: Episodes | None = None,
) -> Figure:
    """One panel per turbine: distance against threshold, anomalies, labelled faults, episodes.

    Labelled faults are shaded, each with its kind written at its start when
    the series carries kinds.

    Parameters
    ----------
    series : dict of turbine id to Series
        Each series' arrays have shape (n,).
    counts : dict of turbine id to int
        Anomalies the store holds for each turbine (titles).
    threshold : float
    every_reading : bool
        True: the series holds every scored reading (a line); False: the
        anomalies only (points).
    statistic : str
        Y axis title.
    max_points : int
        Longer series are thinned to their envelope (see :func:`thin`).
    xlim : (float, float), optional
        Time range shown (epoch seconds); default the series'.
    names : TurbineNames, optional
        Turbine names for the titles (default: the ids).
    episodes : Episodes, optional
        Alarm episodes, drawn as green bars along the top of their turbine's panel
        (at least 0.3 % of the time axis wide, so a one-alarm episode shows).

    Examples
    --------
    >>> s = Series(np.arange(5.0), np.array([1.0, 2, 40, 3, 1]),
    ...            np.array([0, 0, 1, 0, 0], bool), np.array([0, 1, 1, 0, 0], bool),
    ...            np.array(["", "drift", "drift", "", ""]))
    >>> fig = timeline_figure({3: s}, {3: 1}, 20.0, True)
    >>> len(fig.axes), [t.get_text() for t in fig.axes[0].texts]
    (1, ['drift'])
    """
    label = (names or TurbineNames()).name_of
    n = max(1, len(series))
    fig = Figure(figsize=(11, 1.2 + 2.1 * n), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, (turbine, s) in zip(axes, series.items(), strict=False):
        t = to_datetime64(s.timestamps)
        d = np.maximum(s.distances, 1e-3)
        if every_reading:
            keep = thin(d, max_points)
            ax.plot(t[keep], d[keep], lw=0.7, color="tab:blue", label=statistic)
        if s.labels is not None and s.labels.any():
            ax.fill_between(
                t,
                0,
                1,
                where=s.labels,
                step="mid",
                color="tab:orange",
                alpha=0.25,
                lw=0,
                transform=ax.get_xaxis_transform(),
                label="labelled fault",
            )
            if s.kinds is not None:
                _kind_labels(ax, t, s.labels, s.kinds)
        hit = s.anomalous
        ax.scatter(t[hit], d[hit], s=9, color="tab:red", zorder=3, label="anomaly")
        if episodes is not None:
            _episode_bars(ax, episodes.select(episodes.turbine_ids == turbine), xlim, s)
        ax.axhline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.1f}")
        ax.set_yscale("log")
        ax.set_ylabel(statistic)
        ax.set_title(
            f"turbine {label(turbine)}: {counts.get(turbine, int(hit.sum())):,} anomalies",
            loc="left",
            fontsize=10,
        )
        ax.grid(alpha=0.3)
        _date_axis(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper right", fontsize=8, ncols=4, frameon=False)
    if xlim is not None:
        axes[0].set_xlim(to_datetime64(np.asarray(xlim, dtype=np.float64)))
    what = "every reading re-scored" if every_reading else "stored anomalies only"
    which = ": the turbines with the most anomalies" if len(series) > 1 else ""
    fig.suptitle(f"{statistic} over time{which} ({what})", fontsize=12, x=0.01, ha="left")
    return fig


def fault_runs(labels: np.ndarray, kinds: np.ndarray) -> list[tuple[int, str]]:
    """(first index, kind) of each run of labelled readings (n,), kind of its first reading.

    >>> fault_runs(np.array([0, 1, 1, 0, 1], bool), np.array(["", "drift", "drift", "", "spike"]))
    [(1, 'drift'), (4, 'spike')]
    """
    starts = np.flatnonzero(labels & ~np.r_[False, labels[:-1]])
    return [(int(i), str(kinds[i])) for i in starts.tolist()]


MAX_KIND_LABELS = 40  # per panel; more would be unreadable


def _kind_labels(ax: Axes, t: np.ndarray, labels: np.ndarray, kinds: np.ndarray) -> None:
    """Each labelled fault's kind, written at its start along the top of the panel."""
    for i, kind in fault_runs(labels, kinds)[:MAX_KIND_LABELS]:
        if kind:
            ax.text(
                t[i],
                0.86,
                kind,
                transform=ax.get_xaxis_transform(),
                fontsize=7,
                color="tab:brown",
                rotation=0,
                clip_on=True,
                gid="fault-kind",
            )


def _episode_bars(
    ax: Axes, episodes: Episodes, xlim: tuple[float, float] | None, s: Series
) -> None:
    """The episodes of one turbine as bars in the top strip of its panel."""
    if len(episodes) == 0:
        return
    import matplotlib.dates as mdates

    lo, hi = xlim if xlim is not None else (float(s.timestamps.min()), float(s.timestamps.max()))
    days = 86_400.0
    width = np.maximum(episodes.durations, 0.003 * max(hi - lo, 1.0)) / days
    left = mdates.date2num(to_datetime64(episodes.starts))
    ax.broken_barh(
        list(zip(left.tolist(), width.tolist(), strict=True)),
        (0.9, 0.08),
        transform=ax.get_xaxis_transform(),
        color="tab:green",
        alpha=0.8,
        label="alarm episode",
    )


def heatmap_figure(
    summary: FleetSummary, max_turbines: int, names: TurbineNames | None = None
) -> Figure:
    """Anomalies per turbine (rows) and time bucket (columns).

    Shows every turbine with anomalies, or the ``max_turbines`` with the
    most, in turbine order.

    >>> from scipy import sparse
    >>> s = FleetSummary(("a",), 3, 10, 1, np.array([1, 2]), np.array([2, 1]),
    ...                  np.array([0.0, 5, 10]), sparse.csr_array(np.array([[1, 1], [0, 1]])),
    ...                  Anomalies.concat([], ("a",)), np.array([9.0]))
    >>> len(heatmap_figure(s, 60).axes)
    2
    """
    rows = np.flatnonzero(summary.counts > 0)
    if rows.size > max_turbines:
        pick = np.lexsort((summary.turbines[rows], -summary.counts[rows]))[:max_turbines]
        rows = np.sort(rows[pick])
    counts = np.asarray(summary.heat[rows].toarray(), dtype=np.float64)
    r = rows.size
    fig = Figure(figsize=(11, min(14.0, 2.0 + 0.2 * r)), layout="constrained")
    ax = fig.add_subplot()
    masked = np.ma.masked_equal(counts, 0)
    mesh = ax.pcolormesh(
        to_datetime64(summary.edges), np.arange(r + 1), masked, cmap="viridis", shading="flat"
    )
    step = max(1, math.ceil(r / 40))
    ticks = np.arange(0, r, step)
    ax.set_yticks(ticks + 0.5, (names or TurbineNames()).labels(summary.turbines[rows][ticks]))
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    ax.set_ylabel("turbine")
    ax.set_facecolor("#f4f4f4")
    _date_axis(ax)
    width = summary.bucket or (summary.edges[-1] - summary.edges[0]) / max(
        1, summary.edges.size - 1
    )
    shown = (
        f"all {r} turbines with anomalies"
        if r == np.count_nonzero(summary.counts)
        else f"the {r} of {np.count_nonzero(summary.counts)} turbines with the most anomalies"
    )
    ax.set_title(f"Anomalies per turbine and {bucket_name(width)} ({shown})", fontsize=11)
    fig.colorbar(mesh, ax=ax, label="anomalies", shrink=0.8)
    return fig


def contributions_figure(
    top: Anomalies, max_sensors: int = 12, names: TurbineNames | None = None
) -> Figure:
    """Each sensor's contribution to each of the worst events (one panel each).

    Parameters
    ----------
    top : Anomalies
        k events; contributions of shape (k, D).
    max_sensors : int
        Panels show the sensors with the largest absolute contributions.

    >>> t = Anomalies(np.zeros(1), np.array([4]), np.array([30.0]), np.array([9.0]),
    ...               np.array([[25.0, 5.0]]), *(np.zeros(1, np.int64),) * 3,
    ...               np.ones(1, np.int8), ("a", "b"))
    >>> len(contributions_figure(t).axes)
    1
    """
    k = max(1, len(top))
    ncols = min(3, k)
    nrows = math.ceil(k / ncols)
    d = len(top.sensors)
    shown = min(d, max_sensors)
    fig = Figure(figsize=(11, 0.9 + nrows * (0.9 + 0.28 * shown)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    label = (names or TurbineNames()).name_of
    sensor_names = np.asarray(top.sensors, dtype=object)
    for i, ax in enumerate(axes):
        if i >= len(top):
            ax.set_axis_off()
            continue
        c = top.contributions[i]
        order = np.argsort(-np.abs(c), kind="stable")[:shown][::-1]
        colors = np.where(c[order] >= 0, "tab:red", "tab:blue")
        ax.barh(np.arange(shown), c[order], color=colors.tolist())
        ax.set_yticks(np.arange(shown), sensor_names[order].tolist(), fontsize=8)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(
            f"turbine {label(int(top.turbine_ids[i]))}, "
            f"{iso(float(top.timestamps[i]))}\n"
            f"d\u00b2 = {float(top.distances[i]):,.1f}",
            fontsize=9,
        )
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Per-sensor contributions to the worst events (they sum to d\u00b2)", fontsize=12)
    return fig


def correlation_figure(model: Detector, max_groups: int = 12) -> Figure | None:
    """The correlation matrix of each key group's fleet model (the groups with most readings).

    >>> rng = np.random.default_rng(0)
    >>> from pipeline.config import DetectorConfig
    >>> det = Detector(DetectorConfig(key_groups=2, sensors=("a", "b")))
    >>> _ = det.learn(np.zeros(100), np.arange(100) % 4, rng.normal(size=(100, 2)))
    >>> len(correlation_figure(det).axes)  # two groups and a colour bar
    3
    """
    state = model.state()
    if "group_m2" not in state:
        return None
    counts = np.asarray(state["group_counts"], dtype=np.float64)
    corr = correlations(counts, np.asarray(state["group_m2"], dtype=np.float64))
    groups = np.flatnonzero(counts >= 2)
    groups = groups[np.argsort(-counts[groups], kind="stable")][:max_groups]
    if groups.size == 0:
        return None
    groups = np.sort(groups)
    g_all = model.config.key_groups
    per_group = np.bincount(
        np.mod(np.asarray(state["turbine_ids"], dtype=np.int64), g_all), minlength=g_all
    )
    sensors = list(model.config.sensors or [f"sensor {j}" for j in range(corr.shape[1])])
    d = len(sensors)
    ncols = min(4, groups.size)
    nrows = math.ceil(groups.size / ncols)
    side = min(3.6, 1.4 + 0.3 * d)
    fig = Figure(figsize=(1.2 + ncols * side, 0.9 + nrows * side), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    image = None
    for ax, g in zip(axes, groups.tolist(), strict=False):
        image = ax.imshow(corr[g], vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(np.arange(d), sensors, rotation=90, fontsize=7)
        ax.set_yticks(np.arange(d), sensors, fontsize=7)
        plural = "s" if per_group[g] != 1 else ""
        ax.set_title(
            f"group {g}: {per_group[g]} turbine{plural}, {int(counts[g]):,} readings", fontsize=8
        )
        if d <= 8:
            rr, cc = np.indices((d, d))
            for i, j in zip(rr.ravel().tolist(), cc.ravel().tolist(), strict=True):
                v = corr[g, i, j]  # loop over the matrix cells of a small panel
                if np.isfinite(v):
                    color = "white" if abs(v) > 0.6 else "black"
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color=color)
    for ax in axes[groups.size :]:
        ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes.tolist(), label="correlation", shrink=0.8)
    smoothed = ", EWMA-smoothed" if model.config.chart == "mewma" else ""
    fig.suptitle(
        f"Correlation of calibrated{smoothed} readings per key group (fleet models)", fontsize=11
    )
    return fig
