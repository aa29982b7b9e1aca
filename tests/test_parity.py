"""Parity with pytorchvideo's own reference chain on real frames.

For each model a seeded, input-sensitive random checkpoint (``tests/checkpoints.py``)
is written to a file; the reference runs pytorchvideo's tutorial transforms
(``UniformTemporalSubsample -> /255 -> NormalizeVideo -> ShortSideScale ->
CenterCropVideo -> PackPathway``) and the raw pytorchvideo network on the decoded RGB
frames, and ``ActionClassifier`` with that checkpoint file gets the very same frames.
Parity means the same ordered top-5 and embedding cosine >= 0.999.

The check is shown to have teeth: BGR frames, ImageNet mean/std and frames shifted
by three each make the same parity check fail. With pytorchvideo's default random
initialisation they would not all fail (its output barely depends on the input; see
``tests/checkpoints.py`` for how the checkpoint is made input-sensitive).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch

from streamclf.models import MODEL_ZOO, get_spec
from streamclf.models.network import _head_applies_softmax, build_network
from streamclf.models.registry import ModelSpec
from streamclf.offline.classify import ActionClassifier, ClassificationResult
from tests.checkpoints import Preprocess, clip_frames, make_checkpoint, read_span
from tests.conftest import shared_data_or_skip

COSINE_MIN = 0.999
TOPK = 5
SEED = 0
SHIFT = 3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Parity is checked on this clip (640x360, so every model resizes; lots of motion,
#: so that a few frames' shift shows); never used for calibration.
PARITY_VIDEO = ("VideoQA-NTO__eating_spaghetti.mp4", 60)
#: (video, first frame) of the clips that calibrate the checkpoints.
CALIBRATION_VIDEOS = (
    ("mmaction2__demo_demo.mp4", 100),
    ("tiny-ucf101__abseiling_k400.mp4", 60),
    ("torchvision__R6llTwEh07w.mp4", 120),
    ("decord__flipping_a_pancake.mkv", 80),
    ("mmaction2__tests_data_test.mp4", 40),
    ("mmskeleton__skateboarding.mp4", 100),
)
CALIBRATION_CLIPS = {"x3d_xs": 6, "slowfast_r50": 3, "mvit_base_16x4": 4}

MODELS = [
    "x3d_xs",
    pytest.param("slowfast_r50", marks=pytest.mark.slow),
    pytest.param("mvit_base_16x4", marks=pytest.mark.slow),
]
CONTROLS = ["bgr", "imagenet_mean_std", "shifted_frames"]


def _pytorchvideo_transforms() -> tuple[Any, Any]:
    """``pytorchvideo.transforms`` and torchvision's video transforms.

    pytorchvideo 0.1.5 imports ``torchvision.transforms.functional_tensor``, which
    current torchvision renamed to ``_functional_tensor``: alias it when missing.
    """
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401
    except ImportError:
        import torchvision.transforms._functional_tensor as functional_tensor

        sys.modules["torchvision.transforms.functional_tensor"] = functional_tensor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both modules warn about deprecations at import
        import pytorchvideo.transforms as ptv_transforms
        import torchvision.transforms._transforms_video as video_transforms
    return ptv_transforms, video_transforms


class PackPathway(torch.nn.Module):
    """pytorchvideo tutorial's SlowFast packing: slow = ``T // alpha`` frames by linspace."""

    def __init__(self, alpha: int) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        t = frames.shape[1]
        index = torch.linspace(0, t - 1, t // self.alpha).long()
        return [torch.index_select(frames, 1, index), frames]


def reference_transform(spec: ModelSpec) -> Preprocess:
    """pytorchvideo's tutorial chain on raw RGB frames, from ``spec``'s numbers."""
    from torchvision.transforms import Compose, Lambda

    ptv, tvv = _pytorchvideo_transforms()
    last = PackPathway(spec.slowfast_alpha) if spec.slowfast_alpha else Lambda(lambda x: [x])
    chain = Compose([
        ptv.UniformTemporalSubsample(spec.num_frames),
        Lambda(lambda x: x / 255.0),
        tvv.NormalizeVideo(spec.mean, spec.std),
        ptv.ShortSideScale(spec.side_size),
        tvv.CenterCropVideo(spec.crop_size),
        last,
    ])

    def run(frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        video = torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float()  # C,T,H,W
        return chain(video)

    return run


class Reference(NamedTuple):
    """The reference's top-k labels and probabilities, and its clip embedding."""

    labels: list[str]
    scores: list[float]
    features: np.ndarray


def reference_outputs(
    spec: ModelSpec, state_dict: dict[str, torch.Tensor], frames: Sequence[np.ndarray]
) -> Reference:
    """Run the raw pytorchvideo network on the reference chain's output.

    Scores: the network's output when its head ends in Softmax (X3D), else its
    softmax. Embedding: the final linear layer's input, averaged over positions.
    """
    model = build_network(spec)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    captured: list[torch.Tensor] = []
    head = model.get_submodule(spec.head_path)
    head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    batch = [p.unsqueeze(0) for p in reference_transform(spec)(frames)]
    with torch.no_grad():
        out = model(batch if len(batch) > 1 else batch[0])
    probs = out if _head_applies_softmax(model, spec) else torch.softmax(out, dim=1)
    feats = captured[-1]
    feats = feats.reshape(1, -1, feats.shape[-1]).mean(dim=1)
    p = probs[0].double().numpy()
    order = np.argsort(-p, kind="stable")[:TOPK]
    return Reference(
        labels=[spec.labels[i] for i in order],
        scores=[float(p[i]) for i in order],
        features=feats[0].double().numpy(),
    )


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64 (float32 rounding would blur the 0.999 line)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def parity_ok(ours: ClassificationResult, ref: Reference) -> bool:
    """The acceptance check: same ordered top-5 labels and embedding cosine >= 0.999."""
    return ours.labels == ref.labels and cosine(ours.features, ref.features) >= COSINE_MIN


@dataclasses.dataclass
class Case:
    """One model's checkpoint file, classifier, reference and the frames they saw."""

    spec: ModelSpec
    weights: Path
    classifier: ActionClassifier
    frames: list[np.ndarray]
    shifted: list[np.ndarray]
    reference: Reference
    ours: ClassificationResult


def _build_case(name: str, data: Path, tmp: Path) -> Case:
    """Checkpoint file, reference and our classifier for ``name`` on the parity clip.

    The checkpoint goes through a ``.pyth`` file (pytorchvideo's layout) so that both
    sides load the same bytes: the reference with ``load_state_dict``, we through
    ``ActionClassifier(weights=path)``.
    """
    spec = get_spec(name)
    n = clip_frames(spec)
    videos = data / "videos"
    calibration = [
        read_span(videos / video, start, n)
        for video, start in CALIBRATION_VIDEOS[: CALIBRATION_CLIPS[name]]
    ]
    video, start = PARITY_VIDEO
    span = read_span(videos / video, start, n + SHIFT)
    frames, shifted = span[:n], span[SHIFT:]
    state = make_checkpoint(
        spec, calibration, reference_transform(spec), seed=SEED, margin_clip=frames
    )
    weights = tmp / f"{name}_seed{SEED}.pyth"
    torch.save({"model_state": state}, weights)
    loaded = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
    reference = reference_outputs(spec, loaded, frames)
    clf = ActionClassifier(name, weights=weights, device="cpu", topk=TOPK)
    return Case(spec, weights, clf, frames, shifted, reference, clf(frames))


GetCase = Callable[[str], Case]


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> GetCase:
    """Per-model cases, built on first use and kept for the module (a slowfast case
    costs ~20 s of CPU); skips when ../shared/data is absent."""
    built: dict[str, Case] = {}

    def get(name: str) -> Case:
        data = shared_data_or_skip()
        if name not in built:
            built[name] = _build_case(name, data, tmp_path_factory.mktemp("parity"))
        return built[name]

    return get


@pytest.mark.parametrize("name", MODELS)
def test_matches_pytorchvideo_reference(cases: GetCase, name: str) -> None:
    case = cases(name)
    ours, ref = case.ours, case.reference
    cos = cosine(ours.features, ref.features)
    assert ours.labels == ref.labels, (ours.labels, ref.labels)
    assert cos >= COSINE_MIN
    # The head is built to amplify input differences: uint8 rounding alone moves these
    # probabilities by up to ~0.02, a broken input by 0.1 to 1.
    np.testing.assert_allclose(ours.scores, ref.scores, atol=0.05)
    assert parity_ok(ours, ref)


@contextlib.contextmanager
def _registered(spec: ModelSpec) -> Iterator[None]:
    """Temporarily register ``spec`` under its name, so everything streamclf derives
    from the registry (preprocessing, backends) follows it."""
    saved = MODEL_ZOO[spec.name]
    MODEL_ZOO[spec.name] = spec
    try:
        yield
    finally:
        MODEL_ZOO[spec.name] = saved


def _broken(case: Case, control: str) -> ClassificationResult:
    """Our output for a deliberately broken input: same checkpoint, same clip."""
    if control == "bgr":
        return case.classifier([np.ascontiguousarray(f[..., ::-1]) for f in case.frames])
    if control == "shifted_frames":
        return case.classifier(case.shifted)
    assert control == "imagenet_mean_std"
    wrong = dataclasses.replace(case.spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with _registered(wrong):
        clf = ActionClassifier(case.spec.name, weights=case.weights, device="cpu", topk=TOPK)
    assert clf.spec.mean == IMAGENET_MEAN
    return clf(case.frames)


@pytest.mark.parametrize("control", CONTROLS)
@pytest.mark.parametrize("name", MODELS)
def test_broken_inputs_fail_parity(cases: GetCase, name: str, control: str) -> None:
    case = cases(name)
    assert parity_ok(case.ours, case.reference)  # a control means nothing without parity
    ours = _broken(case, control)
    assert not parity_ok(ours, case.reference), (
        f"{control}: top-5 {ours.labels} vs {case.reference.labels}, "
        f"cosine {cosine(ours.features, case.reference.features):.5f}"
    )
