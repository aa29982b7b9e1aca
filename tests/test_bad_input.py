"""Bad input on the command line: one clear line on stderr, exit status 1, no traceback.

One table covers every kind of bad input of ``classify`` and ``run``. Most rows call
``cli.main`` in this process (fast: torch is imported once); rows where a C library (FFmpeg,
V4L2) would print its own complaints run the real ``python -m streamclf`` process, which is
the only place where that noise can be seen (and must not be).

A second table covers the inputs every command that loads a model checks first: those fail
in well under a second, and the model is never loaded.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
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
#: Lines a first ``--backend auto`` run prints while it sets up (not errors, not noise).
SETUP = ("streamclf: backend auto: ", "streamclf: exported ", "streamclf: openvino: ")


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
    configs["cluster_missing"] = f"source: {d / 'missing.mp4'}\n"
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
          "corrupt or truncated video"),
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
          "the checkpoint contains Python code"),
    _case("unknown-device", ["classify", "{clip}", *RANDOM, "--device", "tpu"], "unknown device"),
    _case("bad-clips", ["classify", "{clip}", *RANDOM, "--num-clips", "0"], "--num-clips"),
    # once killed by the kernel at 22 GB
    _case("huge-clips", ["classify", "{clip}", *RANDOM, "--num-clips", "100000"],
          "--num-clips must be at most 64"),
    _case("huge-num-samples", ["classify", "{clip}", *RANDOM, "--sample-type",
                               "uniform_temporal_subsample", "--num-samples", "100000"],
          "--num-samples must be at most 512"),
    # the password once came back in the error line
    _case("classify-url", ["classify", "rtsp://alice:secret@host/x.mp4", *RANDOM],
          "rtsp://alice:***@host/x.mp4: not a file"),
    # -- run: sources
    _case("run-missing", ["run", "--source", "{d}/missing.mp4", *RUN], "file not found"),
    _case("run-not-a-video", ["run", "--source", "{d}/notvideo.mp4", *RUN],
          "not a readable video"),
    _case("run-zero-bytes", ["run", "--source", "{d}/empty.mp4", *RUN], "empty file (0 bytes)"),
    _case("run-corrupt", ["run", "--source", "{corrupted}", *RUN],
          "corrupt or truncated video: damaged data after 2.70 s"),
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
    lines = [ln for ln in err.splitlines()
             if "RANDOM WEIGHTS" not in ln and not ln.startswith(SETUP)]
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
    errors = [ln for ln in err.splitlines()
              if "RANDOM WEIGHTS" not in ln and not ln.startswith(SETUP)]
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


# -- checked before the model loads ------------------------------------------------------
BEFORE_MODEL = [
    # classify
    _case("classify-missing", ["classify", "{d}/missing.mp4", *RANDOM], "file not found"),
    _case("classify-time-step", ["classify", "{clip}", "--sample-type", "time_step_sample"],
          "--sample-type time_step_sample needs --time-step SECONDS > 0"),
    _case("classify-samples-alone", ["classify", "{clip}", "--num-samples", "8"],
          "--num-samples and --time-step need --sample-type"),
    _case("classify-classmap", ["classify", "{clip}", "--classmap", "{d}/missing.json"],
          "classmap file not found"),
    _case("classify-topk", ["classify", "{clip}", "--topk", "0"],
          "--topk must be an integer >= 1, got 0"),
    _case("classify-clips", ["classify", "{clip}", "--num-clips", "0"],
          "--num-clips must be an integer >= 1, got 0"),
    # evaluate
    _case("evaluate-checkpoint", ["evaluate", "{d}", "--weights", "{d}/nope.pyth"],
          "checkpoint not found"),
    _case("evaluate-report", ["evaluate", "{d}", *RANDOM, "--report", "{d}/notvideo.mp4/r.json"],
          "does not exist"),
    _case("evaluate-no-data", ["evaluate", *RANDOM], "no dataset: give DATA"),
    _case("evaluate-two-data", ["evaluate", "{d}", "--data", "{clip}", *RANDOM],
          "two datasets given"),
    _case("evaluate-missing-data", ["evaluate", "{d}/missing", *RANDOM], "dataset not found"),
    _case("evaluate-device", ["evaluate", "{d}", *RANDOM, "--device", "tpu"], "unknown device"),
    # run
    _case("run-output", ["run", "--source", "{clip}", *RUN, "--output", "{d}/notvideo.mp4/o.mp4"],
          "output {d}/notvideo.mp4/o.mp4: cannot write in"),
    _case("run-events", ["run", "--source", "{clip}", *RUN, "--events",
                         "{d}/notvideo.mp4/e.jsonl"], "events {d}/notvideo.mp4/e.jsonl: cannot"),
    _case("run-synthetic", ["run", "--source", "synthetic:big", *RUN], "bad synthetic spec"),
    _case("run-one-of-two-missing", ["run", "--source", "a={clip}", "--source",
                                     "b={d}/missing.mp4", *RUN], "stream b: "),
    _case("run-checkpoint", ["run", "--source", "{clip}", *RUN, "--weights", "{d}/nope.pyth"],
          "checkpoint not found"),
    _case("run-device", ["run", "--source", "{clip}", *RUN, "--device", "tpu"], "unknown device"),
    _case("run-display", ["run", "--source", "{clip}", *RUN, "--display"], "DISPLAY is not set"),
    # serve
    _case("serve-missing", ["serve", "--source", "{d}/missing.mp4", *RANDOM], "file not found"),
    _case("serve-web", ["serve", "--web", "localhost:http"], "expected HOST:PORT"),
    _case("serve-upload-negative", ["serve", "--max-upload-mb", "-1"],
          "--max-upload-mb must be a number > 0, got -1"),
    _case("serve-upload-nan", ["serve", "--max-upload-mb", "nan"],
          "--max-upload-mb must be a number > 0, got nan"),
    _case("serve-classmap", ["serve", "--classmap", "{d}/missing.json"],
          "classmap file not found"),
    # export
    _case("export-output-under-a-file", ["export", "--model", "x3d_xs", *RANDOM, "-o",
                                         "{d}/notvideo.mp4/m.onnx"], "is not a directory"),
    _case("export-output-folder", ["export", "--model", "x3d_xs", *RANDOM, "-o", "{d}"],
          "is a directory"),
    _case("export-model", ["export", "--model", "resnet9000", *RANDOM, "-o", "{d}/m.onnx"],
          "unknown model"),
    # train
    _case("train-out-is-a-file", ["train", "{d}", "--model", "x3d_xs", *RANDOM, "--out",
                                  "{d}/notvideo.mp4"], "is a file; give a folder"),
    _case("train-missing-data", ["train", "{d}/missing", "--model", "x3d_xs", *RANDOM, "--out",
                                 "{d}/out"], "dataset not found"),
    _case("train-no-data", ["train", "--model", "x3d_xs"], "no dataset: give DATA"),
    _case("train-checkpoint", ["train", "{d}", "--model", "x3d_xs", "--weights",
                               "{d}/nope.pyth"], "checkpoint not found"),
    # cluster run
    _case("cluster-missing", ["cluster", "run", "--config", "{d}/cluster_missing.yaml"],
          "file not found"),
    _case("cluster-events", ["cluster", "run", "--config", "{d}/cluster_missing.yaml",
                             "--events", "{d}/notvideo.mp4/e.jsonl"], "cannot write in"),
    # bench
    _case("bench-clip", ["bench", "--clip", "{d}/missing.mp4"], "file not found"),
    _case("bench-backend", ["bench", "--backends", "tensorrt"], "unknown backend 'tensorrt'"),
    _case("bench-model", ["bench", "--models", "resnet9000"], "unknown model"),
    _case("bench-report", ["bench", "--report", "{d}/notvideo.mp4/r.json"], "cannot write in"),
    # demo
    _case("demo-missing", ["demo", "--source", "{d}/missing.mp4", *RANDOM], "file not found"),
    _case("demo-output", ["demo", *RANDOM, "--output", "{d}/notvideo.mp4/o.mp4"],
          "cannot write in"),
    _case("demo-checkpoint", ["demo", "--weights", "{d}/nope.pyth"], "checkpoint not found"),
]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way a command loads a model (or starts training, or a cluster) records the call
    and fails: the list must stay empty."""
    import streamclf.cluster.connect
    import streamclf.models
    import streamclf.models.loader
    import streamclf.offline.classify
    import streamclf.train.model

    loaded: list[str] = []

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        loaded.append("model")
        raise RuntimeError("the model was loaded")

    for module, name in ((streamclf.models.loader, "load_model"), (streamclf.models, "load_model"),
                         (streamclf.offline.classify, "load_model"),
                         (streamclf.train.model, "build_network"),
                         (streamclf.cluster.connect, "connect")):
        monkeypatch.setattr(module, name, refuse)
    return loaded


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("args", "needle", "process"), BEFORE_MODEL)
def test_inputs_are_checked_before_the_model_loads(
    args: list[str], needle: str, process: bool, bad: dict[str, str], no_model: list[str],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = [a.format(**bad) for a in args]
    started = time.monotonic()
    status, out, err = _run(argv, process, capsys, monkeypatch)
    elapsed = time.monotonic() - started
    assert no_model == [], err
    assert status == 1 and out == "", err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamclf: error: "), lines[0]
    assert needle.format(**bad) in lines[0], lines[0]
    assert elapsed < 1.0, f"{elapsed:.2f} s"


@pytest.mark.usefixtures("restore_logging")
def test_classify_with_only_bad_files_loads_no_model(
    bad: dict[str, str], no_model: list[str], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each bad file is its line, in order; with no file left there is no model to load."""
    paths = [f"{bad['d']}/missing.mp4", f"{bad['d']}/empty.mp4", bad["d"]]
    status, out, err = _run(["classify", *paths], False, capsys, monkeypatch)
    assert status == 1 and out == "" and no_model == []
    assert err.splitlines() == [f"streamclf: error: {paths[0]}: file not found",
                                f"streamclf: error: {paths[1]}: empty file (0 bytes)",
                                f"streamclf: error: {paths[2]} is a directory, not a file"]
