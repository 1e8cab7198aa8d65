"""Detection quality on the simulator and SKAB, and the anomaly store's size.

Writes ``bench/results/quality.md``:

* simulated fleet, faults of 4 sigma and more: precision and recall overall
  and per fault kind, beside a per-sensor z-score baseline with the same
  per-reading false-alarm budget (it cannot see correlation breaks);
* SKAB valve1 with SKAB's protocol (first 400 rows of each file learned,
  the rest scored, counts summed), plain Mahalanobis and the MEWMA option
  over a small grid (shown whole: the choice is one configuration for all
  files, and the grid shows how sensitive it is);
* the store's bytes beside the dense equivalent.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import stats

from pipeline import Detector, DetectorConfig
from pipeline.batching import iter_batches
from pipeline.evaluation import Confusion
from pipeline.memory import tune_malloc
from pipeline.recordings import RecordingSpec
from pipeline.runner import run_file
from pipeline.simulator import FleetSimulator, SimulationParams
from pipeline.store import AnomalyStore

OUT = Path(__file__).parent / "results" / "quality.md"
DATA = Path(
    os.environ.get("TURBINE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)
SKAB = RecordingSpec(sep=";", time_col="datetime", label_col="anomaly", drop_cols=("changepoint",))


class ZScoreBaseline:
    """Per-turbine, per-sensor running z-scores: flag when any |z| exceeds the threshold.

    Same score-then-learn discipline and the same per-reading false-alarm rate
    as the detector (Bonferroni over the D sensors); no covariance.
    """

    def __init__(self, n_sensors: int, alpha: float, min_samples: int) -> None:
        self.z = float(stats.norm.isf(alpha / (2 * n_sensors)))
        self.min_samples = min_samples
        self.n: dict[int, float] = {}
        self.s1: dict[int, np.ndarray] = {}
        self.s2: dict[int, np.ndarray] = {}

    def process(self, ids: np.ndarray, x: np.ndarray) -> np.ndarray:
        flags = np.zeros(ids.size, dtype=bool)
        for t in np.unique(ids).tolist():  # a loop over turbines, not readings
            rows = ids == t
            n = self.n.get(t, 0.0)
            if n >= self.min_samples:
                mean = self.s1[t] / n
                sd = np.sqrt(np.maximum(self.s2[t] / n - mean**2, 1e-12))
                flags[rows] = (np.abs((x[rows] - mean) / sd) > self.z).any(axis=1)
            keep = rows & ~flags
            self.n[t] = n + keep.sum()
            self.s1[t] = self.s1.get(t, 0) + x[keep].sum(axis=0)
            self.s2[t] = self.s2.get(t, 0) + (x[keep] ** 2).sum(axis=0)
        return flags


def simulated(
    magnitude: float,
    turbines: int = 100,
    steps: int = 10_000,
    seed: int = 1,
    fleet_relative: bool = False,
) -> dict:
    sim = FleetSimulator(
        SimulationParams(turbines=turbines, steps=steps, seed=seed, magnitude=magnitude)
    )
    config = DetectorConfig(**sim.fleet.calibration(fleet_relative))
    det = Detector(config)
    base = ZScoreBaseline(len(sim.fleet.sensors), config.false_alarm_rate, config.warmup(4)[0])
    labels, kinds, flags, zflags = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = AnomalyStore(tmp, sensors=sim.fleet.sensors)
        start = time.perf_counter()
        for number, b in iter_batches(sim.chunks(), 10):
            r = det.process(b.timestamps, b.turbine_ids, b.values)
            store.append(r, offsets=number)
            labels.append(b.labels.astype(bool))
            kinds.append(b.kinds)
            flags.append(r.is_anomaly)
            zflags.append(base.process(b.turbine_ids, b.values))
        store.flush()
        seconds = time.perf_counter() - start
        size = store.stats()["bytes"]
    lab, kind = np.concatenate(labels), np.concatenate(kinds)
    flag, zflag = np.concatenate(flags), np.concatenate(zflags)
    out = {"readings": lab.size, "faulty": int(lab.sum()), "seconds": seconds, "store_bytes": size}
    for name, f in (("mahalanobis", flag), ("zscore", zflag)):
        c = Confusion()
        c.add(lab, f)
        out[name] = c
        out[f"{name}_kinds"] = {
            k: float(f[kind == k].mean()) for k in sorted(set(kind.tolist()) - {""})
        }
    out["anomalies"] = int(flag.sum())
    return out


def skab_grid() -> list[tuple[str, Confusion]]:
    files = sorted((DATA / "skab" / "valve1").glob("*.csv"))
    if not files:
        return []
    settings = [
        ("plain, alpha 1e-4", {}),
        ("plain, alpha 1e-3", {"false_alarm_rate": 1e-3}),
        ("plain, alpha 1e-2", {"false_alarm_rate": 1e-2}),
    ]
    for lam in (0.05, 0.1, 0.2, 0.3):
        for a in (1e-4, 1e-3):
            settings.append(
                (
                    f"MEWMA lambda {lam}, alpha {a:g}",
                    {"chart": "mewma", "mewma_lambda": lam, "false_alarm_rate": a},
                )
            )
    rows = []
    for name, kw in settings:
        total = Confusion()
        for f in files:
            report, _ = run_file(f, SKAB, DetectorConfig(**kw), train_rows=400)
            total.merge(report.confusion)
        rows.append((name, total))
    return rows


def main() -> int:
    tune_malloc()
    lines = [
        "# Detection quality",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
    ]
    lines += [
        "## Simulated fleet (100 turbines x 10,000 steps, 4 sensors, 2 % faulty readings)",
        "",
    ]
    lines += [
        "Detector: defaults (per-turbine models, alpha = 1e-4 per reading, batches of 10 steps), "
        "calibration from the simulator; 'fleet-relative': the simulator's `--fleet-relative` "
        "configuration (every sensor against the fleet's median at the same time, one key "
        "group). Baseline: per-sensor z-scores with the same per-reading "
        "false-alarm budget (Bonferroni over the sensors), score-then-learn.",
        "",
    ]
    lines += [
        "| fault size | method | precision | recall | F1 "
        "| spike | drift | stuck | correlation break |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    store_line = ""
    for m in (4.0, 6.0, 8.0):
        res = simulated(m)
        relative = simulated(m, fleet_relative=True)
        runs = (
            ("Mahalanobis", res, "mahalanobis"),
            ("Mahalanobis, fleet-relative", relative, "mahalanobis"),
            ("z-score baseline", res, "zscore"),
        )
        for method, run, name in runs:
            c, k = run[name], run[f"{name}_kinds"]
            lines.append(
                f"| {m:g} sigma | {method} | "
                f"{c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} | "
                + " | ".join(
                    f"{k.get(x, float('nan')):.3f}"
                    for x in ("spike", "drift", "stuck", "correlation_break")
                )
                + " |"
            )
        if m == 4.0:
            dense = res["readings"] * 8 * (1 + 4)  # distance + 4 contributions, float64
            store_line = (
                f"Store: {res['anomalies']:,} anomalies out of {res['readings']:,} readings "
                f"({100 * res['anomalies'] / res['readings']:.2f} %): "
                f"{res['store_bytes']:,} bytes on disk, against {dense:,} bytes for the dense "
                f"equivalent (distance and 4 contributions per "
                f"reading as float64): {dense / res['store_bytes']:.0f}x smaller."
            )
    lines += [
        "",
        "Correlation breaks at 6 and 8 sigma rarely fit inside the normal range (each sensor must "
        "stay within mean +- 3 sigma), so they are few.",
        "",
        store_line,
        "",
    ]
    grid = skab_grid()
    if grid:
        lines += [
            "## SKAB valve1 (16 files; first 400 rows learned, the rest scored, counts summed)",
            "",
            "| configuration | F1 | FAR % | MAR % | precision | recall | mean delay s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, c in grid:
            lines.append(
                f"| {name} | {c.f1:.3f} | {c.far:.2f} | {c.mar:.2f} | {c.precision:.3f} | "
                f"{c.recall:.3f} | {c.mean_delay:.1f} |"
            )
        lines += [
            "| published Hotelling T-squared, reproduced on valve1 | 0.65 | 19.94 | 44.05 | | | |",
            "| published best (Conv-AE), whole benchmark | 0.78 | 13.55 | 28.02 | | | |",
            "| flag everything | 0.70 | 100 | 0 | | | |",
            "",
        ]
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
