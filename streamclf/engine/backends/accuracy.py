"""How far one backend's outputs drift from another's on the same clips (e.g. OpenVINO int8
against fp32): top-k agreement and feature cosines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streamclf.errors import ConfigError

__all__ = ["accuracy_cost"]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def accuracy_cost(
    reference: Any, candidate: Any, clips: Sequence[np.ndarray], topk: int = 5
) -> dict[str, float]:
    """How far ``candidate`` (e.g. int8) drifts from ``reference`` (e.g. fp32) on ``clips``.

    Both are backends (``infer(clips) -> (probs, features)``); clips go one at a time.
    Thread-safe as far as the two backends are.

    Returns:
        ``clips``; ``top1_agreement`` and ``top5_agreement`` (fraction of clips whose
        top-1 / ordered top-5 are equal); ``top5_overlap`` (mean share of the reference
        top-5 found in the candidate's); ``cosine_mean`` / ``cosine_min`` of the features;
        ``prob_max_abs_diff``; ``centred_cosine_mean``: the cosine after subtracting the
        reference's mean feature over ``clips`` (raw features share a large common
        component, so the raw cosine hides errors in what differs between clips; this
        one does not; needs two clips or more, else 1.0).

    Raises:
        ConfigError: no clips.
    """
    if not clips:
        raise ConfigError("accuracy_cost needs at least one clip")
    top1 = top5 = overlap = 0.0
    cosines: list[float] = []
    diff = 0.0
    refs: list[np.ndarray] = []
    news: list[np.ndarray] = []
    for clip in clips:
        p_ref, f_ref = reference.infer([clip])
        p_new, f_new = candidate.infer([clip])
        refs.append(f_ref[0])
        news.append(f_new[0])
        o_ref = np.argsort(-p_ref[0], kind="stable")[:topk]
        o_new = np.argsort(-p_new[0], kind="stable")[:topk]
        top1 += float(o_ref[0] == o_new[0])
        top5 += float(np.array_equal(o_ref, o_new))
        overlap += len(set(o_ref.tolist()) & set(o_new.tolist())) / topk
        cosines.append(_cosine(f_ref[0], f_new[0]))
        diff = max(diff, float(np.abs(p_ref - p_new).max()))
    n = len(clips)
    mu = np.mean(np.asarray(refs, np.float64), axis=0)
    centred = [_cosine(a - mu, b - mu) for a, b in zip(refs, news, strict=True)] if n > 1 else [1.0]
    return {
        "clips": float(n),
        "top1_agreement": top1 / n,
        "top5_agreement": top5 / n,
        "top5_overlap": overlap / n,
        "cosine_mean": float(np.mean(cosines)),
        "cosine_min": float(np.min(cosines)),
        "prob_max_abs_diff": diff,
        "centred_cosine_mean": float(np.mean(centred)),
    }
