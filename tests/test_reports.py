"""Report plots (PNG bytes), the self-contained HTML report, ``evaluate --html`` opened in a
real headless Chromium, and the training history files (``history.csv``, ``curves.png``)."""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from streamclf.analysis import plots
from streamclf.analysis.html_report import HtmlReport
from streamclf.errors import ConfigError
from tests.browser import open_page
from tests.conftest import shared_data_or_skip

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """The (width, height) of PNG bytes, after a full decode."""
    assert data.startswith(PNG)
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        assert img.format == "PNG"
        return img.size


# -- plots ------------------------------------------------------------------------------------
def _cell(threshold: float, smooth: int, fa: float | None, delay: float | None) -> dict:
    return {"threshold": threshold, "smooth": smooth, "false_alarms_per_hour": fa,
            "delay_median_s": delay, "recall": 0.8}


SWEEP = [_cell(0.5, 1, 4.0, 1.0), _cell(0.7, 1, 1.5, 2.0), _cell(0.5, 3, 2.0, 1.6),
         _cell(0.7, 3, None, 2.5), _cell(0.9, 3, 0.5, float("nan"))]
CURVES = [{"epoch": 1, "train_loss": 1.1, "val_loss": None, "val_top1": 0.3, "lr": 1e-3},
          {"epoch": 2, "train_loss": 0.7, "val_loss": math.nan, "val_top1": 0.6, "lr": 1e-3},
          {"epoch": 3, "train_loss": 0.4, "val_loss": 0.5, "val_top1": 0.9, "lr": 1e-4}]
T = np.linspace(0.0, 10.0, 21)

PLOTS: list[tuple[str, Callable[[], bytes], tuple[int, int]]] = [
    ("confusion", lambda: plots.confusion_png(np.array([[5, 2], [1, 3]]), ["a", "b"]),
     (900, 800)),
    ("confusion-empty", lambda: plots.confusion_png(np.zeros((0, 0), int), []), (900, 800)),
    ("confusion-all-zero", lambda: plots.confusion_png(np.zeros((3, 3), int), list("abc")),
     (900, 800)),
    ("recall", lambda: plots.recall_bars_png({"a": 0.5, "b": 1.0, "c": 0.0}), (800, 300)),
    ("recall-many", lambda: plots.recall_bars_png({f"c{i}": i / 60 for i in range(60)}),
     (800, round(100 * (1.2 + 0.22 * 40)))),
    ("recall-empty", lambda: plots.recall_bars_png({}), (800, 300)),
    ("delays", lambda: plots.delay_histogram_png([0.4, 1.0, 1.2, 3.5, math.nan]), (800, 450)),
    ("delays-empty", lambda: plots.delay_histogram_png([]), (800, 450)),
    ("sweep", lambda: plots.sweep_curve_png(SWEEP, SWEEP[1]), (800, 550)),
    ("sweep-recommended-off-plot", lambda: plots.sweep_curve_png(SWEEP, SWEEP[3]), (800, 550)),
    ("sweep-empty", lambda: plots.sweep_curve_png([], None), (800, 550)),
    ("timeline", lambda: plots.timeline_png(
        T, {"tai chi": T / 10, "yoga": 1 - T / 10}, [(1.0, 4.0, "tai chi"), (6, 7, "other")],
        "clip.mp4"), (1000, 400)),
    ("timeline-stable-only", lambda: plots.timeline_png(np.zeros(0), {}, [(0, 1, "x")], "t"),
     (1000, 400)),
    ("timeline-empty", lambda: plots.timeline_png(np.zeros(0), {}, [], "t"), (1000, 400)),
    ("curves", lambda: plots.training_curves_png(CURVES), (800, 800)),
    ("curves-empty", lambda: plots.training_curves_png([]), (800, 800)),
]


@pytest.mark.parametrize(("draw", "size"), [pytest.param(d, s, id=n) for n, d, s in PLOTS])
def test_every_plot_is_a_png_of_its_size(draw: Callable[[], bytes], size: tuple[int, int]
                                         ) -> None:
    assert png_size(draw()) == size


def test_plots_leave_no_pyplot_state() -> None:
    import sys

    plots.delay_histogram_png([1.0, 2.0])
    assert "matplotlib.pyplot" not in sys.modules or not __import__(
        "matplotlib.pyplot").pyplot.get_fignums()


def test_confusion_picks_the_most_confused_classes() -> None:
    labels = [f"c{i}" for i in range(8)]
    m = np.diag([10, 9, 8, 7, 6, 5, 4, 3])  # big diagonals do not count
    m[2, 5] = 7  # the largest confusion: c2 -> c5
    m[6, 1] = 4  # then c6 -> c1
    m[3, 5] = 2  # then c3 -> c5 (c5 already chosen)
    m[0, 7] = 1
    assert plots.most_confused(m, labels, top_n=4) == ["c2", "c5", "c6", "c1"]
    assert plots.most_confused(m, labels, top_n=5) == ["c2", "c5", "c6", "c1", "c3"]
    assert plots.most_confused(m, labels, top_n=3) == ["c2", "c5", "c6"]
    assert plots.most_confused(m, labels) == ["c2", "c5", "c6", "c1", "c3", "c0", "c7"]
    # No confusion at all: the classes with the most videos.
    assert plots.most_confused(np.diag([1, 5, 0, 3]), list("abcd"), top_n=2) == ["b", "d"]
    assert plots.most_confused(np.zeros((2, 2), int), ["a", "b"]) == []


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: plots.confusion_png(np.zeros((2, 3)), ["a", "b"]), "must be square"),
    (lambda: plots.confusion_png(np.eye(2), ["a"]), "needs 2 labels"),
    (lambda: plots.confusion_png(-np.eye(2), ["a", "b"]), "counts"),
    (lambda: plots.most_confused(np.eye(2), ["a", "b"], top_n=0), "top_n"),
    (lambda: plots.timeline_png(T, {"x": T[:-1]}, [], "t"), "must match"),
    (lambda: HtmlReport("x").image(b"GIF89a", "a gif"), "not a PNG"),
    (lambda: HtmlReport("x").table([{"a": 1}, [1]]), "all dicts"),
])
def test_bad_input_raises_config_error(call: Callable[[], object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        call()


# -- the HTML report --------------------------------------------------------------------------
def external_references(page: str) -> list[str]:
    """Anything in ``page`` that would load from elsewhere (data: URLs are inline)."""
    refs = re.findall(r"""(?:src|href|action|poster)\s*=\s*["']?([^"'\s>]+)""", page, re.I)
    found = [r for r in refs if not r.startswith("data:")]
    found += re.findall(r"https?:|url\(|@import|<script|<link|<iframe", page, re.I)
    return found


def test_html_report_is_self_contained_escaped_and_written_atomically(tmp_path: Path) -> None:
    png = plots.delay_histogram_png([1.0, 2.0])
    target = tmp_path / "r.html"
    written = (HtmlReport("A <b>title</b> & more")
               .heading("Rows <1>").paragraph("line 1 <script>\nline 2")
               .table([{"name": "<x>", "value": 0.123456789}, {"name": "y", "extra": None}],
                      caption="dicts")
               .table([("a", 1), ("b", math.nan)], header=("k", "v"))
               .image(png, alt='the "delays"', caption="a caption")
               .write(target))
    assert written == target and [p.name for p in tmp_path.iterdir()] == ["r.html"]
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>A &lt;b&gt;title&lt;/b&gt; &amp; more</title>" in page
    assert "&lt;x&gt;" in page and "<x>" not in page and "&lt;script&gt;" in page
    assert "<th>name</th><th>value</th><th>extra</th>" in page and "<td>0.123457</td>" in page
    assert "<td>b</td><td></td>" in page  # NaN is an empty cell
    assert 'alt="the &quot;delays&quot;"' in page
    assert external_references(page) == []
    import base64

    data = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert data and base64.b64decode(data.group(1)) == png
    with pytest.raises(ConfigError, match="cannot write"):
        HtmlReport("x").write(target / "r.html")  # a file where its folder should be
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary file left


# -- training history -------------------------------------------------------------------------
def _epochs(n: int) -> list[Any]:
    from streamclf.train.fit import EpochResult

    return [EpochResult(epoch=i + 1, train_loss=1.0 / (i + 1), val_top1=0.2 * i, val_topk=0.9,
                        topk=3, lr=1e-3 * 0.1 ** (i // 2), steps=4 * (i + 1), seconds=1.5,
                        best=True, val_loss=None if i == 0 else 2.0 / (i + 1))
            for i in range(n)]


def test_history_csv_and_curves_are_rewritten_from_the_whole_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamclf.train.fit import HISTORY_HEADER, write_history

    write_history(tmp_path, _epochs(2))
    write_history(tmp_path, _epochs(3))  # e.g. a resumed run: its history has every epoch
    with (tmp_path / "history.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(HISTORY_HEADER) == ["epoch", "train_loss", "val_loss", "val_top1",
                                               "lr"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3"]
    assert [float(r[1]) for r in rows[1:]] == [1.0, 0.5, pytest.approx(1 / 3)]
    assert [r[2] for r in rows[1:]] == ["", "1.0", str(2.0 / 3)]  # none: an older run
    assert [float(r[4]) for r in rows[1:]] == [1e-3, 1e-3, pytest.approx(1e-4)]
    assert png_size((tmp_path / "curves.png").read_bytes()) == (800, 800)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "history.csv"]

    def broken(rows: object) -> bytes:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "training_curves_png", broken)
    before = (tmp_path / "curves.png").read_bytes()
    with caplog.at_level(logging.WARNING, logger="streamclf"):
        write_history(tmp_path, _epochs(4))  # the plot fails: a warning, not an exception
    assert "could not draw" in caplog.text and "no fonts" in caplog.text
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 5
    assert (tmp_path / "curves.png").read_bytes() == before


# -- evaluate --html --------------------------------------------------------------------------
CLIPS = ("videos/mmskeleton__ta_chi.mp4", "videos/mmaction2__tests_data_test.mp4",
         "videos/torchvision__v_SoccerJuggling_g24_c01.avi")


@pytest.fixture
def keep_torch_threads() -> Iterator[None]:
    """``evaluate --threads`` sets torch's process-wide thread count; give it back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _dataset(tmp_path: Path, sources: list[Path], labels: list[str]) -> Path:
    videos = tmp_path / "set" / "videos"
    videos.mkdir(parents=True)
    with (tmp_path / "set" / "list.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label"])
        for src, label in zip(sources, labels, strict=True):
            shutil.copyfile(src, videos / src.name)
            writer.writerow([f"videos/{src.name}", label])
    return tmp_path / "set" / "list.csv"


def _evaluate(*args: str) -> int:
    from streamclf.cli.evaluate import run
    from streamclf.cli.main import build_parser

    return run(build_parser().parse_args(
        ["evaluate", *args, "--model", "x3d_xs", "--weights", "random", "--device", "cpu",
         "--backend", "torch", "--threads", "1", "--workers", "1", "--quiet"]))


@pytest.mark.slow
def test_evaluate_html_opens_in_headless_chromium(
        tmp_path: Path, keep_torch_threads: None, capsys: pytest.CaptureFixture[str]) -> None:
    data = shared_data_or_skip()
    listing = _dataset(tmp_path, [data / c for c in CLIPS], ["tai chi", "abseiling", "yoga"])
    html_path = tmp_path / "out" / "report.html"
    html_path.parent.mkdir()
    assert _evaluate(str(listing), "--html", str(html_path), "--report",
                     str(tmp_path / "r.json")) == 0, capsys.readouterr().err
    page = html_path.read_text(encoding="utf-8")
    assert external_references(page) == []
    assert "Evaluation: x3d_xs (random)" in page and "recall@5" in page
    assert page.count("<img ") >= 2 and "Most confused classes" in page

    shown = open_page(html_path)
    images, title = shown.images, shown.title
    assert len(images) >= 2 and shown.all_images_loaded, images
    assert {i["alt"] for i in images} >= {"confusion matrix of the most confused classes",
                                          "per-class recall@1, worst first"}
    assert title == "Evaluation: x3d_xs (random)"
    assert shown.external == []


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad output must fail before the model loads."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("streamclf.offline.classify.ActionClassifier", refuse)


@pytest.mark.parametrize(("target", "extra", "needle"), [
    ("{set}/list.csv", [], "is the data file; refusing to overwrite an input"),
    ("{set}/videos/ta_chi.mp4", [], "is the video"),
    ("{set}/videos", [], "is a folder"),
    ("{tmp}/no/such/r.html", [], "folder {tmp}/no/such does not exist"),
    ("{tmp}/afile/r.html", [], "does not exist"),
    ("{tmp}/r.json", ["--report", "{tmp}/r.json"], "is also the --report file"),
    ("{tmp}/notes.txt", [], "exists and is not an HTML page"),
])
def test_a_bad_html_output_fails_at_once_in_one_line(
        tmp_path: Path, tai_chi_clip: Path, no_model: None, capsys: pytest.CaptureFixture[str],
        target: str, extra: list[str], needle: str) -> None:
    from streamclf.cli.main import main

    listing = _dataset(tmp_path, [tai_chi_clip], ["tai chi"])
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notes.txt").write_text("my notes")

    def fill(text: str) -> str:
        return text.format(set=listing.parent, tmp=tmp_path)

    status = main(["evaluate", str(listing), "--weights", "random", "--html", fill(target),
                   *map(fill, extra)])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("streamclf: error: --")
    assert err.splitlines() == [err.strip()] and fill(needle) in err, err
    assert (tmp_path / "notes.txt").read_text() == "my notes"
    assert listing.read_text().startswith("path,label")


def test_an_unwritable_html_folder_fails_at_once(tmp_path: Path, tai_chi_clip: Path,
                                                 no_model: None) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root may write in any folder")
    listing = _dataset(tmp_path, [tai_chi_clip], ["tai chi"])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot write in"):
            _evaluate(str(listing), "--html", str(locked / "r.html"))
    finally:
        locked.chmod(0o700)
