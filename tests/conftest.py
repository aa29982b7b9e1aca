"""Shared fixtures: paths to the real test videos, and the shared-data skip rule."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests run on loaded 2-core CI machines: no per-example deadline (a slow example is
# not a bug), and a fixed example sequence so a run can be repeated exactly.
settings.register_profile("streamclf", deadline=None, derandomize=True, database=None)
settings.load_profile("streamclf")

REPO = Path(__file__).resolve().parents[1]
LOCAL_DATA = Path(__file__).with_name("data")
SHARED_DATA = Path(os.environ.get("STREAMCLF_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data_or_skip() -> Path:
    """``../shared/data`` (or $STREAMCLF_SHARED_DATA); skip the test when it is absent."""
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (only present in the team's CI)")
    return SHARED_DATA


def manifest_rows() -> list[dict[str, str]]:
    data = shared_data_or_skip()
    with (data / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_or_skip()


@pytest.fixture(scope="session")
def tai_chi_clip() -> Path:
    """A real 10 s Kinetics clip that always ships with the repo."""
    return LOCAL_DATA / "ta_chi.mp4"


@pytest.fixture(scope="session")
def corrupted_clip() -> Path:
    return LOCAL_DATA / "corrupted.mp4"


@pytest.fixture(scope="session")
def rotated_clip() -> Path:
    return LOCAL_DATA / "rotated_90.mov"


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported models, compiled IRs and the backend choice go to a per-session folder
    (subprocesses inherit it), never to the user's ~/.cache."""
    root = tmp_path_factory.mktemp("streamclf-cache")
    os.environ["STREAMCLF_CACHE"] = str(root)
    return root


@pytest.fixture(autouse=True)
def restore_switch_interval() -> Iterator[None]:
    """Pipelines built for torch shorten the interpreter's thread switch interval for their
    process (``runtime.tune_switch_interval``); keep that to the test that built one."""
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.fixture(scope="session")
def sensitive_weights(tmp_path_factory: pytest.TempPathFactory, tai_chi_clip: Path) -> Path:
    """A seeded input-sensitive x3d_xs checkpoint file (tests/checkpoints.py): its scores
    change from window to window, so equal lists mean equal windows. Built once (~40 s)."""
    from tests.test_onnx import checkpointed_model

    folder = tmp_path_factory.mktemp("ckpt")
    checkpointed_model("x3d_xs", tai_chi_clip, folder)
    return folder / "x3d_xs.pyth"


@pytest.fixture(scope="session")
def sensitive_backend(sensitive_weights: Path) -> Any:
    """The torch backend on :func:`sensitive_weights`."""
    from streamclf.engine.backends.torch_backend import TorchBackend
    from streamclf.models.loader import load_model

    return TorchBackend(load_model("x3d_xs", sensitive_weights, device="cpu"))
