"""A full disk is a one-line error (exit 3), never a traceback, and leaves no partial output."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

from tests.cli_support import turbine


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root only: skipped elsewhere)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_a_one_line_error(tmp_path, tiny_disk):
    rec = tmp_path / "fleet.npz"
    turbine("simulate", "--turbines", 50, "--steps", 2000, "--seed", 1, "--output", rec)
    proc = turbine("detect", "--quiet", "--input", rec, "--store", tiny_disk / "s", check=False)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "No space left on device" in proc.stderr
    assert not (tiny_disk / "s").exists()  # the partial store was removed
    proc = turbine("simulate", "--steps", 20000, "--output", tiny_disk / "big.csv", check=False)
    assert proc.returncode == 3 and "No space left on device" in proc.stderr
    assert not (tiny_disk / "big.csv").exists()
