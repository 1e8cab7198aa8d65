"""`turbine rebaseline` on a store's model and on a checkpoint file."""

from __future__ import annotations

import json

import numpy as np

from pipeline import Detector, DetectorConfig
from tests.cli_support import turbine


def _state(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_rebaseline_a_store_model_by_id(tmp_path):
    rec = tmp_path / "fleet.npz"
    turbine("simulate", "--turbines", 4, "--steps", 400, "--seed", 3, "--output", rec)
    store = tmp_path / "store"
    turbine("detect", "--quiet", "--input", rec, "--store", store)
    before = Detector.from_state(_state(store / "model.npz"))
    assert before.turbine_model(2).count > 0
    out = turbine("rebaseline", store, "--turbine", "2")
    assert "re-baselined 2" in out.stdout
    after = Detector.from_state(_state(store / "model.npz"))
    assert after.turbine_model(2).count == 0
    assert after.turbine_model(1).count == before.turbine_model(1).count
    assert after.rebaselines == 1


def test_rebaseline_a_checkpoint_by_name_keeps_its_metadata(tmp_path, rng):
    det = Detector(DetectorConfig(key_groups=1))
    ids = det.names.ids_of(np.repeat(["R80711", "R80721"], 100))
    det.process(np.tile(np.arange(100.0), 2), ids, rng.normal(size=(200, 3)))
    arrays = {f"det__{k}": v for k, v in det.state().items()}
    arrays["meta"] = np.asarray(json.dumps({"version": 1, "offset": 7}))
    cp = tmp_path / "checkpoints" / "turbine.readings-0000.npz"
    cp.parent.mkdir()
    np.savez(cp, **arrays)
    turbine("rebaseline", tmp_path, "--turbine", "R80711")
    data = _state(cp)
    assert json.loads(str(data["meta"]))["offset"] == 7
    restored = Detector.from_state({k[5:]: v for k, v in data.items() if k.startswith("det__")})
    assert restored.turbine_model(int(ids[0])).count == 0
    assert restored.turbine_model(int(ids[-1])).count == 100


def test_rebaseline_an_unknown_turbine_is_a_one_line_error(tmp_path):
    rec = tmp_path / "fleet.npz"
    turbine("simulate", "--turbines", 2, "--steps", 100, "--output", rec)
    turbine("detect", "--quiet", "--input", rec, "--store", tmp_path / "s")
    proc = turbine("rebaseline", tmp_path / "s", "--turbine", "R99999", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "R99999" in proc.stderr
