"""Shared fixtures: seeded randomness and the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("TURBINE_DATA_DIR", REPO.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261130)


@pytest.fixture(scope="session")
def skab_dir() -> Path:
    """The SKAB recordings in ../shared/data; skip (fail in CI) when absent."""
    path = DATA / "skab"
    if not path.is_dir():
        if IN_CI:
            pytest.fail(f"CI=true but the shared data folder {path} is missing")
        pytest.skip(f"shared data folder {path} is absent (recorded SKAB files)")
    return path
