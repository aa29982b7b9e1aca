"""``streamclf train``: heads, checkpoints, resume, and the acceptance run.

The acceptance test trains x3d_xs from random weights on CPU on videos whose classes differ
only in time (brightness rising, falling or steady over a random texture, with the same
range of levels in every class), then uses the checkpoint through ``streamclf classify``
and a live ``streamclf run``.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from streamclf.errors import ConfigError
from streamclf.models import get_spec, load_model
from streamclf.models.network import build_network
from streamclf.models.weights import Checkpoint, load_into
from streamclf.train import checkpoint as ckpt
from streamclf.train.data import load_data
from streamclf.train.fit import fit, sidecar
from streamclf.train.model import TrainableNet, build_for_training
from streamclf.train.recipe import TrainConfig, input_spec
from tests.conftest import REPO
from tests.train_data import CLASSES, make_split

CLI = [sys.executable, "-m", "streamclf"]
LABELS = ("alpha", "beta", "gamma", "delta", "epsilon")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, check=False)


def _clip(spec_name: str, crop: int, seed: int = 0) -> list[torch.Tensor]:
    spec = input_spec(get_spec(spec_name), crop)
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((1, *s), generator=gen) for s in spec.input_shapes]


@pytest.mark.parametrize("name", ["x3d_xs", "slow_r50", "slowfast_r50"])
def test_new_head_fits_how_the_zoo_builds_heads(name: str) -> None:
    spec = get_spec(name)
    model = build_for_training(spec, "random", LABELS, seed=0)
    head = model.get_submodule(spec.head_path)
    assert isinstance(head, torch.nn.Linear) and head.out_features == len(LABELS)
    assert head.in_features == spec.feature_dim and not head.bias.detach().any()
    # The saved tensors load strictly into what load_model builds for 5 classes.
    target = build_network(spec, num_classes=len(LABELS))
    load_into(target, Checkpoint(model.state_dict(), origin="test"), spec)
    again = build_for_training(spec, "random", LABELS, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values(), strict=True))


def test_x3d_trains_on_logits_and_validates_on_probabilities() -> None:
    spec = input_spec(get_spec("x3d_xs"), 130)
    net = TrainableNet(build_for_training(spec, "random", CLASSES, seed=0), spec)
    net.model.eval()
    with torch.no_grad():
        logits = net.logits(_clip("x3d_xs", 130))
        scores = net.scores(_clip("x3d_xs", 130))
    assert logits.shape == scores.shape == (1, 3)
    assert float(scores.sum()) == pytest.approx(1.0, abs=1e-5)  # the head's own softmax
    assert torch.allclose(torch.softmax(logits, dim=1), scores, atol=1e-6)  # one position
    assert net._head_block.activation is net._softmax  # restored after the logits pass


def test_frozen_backbone_trains_only_the_head() -> None:
    spec = input_spec(get_spec("x3d_xs"), 130)
    net = TrainableNet(build_for_training(spec, "random", CLASSES, seed=0), spec)
    net.freeze_backbone(True)
    before = {k: v.clone() for k, v in net.model.state_dict().items()}
    optimizer = torch.optim.AdamW(net.param_groups(0.05), lr=1e-2)
    x = [torch.cat([_clip("x3d_xs", 130, seed=1)[0], _clip("x3d_xs", 130, seed=2)[0]])]
    torch.nn.functional.cross_entropy(net.logits(x), torch.tensor([0, 2])).backward()
    optimizer.step()
    after = net.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"{spec.head_path}.weight", f"{spec.head_path}.bias"}  # BN stats too
    net.freeze_backbone(False)
    assert all(p.requires_grad for p in net.model.parameters()) and net.model.training


def test_backbone_comes_from_the_given_checkpoint(tmp_path: Path) -> None:
    spec = get_spec("x3d_xs")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        zoo = build_network(spec)  # a 400-class checkpoint, like the published ones
    torch.save(zoo.state_dict(), tmp_path / "zoo.pt")
    model = build_for_training(spec, str(tmp_path / "zoo.pt"), CLASSES, seed=0)
    own = model.state_dict()
    for key, value in zoo.state_dict().items():
        if key.startswith(spec.head_path):
            assert own[key].shape[0] == 3  # new head
        else:
            assert torch.equal(own[key], value), key


def test_checkpoint_round_trip_through_load_model(tmp_path: Path) -> None:
    spec = input_spec(get_spec("x3d_xs"), 130)
    config = TrainConfig(model="x3d_xs", out=tmp_path, weights="random", crop_size=130)
    net = TrainableNet(build_for_training(spec, "random", CLASSES, seed=1), spec)
    with torch.no_grad():  # make the head non-trivial so the comparison means something
        net.head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
    path = ckpt.save_model(tmp_path, "best", net.model,
                           sidecar(spec, CLASSES, config, {"epoch": 1, "val_top1": 0.5}))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"] == "x3d_xs" and meta["labels"] == list(CLASSES)
    assert meta["input"]["crop_size"] == 130 and meta["input"]["num_frames"] == 4
    loaded = load_model("x3d_xs", str(path), device="cpu")
    assert loaded.spec.labels == CLASSES
    assert (loaded.spec.side_size, loaded.spec.crop_size) == (130, 130)
    net.model.eval()
    x = _clip("x3d_xs", 130, seed=4)
    with torch.no_grad():
        expected = net.scores(x)
        scores, features = loaded.net(*x)
    assert torch.allclose(scores, expected, atol=1e-6) and features.shape == (1, 2048)


def _tiny_dataset(root: Path) -> Path:
    make_split(root / "train", 2, seed=0, size=48, seconds=2.0)
    make_split(root / "val", 1, seed=1, size=48, seconds=2.0)
    return root


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _metrics(out: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path: Path) -> None:
    """2 epochs in one go == 1 epoch, stop, --resume to 2 (also 0 vs 1 loader workers).

    The runs with a loader worker go through ``streamclf train`` in a fresh process, as a
    user runs them: torch installs a SIGCHLD handler in any process that iterates a
    multi-worker loader, and in this long-lived test process (which has also hosted Ray's
    native threads) that handler turned the next child's exit into a crash. All three runs
    go through the command, so they also share its thread settings."""
    root = _tiny_dataset(tmp_path / "ds")
    data = load_data(root)
    common = {"model": "x3d_xs", "weights": "random", "batch_size": 3, "crop_size": 130,
              "lr": 1e-3, "warmup_epochs": 0.5, "step_epochs": (1,), "precise_bn": 1,
              "device": "cpu", "seed": 7}
    flags = ["train", "--data", str(root), "--model", "x3d_xs", "--weights", "random",
             "--batch-size", "3", "--crop-size", "130", "--lr", "1e-3", "--warmup-epochs",
             "0.5", "--step-epochs", "1", "--precise-bn", "1", "--device", "cpu", "--seed",
             "7", "--quiet"]
    whole = run_cli(*flags, "--loader-processes", "0", "--epochs", "2", "--out",
                    str(tmp_path / "a"))
    assert whole.returncode == 0, whole.stderr
    assert [r["epoch"] for r in _metrics(tmp_path / "a")] == [1, 2]
    assert ckpt.load_state(tmp_path / "a")["steps"] == 4
    flags += ["--loader-processes", "1", "--out", str(tmp_path / "b")]
    first = run_cli(*flags, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    state = ckpt.load_state(tmp_path / "b")  # weights-only loadable
    assert state["epoch"] == 1 and state["steps"] == 2
    resumed = run_cli(*flags, "--epochs", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load_state(tmp_path / "b")["steps"] == 4
    a = _tensors(tmp_path / "a" / "last.safetensors")
    b = _tensors(tmp_path / "b" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    with pytest.raises(ConfigError, match="already has 2 epochs"):
        fit(TrainConfig(out=tmp_path / "b", epochs=2, resume=True, **common), data)
    with pytest.raises(ConfigError, match="already holds a training run"):
        fit(TrainConfig(out=tmp_path / "b", epochs=2, **common), data)


def _predictions(events: Path) -> list[dict[str, object]]:
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    return [r for r in rows if r["type"] == "prediction"]


@pytest.mark.slow
def test_acceptance_learns_temporal_order_and_serves_it(tmp_path: Path) -> None:
    started = time.monotonic()
    root = tmp_path / "ds"
    make_split(root / "train", 16, seed=1)
    make_split(root / "val", 10, seed=2)
    held_out = make_split(root / "predict", 2, seed=3)  # predicted after training, too
    out = tmp_path / "run"
    train = run_cli("train", "--data", str(root), "--model", "x3d_xs", "--weights", "random",
                    "--device", "cpu", "--crop-size", "130", "--batch-size", "8", "--epochs",
                    "4", "--lr", "1e-3", "--warmup-epochs", "0.5", "--step-epochs", "3",
                    "--precise-bn", "6", "--loader-processes", "1", "--seed", "0",
                    "--out", str(out))
    trained = time.monotonic()
    assert train.returncode == 0, train.stderr
    epochs = [line for line in train.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 4 and "val top-1" in epochs[0]
    meta = json.loads((out / "best.json").read_text())
    assert meta["labels"] == list(CLASSES) and meta["input"]["crop_size"] == 130
    assert meta["metrics"]["val_top1"] >= 0.9, train.stdout
    assert (out / "last.safetensors").is_file() and (out / ckpt.STATE_FILE).is_file()
    with (out / "history.csv").open(newline="") as fh:  # rewritten after every epoch
        history = list(csv.reader(fh))
    assert history[0] == ["epoch", "train_loss", "val_loss", "val_top1", "lr"]
    assert [row[0] for row in history[1:]] == ["1", "2", "3", "4"]
    assert all(math.isfinite(float(row[1])) and float(row[1]) > 0 for row in history[1:])
    assert all(math.isfinite(float(row[2])) and float(row[2]) > 0 for row in history[1:])
    assert max(float(row[3]) for row in history[1:]) == meta["metrics"]["val_top1"]
    assert float(history[-1][4]) < float(history[1][4])  # --step-epochs 3 lowered the rate
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with (out / "predictions.csv").open(newline="") as fh:
        predicted = {row["path"]: row["label"] for row in csv.DictReader(fh)}
    assert predicted == {str(p): p.parent.name for p in held_out}

    weights = str(out / "best.safetensors")
    # --backend torch: `auto` would time, export and convert every backend for this new
    # checkpoint (a first run's minute), which is not what this test is about.
    classify = run_cli("classify", *map(str, held_out), "--model", "x3d_xs", "--weights",
                       weights, "--device", "cpu", "--backend", "torch", "--topk", "1", "--json")
    assert classify.returncode == 0, classify.stderr
    got = {Path(o["path"]).parent.name + "/" + Path(o["path"]).name: o["labels"][0]
           for o in map(json.loads, classify.stdout.splitlines())}
    assert got == {f"{p.parent.name}/{p.name}": p.parent.name for p in held_out}

    # evaluate: the folder tree predict/<class>/*.mp4, labels from the sidecar.
    report = tmp_path / "report.json"
    evaluate = run_cli("evaluate", str(root / "predict"), "--model", "x3d_xs", "--weights",
                       weights, "--device", "cpu", "--backend", "torch", "--quiet", "--report",
                       str(report))
    assert evaluate.returncode == 0, evaluate.stderr
    scored = json.loads(report.read_text())
    assert scored["recall@1"] == 1.0 and set(scored["per_class"]) == set(CLASSES)
    assert not scored["failed"] and scored["weights"] == weights

    # export: the graph takes the checkpoint's 130 crop and gives its 3 classes.
    onnx_path = tmp_path / "trained.onnx"
    export = run_cli("export", "--model", "x3d_xs", "--weights", weights, "-o", str(onnx_path))
    assert export.returncode == 0, export.stderr
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (clip_input,) = session.get_inputs()
    assert clip_input.shape[1:] == [3, 4, 130, 130], clip_input.shape
    assert [o.shape[-1] for o in session.get_outputs()] == [3, 2048]

    for clip in held_out[:3]:  # one clip of each class, streamed through the live pipeline
        events = tmp_path / f"{clip.stem}.jsonl"
        run = run_cli("run", "--source", str(clip), "--pace", "fast", "--model", "x3d_xs",
                      "--weights", weights, "--backend", "torch", "--device", "cpu",
                      "--stride", "0.2", "--events", str(events), "--quiet")
        assert run.returncode == 0, run.stderr
        predictions = _predictions(events)
        assert predictions, events.read_text()
        assert all(p["raw_labels"][0] == clip.parent.name for p in predictions), predictions
    print(f"acceptance: train {trained - started:.1f} s, total {time.monotonic() - started:.1f} s;"
          f" {epochs[-1]}")
