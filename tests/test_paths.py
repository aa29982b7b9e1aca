"""An input that is not a readable regular file is named for what it is, the same way in
every command: `run` on a directory or a FIFO once said "file not found" (and a FIFO can
block a reader forever)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamclf.config import RunConfig, StreamConfig, load_config
from streamclf.engine.backends import FakeBackend
from streamclf.errors import StreamclfError
from streamclf.live.pipeline import LivePipeline
from streamclf.models import load_classmap, load_model
from streamclf.paths import input_file_problem


@pytest.fixture
def odd(tmp_path: Path) -> dict[str, Path]:
    paths = {"dir": tmp_path / "clips.mp4", "loop": tmp_path / "loop.mp4",
             "broken": tmp_path / "broken.mp4", "missing": tmp_path / "missing.mp4"}
    paths["dir"].mkdir()
    paths["loop"].symlink_to(paths["loop"])
    paths["broken"].symlink_to(tmp_path / "gone.mp4")
    if hasattr(os, "mkfifo"):
        paths["fifo"] = tmp_path / "pipe.mp4"
        os.mkfifo(paths["fifo"])
    return paths


WHAT = {"dir": "is a directory, not a file", "loop": "is a symlink loop",
        "broken": "is a broken symlink", "missing": "file not found",
        "fifo": "is not a regular file (a FIFO)"}


def test_each_problem_is_named(odd: dict[str, Path], tmp_path: Path) -> None:
    for key, path in odd.items():
        assert input_file_problem(path) == WHAT[key], key
    ok = tmp_path / "ok.mp4"
    ok.write_bytes(b"x")
    assert input_file_problem(ok) is None
    assert input_file_problem("a\0b") == "is not a valid path"


def test_every_reader_names_it(odd: dict[str, Path]) -> None:
    for key, path in odd.items():
        readers = [
            lambda p=path: LivePipeline(RunConfig(streams=[StreamConfig(id="c", source=str(p))]),
                                        backend=FakeBackend()),
            lambda p=path: load_model("x3d_xs", p, device="cpu"),
            lambda p=path: load_classmap(str(p)),
            lambda p=path: load_config(p),
        ]
        for read in readers:
            with pytest.raises(StreamclfError) as info:
                read()
            message = str(info.value)
            want = "not found" if key == "missing" else WHAT[key]
            assert want in message and str(path) in message, (key, message)
