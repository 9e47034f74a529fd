"""Every package imports on its own, first, in a fresh interpreter (no import cycles)."""

from __future__ import annotations

import subprocess
import sys

import pytest

ENTRY_MODULES = (
    "aimcc.backends.aimcb",
    "aimcc.runtime",
    "aimcc.passes",
    "aimcc.cost",
    "aimcc.frontend.importer",
    "aimcc.backends.manifest",
    "aimcc.cli",
    "aimcc.adapters",
    "aimcc.passes.lora_slots",
)


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_imports_first(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
