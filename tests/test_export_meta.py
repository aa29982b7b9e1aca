"""What an ONNX export carries besides the graph: metadata_props, a labels file, mode 0644.

The models are tiny generated networks with random weights (no download, no zoo build),
standing in for a zoo network: any number of pathways -> (probabilities, embedding).
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from streamclf import __version__
from streamclf.engine.backends.export import cached_onnx, export_onnx
from streamclf.engine.backends.onnx_backend import OnnxBackend
from streamclf.engine.backends.onnx_meta import labels_path, read_onnx_metadata
from streamclf.errors import ConfigError, ModelError
from streamclf.models import get_spec
from streamclf.models.loader import LoadedModel

LABELS = ("walking", "running", "jumping jacks", "tai chi", "café")


class TinyNet(torch.nn.Module):
    """``*pathways (B, 3, T, H, W) -> (softmax (B, K), features (B, D))``."""

    def __init__(self, pathways: int, classes: int, dim: int = 6) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv3d(3, dim, 3, padding=1) for _ in range(pathways)
        )
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = sum(conv(x).mean(dim=(2, 3, 4)) for conv, x in zip(self.convs, xs, strict=True))
        assert isinstance(feats, torch.Tensor)
        return torch.softmax(self.head(feats), dim=1), feats


def tiny_model(alpha: int | None = None, labels: tuple[str, ...] = LABELS,
               weights: str = "/ckpt/tiny.pt") -> LoadedModel:
    torch.manual_seed(0)
    spec = dataclasses.replace(get_spec("x3d_xs"), crop_size=8, side_size=10, num_frames=8,
                               slowfast_alpha=alpha, labels=labels)
    net = TinyNet(2 if alpha else 1, len(labels)).eval()
    return LoadedModel(spec=spec, net=net, device="cpu", weights=weights)


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """Files must come out 0644 whatever the process umask."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("strict_umask")
@pytest.mark.parametrize("alpha", [None, 4])
def test_export_embeds_metadata_and_writes_labels(alpha: int | None, tmp_path: Path) -> None:
    model = tiny_model(alpha)
    out = tmp_path / "sub" / "tiny.onnx"
    assert export_onnx(model, out) == out
    spec = model.spec
    expected = {
        "model": "x3d_xs",
        "weights": "/ckpt/tiny.pt",
        "num_frames": "8",
        "sampling_rate": str(spec.sampling_rate),
        "side_size": "10",
        "crop_size": "8",
        "mean": "[0.45, 0.45, 0.45]",
        "std": "[0.225, 0.225, 0.225]",
        "slowfast_alpha": "4" if alpha else "",
        "inputs": "slow,fast" if alpha else "video",
        "num_classes": "5",
        "clip_duration_s": repr(round(spec.clip_duration_s, 6)),
        "scores": "probabilities",
        "streamclf_version": __version__,
    }
    assert read_onnx_metadata(out) == expected
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props == expected
    assert json.loads(props["mean"]) == list(spec.mean)
    assert float(props["clip_duration_s"]) == pytest.approx(spec.clip_duration_s)
    labels = labels_path(out)
    assert labels == tmp_path / "sub" / "tiny.onnx.labels.txt"
    assert labels.read_text(encoding="utf-8").splitlines() == list(LABELS)
    assert labels.read_bytes().endswith(b"\n")
    assert mode(out) == 0o644 and mode(labels) == 0o644
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx", "tiny.onnx.labels.txt"]


def test_onnx_backend_reads_the_metadata(tmp_path: Path) -> None:
    model = tiny_model()
    out = export_onnx(model, tmp_path / "tiny.onnx")
    backend = OnnxBackend(model, onnx_path=out, providers=["CPUExecutionProvider"])
    assert backend.metadata["model"] == "x3d_xs"
    assert backend.metadata["num_classes"] == "5"
    clips = [np.full((8, 8, 8, 3), v, np.uint8) for v in (0, 200)]
    probs, feats = backend.infer(clips)
    assert probs.shape == (2, 5) and feats.shape == (2, 6)


def test_onnx_backend_rejects_a_file_for_other_classes_or_model(tmp_path: Path) -> None:
    model = tiny_model()
    out = export_onnx(model, tmp_path / "tiny.onnx")
    fewer = dataclasses.replace(model, spec=dataclasses.replace(model.spec, labels=LABELS[:4]))
    with pytest.raises(ModelError, match="gives 5 class scores but x3d_xs here has 4 labels"):
        OnnxBackend(fewer, onnx_path=out)
    renamed = dataclasses.replace(model, spec=dataclasses.replace(model.spec, name="x3d_s"))
    with pytest.raises(ModelError, match="was exported from x3d_xs, not x3d_s"):
        OnnxBackend(renamed, onnx_path=out)


@pytest.mark.usefixtures("strict_umask")
def test_cached_export_has_metadata_but_no_labels_file(tmp_path: Path) -> None:
    model = tiny_model()
    path = cached_onnx(model, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert read_onnx_metadata(path)["num_classes"] == "5"
    assert mode(path) == 0o644


def test_export_onto_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"^ONNX output {tmp_path} is a directory; give a "
                                          "file path, e.g. .*x3d_xs.onnx$"):
        export_onnx(tiny_model(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_export_below_a_file_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=f"{blocker} is not a directory"):
        export_onnx(tiny_model(), blocker / "deeper" / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_labels_with_a_line_break_are_refused(tmp_path: Path) -> None:
    model = tiny_model(labels=("a", "b\nc", "d", "e", "f"))
    with pytest.raises(ConfigError, match="holds a line break"):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
    # Without the labels file the names need no check.
    assert export_onnx(model, tmp_path / "m.onnx", write_labels=False).is_file()


def test_unreadable_onnx_metadata_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not an onnx file")
    with pytest.raises(ModelError, match=f"cannot read ONNX file {bad}"):
        read_onnx_metadata(bad)
