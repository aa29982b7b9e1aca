"""A run's outputs never overwrite its inputs or foreign files (checked before anything is
opened): ``--output`` equal to ``--source`` once destroyed the input video."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamclf.config import RunConfig, StreamConfig
from streamclf.engine.backends import FakeBackend
from streamclf.errors import ConfigError
from streamclf.live.pipeline import LivePipeline
from streamclf.outputs import check_outputs
from tests.conftest import REPO


def _run(source: str, output: str | None = None, events: str | None = None) -> RunConfig:
    return RunConfig(events=events, streams=[StreamConfig(id="cam0", source=source,
                                                          output=output)])


def test_output_equal_to_the_source_is_refused_and_the_input_kept(
        tmp_path: Path, tai_chi_clip: Path) -> None:
    clip = tmp_path / "clip.mp4"
    shutil.copy(tai_chi_clip, clip)
    before = clip.read_bytes()
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    for output in (str(clip), str(link), f"{tmp_path}/./clip.mp4"):
        with pytest.raises(ConfigError, match="is the source of stream 'cam0'"):
            LivePipeline(_run(str(clip), output=output), backend=FakeBackend())
    with pytest.raises(ConfigError, match="is the source of stream 'cam0'"):
        LivePipeline(_run(str(clip), events=str(clip)), backend=FakeBackend())
    assert clip.read_bytes() == before


def test_outputs_refuse_directories_and_files_of_another_kind(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    video = tmp_path / "old.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 32)
    log = tmp_path / "old.jsonl"
    log.write_text('{"type": "prediction"}\n')
    cases = [
        (_run("synthetic", output=str(tmp_path)), "is a directory"),
        (_run("synthetic", output=str(notes)), "exists and is not a video"),
        (_run("synthetic", events=str(notes)), "is not a JSON Lines event log"),
        (_run("synthetic", events=str(video)), "is not a JSON Lines event log"),
        (_run("synthetic", output=str(log)), "exists and is not a video"),
        (_run("synthetic", output=str(log), events=str(log)), "give each its own file"),
    ]
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.jsonl"
        os.mkfifo(fifo)
        cases.append((_run("synthetic", events=str(fifo)), "not a regular file"))
    for config, needle in cases:
        with pytest.raises(ConfigError, match=needle):
            check_outputs(config)
    assert notes.read_text() == "my notes\n"
    check_outputs(_run("synthetic", output=str(video), events=str(log)))  # same kinds: fine
    check_outputs(_run("synthetic", output=str(tmp_path / "new.mp4"),
                       events=str(tmp_path / "new.jsonl")))


def test_the_cli_refuses_before_loading_a_model(tmp_path: Path, tai_chi_clip: Path) -> None:
    clip = tmp_path / "clip.mp4"
    shutil.copy(tai_chi_clip, clip)
    before = clip.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "streamclf", "run", "--source", str(clip), "--output", str(clip),
         "--weights", "random", "--pace", "fast"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("\n") == 1 and "refusing to overwrite an input" in proc.stderr
    assert clip.read_bytes() == before
