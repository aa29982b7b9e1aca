"""Preprocessing functions against pytorchvideo's/torch's own rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from streamclf.errors import ConfigError, DataError
from streamclf.media.clips import uniform_indices
from streamclf.media.preprocess import (
    ClipTransform,
    center_crop,
    normalize_clip,
    pack_pathways,
    resize_and_crop,
    short_side_shape,
)
from streamclf.models import get_spec


@pytest.mark.parametrize("available", [1, 2, 3, 4, 7, 13, 32, 48, 64, 99, 100, 256, 301])
@pytest.mark.parametrize("samples", [1, 2, 4, 8, 13, 16, 32])
def test_uniform_indices_match_torch_linspace(available: int, samples: int) -> None:
    expected = torch.linspace(0, available - 1, samples).clamp(0, available - 1).long().numpy()
    np.testing.assert_array_equal(uniform_indices(available, samples), expected)


def test_uniform_indices_rejects_empty() -> None:
    with pytest.raises(DataError, match="at least one frame"):
        uniform_indices(0, 4)
    with pytest.raises(ConfigError, match="num_samples must be positive"):
        uniform_indices(4, 0)


@pytest.mark.parametrize(("h", "w", "size"), [(256, 340, 182), (240, 320, 256), (568, 320, 182),
                                                (1080, 1920, 224), (240, 560, 256), (50, 50, 182)])
def test_short_side_shape_matches_pytorchvideo_rule(h: int, w: int, size: int) -> None:
    # pytorchvideo.transforms.functional.short_side_scale: floor of the scaled long side.
    expected = (math.floor(h / w * size), size) if w < h else (size, math.floor(w / h * size))
    assert short_side_shape(h, w, size) == expected


def test_resize_matches_torch_bilinear_within_rounding() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (256, 340, 3), dtype=np.uint8)
    ours = resize_and_crop(frame, 182, 182).astype(np.float32)
    t = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    ref = torch.nn.functional.interpolate(t, size=(182, 241), mode="bilinear", align_corners=False)
    top, left = round((182 - 182) / 2), round((241 - 182) / 2)
    ref_np = ref[0, :, top : top + 182, left : left + 182].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref_np).max() <= 1.0  # uint8 rounding only


def test_center_crop_offsets_and_errors() -> None:
    frame = np.arange(5 * 8 * 1).reshape(5, 8, 1)
    crop = center_crop(frame, 4)
    assert crop.shape == (4, 4, 1)
    assert crop[0, 0, 0] == frame[round(0.5), 2, 0]
    with pytest.raises(DataError, match="smaller than the crop"):
        center_crop(frame, 6)


def test_normalize_clip_layout_and_values() -> None:
    frames = np.zeros((2, 3, 3, 3), dtype=np.uint8)
    frames[..., 0] = 255  # red
    out = normalize_clip(frames, (0.45, 0.45, 0.45), (0.225, 0.225, 0.225))
    assert out.shape == (3, 2, 3, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], (1 - 0.45) / 0.225, rtol=1e-6)
    np.testing.assert_allclose(out[1], (0 - 0.45) / 0.225, rtol=1e-6)


def test_pack_pathways_slowfast() -> None:
    clip = np.arange(32, dtype=np.float32).reshape(1, 32, 1, 1) * np.ones((3, 32, 2, 2), np.float32)
    slow, fast = pack_pathways(clip, 4)
    assert slow.shape == (3, 8, 2, 2) and fast is clip
    expected = torch.linspace(0, 31, 8).long().numpy()
    np.testing.assert_array_equal(slow[0, :, 0, 0], expected.astype(np.float32))
    assert len(pack_pathways(clip, None)) == 1


def test_clip_transform_shapes_for_every_contract() -> None:
    frames = [np.full((240, 320, 3), i, dtype=np.uint8) for i in range(40)]
    for name, shapes in {
        "x3d_xs": [(3, 4, 182, 182)],
        "slowfast_r50": [(3, 8, 256, 256), (3, 32, 256, 256)],
        "mvit_base_16x4": [(3, 16, 224, 224)],
    }.items():
        out = ClipTransform(get_spec(name))(frames)
        assert [x.shape for x in out] == shapes
        assert all(x.dtype == np.float32 for x in out)


def test_clip_transform_skip_temporal_and_prepared_frames() -> None:
    spec = get_spec("x3d_xs")
    frames = [np.full((182, 182, 3), i, dtype=np.uint8) for i in range(6)]
    (clip,) = ClipTransform(spec, temporal_subsample=False)(frames)
    assert clip.shape == (3, 6, 182, 182)  # all frames kept, none resized
    np.testing.assert_allclose(clip[0, :, 0, 0], (np.arange(6) / 255 - 0.45) / 0.225, rtol=1e-5)
    with pytest.raises(DataError, match="no frames to classify"):
        ClipTransform(spec)([])


def test_batch_pathways_fast_path_equals_the_clip_transform() -> None:
    from streamclf.engine.backends.base import batch_pathways

    rng = np.random.default_rng(1)
    for name in ("x3d_xs", "slowfast_r50"):
        spec = get_spec(name)
        clips = [rng.integers(0, 256, (spec.num_frames, spec.crop_size, spec.crop_size, 3),
                              dtype=np.uint8) for _ in range(2)]
        fast = batch_pathways(clips, ClipTransform(spec, temporal_subsample=False))
        ref = [ClipTransform(spec, temporal_subsample=False)(c) for c in clips]
        assert len(fast) == len(ref[0])
        for p, arr in enumerate(fast):
            np.testing.assert_allclose(arr, np.stack([r[p] for r in ref]), rtol=0, atol=1e-6)
