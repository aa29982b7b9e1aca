"""Report plots as PNG bytes: confusion, per-class recall, detection delays, threshold
sweeps, score timelines and training curves.

Every function draws on its own :class:`matplotlib.figure.Figure` through the Agg canvas
(no pyplot, no global backend, nothing left open) and returns the PNG file's bytes at
:data:`DPI` dots per inch. The pixel size depends only on the function and, for
:func:`recall_bars_png`, on the number of bars: the same input gives the same image. Empty
input draws an explicit "no data" figure of the usual size instead of failing; input that
cannot be right (a non-square matrix, score arrays of another length than the times)
raises :class:`~streamclf.errors.ConfigError`.

matplotlib is imported inside the functions, so importing this module is cheap. Example:
``Path("confusion.png").write_bytes(confusion_png(matrix, labels))``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from streamclf.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "confusion_png",
    "delay_histogram_png",
    "most_confused",
    "recall_bars_png",
    "sweep_curve_png",
    "timeline_png",
    "training_curves_png",
]

#: Dots per inch of every image; sizes below are in inches (pixels = inches * DPI).
DPI = 100
_CONFUSION_SIZE = (9.0, 8.0)
_RECALL_WIDTH = 8.0
_DELAY_SIZE = (8.0, 4.5)
_SWEEP_SIZE = (8.0, 5.5)
_TIMELINE_SIZE = (10.0, 4.0)
_CURVES_SIZE = (8.0, 8.0)
#: Longest class name shown on an axis (longer ones end with an ellipsis).
_LABEL_CHARS = 32


def _figure(size: tuple[float, float]) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _no_data(size: tuple[float, float], title: str, why: str = "no data") -> bytes:
    fig = _figure(size)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=16, color="0.4",
            transform=ax.transAxes)
    return _png(fig)


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def _finite(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float, np.number)) and math.isfinite(float(value))


# -- confusion -------------------------------------------------------------------------------
def _square(matrix: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    m = np.asarray(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ConfigError(f"a confusion matrix must be square (K, K), got shape {m.shape}")
    if m.shape[0] != len(labels):
        raise ConfigError(f"a {m.shape[0]}x{m.shape[0]} confusion matrix needs "
                          f"{m.shape[0]} labels, got {len(labels)}")
    if m.size and not (np.all(np.isfinite(m)) and m.min() >= 0):
        raise ConfigError("a confusion matrix holds counts (finite, >= 0)")
    return m


def _confused_indices(m: np.ndarray, top_n: int) -> tuple[list[int], bool]:
    """Indices of the classes to show, and whether there was any confusion at all."""
    if top_n < 1:
        raise ConfigError(f"top_n must be >= 1, got {top_n}")
    k = m.shape[0]
    off = m.astype(float)
    np.fill_diagonal(off, 0.0)
    flat = np.flatnonzero(off.ravel() > 0)
    order = flat[np.argsort(-off.ravel()[flat], kind="stable")]  # ties: row-major order
    chosen: list[int] = []
    for idx in order:
        for c in divmod(int(idx), k):  # (true, predicted)
            if c not in chosen and len(chosen) < top_n:
                chosen.append(c)
        if len(chosen) >= top_n:
            break
    if chosen:
        return chosen, True
    totals = m.sum(axis=1)  # no confusion: the classes with the most videos
    return [int(c) for c in np.argsort(-totals, kind="stable")[:top_n] if totals[c] > 0], False


def most_confused(matrix: np.ndarray, labels: Sequence[str], top_n: int = 15) -> list[str]:
    """The classes :func:`confusion_png` shows, in its row/column order.

    Off-diagonal cells are taken largest count first (ties in row-major order); each adds
    its true class, then its predicted class, until ``top_n`` classes are chosen. With no
    off-diagonal count at all, the ``top_n`` classes with the most videos.

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted class.
        labels: K class names, in the matrix's order.
        top_n: at most this many classes (>= 1).

    Raises:
        ConfigError: a matrix that is not (K, K) counts, or ``labels`` of another length.
    """
    m = _square(matrix, labels)
    return [labels[c] for c in _confused_indices(m, top_n)[0]]


def confusion_png(matrix: np.ndarray, labels: Sequence[str], top_n: int = 15) -> bytes:
    """The sub-matrix of the most-confused classes (see :func:`most_confused`), counts
    written in the cells, colours = share of the true class's videos (rows normalised over
    the whole matrix). 900x800 pixels.

    Args:
        matrix: (K, K) counts, rows = true class, columns = predicted class.
        labels: K class names.
    """
    m = _square(matrix, labels)
    title = "confusion (rows: true class, columns: predicted)"
    if m.size == 0 or m.sum() == 0:
        return _no_data(_CONFUSION_SIZE, title)
    chosen, confused = _confused_indices(m, top_n)
    rows = m.sum(axis=1).astype(float)
    sub = m[np.ix_(chosen, chosen)]
    share = np.divide(sub, rows[chosen, None], out=np.zeros(sub.shape),
                      where=rows[chosen, None] > 0)
    fig = _figure(_CONFUSION_SIZE)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="share of the true class")
    names = [_short(labels[c]) for c in chosen]
    ax.set_xticks(range(len(chosen)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(chosen)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(sub):
        if count:
            text = f"{int(count)}" if float(count).is_integer() else f"{float(count):.2g}"
            ax.text(j, i, text, ha="center", va="center", color="white" if share[i, j] > 0.5
                    else "black", fontsize=max(6, min(12, 100 // len(chosen))))
    shown = f"{len(chosen)} of {m.shape[0]} classes"
    ax.set_title(f"most confused classes ({shown})" if confused
                 else f"no confusions ({shown}, most videos first)")
    return _png(fig)


# -- recall, delays ---------------------------------------------------------------------------
def recall_bars_png(per_class: Mapping[str, float], top_n: int = 40) -> bytes:
    """Horizontal bars of per-class recall, worst at the top; with more than ``top_n``
    classes only the ``top_n`` worst, and the title says so. Non-finite values are left out.
    800 pixels wide, ``DPI * max(3, 1.2 + 0.22 * bars)`` high."""
    if top_n < 1:
        raise ConfigError(f"top_n must be >= 1, got {top_n}")
    items = sorted(((str(k), float(v)) for k, v in per_class.items() if _finite(v)),
                   key=lambda kv: (kv[1], kv[0]))
    title = f"recall per class ({len(items)} classes)"
    if not items:
        return _no_data((_RECALL_WIDTH, 3.0), title)
    if len(items) > top_n:
        title = f"recall per class: the worst {top_n} of {len(items)} classes"
        items = items[:top_n]
    from matplotlib import colormaps

    fig = _figure((_RECALL_WIDTH, max(3.0, 1.2 + 0.22 * len(items))))
    ax = fig.add_subplot()
    values = np.array([v for _, v in items])
    colours = colormaps["RdYlGn"](np.clip(values, 0.0, 1.0))
    ax.barh(range(len(items)), values, color=colours, edgecolor="0.3", linewidth=0.5)
    ax.set_yticks(range(len(items)), [_short(k) for k, _ in items], fontsize=8)
    ax.set_ylim(len(items) - 0.5, -0.5)  # worst at the top, no margin
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=7)
    ax.set_xlim(0.0, max(1.0, float(values.max())) * 1.08)
    ax.set_xlabel("recall")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def delay_histogram_png(delays_s: Sequence[float]) -> bytes:
    """Histogram of the times to detection (seconds), median and 90th percentile marked.
    Non-finite values are left out. 800x450 pixels."""
    values = np.array([float(d) for d in delays_s if _finite(d)])
    title = f"time to detection ({len(values)} detections)"
    if values.size == 0:
        return _no_data(_DELAY_SIZE, title)
    fig = _figure(_DELAY_SIZE)
    ax = fig.add_subplot()
    edges = np.histogram_bin_edges(values, bins="auto")
    if len(edges) > 41:
        edges = np.histogram_bin_edges(values, bins=40)
    ax.hist(values, bins=edges.tolist(), color="tab:blue", alpha=0.75, edgecolor="white")
    median, p90 = np.percentile(values, [50, 90])
    ax.axvline(median, color="tab:orange", linewidth=2, label=f"median {median:.2f} s")
    ax.axvline(p90, color="tab:red", linewidth=2, linestyle="--", label=f"p90 {p90:.2f} s")
    ax.set_xlabel("delay (s)")
    ax.set_ylabel("detections")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


# -- sweep ------------------------------------------------------------------------------------
def _sort_key(value: Any) -> tuple[int, float, str]:
    return (0, float(value), "") if _finite(value) else (1, 0.0, str(value))


def sweep_curve_png(cells: Sequence[Mapping[str, Any]],
                    recommended: Mapping[str, Any] | None) -> bytes:
    """False alarms per hour (x) against median delay (y): one line per ``smooth`` value
    through its thresholds (each point labelled with its threshold), the ``recommended``
    cell starred and annotated. 800x550 pixels.

    Args:
        cells: dicts with ``threshold``, ``smooth``, ``false_alarms_per_hour``,
            ``delay_median_s`` and ``recall``; a cell whose x or y is None/NaN is skipped.
        recommended: one such cell, or None.
    """
    title = "threshold sweep"
    groups: dict[Any, list[tuple[float, float, Any]]] = {}
    for cell in cells:
        x, y = cell.get("false_alarms_per_hour"), cell.get("delay_median_s")
        if _finite(x) and _finite(y):
            groups.setdefault(cell.get("smooth"), []).append(
                (float(x), float(y), cell.get("threshold")))
    if not groups:
        return _no_data(_SWEEP_SIZE, title, "no cell with both false alarms and a delay")
    fig = _figure(_SWEEP_SIZE)
    ax = fig.add_subplot()
    for smooth in sorted(groups, key=_sort_key):
        points = sorted(groups[smooth], key=lambda p: _sort_key(p[2]))
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        (line,) = ax.plot(xs, ys, marker="o", label=f"smooth {smooth}")
        for x, y, threshold in points:
            text = f"{threshold:g}" if _finite(threshold) else str(threshold)
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
    if recommended is not None:
        x, y = recommended.get("false_alarms_per_hour"), recommended.get("delay_median_s")
        recall = recommended.get("recall")
        text = (f"recommended: threshold {recommended.get('threshold')}, "
                f"smooth {recommended.get('smooth')}"
                + (f"\nrecall {float(recall):.2f}" if _finite(recall) else ""))
        if _finite(x) and _finite(y):
            ax.scatter([x], [y], marker="*", s=320, color="gold", edgecolor="black",
                       zorder=5, label="recommended")
            ax.annotate(text, (float(x), float(y)), textcoords="offset points",
                        xytext=(16, -36), fontsize=9, arrowprops={"arrowstyle": "->"},
                        bbox={"boxstyle": "round", "fc": "lightyellow", "alpha": 0.9})
        else:
            title += f" ({text.replace(chr(10), ', ')})"
    ax.set_xlabel("false alarms per hour")
    ax.set_ylabel("median delay (s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# -- timeline ---------------------------------------------------------------------------------
def timeline_png(times_s: np.ndarray, scores: Mapping[str, np.ndarray],
                 stable: Sequence[tuple[float, float, str]], title: str) -> bytes:
    """Scores over media time, one line per label, the stable segments shaded in their
    label's colour; a legend names the labels. 1000x400 pixels.

    Args:
        times_s: (N,) media times in seconds.
        scores: label -> (N,) scores at those times (usually the top few labels).
        stable: ``(start_s, end_s, label)`` segments where the smoothed label held.
        title: the figure's title (e.g. the file name).

    Raises:
        ConfigError: a score array whose shape is not (N,).
    """
    times = np.asarray(times_s, dtype=float)
    if times.ndim != 1:
        raise ConfigError(f"times_s must be one-dimensional (N,), got shape {times.shape}")
    for label, values in scores.items():
        if np.shape(values) != times.shape:
            raise ConfigError(f"scores[{label!r}] has shape {np.shape(values)}, times_s "
                              f"{times.shape}; they must match")
    if (times.size == 0 or not scores) and not stable:
        return _no_data(_TIMELINE_SIZE, title)
    from matplotlib import colormaps
    from matplotlib.patches import Patch

    drawn = list(scores) if times.size else []  # labels drawn as lines
    names = list(dict.fromkeys([*drawn, *(seg[2] for seg in stable)]))
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colour = {name: palette(i % palette.N) for i, name in enumerate(names)}
    fig = _figure(_TIMELINE_SIZE)
    ax = fig.add_subplot()
    handles: list[Any] = []
    for label in drawn:
        (line,) = ax.plot(times, np.asarray(scores[label], dtype=float), color=colour[label],
                          linewidth=1.5, label=_short(label))
        handles.append(line)
    for start, end, label in stable:
        ax.axvspan(float(start), float(end), color=colour[label], alpha=0.18, linewidth=0)
    handles += [Patch(color=colour[n], alpha=0.4, label=f"{_short(n)} (stable)")
                for n in names if n not in drawn]
    ax.set_xlabel("media time (s)")
    ax.set_ylabel("score")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="upper right")
    return _png(fig)


# -- training ---------------------------------------------------------------------------------
def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs: list[float] = []
    ys: list[float] = []
    for i, row in enumerate(rows):
        epoch, value = row.get("epoch", i + 1), row.get(key)
        if _finite(value) and _finite(epoch):
            xs.append(float(epoch))
            ys.append(float(value))
    return xs, ys


def _panel(ax: Axes, rows: Sequence[Mapping[str, Any]], keys: Sequence[str], ylabel: str
           ) -> bool:
    drawn = False
    for key in keys:
        xs, ys = _series(rows, key)
        if xs:
            ax.plot(xs, ys, marker="o", label=key.replace("_", " "))
            drawn = True
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.4",
                transform=ax.transAxes)
    return drawn


def training_curves_png(rows: Sequence[Mapping[str, float]]) -> bytes:
    """Training curves: train and validation loss (top), validation top-1 (middle), learning
    rate (bottom, log scale), against the epoch. 800x800 pixels.

    Args:
        rows: one dict per epoch with ``epoch``, ``train_loss``, ``val_loss``, ``val_top1``,
            ``lr``; missing, None or NaN values are skipped (e.g. no validation loss).
    """
    title = f"training ({len(rows)} epochs)"
    if not rows:
        return _no_data(_CURVES_SIZE, title)
    fig = _figure(_CURVES_SIZE)
    loss, top1, lr = fig.subplots(3, 1, sharex=True)
    _panel(loss, rows, ("train_loss", "val_loss"), "loss")
    loss.set_title(title)
    if _panel(top1, rows, ("val_top1",), "val top-1"):
        top1.set_ylim(-0.02, 1.02)
    if _panel(lr, rows, ("lr",), "learning rate") and all(v > 0 for v in _series(rows, "lr")[1]):
        lr.set_yscale("log")
    lr.set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _png(fig)
