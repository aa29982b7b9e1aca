"""The window rule (streamclf.media.clips): spans, the frames in a span, the model's samples.

Synthetic timestamps pin the rule's edges; real files check that classify, training and
the live ring all choose their frames by it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamclf.engine.backends.base import batch_pathways
from streamclf.errors import ConfigError, DataError
from streamclf.media.clips import (
    LIVE_EPS,
    centered_spans,
    frame_times,
    in_span,
    live_span,
    slow_indices,
    span_frames,
    span_indices,
    train_span,
    uniform_indices,
)
from streamclf.media.picture import ArrayPicture
from streamclf.media.preprocess import ClipTransform, pack_pathways
from streamclf.media.ring import FrameRing
from streamclf.media.video import iter_frames, probe, read_clips, read_windows
from streamclf.models import get_spec
from streamclf.train.data import Sample
from streamclf.train.dataset import read_clip
from streamclf.types import Frame

# -- 1. spans ---------------------------------------------------------------------------------


def test_centered_spans() -> None:
    assert centered_spans(10.0, 1.6) == [pytest.approx((4.2, 5.8))]
    assert centered_spans(10.0, 2.0, 3) == [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0)]
    assert centered_spans(10.0, 2.0, 2) == [(0.0, 2.0), (8.0, 10.0)]


@pytest.mark.parametrize("duration", [0.0, -1.0, 1.0, 1.6])
def test_video_not_longer_than_a_clip_is_one_span_over_all_of_it(duration: float) -> None:
    assert centered_spans(duration, 1.6, 3) == [(0.0, math.inf)]
    assert train_span(duration, 1.6, None) == (0.0, math.inf)
    rng = np.random.default_rng(5)
    assert train_span(duration, 1.6, rng) == (0.0, math.inf)
    assert rng.random() == np.random.default_rng(5).random()  # nothing drawn


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_centered_spans_rejects_bad_clip_counts(bad: object) -> None:
    with pytest.raises(ConfigError, match="num_clips must be >= 1"):
        centered_spans(10.0, 2.0, bad)  # type: ignore[arg-type]


def test_spans_reject_empty_clips() -> None:
    with pytest.raises(ConfigError, match="clip_s must be > 0"):
        centered_spans(10.0, 0.0)
    with pytest.raises(ConfigError, match="clip_s must be > 0"):
        train_span(10.0, -1.0, np.random.default_rng(0))


def test_train_span_is_centred_without_rng_and_one_uniform_draw_with_it() -> None:
    assert train_span(10.0, 1.6, None) == centered_spans(10.0, 1.6)[0]
    start, end = train_span(10.0, 1.6, np.random.default_rng(3))
    assert start == np.random.default_rng(3).uniform(0.0, 8.4)
    assert end == pytest.approx(start + 1.6)
    starts = [train_span(10.0, 1.6, np.random.default_rng(s))[0] for s in range(200)]
    assert 0.0 <= min(starts) < 1.0 and 7.4 < max(starts) <= 8.4


def test_live_span_includes_the_frame_on_its_end_and_not_the_one_on_its_start() -> None:
    ts = np.arange(100) / 30.0
    end = float(ts[60])  # 2.0 s exactly; ts[30] is 1.0 s exactly
    assert live_span(end, 1.0) == (1.0 + LIVE_EPS, 2.0 + LIVE_EPS)
    np.testing.assert_array_equal(span_frames(ts, live_span(end, 1.0)), np.arange(31, 61))
    # A window ending between frames ends on the last frame before it.
    np.testing.assert_array_equal(span_frames(ts, live_span(end + 0.01, 1.0)), np.arange(31, 61))


# -- 2. frames in a span ----------------------------------------------------------------------


def test_in_span_is_half_open_and_the_same_for_scalars_and_arrays() -> None:
    span = (1.0, 2.0)
    points = [0.999, 1.0, 1.5, 1.999999, 2.0, 2.5]
    expected = [False, True, True, True, False, False]
    assert [in_span(t, span) for t in points] == expected
    assert in_span(np.asarray(points), span).tolist() == expected
    assert in_span(1e9, (0.0, math.inf)) is True


def test_span_frames() -> None:
    ts = np.asarray([0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(span_frames(ts, (0.5, 1.5)), [1, 2])
    np.testing.assert_array_equal(span_frames(ts, (-5.0, 100.0)), np.arange(5))  # span > video
    assert span_frames(ts, (2.1, 3.0)).size == 0
    assert span_frames(ts, (1.0, 1.0)).size == 0
    assert span_frames(ts, (0.0, 1.0)).dtype == np.int64


def test_frame_folder_times() -> None:
    np.testing.assert_array_equal(frame_times(4, 12.0), [0.0, 1 / 12, 2 / 12, 3 / 12])
    with pytest.raises(ConfigError, match="fps must be > 0"):
        frame_times(4, 0.0)


# -- 3. the model's samples -------------------------------------------------------------------


def test_span_indices_pick_uniformly_among_the_frames_in_the_span() -> None:
    ts = np.arange(100) / 30.0
    picks = span_indices(ts, (1.0, 2.6), 4)  # frames 30..77: 48 frames
    np.testing.assert_array_equal(picks, [30, 45, 61, 77])  # linspace(0, 47, 4)
    assert span_indices(ts, (10.0, 11.0), 4) is None


def test_span_longer_than_the_frames_repeats_frames() -> None:
    ts = np.asarray([0.0, 0.04, 0.08])
    picks = span_indices(ts, (0.0, math.inf), 8)
    np.testing.assert_array_equal(picks, [0, 0, 0, 0, 1, 1, 1, 2])
    picks = span_indices(ts + 7.0, (5.0, 9.0), 3)
    np.testing.assert_array_equal(picks, [0, 1, 2])


def test_span_indices_need_samples() -> None:
    with pytest.raises(ConfigError, match="num_samples must be positive"):
        span_indices(np.arange(5.0), (0.0, 10.0), 0)
    with pytest.raises(DataError, match="at least one frame"):
        uniform_indices(0, 4)


def test_slowfast_slow_pathway_pick() -> None:
    # torch.linspace(0, 31, 8).long(): pytorchvideo's PackPathway for slowfast_r50.
    np.testing.assert_array_equal(slow_indices(32, 4), [0, 4, 8, 13, 17, 22, 26, 31])
    np.testing.assert_array_equal(slow_indices(16, 8), [0, 15])
    np.testing.assert_array_equal(slow_indices(5, 4), [0])
    with pytest.raises(ConfigError, match="at least alpha = 4 frames"):
        slow_indices(3, 4)
    with pytest.raises(ConfigError, match="alpha must be >= 1"):
        slow_indices(32, 0)


def test_both_slowfast_packers_use_the_slow_pick() -> None:
    spec = get_spec("slowfast_r50")
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (spec.num_frames, spec.crop_size, spec.crop_size, 3),
                          dtype=np.uint8) for _ in range(2)]
    transform = ClipTransform(spec, temporal_subsample=False)
    slow, fast = batch_pathways(clips, transform)
    np.testing.assert_array_equal(slow, fast[:, :, slow_indices(spec.num_frames, 4)])
    one_slow, one_fast = pack_pathways(fast[0], spec.slowfast_alpha)
    np.testing.assert_array_equal(one_slow, slow[0])
    np.testing.assert_array_equal(one_fast, fast[0])


# -- one rule for every path, on real files ---------------------------------------------------


def _tiny(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[:4, :4])


def _real_clip(request: pytest.FixtureRequest, name: str) -> Path:
    if name == "tai_chi":
        return Path(request.getfixturevalue("tai_chi_clip"))
    # 28 fps on average with a 30 fps nominal rate: uneven timestamps.
    return Path(request.getfixturevalue("shared_data")) / "videos" / name


@pytest.mark.parametrize("name", ["tai_chi", "mmaction2__demo_demo_skeleton.mp4"])
def test_read_windows_and_the_live_ring_choose_frames_by_the_same_rule(
    request: pytest.FixtureRequest, name: str
) -> None:
    path = _real_clip(request, name)
    decoded = [(ts, _tiny(f)) for _, ts, f in iter_frames(path) if f is not None]
    ts = np.asarray([t for t, _ in decoded])
    ring = FrameRing(len(decoded) + 1, (4, 4, 3), transform=_tiny)
    for seq, (t, image) in enumerate(decoded):
        assert ring.push(Frame(seq=seq, ts=t, wall_ts=0.0, picture=ArrayPicture(image),
                                   media_ts=t))
    duration = 1.6
    ends = [float(ts[i]) for i in (len(ts) // 3, len(ts) // 2, len(ts) - 1)]
    spans = [live_span(end, duration) for end in ends]
    found = read_windows(path, spans, frame_fn=_tiny)
    for end, span, (frames, stamps) in zip(ends, spans, found, strict=True):
        assert stamps[-1] == end  # the frame on the window's end is in the window
        np.testing.assert_array_equal(stamps, ts[span_frames(ts, span)])
        for n in (4, 16):
            offline = uniform_indices(len(stamps), n)
            picks = span_indices(ts, span, n)
            assert picks is not None
            np.testing.assert_array_equal(ts[picks], np.asarray(stamps)[offline])
            window = ring.window(end, duration, n)
            assert window is not None
            np.testing.assert_array_equal(window.ts, ts[picks])
            np.testing.assert_array_equal(window.seqs, picks)
            np.testing.assert_array_equal(window.frames, np.stack(frames)[offline])


def test_classify_clips_are_the_frames_span_indices_name(tai_chi_clip: Path) -> None:
    spec = get_spec("x3d_xs")
    transform = ClipTransform(spec)
    ts = np.asarray([t for _, t, _ in iter_frames(tai_chi_clip, want=lambda i, t: False)])
    spans = centered_spans(probe(tai_chi_clip).duration_s, spec.clip_duration_s, 3)
    picks = [span_indices(ts, span, spec.num_frames) for span in spans]
    wanted = {int(i) for p in picks if p is not None for i in p}
    decoded = iter_frames(tai_chi_clip, want=lambda i, t: i in wanted)
    kept = {i: transform.spatial(f) for i, _, f in decoded if f is not None}
    clips = read_clips(tai_chi_clip, transform, 3)
    assert len(clips) == 3
    for clip, pick in zip(clips, picks, strict=True):
        assert pick is not None
        np.testing.assert_array_equal(clip, np.stack([kept[int(i)] for i in pick]))


def test_read_windows_needs_a_span(tai_chi_clip: Path) -> None:
    with pytest.raises(ConfigError, match="at least one time span"):
        read_windows(tai_chi_clip, [])
    with pytest.raises(DataError, match="no frames in the requested time span"):
        read_windows(tai_chi_clip, [(20.0, 21.6)])


def test_frame_folder_clip_holds_the_frames_of_its_span(tmp_path: Path) -> None:
    import cv2

    fps, count = 12.0, 30  # 2.5 s; the centred 1.6 s is [0.45, 2.05): frames 6..24
    for i in range(count):
        cv2.imwrite(str(tmp_path / f"{i:05d}.png"), np.full((4, 6, 3), i, dtype=np.uint8))
    sample = Sample(path=tmp_path, label=0, where="folder", frame_fps=fps)
    frames = read_clip(sample, 1.6, None)
    np.testing.assert_array_equal(frames[:, 0, 0, 0], np.arange(6, 25))
    span = train_span(count / fps, 1.6, np.random.default_rng(4))
    frames = read_clip(sample, 1.6, np.random.default_rng(4))
    expected = span_frames(frame_times(count, fps), span)
    np.testing.assert_array_equal(frames[:, 0, 0, 0], expected)
    assert read_clip(sample, 5.0, None).shape[0] == count  # clip longer than the folder
