"""Bad input on the command line: one clear line on stderr, exit status 1, no traceback.

One table covers every kind of bad input of ``classify`` and ``run``. Most rows call
``cli.main`` in this process (fast: torch is imported once); rows where a C library (FFmpeg,
V4L2) would print its own complaints run the real ``python -m streamclf`` process, which is
the only place where that noise can be seen (and must not be).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from streamclf.cli.main import main as cli_main
from streamclf.models import get_spec
from streamclf.models.network import build_network
from tests.conftest import LOCAL_DATA, REPO

SECRET = "S3cretPW"
CLIP = LOCAL_DATA / "ta_chi.mp4"
RANDOM = ["--weights", "random"]
RUN = ["--weights", "random", "--backend", "torch", "--quiet", "--pace", "fast"]


def _leave_marker(path: str) -> None:
    """What the malicious checkpoint would run if it were unpickled."""
    Path(path).write_text("code ran")


class _Payload:
    """Unpickles by calling ``_leave_marker``: stands for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_leave_marker, (str(self.marker),))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every bad file and value of the table, by name."""
    d = tmp_path_factory.mktemp("bad")
    (d / "notvideo.mp4").write_text("this is not a video\n" * 20)
    (d / "empty.mp4").write_bytes(b"")
    data = CLIP.read_bytes()
    (d / "cut_header.mp4").write_bytes(data[: len(data) // 2])  # moov (at the end) lost
    faststart = d / "faststart.mp4"
    if shutil.which("ffmpeg"):  # moov first: the file opens, decoding stops at the cut
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(CLIP), "-c", "copy",
                        "-movflags", "+faststart", str(faststart)], check=True, timeout=60)
        whole = faststart.read_bytes()
        (d / "truncated.mp4").write_bytes(whole[: len(whole) * 3 // 10])
    torch.manual_seed(0)
    x3d = build_network(get_spec("x3d_xs")).state_dict()
    torch.save({"model_state": x3d}, d / "x3d_xs.pyth")
    torch.save(build_network(get_spec("c2d_r50")).state_dict(), d / "c2d_r50.pt")
    torch.save({"model_state": x3d, "extra": _Payload(d / "marker.txt")}, d / "evil.pth")
    (d / "three.json").write_text(json.dumps(["a", "b", "c"]))
    configs = {"bad_yaml": "source: [a.mp4\n", "unknown_key": "source: a.mp4\nstrid: 1\n",
               "out_of_range": "source: a.mp4\nthreshold: 1.5\n",
               "backoff": "source: a.mp4\nbackoff_initial_s: 10\nbackoff_max_s: 2\n"}
    for name, text in configs.items():
        (d / f"{name}.yaml").write_text(text)
    return {"d": str(d), "clip": str(CLIP), "corrupted": str(LOCAL_DATA / "corrupted.mp4"),
            "refusing": f"rtsp://user:{SECRET}@127.0.0.1:{_closed_port()}/cam"}


def _case(id_: str, args: list[str], needle: str, process: bool = False) -> Any:
    return pytest.param(args, needle, process, id=id_)


CASES = [
    # -- classify: files
    _case("classify-missing", ["classify", "{d}/missing.mp4", *RANDOM], "file not found"),
    _case("classify-not-a-video", ["classify", "{d}/notvideo.mp4", *RANDOM],
          "not a readable video"),
    _case("classify-corrupt", ["classify", "{corrupted}", *RANDOM], "corrupt or truncated"),
    _case("classify-truncated", ["classify", "{d}/truncated.mp4", *RANDOM],
          "corrupt or truncated video: decoding stopped at"),
    _case("classify-truncated-header", ["classify", "{d}/cut_header.mp4", *RANDOM],
          "not a readable video", process=True),
    _case("classify-zero-bytes", ["classify", "{d}/empty.mp4", *RANDOM], "empty file (0 bytes)"),
    # -- classify: model, weights, class map
    _case("unknown-model", ["classify", "{clip}", "--model", "resnet9000"], "unknown model"),
    _case("missing-checkpoint", ["classify", "{clip}", "--weights", "{d}/nope.pyth"],
          "checkpoint not found"),
    _case("other-architecture", ["classify", "{clip}", "--weights", "{d}/c2d_r50.pt"],
          "does not fit model x3d_xs: "),
    _case("classmap-size", ["classify", "{clip}", "--weights", "{d}/x3d_xs.pyth", "--classmap",
                            "{d}/three.json"], "classmap has 3 classes but the checkpoint's head"),
    _case("pickled-code", ["classify", "{clip}", "--weights", "{d}/evil.pth"],
          "contains pickled Python objects"),
    _case("unknown-device", ["classify", "{clip}", *RANDOM, "--device", "tpu"], "unknown device"),
    _case("bad-clips", ["classify", "{clip}", *RANDOM, "--clips", "0"], "--clips"),
    # -- run: sources
    _case("run-missing", ["run", "--source", "{d}/missing.mp4", *RUN], "file not found"),
    _case("run-not-a-video", ["run", "--source", "{d}/notvideo.mp4", *RUN],
          "not a readable video"),
    _case("run-zero-bytes", ["run", "--source", "{d}/empty.mp4", *RUN], "empty file (0 bytes)"),
    _case("run-corrupt", ["run", "--source", "{corrupted}", *RUN],
          "corrupt or truncated video: decoding stopped at 2.80 s of 5.00 s"),
    _case("run-truncated", ["run", "--source", "{d}/truncated.mp4", *RUN],
          "corrupt or truncated video"),
    _case("unknown-scheme", ["run", "--source", "ftp://example.invalid/cam", *RUN],
          "unsupported URL scheme 'ftp'"),
    # A camera that is down at start is retried like a lost one, for ever by default;
    # with reconnecting off it is bad input.
    _case("rtsp-refusing", ["run", "--source", "{refusing}", *RUN, "--max-reconnects", "0"],
          "rtsp://user:***@127.0.0.1:", process=True),
    _case("webcam-absent", ["run", "--source", "9", *RUN, "--max-reconnects", "0"],
          "no such camera", process=True),
    _case("no-display", ["run", "--source", "{clip}", *RUN, "--display"], "DISPLAY"),
    _case("no-source", ["run", *RUN], "no source"),
    _case("run-unknown-model", ["run", "--source", "{clip}", *RUN, "--model", "resnet9000"],
          "unknown model"),
    # -- run: configs
    _case("missing-config", ["run", "--config", "{d}/missing.yaml"], "config file not found"),
    _case("bad-yaml", ["run", "--config", "{d}/bad_yaml.yaml"], "invalid YAML at line"),
    _case("unknown-key", ["run", "--config", "{d}/unknown_key.yaml"],
          "unknown config key 'strid'"),
    _case("out-of-range", ["run", "--config", "{d}/out_of_range.yaml"],
          "'threshold' must be between 0.0 and 1.0, got 1.5"),
    _case("backoff-order", ["run", "--config", "{d}/backoff.yaml"],
          "'backoff_initial_s' (10 s) must not exceed 'backoff_max_s' (2 s)"),
    _case("negative-reconnects", ["run", "--source", "{clip}", "--max-reconnects", "-1"],
          "'max_reconnects' must be >= 0"),
]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``cli.main`` reconfigures the root logger (basicConfig force=True); undo that."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _run(argv: list[str], process: bool, capsys: pytest.CaptureFixture[str],
         monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    if process:
        out = subprocess.run([sys.executable, "-m", "streamclf", *argv], capture_output=True,
                             text=True, timeout=120, cwd=REPO, check=False)
        return out.returncode, out.stdout, out.stderr
    # What the CLI would setdefault, set here so that monkeypatch restores the environment.
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "ERROR")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    status = cli_main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("args", "needle", "process"), CASES)
def test_bad_input_is_one_line(args: list[str], needle: str, process: bool, bad: dict[str, str],
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [a.format(**bad) for a in args]
    if "truncated.mp4" in " ".join(argv) and not Path(bad["d"], "truncated.mp4").is_file():
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    status, out, err = _run(argv, process, capsys, monkeypatch)
    lines = [ln for ln in err.splitlines() if "RANDOM WEIGHTS" not in ln]
    assert status == 1 and out == ""
    assert len(lines) == 1, err
    assert lines[0].startswith("streamclf: error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err and SECRET not in out + err
    assert not Path(bad["d"], "marker.txt").exists(), "the checkpoint's pickled code ran"


def test_bad_files_do_not_stop_a_batch(bad: dict[str, str], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch,
                                       restore_logging: None) -> None:
    """``classify`` reports each bad file in one line, prints the good ones, exits 1."""
    d = bad["d"]
    paths = [f"{d}/missing.mp4", bad["clip"], f"{d}/empty.mp4", bad["corrupted"],
             f"{d}/notvideo.mp4", bad["clip"]]
    status, out, err = _run(["classify", *paths, *RANDOM, "--json"], False, capsys, monkeypatch)
    assert status == 1
    assert [json.loads(line)["path"] for line in out.splitlines()] == [bad["clip"]] * 2
    errors = [ln for ln in err.splitlines() if "RANDOM WEIGHTS" not in ln]
    assert [ln.split(": ")[2] for ln in errors] == [paths[0], paths[2], paths[3], paths[4]]
    assert all(ln.startswith("streamclf: error: ") for ln in errors)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "streamclf", "--debug", "run", "--config",
                          str(tmp_path / "missing.yaml")], capture_output=True, text=True,
                         timeout=60, cwd=REPO, check=False)
    assert out.returncode != 0
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.rstrip().splitlines()[-1].startswith(
        "streamclf.errors.ConfigError: config file not found")
