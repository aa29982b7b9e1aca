"""The 60 s soak (benchmarks/soak.py; the 10-minute run is a benchmark, not a test)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_soak_30s(tai_chi_clip: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("soak", REPO / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)
    out = soak.soak(tai_chi_clip, seconds=30.0, warmup_s=10.0, backend="torch",
                    events=tmp_path / "events.jsonl")
    assert out["checks"] == {key: True for key in out["checks"]}, out
    assert out["windows"] >= 30  # ~1.25 windows/s for 40 s
