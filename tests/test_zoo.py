"""Every model in the zoo builds, loads a generated checkpoint, and classifies a real
clip on CPU (the big ones are marked slow); and the registry matches the published
input contracts and checkpoint URLs."""

from __future__ import annotations

import gc
import importlib
import math
import warnings
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from streamclf.models import MODEL_ZOO, ModelSpec, get_spec, kinetics400_labels
from streamclf.models.network import build_network
from streamclf.offline.classify import ActionClassifier

StateDict = dict[str, torch.Tensor]

#: Fast enough to run on every test run; the rest take seconds each on 2 CPU cores.
FAST = {"x3d_xs", "x3d_s"}

#: The published input contract of each model:
#: (name, frames, sampling rate, short side, crop, slowfast alpha, feature dim).
CONTRACT: list[tuple[str, int, int, int, int, int | None, int]] = [
    ("x3d_xs", 4, 12, 182, 182, None, 2048),
    ("x3d_s", 13, 6, 182, 182, None, 2048),
    ("x3d_m", 16, 5, 256, 256, None, 2048),
    ("slow_r50", 8, 8, 256, 256, None, 2048),
    ("c2d_r50", 8, 8, 256, 256, None, 2048),
    ("i3d_r50", 8, 8, 256, 256, None, 2048),
    ("slowfast_r50", 32, 2, 256, 256, 4, 2304),
    ("slowfast_r101", 32, 2, 256, 256, 4, 2304),
    ("mvit_base_16x4", 16, 4, 256, 224, None, 768),
    ("mvit_base_32x3", 32, 3, 256, 224, None, 768),
    ("timesformer_k400_8x224", 8, 32, 224, 224, None, 768),
]

#: pytorchvideo.models.hub module holding each pytorchvideo model's ``checkpoint_paths``.
PTV_HUB_MODULE = {
    "x3d_xs": "x3d",
    "x3d_s": "x3d",
    "x3d_m": "x3d",
    "slow_r50": "resnet",
    "c2d_r50": "resnet",
    "i3d_r50": "resnet",
    "slowfast_r50": "slowfast",
    "slowfast_r101": "slowfast",
    "mvit_base_16x4": "vision_transformers",
    "mvit_base_32x3": "vision_transformers",
}
HF_TIMESFORMER_K400 = (
    "https://huggingface.co/facebook/timesformer-base-finetuned-k400/resolve/main/"
    "pytorch_model.bin"
)


def _zoo_params() -> list[object]:
    return [
        pytest.param(name, marks=() if name in FAST else pytest.mark.slow)
        for name in MODEL_ZOO
    ]


def _generated_state_dict(spec: ModelSpec, seed: int) -> StateDict:
    """Seeded random weights for ``spec``, BatchNorm statistics included (kept plausible)."""
    torch.manual_seed(seed)
    model = build_network(spec)
    gen = torch.Generator().manual_seed(seed)
    sd: StateDict = {}
    for key, value in model.state_dict().items():
        if key.endswith("running_mean"):
            value = torch.randn(value.shape, generator=gen) * 0.1
        elif key.endswith("running_var"):
            value = torch.rand(value.shape, generator=gen) + 0.5
        sd[key] = value.detach().clone()
    del model
    return sd


def _save_as_published(spec: ModelSpec, sd: StateDict, directory: Path) -> Path:
    """Write ``sd`` in the format (and under the file name) of the real published file."""
    path = directory / Path(urlparse(spec.weights_url).path).name
    if spec.family == "pytorchvideo":
        assert path.suffix == ".pyth"
        torch.save({"model_state": sd}, path)  # pytorchvideo's model zoo layout
    else:
        assert path.name == "pytorch_model.bin"
        torch.save(sd, path)  # Hugging Face: a plain state dict
    return path


@pytest.mark.parametrize("name", _zoo_params())
def test_zoo_model_classifies_real_clip_with_generated_checkpoint(
    name: str, tai_chi_clip: Path, tmp_path: Path
) -> None:
    spec = get_spec(name)
    seed = sorted(MODEL_ZOO).index(name) + 1
    sd = _generated_state_dict(spec, seed)
    path = _save_as_published(spec, sd, tmp_path)

    clf = ActionClassifier(name, weights=path, device="cpu", topk=5)
    assert clf.model.device == "cpu"
    assert clf.model.weights == str(path)
    assert clf.labels == kinetics400_labels()

    # The network holds exactly the generated checkpoint (strict key set, equal values).
    loaded = clf.model.net.net.state_dict()
    assert set(loaded) == set(sd)
    for key, value in sd.items():
        assert torch.equal(loaded[key], value), key
    del loaded, sd
    gc.collect()

    result = clf.classify_file(tai_chi_clip)

    known = set(kinetics400_labels())
    assert len(result.labels) == 5
    assert len(set(result.labels)) == 5
    assert all(label in known for label in result.labels)
    assert len(result.scores) == 5
    assert all(0.0 <= s <= 1.0 for s in result.scores)
    assert all(math.isfinite(s) for s in result.scores)
    assert result.scores == sorted(result.scores, reverse=True)
    assert sum(result.scores) <= 1.0 + 1e-5
    assert isinstance(result.features, np.ndarray)
    assert result.features.shape == (spec.feature_dim,)
    assert result.features.dtype == np.float32
    assert np.isfinite(result.features).all()
    assert np.abs(result.features).sum() > 0


def test_contract_table_covers_the_zoo() -> None:
    assert sorted(row[0] for row in CONTRACT) == sorted(MODEL_ZOO)


@pytest.mark.parametrize(
    ("name", "frames", "rate", "side", "crop", "alpha", "feature_dim"), CONTRACT
)
def test_registry_matches_published_contract(
    name: str, frames: int, rate: int, side: int, crop: int, alpha: int | None,
    feature_dim: int,
) -> None:
    spec = get_spec(name)
    assert spec.name == name
    assert (spec.num_frames, spec.sampling_rate) == (frames, rate)
    assert (spec.side_size, spec.crop_size) == (side, crop)
    assert spec.slowfast_alpha == alpha
    assert spec.feature_dim == feature_dim
    assert spec.mean == (0.45, 0.45, 0.45)
    assert spec.std == (0.225, 0.225, 0.225)
    assert spec.num_classes == 400
    assert spec.labels == kinetics400_labels()
    assert spec.clip_duration_s == pytest.approx(frames * rate / 30.0)
    if alpha is None:
        assert spec.input_shapes == ((3, frames, crop, crop),)
    else:
        assert spec.input_shapes == ((3, frames // alpha, crop, crop), (3, frames, crop, crop))


@pytest.mark.parametrize("name", list(MODEL_ZOO))
def test_weights_url_is_the_published_one(name: str) -> None:
    spec = get_spec(name)
    assert spec.weights_url.startswith("https://")
    if spec.family == "timesformer":
        assert spec.weights_url == HF_TIMESFORMER_K400
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorchvideo calls deprecated torch.jit at import
        hub = importlib.import_module(f"pytorchvideo.models.hub.{PTV_HUB_MODULE[name]}")
    assert spec.weights_url == hub.checkpoint_paths[name]
