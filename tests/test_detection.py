"""The detection scoring rule (:mod:`streamclf.analysis.detection`), the truth segments CSV,
matching an event log's streams to truth videos, and ``streamclf score-events`` end to end.

Everything is synthetic: event logs are written by hand, no model runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamclf.analysis.detection import (
    METRIC_KEYS,
    REPORT_KEYS,
    LabelChange,
    VideoRun,
    build_report,
    score_runs,
)
from streamclf.analysis.event_runs import runs_from_events
from streamclf.analysis.segments import TruthSegment, read_segments
from streamclf.cli.common import ExitCode
from streamclf.cli.main import main
from streamclf.errors import ConfigError, DataError

HOUR = 3600.0


def start(label: str, t: float) -> LabelChange:
    return LabelChange("label_start", label, t)


def end(label: str, t: float) -> LabelChange:
    return LabelChange("label_end", label, t)


def seg(video: str, s: float, e: float, label: str) -> TruthSegment:
    return TruthSegment(video, s, e, label)


def report_of(truth: list[TruthSegment], changes: list[LabelChange], grace: float = 2.0,
              video: str = "a.mp4", hours_s: float = HOUR) -> dict[str, Any]:
    return build_report(truth, [VideoRun(video, tuple(changes), hours_s)], grace)


def outcomes(truth: list[TruthSegment], runs: list[VideoRun], grace: float = 2.0) -> list[str]:
    return [s.outcome for s in score_runs(truth, runs, grace).starts]


# -- the rule ------------------------------------------------------------------------------
def test_a_start_exactly_at_end_plus_grace_detects_and_just_after_is_a_false_alarm() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    at = report_of(truth, [start("run", 22.0)])
    assert at["overall"]["detected"] == 1 and at["overall"]["false_alarms"] == 0
    assert at["segments_detail"][0]["delay_s"] == 12.0
    after = report_of(truth, [start("run", 22.001)])
    assert after["overall"]["detected"] == 0 and after["overall"]["false_alarms"] == 1
    assert after["overall"]["precision"] == 0.0 and after["overall"]["recall"] == 0.0


def test_the_end_bound_tolerates_float_rounding() -> None:
    truth = [seg("a.mp4", 10.0, 10.1, "run")]  # 10.1 + 0.2 == 10.299999999999999
    assert report_of(truth, [start("run", 10.3)], grace=0.2)["overall"]["detected"] == 1


def test_a_start_exactly_at_the_segment_start_has_delay_zero() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    rep = report_of(truth, [start("run", 10.0)])
    assert rep["segments_detail"][0] == {"video": "a.mp4", "label": "run", "start_s": 10.0,
                                         "end_s": 20.0, "detected": True, "delay_s": 0.0}
    assert report_of(truth, [start("run", 9.999)])["overall"]["detected"] == 1  # stable at s


def test_a_label_stable_before_the_segment_detects_it_with_delay_zero() -> None:
    """The early start itself falls in no extended window: it is a false alarm."""
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    rep = report_of(truth, [start("run", 5.0)])
    assert rep["overall"]["detected"] == 1 and rep["delays"] == [0.0]
    assert rep["overall"]["false_alarms"] == 1 and rep["overall"]["precision"] == 0.0
    # ... and a later start inside the window only repeats the detection.
    rep = report_of(truth, [start("run", 5.0), end("run", 12.0), start("run", 14.0)])
    assert (rep["overall"]["detected"], rep["overall"]["repeats"]) == (1, 1)


def test_an_end_exactly_at_the_segment_start_means_not_stable() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    assert report_of(truth, [start("run", 5.0), end("run", 10.0)])["overall"]["detected"] == 0
    assert report_of(truth, [start("run", 5.0), end("run", 10.001)])["overall"]["detected"] == 1
    # a start of another label ends the old one; at s exactly, it is gone at s
    assert report_of(truth, [start("run", 5.0), start("walk", 10.0)])[
        "overall"]["detected"] == 0
    assert report_of(truth, [start("run", 5.0), start("walk", 11.0)])[
        "overall"]["detected"] == 1
    # the end of another label does not end it
    assert report_of(truth, [start("run", 5.0), end("walk", 8.0)])["overall"]["detected"] == 1


def test_a_second_timeline_keeps_the_label_open_to_the_end() -> None:
    """A change earlier than the one before it: a second run of the video, appended."""
    truth = [seg("a.mp4", 10.0, 20.0, "run"), seg("a.mp4", 30.0, 40.0, "run")]
    rep = report_of(truth, [start("run", 25.0), start("walk", 1.0)])
    assert [d["detected"] for d in rep["segments_detail"]] == [False, True]
    rep = report_of(truth, [start("walk", 1.0), end("walk", 3.0), start("run", 12.0)])
    assert [d["delay_s"] for d in rep["segments_detail"]] == [2.0, 0.0]


def test_repeats_are_counted_apart() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    rep = report_of(truth, [start("run", 12.0), end("run", 14.0), start("run", 15.0),
                            end("run", 16.0), start("run", 21.5)])
    o = rep["overall"]
    assert (o["detected"], o["repeats"], o["false_alarms"], o["precision"]) == (1, 2, 0, 1.0)
    assert rep["delays"] == [2.0]


def test_starts_are_taken_in_media_ts_order() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    runs = [VideoRun("a.mp4", (start("run", 15.0), start("run", 11.0)), HOUR)]
    assert outcomes(truth, runs) == ["detecting", "repeat"]
    assert score_runs(truth, runs, 2.0).segments[0].delay_s == 1.0


def test_a_start_on_one_video_never_detects_another_videos_segment() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run"), seg("b.mp4", 10.0, 20.0, "run")]
    runs = [VideoRun("a.mp4", (start("run", 30.0),), HOUR),
            VideoRun("b.mp4", (start("run", 12.0),), HOUR)]
    rep = build_report(truth, runs, 2.0)
    assert [d["detected"] for d in rep["segments_detail"]] == [False, True]
    assert rep["overall"]["false_alarms"] == 1
    assert outcomes(truth, runs) == ["false_alarm", "detecting"]


def test_a_start_never_detects_another_label() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    rep = report_of(truth, [start("walk", 12.0)])
    assert rep["overall"]["detected"] == 0
    assert rep["per_class"]["walk"]["false_alarms"] == 1
    assert rep["per_class"]["walk"]["segments"] == 0 and rep["per_class"]["walk"]["recall"] is None
    assert rep["per_class"]["run"]["precision"] is None


def test_overlapping_segments_one_start_detects_both() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run"), seg("a.mp4", 15.0, 25.0, "run")]
    rep = report_of(truth, [start("run", 16.0)])
    assert rep["delays"] == [6.0, 1.0] and rep["overall"]["precision"] == 1.0
    runs = [VideoRun("a.mp4", (start("run", 12.0), end("run", 13.0), start("run", 16.0),
                               end("run", 17.0), start("run", 18.0)), HOUR)]
    assert outcomes(truth, runs) == ["detecting", "detecting", "repeat"]
    assert [s.delay_s for s in score_runs(truth, runs, 2.0).segments] == [2.0, 1.0]


def test_a_video_without_truth_rows_is_scored() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    runs = [VideoRun("a.mp4", (start("run", 11.0),), HOUR / 2),
            VideoRun("b.mp4", (start("run", 1.0), start("walk", 2.0)), HOUR / 2)]
    rep = build_report(truth, runs, 2.0)
    assert rep["videos"] == 2 and rep["hours"] == 1.0
    assert rep["overall"]["false_alarms"] == 2 and rep["overall"]["false_alarms_per_hour"] == 2.0
    assert rep["overall"]["precision"] == pytest.approx(1 / 3, abs=1e-6)
    assert rep["per_class"]["walk"]["false_alarms_per_hour"] == 1.0


def test_delay_percentiles_match_numpy() -> None:
    delays = [0.5, 1.25, 3.0, 0.0, 7.5, 2.2, 4.0]
    truth = [seg("a.mp4", 100.0 * i, 100.0 * i + 50, "run") for i in range(len(delays))]
    changes = [c for i, d in enumerate(delays)
               for c in (start("run", 100.0 * i + d), end("run", 100.0 * i + 60))]
    rep = report_of(truth, changes)
    o = rep["overall"]
    assert o["delay_median_s"] == pytest.approx(np.percentile(delays, 50), abs=1e-6)
    assert o["delay_p90_s"] == pytest.approx(np.percentile(delays, 90), abs=1e-6)
    assert o["delay_max_s"] == 7.5 and sorted(rep["delays"]) == sorted(delays)


def test_report_keys_are_exact() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run"), seg("gone.mp4", 1.0, 2.0, "jump")]
    rep = build_report(truth, [VideoRun("a.mp4", (start("run", 11.0),), 0.0)], 1.0,
                       model="x3d_xs", threshold=0.6, extra="kept")
    assert tuple(rep) == (*REPORT_KEYS, "extra")
    assert (rep["model"], rep["weights"], rep["smooth"], rep["threshold"]) == (
        "x3d_xs", None, None, 0.6)
    assert tuple(rep["overall"]) == METRIC_KEYS
    assert set(rep["per_class"]) == {"run", "jump"}
    assert all(tuple(m) == METRIC_KEYS for m in rep["per_class"].values())
    assert rep["per_class"]["jump"]["segments"] == 0  # its only video was not scored
    assert rep["missing_videos"] == ["gone.mp4"] and rep["overall"]["segments"] == 1
    assert rep["overall"]["false_alarms_per_hour"] is None  # 0 hours
    assert json.loads(json.dumps(rep)) == rep
    empty = report_of([seg("a.mp4", 1.0, 2.0, "run")], [])
    assert empty["overall"]["delay_median_s"] is None and empty["overall"]["precision"] is None


def test_bad_arguments_are_streamclf_errors() -> None:
    truth = [seg("a.mp4", 10.0, 20.0, "run")]
    for grace in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="grace"):
            score_runs(truth, [], grace)
    with pytest.raises(DataError, match="two runs"):
        score_runs(truth, [VideoRun("a.mp4", (), 1.0)] * 2, 1.0)
    with pytest.raises(DataError, match="duration"):
        score_runs(truth, [VideoRun("a.mp4", (), float("nan"))], 1.0)
    with pytest.raises(ConfigError, match="overall"):
        build_report(truth, [], 1.0, overall=1)


# -- truth segments CSV ----------------------------------------------------------------------
def test_read_segments_any_column_order_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("\ufeffLabel, note ,end_s,start_s,Video\nrun,x,20,10,a.mp4\n\n"
                    "jump,,2.5,2.5,dir/b.mp4\n", encoding="utf-8")
    assert read_segments(path) == [seg("a.mp4", 10.0, 20.0, "run"),
                                   seg("dir/b.mp4", 2.5, 2.5, "jump")]


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty file"),
    ("video,start_s,end_s,label\n", "no segments"),
    ("video,start_s,label\na,1,run\n", "line 1: missing column.*end_s"),
    ("video,start_s,end_s,label\na,1,2,run\na,x,2,run\n", "line 3: start_s is not a number"),
    ("video,start_s,end_s,label\na,1,nan,run\n", "line 2: end_s must be a finite"),
    ("video,start_s,end_s,label\na,1,inf,run\n", "line 2: end_s must be a finite"),
    ("video,start_s,end_s,label\na,-1,2,run\n", "line 2: start_s must be >= 0"),
    ("video,start_s,end_s,label\na,3,2,run\n", "line 2: end_s 2 is before start_s 3"),
    ("video,start_s,end_s,label\na,1,2, \n", "line 2: empty label"),
    ("video,start_s,end_s,label\n,1,2,run\n", "line 2: empty video"),
    ("video,start_s,end_s,label\na,1\n", "line 2: empty label"),
])
def test_read_segments_rejects_bad_input(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as info:
        read_segments(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_read_segments_rejects_missing_binary_and_huge_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_segments(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is a directory"):
        read_segments(tmp_path)
    path = tmp_path / "t.csv"
    path.write_bytes(b"video,start_s,end_s,label\n\xff\xfe,1,2,run\n")
    with pytest.raises(DataError, match="line 2: not UTF-8"):
        read_segments(path)
    path.write_text("video,start_s,end_s,label\n" + "a,1,2,run\n" * 4, encoding="utf-8")
    monkeypatch.setattr("streamclf.analysis.segments.MAX_ROWS", 3)
    with pytest.raises(DataError, match="more than 3 segment rows"):
        read_segments(path)
    monkeypatch.setattr("streamclf.analysis.segments.MAX_BYTES", 10)
    with pytest.raises(DataError, match="too large"):
        read_segments(path)


# -- matching the log's streams to truth videos --------------------------------------------
def ev(type_: str, stream: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "stream": stream, "ts": 1.7e9, "seq": 0, **fields}


def opened(stream: str, source: str) -> dict[str, Any]:
    return ev("source_opened", stream, source=source, kind="file")


def label(type_: str, stream: str, name: str, media_ts: float | None) -> dict[str, Any]:
    fields: dict[str, Any] = {"label": name, "score": 0.9}
    if media_ts is not None:
        fields["media_ts"] = media_ts
    return ev(type_, stream, **fields)


def test_streams_match_by_id_stem_and_source_basename() -> None:
    truth = [seg("videos/a.mp4", 1, 2, "run"), seg("videos/b.mp4", 1, 2, "run"),
             seg("c.avi", 1, 2, "run"), seg("d.mp4", 1, 2, "run"), seg("gone.mp4", 1, 2, "run")]
    records = [
        opened("videos/a.mp4", "/data/videos/a.mp4"),  # the id is the truth video
        opened("b", "whatever"),  # the stem
        opened("cam", "/mnt/x/c.avi"),  # the source's basename
        opened("d.mp4", "d.mp4"),  # the basename
        opened("other", "rtsp://user:***@host/live/cam9?x=1"),  # no truth video
        opened("ghost", "/x/ghost.mp4"),
        ev("prediction", "b", media_start=0.0, media_ts=61.5),
        label("label_start", "b", "run", 1.5),
        ev("alert", "b", media_ts=62.0),
        ev("stopped", "b"),
        ev("error", "never", message="cannot open"),  # never ran: not scored
        ev("error", "", source="events", message="disk full"),
    ]
    runs, missing, unscored = runs_from_events(records, truth)
    assert [r.video for r in runs] == ["videos/a.mp4", "videos/b.mp4", "c.avi", "d.mp4",
                                       "cam9", "ghost.mp4"]
    assert missing == ["gone.mp4"] and unscored == 0
    b = runs[1]
    assert b.hours_s == 62.0 and b.changes == (start("run", 1.5),)
    assert runs[0].hours_s == 0.0


def test_label_events_without_media_ts_are_counted_not_scored() -> None:
    truth = [seg("a.mp4", 10, 20, "run")]
    records = [opened("a", "a.mp4"), label("label_start", "a", "run", None),
               label("label_end", "a", "run", float("nan")), label("label_start", "a", "", 3.0),
               label("label_start", "a", "run", 12.0), label("label_end", "a", "run", 30.0)]
    runs, _, unscored = runs_from_events(records, truth)
    assert unscored == 3 and runs[0].changes == (start("run", 12.0), end("run", 30.0))
    assert runs[0].hours_s == 30.0


def test_a_second_source_opened_continues_and_two_streams_on_one_video_fail() -> None:
    truth = [seg("a.mp4", 10, 20, "run")]
    records = [opened("a", "a.mp4"), label("label_start", "a", "run", 12.0),
               opened("a", "a.mp4"), label("label_start", "a", "run", 3.0)]
    runs, _, _ = runs_from_events(records, truth)
    assert len(runs) == 1 and len(runs[0].changes) == 2
    with pytest.raises(DataError, match=r"'a' and 'cam2' both match the truth video 'a\.mp4'"):
        runs_from_events([opened("a", "a.mp4"), opened("cam2", "/other/a.mp4")], truth)
    with pytest.raises(DataError, match="several truth videos"):
        runs_from_events([opened("a", "x")], [seg("a.mp4", 1, 2, "r"), seg("a.avi", 1, 2, "r")])


# -- the command -------------------------------------------------------------------------------
def write_log(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    csv_path = tmp_path / "truth.csv"
    csv_path.write_text("video,start_s,end_s,label\na.mp4,10,20,run\na.mp4,30,40,jump\n"
                        "b.mp4,5,8,run\nmissing.mp4,1,2,run\n", encoding="utf-8")
    log = write_log(tmp_path / "events.jsonl", [
        opened("a", "/v/a.mp4"), opened("cam", "/v/b.mp4"),
        label("label_start", "a", "run", 11.0), label("label_end", "a", "run", 19.0),
        label("label_start", "a", "run", 45.0), ev("prediction", "a", media_ts=1800.0),
        label("label_start", "cam", "run", 6.0), label("label_start", "cam", "walk", None),
        ev("prediction", "cam", media_ts=1800.0), ev("stopped", "a"),
    ])
    return log, csv_path


def test_score_events_end_to_end(inputs: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    log, csv_path = inputs
    out = tmp_path / "r.json"
    assert main(["score-events", str(log), str(csv_path), "--report", str(out)]) == ExitCode.OK
    captured = capsys.readouterr()
    assert "recall: 66.7%" in captured.out and "false alarms/hour: 1.00" in captured.out
    assert "1 label event(s) have no media_ts" in captured.err
    assert "missing.mp4" in captured.err
    rep = json.loads(out.read_text(encoding="utf-8"))
    assert tuple(rep) == (*REPORT_KEYS, "events", "segments_file", "unscored_events")
    assert rep["unscored_events"] == 1 and rep["missing_videos"] == ["missing.mp4"]
    assert rep["hours"] == 1.0 and rep["grace"] == 2.0
    o = rep["overall"]
    assert (o["segments"], o["detected"], o["false_alarms"], o["precision"]) == (3, 2, 1, 0.666667)
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary file left
    assert main(["score-events", str(log), str(csv_path), "--json", "--grace", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["grace"] == 0.0


def test_score_events_reads_rotated_logs(tmp_path: Path, inputs: tuple[Path, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _, csv_path = inputs
    log = write_log(tmp_path / "ev.jsonl", [label("label_start", "a", "jump", 31.0)])
    write_log(tmp_path / "ev.jsonl.1", [opened("a", "a.mp4"),
                                        label("label_start", "a", "run", 11.0)])
    assert main(["score-events", str(log), str(csv_path), "--json", "--rotated"]) == 0
    assert json.loads(capsys.readouterr().out)["per_class"]["jump"]["detected"] == 1


def test_score_events_with_no_label_events_misses_everything(
    tmp_path: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    _, csv_path = inputs
    log = write_log(tmp_path / "ev.jsonl", [opened("a", "a.mp4"), opened("b", "b.mp4")])
    assert main(["score-events", str(log), str(csv_path), "--json"]) == 0
    o = json.loads(capsys.readouterr().out)["overall"]
    assert (o["detected"], o["recall"], o["precision"]) == (0, 0.0, None)


@pytest.mark.parametrize("bad", ["bad_csv", "missing_log", "corrupt_log", "dir_log"])
def test_score_events_errors_are_one_line(bad: str, inputs: tuple[Path, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    log, csv_path = inputs
    if bad == "bad_csv":
        csv_path.write_text("video,start_s,end_s,label\na.mp4,x,2,run\n", encoding="utf-8")
    elif bad == "missing_log":
        log = tmp_path / "nope.jsonl"
    elif bad == "corrupt_log":
        log.write_text('{"type": "source_opened"}\nnot json\n{}\n', encoding="utf-8")
    else:
        log = tmp_path
    status = main(["score-events", str(log), str(csv_path), "--report",
                   str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert status == ExitCode.ERROR
    assert err.startswith("streamclf: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("grace", ["-1", "nan", "inf", "two"])
def test_score_events_bad_grace_is_a_usage_error(
    grace: str, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    log, csv_path = inputs
    assert main(["score-events", str(log), str(csv_path), f"--grace={grace}"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "--grace" in err and err.count("\n") == 1, err


def test_score_events_refuses_to_overwrite_an_input(
    inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    log, csv_path = inputs
    before = log.read_bytes()
    assert main(["score-events", str(log), str(csv_path), "--report", str(log)]) == 1
    assert "is an input file" in capsys.readouterr().err and log.read_bytes() == before
