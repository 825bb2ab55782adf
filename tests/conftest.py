"""Shared fixtures. Test data is read from ../shared/data beside the project checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SCENES = SHARED / "scenes"
UCM = SHARED / "ucm-captions"


@pytest.fixture(scope="session")
def scenes_dir() -> Path:
    if not SCENES.is_dir():
        pytest.fail(f"shared scenes not found at {SCENES}")
    return SCENES


@pytest.fixture(scope="session")
def ucm_dir() -> Path:
    if not UCM.is_dir():
        pytest.fail(f"UCM-Captions not found at {UCM}")
    return UCM
