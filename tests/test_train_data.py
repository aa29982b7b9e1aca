"""``streamclf train`` without training: dataset formats, augmentation, schedule, bad input."""

from __future__ import annotations

import io
import itertools
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamclf.cli.main import main
from streamclf.errors import ConfigError, DataError
from streamclf.models.registry import get_spec
from streamclf.train.augment import (
    ColorJitter,
    TrainTransform,
    ValTransform,
    color_jitter,
    random_crop,
    train_scale_range,
)
from streamclf.train.data import load_data
from streamclf.train.dataset import ClipDataset, read_clip
from streamclf.train.formats import JESTER_FPS
from streamclf.train.loop import epoch_progress, show_batch
from streamclf.train.recipe import TrainConfig, default_step_epochs, lr_at
from tests.conftest import manifest_rows
from tests.train_data import CLASSES, write_clip


@pytest.fixture(scope="module")
def clip_pool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real tiny MP4 per class, copied wherever a test needs a video."""
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    return {k: write_clip(root / f"{k}.mp4", k, rng, size=32, seconds=1.0) for k in CLASSES}


def _put(clip: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(clip, target)
    return target


def _tree(root: Path, pool: dict[str, Path], parts: dict[str, int]) -> Path:
    for part, n in parts.items():
        for k, clip in pool.items():
            for i in range(n):
                _put(clip, root / part / k / f"{k}{i}.mp4")
    return root


def _error(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- formats ---------------------------------------------------------------------------------


def test_folder_tree_with_val_and_predict(tmp_path: Path, clip_pool: dict[str, Path]) -> None:
    root = _tree(tmp_path / "ds", clip_pool, {"train": 3, "val": 1})
    _put(clip_pool["steady"], root / "predict" / "unknown.mp4")
    data = load_data(root)
    assert data.format == "folders" and data.labels == CLASSES
    assert len(data.train) == 9 and len(data.val) == 3
    assert [data.labels[s.label] for s in data.val] == list(CLASSES)
    assert data.predict == (root / "predict" / "unknown.mp4",)


def test_split_off_validation_is_stratified_and_seeded(
    tmp_path: Path, clip_pool: dict[str, Path]
) -> None:
    root = _tree(tmp_path / "ds", clip_pool, {"train": 5})
    a, b = load_data(root, val_split=0.4, seed=1), load_data(root, val_split=0.4, seed=1)
    assert a == b
    assert a.class_counts(a.val) == dict.fromkeys(CLASSES, 2)
    assert a.class_counts(a.train) == dict.fromkeys(CLASSES, 3)
    assert {s.path for s in a.train}.isdisjoint(s.path for s in a.val)
    c = load_data(root, val_split=0.4, seed=2)
    assert {s.path for s in c.val} != {s.path for s in a.val}
    flat = load_data(root / "train", val_split=0.2)  # class folders alone
    assert flat.format == "folders" and len(flat.val) == 3
    with pytest.raises(DataError, match="no validation clips"):
        load_data(root, val_split=0.0)


def test_folder_tree_errors(tmp_path: Path, clip_pool: dict[str, Path]) -> None:
    root = _tree(tmp_path / "ds", clip_pool, {"train": 2, "val": 1})
    (root / "train" / "waving").mkdir()
    with pytest.raises(DataError) as exc:
        load_data(root)
    assert "waving" in _error(exc) and "empty class" in _error(exc)
    (root / "train" / "waving").rmdir()
    _put(clip_pool["steady"], root / "val" / "jumping" / "j.mp4")
    with pytest.raises(DataError, match="validation class 'jumping' has no training clips"):
        load_data(root)
    with pytest.raises(DataError, match="dataset not found"):
        load_data(tmp_path / "missing")
    with pytest.raises(ConfigError, match="--val-split"):
        load_data(root, val_split=1.0)


def test_csv_with_header_split_column_and_without_header(
    tmp_path: Path, clip_pool: dict[str, Path]
) -> None:
    for k, clip in clip_pool.items():
        for i in range(3):
            _put(clip, tmp_path / "v" / f"{k}{i}.mp4")
    rows = [f"v/{k}{i}.mp4,{k},{'val' if i == 2 else 'train'}" for k in CLASSES for i in range(3)]
    (tmp_path / "data.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    data = load_data(tmp_path / "data.csv")
    assert data.format == "csv" and len(data.train) == 6 and len(data.val) == 3
    assert data.train[0].path == tmp_path / "v" / "brighter0.mp4"
    plain = [f"{tmp_path}/v/{k}{i}.mp4,{k}" for k in CLASSES for i in range(3)]
    (tmp_path / "plain.csv").write_text("\n".join(plain) + "\n")
    data = load_data(tmp_path / "plain.csv", val_split=0.34)
    assert len(data.train) == 6 and len(data.val) == 3


@pytest.mark.parametrize(("rows", "expected"), [
    (["path,label", "v/brighter0.mp4,brighter", "v/gone.mp4,darker"],
     r"bad\.csv:3: video not found: .*gone\.mp4"),
    (["path,label", "v/brighter0.mp4,brighter", "v/darker0.mp4,"], r"bad\.csv:3: empty label"),
    (["path,label,split", "v/brighter0.mp4,brighter,holdout"],
     r"bad\.csv:2: split must be train or val"),
    (["1;Swiping Left", "2"], r"bad\.csv:2: expected 'ID;LABEL', got '2'"),
    (["a,b,c", "x,y,z"], r"bad\.csv:1: expected a header with 'path' and 'label'"),
])
def test_csv_bad_entries_name_file_and_line(
    tmp_path: Path, clip_pool: dict[str, Path], rows: list[str], expected: str
) -> None:
    _put(clip_pool["brighter"], tmp_path / "v" / "brighter0.mp4")
    _put(clip_pool["darker"], tmp_path / "v" / "darker0.mp4")
    (tmp_path / "bad.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=expected):
        load_data(tmp_path / "bad.csv")


def _ucf(root: Path, pool: dict[str, Path]) -> Path:
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("1 Brighter\n2 Darker\n3 Steady\n")
    train, test = [], []
    for idx, (k, clip) in enumerate(pool.items(), 1):
        name = k.capitalize()
        for g in (1, 2, 3):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            _put(clip, root / "UCF-101" / rel)
            (test if g == 3 else train).append(rel)
            if g < 3:
                train[-1] = f"{rel} {idx}"
    (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")  # official: CRLF
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return lists


def test_ucf101_split_files(tmp_path: Path, clip_pool: dict[str, Path]) -> None:
    lists = _ucf(tmp_path, clip_pool)
    data = load_data(tmp_path)
    assert data.format == "ucf101" and data.labels == ("Brighter", "Darker", "Steady")
    assert len(data.train) == 6 and len(data.val) == 3
    assert data.train[0].where == f"{lists / 'trainlist01.txt'}:1"
    with pytest.raises(DataError, match=r"testlist02\.txt: split file not found"):
        (lists / "trainlist02.txt").write_text("")
        load_data(tmp_path, split=2)
    (lists / "trainlist01.txt").write_text("Brighter/v_Brighter_g01_c01.avi 1\n"
                                           "Darker/v_Darker_g01_c01.avi 7\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt:2: class index 7 is not in"):
        load_data(tmp_path)
    (lists / "trainlist01.txt").write_text("Brighter/v_Brighter_g01_c01.avi 1\n"
                                           "Darker/v_Darker_g09_c01.avi 2\n")
    with pytest.raises(DataError, match=r"trainlist01\.txt:2: video not found: .*g09"):
        load_data(tmp_path)
    (lists / "classInd.txt").write_text("1 Brighter\nDarker\n")
    with pytest.raises(DataError, match=r"classInd\.txt:2: expected 'INDEX CLASS'"):
        load_data(tmp_path)


def test_hmdb51_split_files(tmp_path: Path, clip_pool: dict[str, Path]) -> None:
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for k, clip in clip_pool.items():
        lines = []
        for i, ident in enumerate((1, 1, 2, 0)):
            _put(clip, tmp_path / k / f"{k}_clip_{i}.avi")
            lines.append(f"{k}_clip_{i}.avi {ident} ")  # the official files end lines in a space
        (splits / f"{k}_test_split1.txt").write_text("\n".join(lines) + "\n")
    data = load_data(tmp_path)
    assert data.format == "hmdb51" and data.labels == CLASSES
    assert len(data.train) == 6 and len(data.val) == 3
    assert all("_clip_3" not in s.path.name for s in (*data.train, *data.val))  # 0 = unused
    (splits / "steady_test_split1.txt").write_text("steady_clip_0.avi 1\nsteady_clip_1.avi 3\n")
    with pytest.raises(DataError, match=r"steady_test_split1\.txt:2: expected 'VIDEO 0\|1\|2'"):
        load_data(tmp_path)


def _jester(root: Path) -> Path:
    (root / "jester-v1-labels.csv").write_text("Swiping Left\nSwiping Right\n")
    frames = root / "20bn-jester-v1"
    rng = np.random.default_rng(0)
    for ident in (1, 2, 3, 4, 5, 6):
        (frames / str(ident)).mkdir(parents=True)
        for i in range(1, 31):  # 2.5 s at 12 fps
            image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
            cv2.imwrite(str(frames / str(ident) / f"{i:05d}.jpg"), image)
    (root / "jester-v1-train.csv").write_text("1;Swiping Left\n2;Swiping Right\n3;Swiping Left\n"
                                              "4;Swiping Right\n")
    (root / "jester-v1-validation.csv").write_text("5;Swiping Left\n6;Swiping Right\n")
    return frames


def test_jester_frame_folders(tmp_path: Path) -> None:
    _jester(tmp_path)
    data = load_data(tmp_path)
    assert data.format == "jester" and data.labels == ("Swiping Left", "Swiping Right")
    assert len(data.train) == 4 and len(data.val) == 2
    assert data.train[0].frame_fps == JESTER_FPS
    frames = read_clip(data.train[0], 1.6, None)  # centred 1.6 s of 2.5 s at 12 fps
    assert frames.shape[1:] == (20, 30, 3) and 19 <= len(frames) <= 21
    # A single Jester-style CSV works too (validation split off it).
    single = load_data(tmp_path / "jester-v1-train.csv", val_split=0.5)
    assert single.format == "jester" and len(single.val) == 2
    (tmp_path / "jester-v1-train.csv").write_text("1;Swiping Left\n9;Swiping Right\n")
    with pytest.raises(DataError, match=r"jester-v1-train\.csv:2: frame folder not found"):
        load_data(tmp_path)
    (tmp_path / "jester-v1-train.csv").write_text("1;Swiping Left\n2;Waving\n")
    with pytest.raises(DataError, match=r"jester-v1-train\.csv:2: label 'Waving' is not in"):
        load_data(tmp_path)


def test_real_ucf101_and_hmdb51_clips(tmp_path: Path, shared_data: Path) -> None:
    """The official layouts and split-file formats over the real UCF101 / HMDB51 clips."""
    rows = manifest_rows()
    ucf = sorted(shared_data / r["file"] for r in rows if "__v_" in r["file"])
    hmdb = [(shared_data / r["file"], r["label"].split(" (")[0]) for r in rows
            if r["label"].endswith("(HMDB51)")]
    assert len(ucf) >= 3 and len(hmdb) >= 4
    # UCF101: UCF-101/<Class>/v_<Class>_gXX_cYY.avi, classInd + trainlist01 + testlist01.
    lists = tmp_path / "ucf" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    names = {p: p.name.split("__", 1)[1] for p in ucf}
    classes = sorted({n.split("_")[1] for n in names.values()})
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    train: list[str] = []
    test: list[str] = []
    for path, name in names.items():
        cls = name.split("_")[1]
        (tmp_path / "ucf" / "UCF-101" / cls).mkdir(parents=True, exist_ok=True)
        (tmp_path / "ucf" / "UCF-101" / cls / name).symlink_to(path)
        if any(t.startswith(f"{cls}/") for t in train):
            test.append(f"{cls}/{name}")
        else:
            train.append(f"{cls}/{name} {classes.index(cls) + 1}")
    (lists / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")
    (lists / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    data = load_data(tmp_path / "ucf")
    assert data.format == "ucf101" and data.labels == tuple(classes)
    assert len(data.train) == len(classes) and len(data.val) == len(ucf) - len(classes)
    assert read_clip(data.val[0], 1.6, np.random.default_rng(0)).shape[-1] == 3
    # HMDB51: <class>/<video>.avi, one <class>_test_split1.txt per class.
    splits = tmp_path / "hmdb" / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    by_class: dict[str, list[str]] = {}
    for path, cls in hmdb:
        name = path.name.split("__", 1)[1].removeprefix("hmdb51_")
        (tmp_path / "hmdb" / cls).mkdir(exist_ok=True)
        (tmp_path / "hmdb" / cls / name).symlink_to(path)
        by_class.setdefault(cls, []).append(name)
    for cls, videos in by_class.items():
        ids = ["1"] + ["2"] * (len(videos) - 1)
        text = "".join(f"{v} {i} \n" for v, i in zip(videos, ids, strict=True))
        (splits / f"{cls}_test_split1.txt").write_text(text)
    data = load_data(tmp_path / "hmdb")
    assert data.format == "hmdb51" and data.labels == tuple(sorted(by_class))
    assert len(data.train) == len(by_class) and len(data.val) == len(hmdb) - len(by_class)
    assert read_clip(data.train[0], 2.13, np.random.default_rng(1)).ndim == 4


# -- augmentation, sampling, schedule ----------------------------------------------------------


def test_train_transform_shapes_and_seeded_determinism() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (40, 90, 120, 3), dtype=np.uint8)
    tf = TrainTransform(4, 64, (0.45,) * 3, (0.225,) * 3)
    a = tf(frames, np.random.default_rng(5))
    b = tf(frames, np.random.default_rng(5))
    c = tf(frames, np.random.default_rng(6))
    assert len(a) == 1 and a[0].shape == (3, 4, 64, 64) and a[0].dtype == np.float32
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    slowfast = TrainTransform(32, 64, (0.45,) * 3, (0.225,) * 3, slowfast_alpha=4)
    slow, fast = slowfast(frames, np.random.default_rng(0))
    assert slow.shape == (3, 8, 64, 64) and fast.shape == (3, 32, 64, 64)
    assert train_scale_range(224) == (256, 320) and train_scale_range(182) == (208, 260)


def test_augmentations_keep_time_order_and_bounds() -> None:
    rng = np.random.default_rng(0)
    ramp = np.stack([np.full((8, 8, 3), v, np.uint8) for v in (40, 80, 120, 160)])
    for seed in range(20):
        out = color_jitter(ramp, ColorJitter(), np.random.default_rng(seed))
        means = out.reshape(4, -1).mean(axis=1)
        assert np.all(np.diff(means) > 0)  # one draw per clip: brightening stays brightening
    frames = rng.integers(0, 256, (3, 30, 50, 3), dtype=np.uint8)
    crops = {tuple(random_crop(frames, 20, np.random.default_rng(s))[0, 0, 0]) for s in range(30)}
    assert len(crops) > 1
    with pytest.raises(DataError, match="smaller than the crop"):
        random_crop(frames, 40, rng)


def test_clip_sampling_depends_on_seed_epoch_index_only(
    tmp_path: Path, clip_pool: dict[str, Path]
) -> None:
    root = _tree(tmp_path / "ds", clip_pool, {"train": 1, "val": 1})
    data = load_data(root)
    long_clip = write_clip(tmp_path / "long.mp4", "brighter", np.random.default_rng(1), size=32,
                           seconds=3.0)
    samples = [*data.train[:1], type(data.train[0])(long_clip, 0, str(long_clip))]
    tf = TrainTransform(4, 32, (0.45,) * 3, (0.225,) * 3)
    ds = ClipDataset(samples, tf, 1.0, seed=3, random_clip=True)
    first = ds[1][0][0]
    assert np.array_equal(first, ds[1][0][0])
    ds.epoch = 1
    assert not np.array_equal(first, ds[1][0][0])
    ds.samples[0] = type(samples[0])(tmp_path / "gone.mp4", 0, "list.txt:4")
    pathways, why = ds[0]
    assert pathways is None and str(why).startswith("list.txt:4: ") and "not found" in str(why)


def test_lr_schedule_warmup_then_step_decay() -> None:
    lrs = [lr_at(s, 10, 1e-3, 2, (4, 6)) for s in range(80)]
    assert lrs[0] == pytest.approx(1e-3 / 20) and lrs[19] == pytest.approx(1e-3)
    assert all(a < b for a, b in itertools.pairwise(lrs[:20]))  # linear warmup
    assert lrs[20:40] == [pytest.approx(1e-3)] * 20
    assert lrs[40:60] == [pytest.approx(1e-4)] * 20 and lrs[60:] == [pytest.approx(1e-5)] * 20
    assert lr_at(0, 10, 1e-3, 0, ()) == 1e-3
    assert default_step_epochs(10) == (7, 9) and default_step_epochs(1) == ()
    with pytest.raises(ConfigError, match="steps_per_epoch must be >= 1"):
        lr_at(0, 0, 1e-3, 0, ())


def test_epoch_progress_in_place_only_on_a_terminal() -> None:
    """Training uses the one progress line of :mod:`streamclf.progress`, with the epoch and
    the running loss in front of its batches, rate and ETA."""
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = epoch_progress(2, 5, 4, stream, clock=lambda: now[0])
        label = bar.prefix
        for i in range(1, 5):
            now[0] += 1.0
            show_batch(bar, label, i, 1.0 / i)
        bar.close()
    text = tty.getvalue()  # redrawn in place at every update (> redraw_s apart), then ended
    assert text.count("\r") == 4 and text.count("\n") == 1 and text.endswith("\x1b[K\n")
    assert "\repoch 2/5  loss 1.0000  [#####...............] 1/4 batches" in text
    assert "epoch 2/5  loss 0.2500  [####################] 4/4 batches  1.0 batches/s" in text
    lines = pipe.getvalue().splitlines()
    assert lines == [lines[0]] and "\r" not in pipe.getvalue()  # one plain line at the end
    assert lines[0] == "epoch 2/5  loss 0.2500  4/4 batches  1.0 batches/s  ETA 0:00"
    silent = epoch_progress(1, 1, 4, None)
    show_batch(silent, silent.prefix, 1, 0.5)
    silent.close()  # no stream: nothing written, nothing raised


# -- the command's one-line errors -----------------------------------------------------------


@pytest.mark.parametrize(("args", "expected"), [
    (["--data", "{missing}"], "dataset not found"),
    (["--data", "{root}", "--model", "x3d_xxl"], "unknown model 'x3d_xxl'"),
    (["--data", "{root}", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
    (["--data", "{root}", "--lr", "-0.1"], "--lr must be a number > 0"),
    (["--data", "{root}", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--data", "{root}", "--val-split", "1.5"], "--val-split must be in [0, 1)"),
    (["--data", "{root}", "--step-epochs", "5", "3"], "--step-epochs must be increasing"),
    (["--data", "{root}", "--freeze-backbone-epochs", "20"], "--freeze-backbone-epochs must"),
    (["--data", "{empty}"], "empty class"),
    (["--data", "{root}", "--resume"], "nothing to resume"),
    (["--data", "{root}", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_input_is_one_line(
    tmp_path: Path, clip_pool: dict[str, Path], capsys: pytest.CaptureFixture[str],
    args: list[str], expected: str,
) -> None:
    root = _tree(tmp_path / "ds", clip_pool, {"train": 2, "val": 1})
    empty = _tree(tmp_path / "empty", clip_pool, {"train": 1, "val": 1})
    (empty / "train" / "nothing").mkdir()
    paths = {"missing": tmp_path / "nope", "root": root, "empty": empty}
    argv = [a.format(**paths) for a in args]
    if "--model" not in argv:
        argv += ["--model", "x3d_xs"]
    status = main(["train", *argv, "--weights", "random", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err[-1].startswith("streamclf: error: ") and expected in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_config_checks_values() -> None:
    with pytest.raises(ConfigError, match="--crop-size"):
        TrainConfig(model="x3d_xs", out=Path("o"), crop_size=8)
    with pytest.raises(ConfigError, match="--label-smoothing"):
        TrainConfig(model="x3d_xs", out=Path("o"), label_smoothing=1.0)
    assert TrainConfig(model="x3d_xs", out=Path("o"), epochs=10).decay_epochs == (7, 9)


def test_datasets_pickle_for_spawned_loader_workers(
    tmp_path: Path, clip_pool: dict[str, Path]
) -> None:
    """Loader workers started by spawn/forkserver receive the dataset pickled."""
    data = load_data(_tree(tmp_path / "ds", clip_pool, {"train": 1, "val": 1}))
    spec = get_spec("x3d_xs")
    for tf in (TrainTransform(4, 64, spec.mean, spec.std), ValTransform(spec)):
        ds = ClipDataset(data.val, tf, 1.0, seed=0, random_clip=False)
        copy = pickle.loads(pickle.dumps(ds))
        assert np.array_equal(copy[0][0][0], ds[0][0][0])


def test_train_modules_import_light() -> None:
    """The ``train`` package loads torch and OpenCV only when a run starts."""
    modules = ", ".join(f"streamclf.train.{m}" for m in (
        "augment", "checkpoint", "data", "dataset", "fit", "formats", "loop", "model",
        "recipe"))
    code = f"import sys, {modules}; print([m for m in ('torch', 'cv2') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
