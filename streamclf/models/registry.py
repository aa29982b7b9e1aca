"""The model zoo: one frozen :class:`ModelSpec` per supported model.

A spec carries the model's whole input contract, so that preprocessing, live
window sampling and weight loading all read the same numbers.

Sources for every number (checked 2026-11):

* frames x sampling rate and checkpoint URLs: pytorchvideo ``docs/source/model_zoo.md``
  (Kinetics-400 table) and ``pytorchvideo/models/hub/*.py`` ``checkpoint_paths``
  (pytorchvideo 0.1.5).
* short side / crop / mean / std: pytorchvideo's TorchHub inference tutorials
  (``tutorial_torchhub_inference``: SlowFast R50 side 256 crop 256 32x2 alpha 4;
  ``x3d`` hub page: x3d_xs 182/182 4x12, x3d_s 182/182 13x6, x3d_m 256/256 16x5;
  ``slow_r50`` hub page: 256/256 8x8), mean 0.45 / std 0.225 for every pytorchvideo model.
  C2D/I3D 8x8 follow the same ResNet recipe as Slow 8x8 (PySlowFast configs, 256 test
  scale). MViT-B: torchvision's port of these very weights (``MViT_V1_B_Weights``:
  resize 256, crop 224, mean 0.45, std 0.225, 16 frames at 7.5 fps = 16x4), which
  reproduces the published 78.4 top-1.
* TimeSformer-Base K400: the original config ``TimeSformer_divST_8x32_224`` (8 frames,
  sampling rate 32, 224 crop) and the Hugging Face ``facebook/timesformer-base-finetuned-k400``
  processor (shortest edge 224, crop 224, mean 0.45, std 0.225).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamclf.errors import ModelError
from streamclf.models.labels import kinetics400_labels

__all__ = ["MODEL_ZOO", "ModelSpec", "get_spec", "list_models"]

_PTV_ROOT = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
_HF_TIMESFORMER = (
    "https://huggingface.co/facebook/timesformer-base-finetuned-k400/resolve/main/"
    "pytorch_model.bin"
)
_KINETICS_MEAN = (0.45, 0.45, 0.45)
_KINETICS_STD = (0.225, 0.225, 0.225)
#: The frame rate the zoo's sampling rates are expressed in.
REFERENCE_FPS = 30.0


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a zoo model and feed it correctly.

    Attributes:
        name: registry name, e.g. ``"x3d_xs"``.
        family: ``"pytorchvideo"`` (built by ``pytorchvideo.models.hub``) or ``"timesformer"``.
        num_frames: frames per clip fed to the network (the fast pathway for SlowFast).
        sampling_rate: frames apart at 30 fps between two sampled frames.
        side_size: short side the frames are resized to before cropping.
        crop_size: side of the square centre crop.
        mean, std: per-channel RGB normalisation applied to ``frames / 255``.
        slowfast_alpha: slow pathway takes every ``alpha``-th frame; ``None`` if single-path.
        feature_dim: size of the clip embedding (input of the final linear layer).
        head_path: dotted module path of the final ``nn.Linear``.
        weights_url: Kinetics-400 checkpoint URL.
        weights_sha256: expected digest of that file when known (``None``: not published).
        labels: class names in output order.
        note: a short human description for ``streamclf models``.
    """

    name: str
    family: str
    num_frames: int
    sampling_rate: int
    side_size: int
    crop_size: int
    feature_dim: int
    head_path: str
    weights_url: str
    mean: tuple[float, float, float] = _KINETICS_MEAN
    std: tuple[float, float, float] = _KINETICS_STD
    slowfast_alpha: int | None = None
    weights_sha256: str | None = None
    labels: tuple[str, ...] = field(default_factory=kinetics400_labels, repr=False)
    note: str = ""

    @property
    def clip_duration_s(self) -> float:
        """Seconds of video one clip spans: ``num_frames * sampling_rate / 30``."""
        return self.num_frames * self.sampling_rate / REFERENCE_FPS

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def input_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        """Shapes ``(C, T, H, W)`` of the network inputs, one per pathway (slow first)."""
        c, s = 3, self.crop_size
        if self.slowfast_alpha:
            return ((c, self.num_frames // self.slowfast_alpha, s, s), (c, self.num_frames, s, s))
        return ((c, self.num_frames, s, s),)


def _ptv(name: str, frames: int, rate: int, side: int, crop: int, dim: int, head: str,
         file: str, note: str, alpha: int | None = None) -> ModelSpec:
    return ModelSpec(
        name=name, family="pytorchvideo", num_frames=frames, sampling_rate=rate,
        side_size=side, crop_size=crop, feature_dim=dim, head_path=head,
        weights_url=f"{_PTV_ROOT}/{file}", slowfast_alpha=alpha, note=note,
    )


MODEL_ZOO: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        _ptv("c2d_r50", 8, 8, 256, 256, 2048, "blocks.6.proj", "C2D_8x8_R50.pyth",
             "C2D ResNet-50, K400 top-1 71.5"),
        _ptv("i3d_r50", 8, 8, 256, 256, 2048, "blocks.6.proj", "I3D_8x8_R50.pyth",
             "I3D ResNet-50, K400 top-1 73.3"),
        _ptv("slow_r50", 8, 8, 256, 256, 2048, "blocks.5.proj", "SLOW_8x8_R50.pyth",
             "Slow-only ResNet-50, K400 top-1 74.6"),
        _ptv("slowfast_r50", 32, 2, 256, 256, 2304, "blocks.6.proj", "SLOWFAST_8x8_R50.pyth",
             "SlowFast ResNet-50 8x8, K400 top-1 76.9", alpha=4),
        _ptv("slowfast_r101", 32, 2, 256, 256, 2304, "blocks.6.proj",
             "SLOWFAST_8x8_R101.pyth", "SlowFast ResNet-101 8x8, K400 top-1 77.9", alpha=4),
        _ptv("x3d_xs", 4, 12, 182, 182, 2048, "blocks.5.proj", "X3D_XS.pyth",
             "X3D-XS, K400 top-1 69.1; the CPU-light default"),
        _ptv("x3d_s", 13, 6, 182, 182, 2048, "blocks.5.proj", "X3D_S.pyth",
             "X3D-S, K400 top-1 73.3"),
        _ptv("x3d_m", 16, 5, 256, 256, 2048, "blocks.5.proj", "X3D_M.pyth",
             "X3D-M, K400 top-1 75.9"),
        _ptv("mvit_base_16x4", 16, 4, 256, 224, 768, "head.proj", "MVIT_B_16x4.pyth",
             "MViT-B 16x4, K400 top-1 78.9"),
        _ptv("mvit_base_32x3", 32, 3, 256, 224, 768, "head.proj",
             "MVIT_B_32x3_f294077834.pyth", "MViT-B 32x3, K400 top-1 80.3"),
        ModelSpec(
            name="timesformer_k400_8x224", family="timesformer", num_frames=8,
            sampling_rate=32, side_size=224, crop_size=224, feature_dim=768,
            head_path="classifier", weights_url=_HF_TIMESFORMER,
            note="TimeSformer-Base divided space-time (Hugging Face transformers), K400",
        ),
    )
}


def list_models() -> list[ModelSpec]:
    """All registered specs, in registry order."""
    return list(MODEL_ZOO.values())


def get_spec(name: str) -> ModelSpec:
    """Look a model up by name.

    Raises:
        ModelError: the name is not registered; the message lists the known names.
    """
    try:
        return MODEL_ZOO[name]
    except KeyError:
        known = ", ".join(MODEL_ZOO)
        raise ModelError(f"unknown model {name!r}; choose one of: {known}") from None
