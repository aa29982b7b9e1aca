"""User mistakes in the engine, model and offline layers raise StreamclfError subclasses,
and the CLI reports them as one line on stderr (no traceback, non-zero exit).

Checkpoints here are generated (random tensors, or plain Python objects pickled by
torch.save); nothing is downloaded.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from streamclf.engine.backends import FakeBackend
from streamclf.engine.backends.accuracy import accuracy_cost
from streamclf.engine.batcher import InferenceWorker
from streamclf.errors import ConfigError, DataError, StreamclfError, WeightsError
from streamclf.models import get_spec, load_classmap, load_model
from streamclf.models.network import build_network
from streamclf.offline.classify import ActionClassifier
from streamclf.offline.datasets import DatasetItem
from streamclf.offline.evaluate import evaluate
from tests.conftest import REPO

MODEL = "x3d_xs"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m streamclf ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "streamclf", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, exactly one line on stderr (the error), no traceback."""
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamclf: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def clf() -> ActionClassifier:
    return ActionClassifier(MODEL, "random", device="cpu")


@pytest.fixture(scope="module")
def x3d_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random x3d_xs checkpoint file (loads without the RANDOM WEIGHTS warning)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "x3d_xs.pt"
    torch.save(build_network(get_spec(MODEL)).state_dict(), path)
    return path


# ------------------------------------------------------------------------------ API types


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_batch": 0}, "max_batch must be >= 1, got 0"),
     ({"max_wait_ms": -1.0}, "max_wait_ms must be >= 0, got -1.0"),
     ({"max_wait_ms": math.nan}, "max_wait_ms must be >= 0, got nan")],
)
def test_worker_rejects_bad_batching_with_config_error(kwargs: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        InferenceWorker(FakeBackend(), **kwargs)


@pytest.mark.parametrize("topk", [0, -3, 1.5, True])
def test_classifier_rejects_bad_topk_before_loading(topk: Any) -> None:
    # The model name does not exist: the topk check comes first, so nothing is loaded.
    with pytest.raises(ConfigError, match="topk must be an integer >= 1"):
        ActionClassifier("no_such_model", "random", topk=topk)


@pytest.mark.parametrize(
    ("frames", "message"),
    [([], "no frames to classify"),
     (np.zeros((0, 64, 64, 3), np.uint8), "no frames to classify"),
     ([np.zeros((64, 64), np.uint8)] * 4, r"frame 0 must be an \(H, W, 3\) RGB image array, "
                                          r"got shape \(64, 64\)"),
     ([np.zeros((64, 64, 4), np.uint8)] * 4, r"got shape \(64, 64, 4\)"),
     (["not a frame"] * 4, "got str"),
     ([np.zeros((0, 5, 3), np.uint8)] * 4, r"got shape \(0, 5, 3\)")],
    ids=["empty-list", "empty-array", "grey", "rgba", "str", "zero-size"],
)
def test_bad_frames_are_data_errors(clf: ActionClassifier, frames: Any, message: str) -> None:
    with pytest.raises(DataError, match=message):
        clf(frames)


def test_evaluate_rejects_zero_workers(clf: ActionClassifier) -> None:
    with pytest.raises(ConfigError, match="workers must be >= 1, got 0"):
        evaluate(clf, [DatasetItem(Path("x.mp4"), "a")], workers=0)


def test_accuracy_cost_needs_clips() -> None:
    with pytest.raises(ConfigError, match="at least one clip"):
        accuracy_cost(FakeBackend(), FakeBackend(), [])


@pytest.mark.parametrize(
    ("obj", "reason"),
    [([1, 2, 3], "it holds a list"),
     (torch.zeros(3), "it holds a Tensor"),
     ({}, "it is empty"),
     ({"blocks.0.weight": 1}, "'blocks.0.weight' holds an int, not a tensor"),
     ({"model_state": [1]}, "'model_state' holds a list, not a tensor"),
     ({1: torch.zeros(1)}, "key 1 is an int, not a name")],
    ids=["list", "tensor", "empty", "int-value", "nested-list", "int-key"],
)
def test_checkpoint_that_is_not_a_state_dict(obj: object, reason: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    with pytest.raises(WeightsError) as info:
        load_model(MODEL, path, device="cpu")
    message = str(info.value)
    assert message == (f"checkpoint {path} does not hold a state dict (parameter names "
                       f"mapped to tensors): {reason}")


def test_sidecar_that_is_not_text(x3d_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "ft.pt"
    path.write_bytes(x3d_checkpoint.read_bytes())
    path.with_suffix(".json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(WeightsError, match="is not UTF-8 JSON text"):
        load_model(MODEL, path, device="cpu")


def test_every_error_here_is_a_streamclf_error() -> None:
    for cls in (ConfigError, DataError, WeightsError):
        assert issubclass(cls, StreamclfError)


# ------------------------------------------------------------------------------ CLI


def test_cli_classify_topk_zero_is_one_line(tmp_path: Path) -> None:
    clip = REPO / "tests" / "data" / "ta_chi.mp4"
    proc = run_cli("classify", "--topk", "0", str(clip))
    assert_one_line_error(proc, "topk must be an integer >= 1, got 0")
    assert proc.stdout == ""


def test_cli_classify_list_checkpoint_is_one_line(tmp_path: Path) -> None:
    weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], weights)
    clip = REPO / "tests" / "data" / "ta_chi.mp4"
    proc = run_cli("classify", "--model", MODEL, "--weights", str(weights), "--device", "cpu",
                   str(clip))
    assert_one_line_error(proc, f"checkpoint {weights} does not hold a state dict",
                          "it holds a list")
    assert proc.stdout == ""


def test_cli_export_to_a_directory_is_one_line(x3d_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    proc = run_cli("export", "--model", MODEL, "--weights", str(x3d_checkpoint), "-o", str(out))
    assert_one_line_error(proc, f"ONNX output {out} is a directory",
                          f"e.g. {out / 'x3d_xs.onnx'}")
    assert proc.stdout == ""
    assert list(out.iterdir()) == []  # nothing written, no temporary files


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [('{"a": 0, "b": "1"}', ".json", "the index of 'b' must be an integer, got '1'"),
     ('{"a": 0, "b": true}', ".json", "the index of 'b' must be an integer, got True"),
     ('["a", "b", "a"]', ".json", "class name 'a' appears twice"),
     ("a\nb\n b \n", ".txt", "class name 'b' appears twice"),
     (b"\xff\xfe\x00\x01", ".txt", "not a UTF-8 text or JSON file")],
    ids=["str-index", "bool-index", "json-repeat", "text-repeat", "binary"],
)
def test_bad_classmaps_are_config_errors(content: str | bytes, suffix: str, message: str,
                                         tmp_path: Path) -> None:
    path = tmp_path / f"classes{suffix}"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_classmap(path)


def test_sidecar_labels_must_be_unique(x3d_checkpoint: Path, tmp_path: Path) -> None:
    path = tmp_path / "ft.pt"
    path.write_bytes(x3d_checkpoint.read_bytes())
    path.with_suffix(".json").write_text('{"labels": ["a", "a"]}', encoding="utf-8")
    with pytest.raises(WeightsError, match="'labels' repeats a name"):
        load_model(MODEL, path, device="cpu")
