"""Smoother: moving average, top-k, hysteresis, reset and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamclf.errors import StreamclfError
from streamclf.live.smoothing import Change, Smoother, top_k

LABELS = ("run", "walk", "sit", "jump")


def p(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


A = p(0.7, 0.1, 0.1, 0.1)  # "run" leads
B = p(0.1, 0.7, 0.1, 0.1)  # "walk" leads
FLAT = p(0.25, 0.25, 0.25, 0.25)


def test_average_over_last_window() -> None:
    sm = Smoother(LABELS, window=3, threshold=0.0, topk=4)
    vectors = [A, B, FLAT, p(0.0, 0.0, 1.0, 0.0)]
    for i, v in enumerate(vectors):
        res = sm.update(v)
        expected = np.mean(vectors[max(0, i - 2): i + 1], axis=0)
        np.testing.assert_allclose(res.probs, expected, atol=1e-6)
        by_label = dict(zip(res.labels, res.scores, strict=True))
        for name, value in zip(LABELS, expected, strict=True):
            assert by_label[name] == pytest.approx(float(value), abs=1e-6)


def test_topk_sorted_and_capped() -> None:
    sm = Smoother(LABELS, topk=2)
    res = sm.update(p(0.1, 0.2, 0.6, 0.1))
    assert res.labels == ("sit", "walk")
    assert res.scores == pytest.approx((0.6, 0.2))
    assert Smoother(LABELS, topk=10).topk == 4  # capped at the number of labels
    assert len(Smoother(LABELS, topk=10).update(A).labels) == 4


def test_top_k_helper_keeps_label_order_on_ties() -> None:
    labels, scores = top_k(FLAT, LABELS, 2)
    assert labels == ("run", "walk")
    assert scores == (0.25, 0.25)
    with pytest.raises(StreamclfError, match="labels"):
        top_k(FLAT, LABELS[:3], 2)


def test_label_starts_after_consecutive_updates() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.5, start_after=3)
    assert sm.update(A).changes == ()
    assert sm.update(A).changes == ()
    res = sm.update(A)
    assert res.changes == (Change("label_start", "run", pytest.approx(0.7)),)
    assert res.stable_label == "run" == sm.stable_label
    assert sm.update(A).changes == ()  # no repeat while it stays


def test_start_after_one_starts_at_once() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.5, start_after=1)
    assert [c.kind for c in sm.update(A).changes] == ["label_start"]


def test_below_threshold_never_starts() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.8, start_after=1)
    for _ in range(5):
        res = sm.update(A)  # 0.7 < 0.8
        assert res.changes == () and res.stable_label is None


def test_flicker_does_not_start_a_label() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.5, start_after=2)
    for v in [A, B, A, B, A, B]:
        assert sm.update(v).changes == ()
    assert sm.stable_label is None


def test_streak_is_broken_by_another_leader() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.5, start_after=2)
    sm.update(A)
    sm.update(B)  # breaks the "run" streak, starts a "walk" streak
    assert sm.update(A).changes == ()
    assert sm.update(A).changes[0].label == "run"


def test_label_ends_when_score_falls_under_threshold() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.5, start_after=1)
    sm.update(A)
    res = sm.update(FLAT)
    assert res.changes == (Change("label_end", "run", pytest.approx(0.25)),)
    assert res.stable_label is None


def test_switch_ends_old_label_before_starting_new() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.3, start_after=2)
    sm.update(A)
    sm.update(A)
    mixed = p(0.35, 0.55, 0.05, 0.05)  # "run" stays above threshold, "walk" leads
    assert sm.update(mixed).changes == ()
    res = sm.update(mixed)
    assert [(c.kind, c.label) for c in res.changes] == [("label_end", "run"),
                                                         ("label_start", "walk")]
    assert res.changes[0].score == pytest.approx(0.35)
    assert res.stable_label == "walk"


def test_averaging_delays_the_end() -> None:
    sm = Smoother(LABELS, window=3, threshold=0.45, start_after=1)
    sm.update(A)
    assert sm.update(FLAT).changes == ()  # mean(0.7, 0.25) = 0.475 >= 0.45
    assert sm.update(FLAT).changes[0].kind == "label_end"  # mean(.7, .25, .25) = 0.4


def test_reset_returns_label_end_and_clears_history() -> None:
    sm = Smoother(LABELS, window=3, threshold=0.5, start_after=1)
    sm.update(A)
    assert sm.reset() == (Change("label_end", "run", pytest.approx(0.7)),)
    assert sm.stable_label is None
    assert sm.reset() == ()  # nothing active: nothing to close
    res = sm.update(B)  # no average spans the reset
    np.testing.assert_allclose(res.probs, B)


def test_reset_clears_the_start_streak() -> None:
    sm = Smoother(LABELS, window=1, threshold=0.5, start_after=2)
    sm.update(A)
    assert sm.reset() == ()
    assert sm.update(A).changes == ()  # the streak restarted from 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"labels": []}, "labels"),
        ({"labels": ["a", "a"]}, "unique"),
        ({"window": 0}, "window"),
        ({"window": 1.5}, "window"),
        ({"window": True}, "window"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"start_after": 0}, "start_after"),
        ({"topk": 0}, "topk"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], name: str) -> None:
    args: dict[str, object] = {"labels": LABELS, **kwargs}
    with pytest.raises(StreamclfError, match=name):
        Smoother(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("probs", "match"),
    [
        (np.full(3, 0.3, np.float32), "shape"),
        (np.full((1, 4), 0.25, np.float32), "shape"),
        (p(0.5, np.nan, 0.2, 0.3), "finite"),
        (p(3.0, -1.0, 0.5, 0.1), r"\[0, 1\]"),
    ],
)
def test_bad_probs_are_rejected(probs: np.ndarray, match: str) -> None:
    with pytest.raises(StreamclfError, match=match):
        Smoother(LABELS).update(probs)


def test_input_array_is_copied() -> None:
    sm = Smoother(LABELS, window=2, threshold=0.0)
    buf = A.copy()
    sm.update(buf)
    buf[:] = 0.0  # the caller reuses its buffer
    np.testing.assert_allclose(sm.update(B).probs, (A + B) / 2, atol=1e-6)


prob_vectors = st.lists(
    st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=5, max_size=5), min_size=1,
    max_size=30,
).map(lambda rows: [np.array(r, np.float32) / max(1e-6, sum(r)) if sum(r) > 1 else
                    np.array(r, np.float32) for r in rows])


@settings(max_examples=150, deadline=None, database=None)
@given(rows=prob_vectors, window=st.integers(1, 6), threshold=st.floats(0.0, 1.0),
       start_after=st.integers(1, 4), topk=st.integers(1, 8))
def test_property_scores_sorted_in_range(rows: list[np.ndarray], window: int, threshold: float,
                                         start_after: int, topk: int) -> None:
    labels = [f"c{i}" for i in range(5)]
    sm = Smoother(labels, window, threshold, start_after, topk)
    active: str | None = None
    for row in rows:
        res = sm.update(row)
        assert len(res.labels) == len(res.scores) == min(topk, 5)
        assert list(res.scores) == sorted(res.scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in res.scores)
        assert len(set(res.labels)) == len(res.labels)
        for change in res.changes:  # changes replay to the reported stable label
            if change.kind == "label_end":
                assert change.label == active
                active = None
            else:
                assert active is None
                active = change.label
                assert change.score >= threshold
        assert active == res.stable_label
