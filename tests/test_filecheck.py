"""The textual pass and verifier tests (tests/filecheck, lit + filecheck as xDSL's own), run
here so that CI, which runs pytest, runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "filecheck"


def test_lit_suite_passes(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent  # lit, filecheck and aimcc of this environment
    lit = shutil.which("lit", path=str(bin_dir)) or shutil.which("lit")
    if lit is None:
        pytest.fail("lit is not installed: pip install -e '.[test]'")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    root = str(Path(__file__).resolve().parents[1])  # this checkout's aimcc first
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    done = subprocess.run(
        [lit, "-v", "--param", f"out={tmp_path}", str(SUITE)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Passed" in done.stdout and "Failed" not in done.stdout
