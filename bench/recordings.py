"""Read times of La Haute Borne's file: the CSV fast path, the NumPy reader, Parquet.

Run from the repository root (the file is in ../shared/data/lhb)::

    .venv/bin/python -m bench.recordings [--repeat 3]

Prints the median of ``--repeat`` full reads of each, with the options of
``deploy/configs/la-haute-borne.toml``; the Parquet copy is written first by
:class:`RecordingWriter` to a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config import load_config
from pipeline.recordings import RecordingWriter, read_recording
from pipeline.recordings.csvfile import CsvRecording

LHB = Path("../shared/data/lhb/la-haute-borne-data-2014-2015.csv")


def timed(read: Callable[[], int], repeat: int) -> tuple[float, int]:
    """Median seconds of ``repeat`` calls of ``read`` and the readings it returned."""
    times, n = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = read()
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=LHB)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    spec = load_config("deploy/configs/la-haute-borne.toml").recording
    assert spec is not None  # noqa: S101 (the shipped table)

    def csv(fast: bool) -> Callable[[], int]:
        def read() -> int:
            rec = CsvRecording(args.input, spec, fast=fast)
            try:
                return sum(len(c) for c in rec)
            finally:
                rec.close()

        return read

    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "lhb.parquet"
        with read_recording(args.input, spec) as rec:
            with RecordingWriter(parquet, rec.sensors, names=rec.names) as writer:
                for chunk in rec:
                    writer.write(chunk)

        def read_parquet() -> int:
            with read_recording(parquet) as rec:
                return sum(len(c) for c in rec)

        rows = [
            ("CSV, pyarrow fast path", *timed(csv(True), args.repeat)),
            ("CSV, NumPy reader alone", *timed(csv(False), args.repeat)),
            (f"Parquet ({parquet.stat().st_size / 1e6:.1f} MB)", *timed(read_parquet, args.repeat)),
        ]
    print(f"| {args.input.name} | median of {args.repeat} (s) | readings |")
    print("| --- | --- | --- |")
    for name, seconds, n in rows:
        print(f"| {name} | {seconds:.2f} | {n:,} |")


if __name__ == "__main__":
    main()
