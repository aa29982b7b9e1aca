"""``streamclf evaluate``: datasets, recall figures checked against per-file classification.

The expected figures come from ``ActionClassifier.classify_file`` on the same files with
the same settings (x3d_xs, random weights, one torch thread, one centred clip). To make
recall non-trivial, a dataset is labelled from those predictions: some files with their
top-1, one with its 2nd label, one with its 4th, one with a class outside its top-5, so
that recall@1/3/5 have known, different values.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamclf.cli.evaluate import run as run_evaluate
from streamclf.cli.main import build_parser
from streamclf.errors import ConfigError, DataError, StreamclfError
from streamclf.models.labels import kinetics400_labels
from streamclf.offline.datasets import DatasetItem, match_labels, normalize_label, read_dataset
from streamclf.offline.evaluate import evaluate
from streamclf.progress import Progress, format_eta
from tests.conftest import REPO, manifest_rows, shared_data_or_skip

THREADS = 1  # the CLI is run with --threads 1 and the reference classifier uses one thread
#: Short, cheap-to-decode real clips of the shared data, with different random-weight top-5s.
CLIPS = (
    "videos/mmskeleton__ta_chi.mp4",
    "videos/mmaction2__tests_data_test.mp4",
    "videos/torchvision__v_SoccerJuggling_g24_c01.avi",
    "videos/torchvision__RATRACE_wave_f_nm_np1_fr_goo_37.avi",
    "videos/torchvision__TrumanShow_wave_f_nm_np1_fr_med_26.avi",
)


# -- datasets ------------------------------------------------------------------------------
def test_labels_match_classes_after_normalising_case_spaces_and_underscores() -> None:
    assert normalize_label(" Arm_Wrestling ") == normalize_label('"arm  wrestling"')
    labels = ["Arm_Wrestling", "tai  chi", '"passing American football (in game)"',
              "hugging (visual; NTU60 'hugging other person')", "taichi"]
    match = match_labels(labels, kinetics400_labels())
    assert match == {
        "Arm_Wrestling": "arm wrestling", "tai  chi": "tai chi",
        '"passing American football (in game)"': "passing American football (in game)",
        "hugging (visual; NTU60 'hugging other person')": None, "taichi": None,
    }


def test_csv_columns_ids_and_relative_paths(tmp_path: Path) -> None:
    sub = tmp_path / "sets"
    sub.mkdir()
    (sub / "a.csv").write_text(
        "\ufeffid,path,label\n7,videos/x.mp4,tai chi\n8,/abs/y.avi,Arm_Wrestling\n",
        encoding="utf-8",
    )
    assert read_dataset(sub / "a.csv") == [
        DatasetItem(sub / "videos" / "x.mp4", "tai chi", "7"),
        DatasetItem(Path("/abs/y.avi"), "Arm_Wrestling", "8"),
    ]
    # The manifest's layout: a `file` column is taken when there is no `path` column.
    (sub / "b.csv").write_text("file,label,notes\nv.mp4,abseiling,x\n", encoding="utf-8")
    assert read_dataset(sub / "b.csv") == [DatasetItem(sub / "v.mp4", "abseiling")]
    (sub / "c.csv").write_text("Clip,Action,path\nq.mp4,bowling,wrong.mp4\n", encoding="utf-8")
    assert read_dataset(sub / "c.csv", path_column="clip", label_column="ACTION") == [
        DatasetItem(sub / "q.mp4", "bowling")]


def test_folder_tree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for rel in ("tai_chi/b.mp4", "tai_chi/a.MOV", "tai_chi/deeper/c.avi", "tai_chi/notes.txt",
                "tai_chi/.hidden.mp4", "abseiling/z.mkv", ".git/x.mp4", "loose.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        items = read_dataset(tmp_path)
    assert [(i.path.relative_to(tmp_path).as_posix(), i.label) for i in items] == [
        ("abseiling/z.mkv", "abseiling"), ("tai_chi/a.MOV", "tai_chi"),
        ("tai_chi/b.mp4", "tai_chi"), ("tai_chi/deeper/c.avi", "tai_chi")]
    assert "1 video file(s) directly in" in caplog.text and "loose.mp4" in caplog.text


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "error", "needle"),
    [
        ("missing.csv", None, {}, DataError, "dataset not found"),
        ("cols.csv", "video_id,category\n1,a\n", {}, ConfigError,
         "no path column 'path' or 'file' or 'video' (columns: 'video_id', 'category')"),
        ("lab.csv", "path,category\na.mp4,b\n", {}, ConfigError, "no label column"),
        ("lab2.csv", "path,label\na.mp4,b\n", {"label_column": "cls"}, ConfigError,
         "no label column 'cls'"),
        ("header.csv", "path,label\n", {}, DataError, "no rows"),
        ("blank.csv", "", {}, DataError, "empty CSV"),
        ("nolabel.csv", "path,label\na.mp4,x\nb.mp4,\n", {}, DataError, "nolabel.csv:3: empty"),
        ("video.csv", b"\x00\x00\x00\x18ftypmp42\xff\xfe\x80", {}, DataError, "not a UTF-8"),
        ("emptydir/", None, {}, DataError, "no videos found"),
        ("tree/", None, {"path_column": "x"}, ConfigError, "apply to a CSV"),
    ],
)
def test_bad_datasets(tmp_path: Path, name: str, content: str | bytes | None,
                      kwargs: dict[str, str], error: type[Exception], needle: str) -> None:
    target = tmp_path / name
    if content is not None:
        _write(target, content)
    elif name.endswith("/"):
        target.mkdir()
        if name == "tree/":
            _write(target / "a" / "v.mp4", b"x")
    with pytest.raises(error) as info:
        read_dataset(target, **kwargs)
    assert needle in str(info.value) and "\n" not in str(info.value)


# -- progress ------------------------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_redraws_on_a_terminal_and_prints_plain_lines_elsewhere() -> None:
    assert (format_eta(75.2), format_eta(3725), format_eta(float("inf"))) == (
        "1:15", "1:02:05", "?")
    clock, plain = _Clock(), io.StringIO()
    bar = Progress(40, plain, clock=clock, prefix="evaluate: ")
    for done in range(1, 41):
        clock.now += 0.5  # 2 videos/s: a plain line every 10 s = every 20 videos
        bar.update(done, failed=done // 30)
    bar.close()
    assert plain.getvalue().splitlines() == [
        "evaluate: 20/40 videos  2.0 videos/s  ETA 0:10",
        "evaluate: 40/40 videos  2.0 videos/s  ETA 0:00  1 failed",
    ]
    clock, term = _Clock(), _Terminal()
    bar = Progress(4, term, clock=clock)
    for done in range(1, 5):
        clock.now += 0.25
        bar.update(done)
    bar.close()
    text = term.getvalue()
    assert text.count("\r") == 4 and text.endswith("\x1b[K\n") and "\n" not in text[:-1]
    assert "[#####...............] 1/4 videos  4.0 videos/s  ETA 0:01" in text
    assert "[####################] 4/4 videos" in text
    quiet = Progress(3, None, clock=clock)
    quiet.update(3)
    quiet.close()  # nothing to write to: no error


# -- the command, in process ---------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier() -> Iterator[Any]:
    torch = pytest.importorskip("torch")
    from streamclf.offline.classify import ActionClassifier

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield ActionClassifier("x3d_xs", "random", topk=5, device="cpu")
    torch.set_num_threads(before)


@pytest.fixture
def keep_torch_threads() -> Iterator[None]:
    """The command sets torch's process-wide thread count; give the suite its own back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def evaluate_cli(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    argv = ["evaluate", *args, "--model", "x3d_xs", "--weights", "random", "--device", "cpu",
            "--backend", "torch", "--threads", str(THREADS)]
    status = run_evaluate(build_parser().parse_args(argv))
    out = capsys.readouterr()
    return status, out.out, out.err


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_recall_figures_on_a_labelled_dataset(
    tmp_path: Path, classifier: Any, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture, keep_torch_threads: None,
) -> None:
    data = shared_data_or_skip()
    videos = tmp_path / "set" / "videos"
    videos.mkdir(parents=True)
    names = []
    for rel in CLIPS:
        shutil.copyfile(data / rel, videos / Path(rel).name)
        names.append(Path(rel).name)
    tops = [classifier.classify_file(videos / n).labels for n in names]
    outside = next(c for c in kinetics400_labels() if c not in tops[4])
    # hit@1, hit@1, hit@3 only, hit@5 only, miss; then one label Kinetics does not have.
    truths = [tops[0][0], tops[1][0], tops[2][1], tops[3][3], outside]
    messy = [t.upper().replace(" ", "_") if i % 2 else f"  {t} " for i, t in enumerate(truths)]
    rows = [*zip(names, messy, strict=True), (names[0], "not a kinetics class")]
    with (tmp_path / "set" / "list.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "clip", "action"])
        writer.writerows([i, f"videos/{n}", label] for i, (n, label) in enumerate(rows))
    reports = {}
    for workers in (1, 2):
        status, out, err = evaluate_cli(
            capsys, str(tmp_path / "set" / "list.csv"), "--path-column", "clip",
            "--label-column", "action", "--workers", str(workers), "--topk", "3",
            "--report", str(tmp_path / f"r{workers}.json"),
            "--predictions", str(tmp_path / f"p{workers}.jsonl"),
            "--markdown", str(tmp_path / f"r{workers}.md"),
        )
        assert status == 0, err
        assert "1 of 6 videos have a label that matches no class" in caplog.text
        assert out == (tmp_path / f"r{workers}.md").read_text()
        reports[workers] = json.loads((tmp_path / f"r{workers}.json").read_text())
    assert (tmp_path / "p1.jsonl").read_bytes() == (tmp_path / "p2.jsonl").read_bytes()
    predictions = read_jsonl(tmp_path / "p1.jsonl")
    assert [list(p) for p in predictions] == [["id", "path", "label", "labels", "scores"]] * 6
    for row, pred in zip(rows, predictions, strict=True):
        expected = classifier.classify_file(videos / row[0])
        assert pred["path"] == str(videos / row[0]) and pred["label"] == row[1].strip()
        assert pred["labels"] == expected.labels[:3]
        assert pred["scores"] == pytest.approx(expected.scores[:3], abs=1e-6)

    report = reports[2]
    for key, kind in [("recall@1", float), ("recall@3", float), ("recall@5", float),
                      ("per_class", dict), ("confused", list), ("failed", list),
                      ("videos_per_s", float), ("model", str), ("weights", str),
                      ("videos", int), ("evaluated", int), ("unmatched_labels", list),
                      ("topk", int), ("clips", int), ("backend", str), ("workers", int)]:
        assert isinstance(report[key], kind), key
    assert (report["recall@1"], report["recall@3"], report["recall@5"]) == (0.4, 0.6, 0.8)
    assert (report["model"], report["weights"], report["backend"]) == ("x3d_xs", "random", "torch")
    assert (report["videos"], report["predicted"], report["evaluated"]) == (6, 6, 5)
    assert report["videos_per_s"] > 0 and report["failed"] == [] and report["complete"]
    assert report["unmatched_labels"] == [
        {"label": "not a kinetics class", "count": 1, "paths": [str(videos / names[0])]}]
    per_class: dict[str, list[int]] = {}
    for top, truth in zip(tops, truths, strict=True):
        per_class.setdefault(truth, [0, 0])
        per_class[truth][0] += top[0] == truth
        per_class[truth][1] += 1
    assert report["per_class"] == {
        t: {"recall": h / n, "hits": h, "count": n} for t, (h, n) in sorted(per_class.items())}
    misses = [(t, top[0]) for top, t in zip(tops, truths, strict=True) if top[0] != t]
    assert sorted((c["true"], c["predicted"]) for c in report["confused"]) == sorted(misses)
    assert "| recall@1 (mean hit ratio) | 0.4000 |" in out and "### Most confused" in out

    # The same videos as a folder tree of class folders give the same figures.
    tree = tmp_path / "tree"
    for i, (name, truth) in enumerate(zip(names, truths, strict=True)):
        _write(tree / truth.replace(" ", "_") / f"{i}_{name}", (videos / name).read_bytes())
    status, out, err = evaluate_cli(capsys, str(tree), "--json", "--quiet")
    assert status == 0 and "evaluate:" not in err  # --quiet: no progress line
    by_tree = json.loads(out)
    assert [by_tree[f"recall@{k}"] for k in (1, 3, 5)] == [0.4, 0.6, 0.8]
    assert by_tree["per_class"] == report["per_class"]


def test_failed_files_and_fail_fast(
    tmp_path: Path, tai_chi_clip: Path, corrupted_clip: Path,
    capsys: pytest.CaptureFixture[str], keep_torch_threads: None,
) -> None:
    listing = _write(tmp_path / "d.csv", "path,label\n"
                     f"{tai_chi_clip},tai chi\n{corrupted_clip},tai chi\n"
                     f"missing.mp4,tai chi\n{tai_chi_clip},Tai_Chi\n")
    status, out, err = evaluate_cli(capsys, str(listing), "--json", "--workers", "2",
                                    "--predictions", str(tmp_path / "p.jsonl"))
    report = json.loads(out)
    assert status == 1 and report["complete"] and report["processed"] == 4
    assert [(f["path"], f["label"]) for f in report["failed"]] == [
        (str(corrupted_clip), "tai chi"), (str(tmp_path / "missing.mp4"), "tai chi")]
    assert "corrupt or truncated" in report["failed"][0]["error"]
    assert "file not found" in report["failed"][1]["error"]
    assert [p["path"] for p in read_jsonl(tmp_path / "p.jsonl")] == [str(tai_chi_clip)] * 2
    assert report["evaluated"] == 2 and report["per_class"]["tai chi"]["count"] == 2
    assert err.splitlines()[-1] == "streamclf: error: 2 of 4 files failed (listed in the report)"
    assert "evaluate: 4/4 videos" in err and "2 failed" in err  # the progress line (not a TTY)

    status, out, err = evaluate_cli(capsys, str(listing), "--json", "--workers", "2",
                                    "--fail-fast", "--predictions", str(tmp_path / "p.jsonl"))
    report = json.loads(out)
    assert status == 1 and not report["complete"] and report["stopped"] == "fail-fast"
    assert report["processed"] == 2 and [f["path"] for f in report["failed"]] == [
        str(corrupted_clip)]
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 1
    assert err.splitlines()[-1].startswith(
        "streamclf: error: stopped at the first failed file (--fail-fast): ")

    nothing = _write(tmp_path / "n.csv", f"path,label\n{tai_chi_clip},taichi\n")
    status, out, err = evaluate_cli(capsys, str(nothing), "--json")
    report = json.loads(out)
    assert status == 1 and report["predicted"] == 1 and report["evaluated"] == 0
    assert report["recall@1"] == 0.0 and report["unmatched_labels"][0]["label"] == "taichi"
    assert "no dataset label matches a class of x3d_xs" in err.splitlines()[-1]


def test_stop_event_ends_the_run_early(classifier: Any, tai_chi_clip: Path) -> None:
    stop = threading.Event()
    items = [DatasetItem(tai_chi_clip, "tai chi")] * 6
    run = evaluate(classifier, items, workers=2, stop=stop, on_result=lambda _r: stop.set())
    assert run.stopped == "interrupted" and len(run.results) == 1 and run.results[0].ok
    whole = evaluate(classifier, items[:2], workers=1)
    assert whole.stopped is None and [r.labels for r in whole.results] == [
        run.results[0].labels] * 2


def test_fifos_and_looping_symlinks_are_listed_in_failed(
        classifier: Any, tai_chi_clip: Path, tmp_path: Path) -> None:
    """A FIFO or a looping symlink named .mp4 in a class folder was skipped in silence (and
    a FIFO would block a decoder); each is now evaluated and fails with what it is."""
    folder = tmp_path / "tai_chi"
    folder.mkdir()
    shutil.copy(tai_chi_clip, folder / "a.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop.mp4")
    (folder / "gone.mp4").symlink_to(tmp_path / "nowhere.mp4")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.mp4")
    (folder / "sub.mp4").mkdir()  # a folder named like a video is not one
    items = read_dataset(tmp_path)
    run = evaluate(classifier, items, workers=2)
    failed = {r.item.path.name: r.error for r in run.results if not r.ok}
    assert [r.item.path.name for r in run.results if r.ok] == ["a.mp4"]
    assert "symlink loop" in failed.pop("loop.mp4") and "broken symlink" in failed.pop("gone.mp4")
    if hasattr(os, "mkfifo"):
        assert "not a regular file (a FIFO)" in failed.pop("pipe.mp4")
    assert not failed


# -- the command, as a user runs it --------------------------------------------------------
def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamclf", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


def test_import_is_light() -> None:
    code = ("import sys, streamclf.offline.evaluate, streamclf.offline.datasets, "
            "streamclf.progress, streamclf.cli.evaluate; "
            "print(sorted({'torch', 'cv2', 'onnxruntime', 'openvino'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["nowhere.csv"], "nowhere.csv: dataset not found"),
        (["pyproject.toml"], "no path column"),
        (["tests/data", "--workers", "0"], "--workers must be >= 1, got 0"),
        (["tests/data"], "no videos found"),
        (["tests/data", "--report", "no/such/dir/r.json"], "folder no/such/dir does not exist"),
    ],
)
def test_user_errors_are_one_line(args: list[str], needle: str) -> None:
    out = run_cli("evaluate", *args, "--weights", "random", timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [out.stderr.strip()] and needle in out.stderr
    assert out.stderr.startswith("streamclf: error: ")


@pytest.mark.slow
def test_manifest_matches_per_file_classification(tmp_path: Path, classifier: Any) -> None:
    data = shared_data_or_skip()
    rows = manifest_rows()
    out = run_cli("evaluate", str(data / "manifest.csv"), "--model", "x3d_xs", "--weights",
                  "random", "--device", "cpu", "--threads", str(THREADS), "--workers", "2",
                  "--report", str(tmp_path / "r.json"), "--predictions",
                  str(tmp_path / "p.jsonl"))
    assert out.returncode == 1, out.stderr  # the corrupted file fails; the rest is reported
    assert "Traceback" not in out.stderr and "## Evaluation: x3d_xs (random)" in out.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    predicted = {p["path"]: p for p in read_jsonl(tmp_path / "p.jsonl")}
    failed = {f["path"]: f["error"] for f in report["failed"]}
    paths = [str(data / r["file"]) for r in rows]
    assert sorted([*predicted, *failed]) == sorted(paths)  # every file, exactly once
    assert list(failed) == [str(data / "videos/unusual/decord__corrupted.mp4")]
    assert "corrupt" in next(iter(failed.values()))
    unmatched = {u["label"] for u in report["unmatched_labels"]}
    assert "hugging (visual; NTU60 'hugging other person')" in unmatched

    hits = {1: 0, 3: 0, 5: 0}
    evaluated = 0
    classes = match_labels({r["label"] for r in rows}, classifier.labels)
    for row, path in zip(rows, paths, strict=True):
        if path in failed:
            with pytest.raises(StreamclfError):
                classifier.classify_file(path)
            continue
        top = classifier.classify_file(path).labels
        assert predicted[path]["labels"] == top and predicted[path]["label"] == row["label"]
        truth = classes[row["label"]]
        if truth is None:
            assert row["label"] in unmatched
            continue
        evaluated += 1
        for k in hits:
            hits[k] += truth in top[:k]
    assert report["evaluated"] == evaluated > 0
    assert [report[f"recall@{k}"] for k in (1, 3, 5)] == [hits[k] / evaluated for k in (1, 3, 5)]
