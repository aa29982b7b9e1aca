"""The benchmark functions measure what they claim (checked with scripted delays)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streamclf.bench import (
    bench_fast,
    bench_live,
    bench_model,
    bench_sequential,
    make_test_clip,
    markdown_table,
)
from streamclf.engine.backends import FakeBackend
from streamclf.errors import DataError, StreamclfError
from streamclf.models import load_model


@pytest.fixture(scope="module")
def x3d():  # type: ignore[no-untyped-def]
    return load_model("x3d_xs", "random", device="cpu")


def test_bench_model_times_the_backend(x3d) -> None:  # type: ignore[no-untyped-def]
    row = bench_model(FakeBackend(labels=x3d.spec.labels, delay_s=0.05), x3d, batch=2,
                      repeats=3, warmup=1)
    assert row["ms_per_batch"] == pytest.approx(50, abs=15)
    assert row["ms_per_clip"] == pytest.approx(25, abs=8)
    assert row["clips_per_s"] == pytest.approx(40, rel=0.3)


def test_bench_fast_and_sequential_count_the_same_windows(x3d, tai_chi_clip: Path) -> None:  # type: ignore[no-untyped-def]
    fast = bench_fast(x3d, FakeBackend(labels=x3d.spec.labels), tai_chi_clip, stride=0.8)
    seq = bench_sequential(x3d, tai_chi_clip, stride=0.8)
    assert fast["windows"] == seq["windows"] == 11
    assert fast["clips_per_s"] > 0 and seq["clips_per_s"] > 0
    assert "|" in markdown_table([fast, seq], ["kind", "windows"])


@pytest.mark.slow
def test_bench_live_reports_latency_of_a_slow_model(x3d, tai_chi_clip: Path) -> None:  # type: ignore[no-untyped-def]
    row = bench_live(x3d, FakeBackend(labels=x3d.spec.labels, delay_s=0.2), tai_chi_clip,
                     seconds=3.0, stride=0.05, warmup_s=2.0)
    assert row["input_fps"] == pytest.approx(29.97, abs=2.0)
    assert row["clips_per_s"] == pytest.approx(5.0, abs=1.0)  # flat out at 0.2 s per clip
    assert 200 <= row["latency_ms_p50"] <= 200 + 150
    assert row["inference_ms_median"] == pytest.approx(200, abs=30)


def test_make_test_clip_errors_are_streamclf_errors(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    if shutil.which("ffmpeg") is not None:
        with pytest.raises(DataError, match=f"^{bad}: ffmpeg cannot re-encode it"):
            make_test_clip(bad, tmp_path / "out.mp4")
        assert not (tmp_path / "out.mp4").exists()
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(StreamclfError, match="ffmpeg is needed"):
        make_test_clip(bad, tmp_path / "out.mp4")
