"""The installed dependencies are the ones the project is tested with."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in metadata.requires("aimcc") or []]
    return {r.name.lower(): r for r in reqs if r.marker is None}


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = Version(match.group(2))
    return pins


@pytest.mark.parametrize("name", ["xdsl", "torch", "onnx", "onnxruntime"])
def test_installed_version_in_supported_range(name: str) -> None:
    req = _requirements()[name]
    installed = Version(metadata.version(name))
    assert req.specifier.contains(installed, prereleases=True), (
        f"{name} {installed} is outside the tested range {req.specifier} (pyproject.toml)"
    )


def test_xdsl_range_is_bounded_above() -> None:
    """xDSL changes its API every minor release: an open range breaks the next fresh install."""
    spec = _requirements()["xdsl"].specifier
    assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), spec


def test_constraints_satisfy_pyproject() -> None:
    """CI installs constraints.txt: every pin must lie inside pyproject's range for it."""
    pins = _pins()
    reqs = _requirements()
    assert {"xdsl", "torch", "onnx", "onnxruntime", "numpy"} <= pins.keys()
    for name, req in reqs.items():
        key = re.sub(r"[-_.]+", "-", name)
        if key in pins:
            assert req.specifier.contains(pins[key], prereleases=True), (name, pins[key])
