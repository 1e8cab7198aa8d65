"""What a detector service loads: the libraries it needs, not those of other commands.

pyarrow (the recording readers, about 40 MB resident) and scipy.stats (about
45 MB, pulled in by scipy.signal) serve replays, simulations and reports; a
detector service, which only reads Kafka records, must not carry them (the
soak's steady-state RSS, bench/results/soak.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyarrow", "scipy.stats", "scipy.signal", "scipy.ndimage")


def _loaded(code: str) -> dict[str, bool]:
    report = f"print(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    probe = f"{code}\nimport json, sys\n{report}"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_the_detector_service_loads_no_recording_or_statistics_library():
    loaded = _loaded(
        "import consumers.service\n"
        "import numpy as np\n"
        "from pipeline import Detector, DetectorConfig\n"
        "d = Detector(DetectorConfig(sensors=('a', 'b')))\n"
        "d.process(np.zeros(4), np.arange(4), np.ones((4, 2)))"
    )
    assert not any(loaded.values()), loaded


def test_the_readers_still_load_them_where_they_are_used():
    loaded = _loaded("from pipeline.recordings import CsvRecording  # noqa: F401")
    assert loaded["pyarrow"], loaded
