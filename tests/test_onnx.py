"""ONNX export and the onnxruntime backend.

Parity: the torch and onnxruntime backends get the same real clips (``ta_chi.mp4``) with
the same seeded, input-sensitive checkpoint (``tests/checkpoints.py``: batch norms
calibrated on other real clips, head spread over what differs between clips) and must
agree on the ordered top-5 with embedding cosine >= 0.999. The checkpoint matters:
with pytorchvideo's default random init every clip gets nearly the same output, so
the test also checks that two different clips get different top-5s.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from streamclf.engine.backends import export as export_mod
from streamclf.engine.backends.export import (
    cached_onnx,
    describe_onnx,
    export_onnx,
    model_fingerprint,
    onnx_cache_dir,
)
from streamclf.engine.backends.onnx_backend import OnnxBackend, default_providers
from streamclf.engine.backends.onnx_meta import read_onnx_metadata
from streamclf.engine.backends.torch_backend import TorchBackend
from streamclf.errors import ConfigError, ModelError
from streamclf.media.preprocess import ClipTransform
from streamclf.models import get_spec, load_model
from streamclf.models.loader import LoadedModel
from streamclf.models.registry import ModelSpec
from tests.checkpoints import clip_frames, make_checkpoint, read_span
from tests.conftest import REPO

COSINE_MIN = 0.999
TOPK = 5
DEMO = Path(__file__).resolve().parents[1] / "streamclf" / "assets" / "demo.mp4"
#: First frame of the parity clip in ta_chi.mp4 (300 frames); calibration never sees it.
PARITY_START = 120
#: Calibration clips per model (the bundled demo video first, then ta_chi before the
#: parity clip).
CALIBRATION = {"x3d_xs": 6, "slowfast_r50": 3, "mvit_base_16x4": 3, "timesformer_k400_8x224": 6}
#: Longest span of source frames a test clip covers (TimeSformer's 8x32 would need 256).
MAX_SPAN = 64


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def top(probs: np.ndarray, k: int = TOPK) -> list[int]:
    return [int(i) for i in np.argsort(-probs, kind="stable")[:k]]


def prepared(spec: ModelSpec, frames: Sequence[np.ndarray]) -> np.ndarray:
    """What the ring hands a backend: ``(num_frames, crop, crop, 3)`` uint8."""
    transform = ClipTransform(spec)
    return np.stack([transform.spatial(frames[int(i)]) for i in transform.select(len(frames))])


def span(spec: ModelSpec) -> int:
    """Source frames per test clip: the model's window, at most ``MAX_SPAN``."""
    return min(clip_frames(spec), MAX_SPAN)


def calibration_clips(spec: ModelSpec, tai_chi: Path, count: int) -> list[list[np.ndarray]]:
    """Clips from the bundled demo video, then from ta_chi before the parity clip."""
    n = span(spec)
    spans = [(DEMO, s) for s in range(0, 280 - n + 1, max(1, (280 - n) // 3))][:4]
    spans += [(tai_chi, s) for s in range(0, PARITY_START - n + 1, max(1, n // 2))]
    return [read_span(path, start, n) for path, start in spans[:count]]


def checkpointed_model(name: str, tai_chi: Path, tmp: Path) -> LoadedModel:
    """``name`` loaded from a seeded input-sensitive checkpoint file, on CPU."""
    spec = get_spec(name)
    transform = ClipTransform(spec)

    def preprocess(frames: Sequence[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(x) for x in transform(frames)]

    parity = read_span(tai_chi, PARITY_START, span(spec))
    state = make_checkpoint(spec, calibration_clips(spec, tai_chi, CALIBRATION[name]),
                            preprocess, seed=0, margin_clip=parity)
    weights = tmp / f"{name}.pyth"
    torch.save({"model_state": state}, weights)
    return load_model(name, weights, device="cpu")


def check_parity(model: LoadedModel, tai_chi: Path, tmp: Path) -> None:
    """Torch vs onnxruntime on two real clips: same top-5, cosine >= 0.999, and the two
    clips' top-5 differ (the checkpoint is input-sensitive)."""
    spec = model.spec
    n = span(spec)
    clips = [prepared(spec, read_span(tai_chi, start, n)) for start in (PARITY_START, 300 - n)]
    backend = OnnxBackend(model, threads=2, onnx_path=export_onnx(model, tmp / "m.onnx"))
    assert backend.providers == ("CPUExecutionProvider",)
    ort_probs, ort_feats = backend.infer(clips)
    ref_probs, ref_feats = TorchBackend(model).infer(clips)
    assert ort_probs.shape == ref_probs.shape == (2, spec.num_classes)
    assert ort_feats.shape == ref_feats.shape == (2, spec.feature_dim)
    assert ort_probs.dtype == ort_feats.dtype == np.float32
    for i in range(2):
        assert top(ort_probs[i]) == top(ref_probs[i])
        assert cosine(ort_feats[i], ref_feats[i]) >= COSINE_MIN
        np.testing.assert_allclose(ort_probs[i], ref_probs[i], atol=1e-4)
    assert top(ref_probs[0]) != top(ref_probs[1]), "checkpoint is not input-sensitive"


# slowfast_r50 (a minute on 2 cores) joins the opt-in heavy set: the suite stays under 20 min;
# its two-pathway export stays covered by the export tests and `pytest -m heavy`.
@pytest.mark.parametrize("name", ["x3d_xs", pytest.param("slowfast_r50", marks=pytest.mark.heavy)])
def test_onnx_matches_torch_on_real_frames(name: str, tai_chi_clip: Path, tmp_path: Path) -> None:
    check_parity(checkpointed_model(name, tai_chi_clip, tmp_path), tai_chi_clip, tmp_path)


@pytest.mark.heavy
def test_mvit_exports_with_parity(tai_chi_clip: Path, tmp_path: Path) -> None:
    model = checkpointed_model("mvit_base_16x4", tai_chi_clip, tmp_path)
    check_parity(model, tai_chi_clip, tmp_path)


def spread_head(model: LoadedModel, clips: Sequence[np.ndarray], seed: int = 0) -> None:
    """Make a random model input-sensitive by its head alone (enough for transformers,
    whose LayerNorm-ed class token already varies with the input): ``logits =
    W (f - mu) / sigma`` over the embeddings of ``clips`` (see ``tests/checkpoints.py``)."""
    _, feats = TorchBackend(model).infer(clips)
    feats64 = torch.from_numpy(feats).double()
    mu, sigma = feats64.mean(dim=0), feats64.std(dim=0)
    sigma = torch.clamp(sigma, min=0.1 * float(sigma.median()) + 1e-12)
    head = model.net.net.get_submodule(model.spec.head_path)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(head.weight.shape, generator=gen, dtype=torch.float64)
    weight = w * (4.0 / w.shape[1] ** 0.5) / sigma
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(-(weight @ mu))


@pytest.mark.heavy
def test_timesformer_exports_with_parity(tai_chi_clip: Path, tmp_path: Path) -> None:
    name = "timesformer_k400_8x224"
    model = load_model(name, "random", device="cpu")
    calibration = calibration_clips(model.spec, tai_chi_clip, CALIBRATION[name])
    spread_head(model, [prepared(model.spec, c) for c in calibration])
    check_parity(model, tai_chi_clip, tmp_path)
    inputs, outputs = describe_onnx(tmp_path / "m.onnx")
    assert inputs == [("video", "float32", ("batch", 3, 8, 224, 224))]
    assert [t.name for t in outputs] == ["scores", "features"]


@pytest.fixture(scope="module")
def x3d_random() -> LoadedModel:
    return load_model("x3d_xs", "random", device="cpu")


@pytest.fixture(scope="module")
def x3d_onnx(x3d_random: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(x3d_random, tmp_path_factory.mktemp("onnx") / "x3d_xs.onnx")


def _ort_run(path: Path, feed: dict[str, np.ndarray]) -> list[Any]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def run_cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """``streamclf ARGS`` in a fresh process (the CLI configures logging globally);
    ``code`` runs first, before the CLI's main, in the same process."""
    call = (f"import sys\n{code or ''}\nfrom streamclf.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))")
    return subprocess.run([sys.executable, "-c", call, *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO, check=False)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if not ln.startswith("streamclf: WARNING")]


def test_cli_export_writes_documented_graph(tmp_path: Path) -> None:
    classmap = tmp_path / "classes.json"
    classmap.write_text(json.dumps(["a", "b", "c"]))
    three = load_model("x3d_xs", "random", classmap=classmap, device="cpu")
    weights = tmp_path / "three.pyth"
    torch.save({"model_state": three.net.net.state_dict()}, weights)
    out = tmp_path / "sub" / "model.onnx"
    proc = run_cli("export", "--model", "x3d_xs", "--weights", str(weights), "--classmap",
                   str(classmap), "--format", "onnx", "-o", str(out), "--opset", "17")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"{out} (x3d_xs, onnx, opset 17")
    assert "input  video     float32  [batch, 3, 4, 182, 182]" in lines[1]
    assert "output scores    float32  [batch, 3]" in lines[2]
    assert "output features  float32  [batch, 2048]" in lines[3]
    inputs, outputs = describe_onnx(out)
    assert inputs == [("video", "float32", ("batch", 3, 4, 182, 182))]
    assert outputs == [("scores", "float32", ("batch", 3)),
                       ("features", "float32", ("batch", 2048))]
    # No temporary files; the class names beside the graph, one per line.
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.onnx",
                                                            "model.onnx.labels.txt"]
    assert (out.parent / "model.onnx.labels.txt").read_text(encoding="utf-8") == "a\nb\nc\n"
    meta = read_onnx_metadata(out)
    assert (meta["model"], meta["weights"], meta["num_classes"]) == ("x3d_xs", str(weights), "3")
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in out.parent.iterdir())
    video = np.random.default_rng(0).standard_normal((2, 3, 4, 182, 182), dtype=np.float32)
    scores, feats = _ort_run(out, {"video": video})
    assert scores.shape == (2, 3) and feats.shape == (2, 2048)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-4)  # probabilities
    with torch.inference_mode():
        ref_scores, ref_feats = three.net(torch.from_numpy(video))
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-5)
    assert min(cosine(a, b) for a, b in zip(feats, ref_feats.numpy(), strict=True)) >= COSINE_MIN


REFUSE_EXPORT = (
    "import torch; "
    "torch.onnx.export = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("
    "'Exporting the operator aten::frobnicate to ONNX opset version 17 is not supported.'))"
)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--model", "nope", "--weights", "random"], None, "unknown model 'nope'"),
        (["--model", "x3d_xs", "--weights", "/no/such.pyth"], None, "/no/such.pyth"),
        (["--model", "x3d_xs", "--weights", "random", "--opset", "99"], None,
         "ONNX opset 99 is not supported; use 7 to 20"),
        (["--model", "x3d_xs", "--weights", "random"], REFUSE_EXPORT,
         "ONNX export is not supported for x3d_xs: RuntimeError: Exporting the operator "
         "aten::frobnicate"),
    ],
    ids=["unknown-model", "missing-weights", "bad-opset", "unsupported"],
)
def test_cli_export_errors_are_one_line(
    argv: list[str], code: str | None, message: str, tmp_path: Path
) -> None:
    out = tmp_path / "m.onnx"
    proc = run_cli("export", *argv, "-o", str(out), code=code)
    assert proc.returncode == 1
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("streamclf: error: "), proc.stderr
    assert message in errors[0]
    assert proc.stdout == "" and not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_unsupported_export_is_a_clear_model_error(
    x3d_random: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset 17\nmore")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ModelError, match=r"^ONNX export is not supported for x3d_xs: "
                                         r"RuntimeError: Exporting the operator") as info:
        export_onnx(x3d_random, tmp_path / "m.onnx")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


class TinyNet(torch.nn.Module):
    """A stand-in zoo network: any number of pathways -> (probabilities, embedding)."""

    def __init__(self, pathways: int, classes: int = 5, dim: int = 6) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList(
            torch.nn.Conv3d(3, dim, 3, padding=1) for _ in range(pathways)
        )
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = sum(conv(x).mean(dim=(2, 3, 4)) for conv, x in zip(self.convs, xs, strict=True))
        assert isinstance(feats, torch.Tensor)
        return torch.softmax(self.head(feats), dim=1), feats


@pytest.mark.parametrize("dynamic_batch", [True, False])
@pytest.mark.parametrize("alpha", [None, 4])
def test_graph_names_and_batch_axis(tmp_path: Path, alpha: int | None, dynamic_batch: bool) -> None:
    spec = dataclasses.replace(get_spec("x3d_xs"), crop_size=8, num_frames=8,
                               slowfast_alpha=alpha, labels=tuple("abcde"))
    model = LoadedModel(spec=spec, net=TinyNet(2 if alpha else 1).eval(), device="cpu",
                        weights="tiny")
    path = export_onnx(model, tmp_path / "tiny.onnx", dynamic_batch=dynamic_batch)
    inputs, outputs = describe_onnx(path)
    batch = "batch" if dynamic_batch else 1
    if alpha:
        assert inputs == [("slow", "float32", (batch, 3, 2, 8, 8)),
                          ("fast", "float32", (batch, 3, 8, 8, 8))]
    else:
        assert inputs == [("video", "float32", (batch, 3, 8, 8, 8))]
    assert outputs == [("scores", "float32", (batch, 5)), ("features", "float32", (batch, 6))]
    if dynamic_batch:
        clips = [np.full((8, 8, 8, 3), v, np.uint8) for v in (0, 90, 255)]
        ort_probs, ort_feats = OnnxBackend(model, onnx_path=path).infer(clips)
        ref_probs, ref_feats = TorchBackend(model).infer(clips)
        np.testing.assert_allclose(ort_probs, ref_probs, atol=1e-6)
        np.testing.assert_allclose(ort_feats, ref_feats, rtol=1e-5, atol=1e-6)


def test_failed_trace_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """torch dumps the traced graph to stdout when an operator has no ONNX form; the
    export must stay quiet (the CLI prints one line)."""

    class FFT(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.fft.fft(x).real.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4))

    spec = dataclasses.replace(get_spec("x3d_xs"), crop_size=8, num_frames=2)
    model = LoadedModel(spec=spec, net=FFT(), device="cpu", weights="none")
    with pytest.raises(ModelError, match="ONNX export is not supported for x3d_xs: "):
        export_onnx(model, tmp_path / "fft.onnx")
    out, err = capfd.readouterr()
    assert out == "" and "graph" not in err
    assert list(tmp_path.iterdir()) == []


def test_export_mismatch_is_a_model_error(
    x3d_random: LoadedModel, x3d_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check export_onnx runs before renaming the file into place rejects a graph
    whose onnxruntime output differs from torch (simulated by an unreachable bar)."""
    export_mod._verify(x3d_random, x3d_onnx, batch=2)
    monkeypatch.setattr(export_mod, "VERIFY_COSINE_MIN", 1.5)
    with pytest.raises(ModelError, match=r"^ONNX export is not supported for x3d_xs: "
                                         r"onnxruntime output differs from torch"):
        export_mod._verify(x3d_random, x3d_onnx, batch=1)


def test_cached_onnx_exports_once(
    x3d_random: LoadedModel, x3d_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMCLF_CACHE", str(tmp_path / "cache"))
    assert onnx_cache_dir() == tmp_path / "cache" / "onnx"
    calls: list[Path] = []
    real = export_mod.export_onnx

    def counting(model: LoadedModel, path: Path, **kwargs: Any) -> Path:
        calls.append(path)
        return real(model, path, **kwargs)

    monkeypatch.setattr(export_mod, "export_onnx", counting)
    first = cached_onnx(x3d_random)
    assert first == tmp_path / "cache" / "onnx" / f"x3d_xs-{model_fingerprint(x3d_random)}.onnx"
    mtime = first.stat().st_mtime_ns
    second = cached_onnx(x3d_random)
    assert second == first and len(calls) == 1
    assert first.stat().st_mtime_ns == mtime
    assert [p.name for p in first.parent.iterdir()] == [first.name]
    elsewhere = tmp_path / "elsewhere" / first.name
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(x3d_onnx.read_bytes())
    assert cached_onnx(x3d_random, cache_dir=elsewhere.parent) == elsewhere
    assert len(calls) == 1


def test_fingerprint_follows_the_weights(x3d_random: LoadedModel) -> None:
    fp = model_fingerprint(x3d_random)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert model_fingerprint(x3d_random) == fp
    net = load_model("x3d_xs", "random", device="cpu").net
    net.load_state_dict(x3d_random.net.state_dict())
    same = dataclasses.replace(x3d_random, net=net)
    assert model_fingerprint(same) == fp
    # Same tensors, another input size (a fine-tuned checkpoint's sidecar crop): another graph.
    cropped = dataclasses.replace(same, spec=dataclasses.replace(same.spec, crop_size=130))
    assert model_fingerprint(cropped) != fp
    with torch.no_grad():
        net.net.get_submodule("blocks.5.proj").bias[0] += 1e-3
    assert model_fingerprint(same) != fp
    renamed = dataclasses.replace(x3d_random, spec=dataclasses.replace(x3d_random.spec,
                                                                      name="x3d_xs_copy"))
    assert model_fingerprint(renamed) != fp


def test_backend_uses_the_cache_and_reports_providers(
    x3d_random: LoadedModel, x3d_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMCLF_CACHE", str(tmp_path))
    monkeypatch.setattr(export_mod, "export_onnx",
                        lambda _model, path, **_kw: pytest.fail(f"re-exported to {path}"))
    cached = tmp_path / "onnx" / f"x3d_xs-{model_fingerprint(x3d_random)}.onnx"
    cached.parent.mkdir(parents=True)
    # A file already in the cache is used as is (here: a copy of the module's export).
    cached.write_bytes(x3d_onnx.read_bytes())
    backend = OnnxBackend(x3d_random, threads=1)
    assert backend.name == "onnxruntime"
    assert backend.onnx_path == cached
    assert backend.providers == ("CPUExecutionProvider",)
    assert backend.labels == x3d_random.spec.labels
    clip = np.random.default_rng(0).integers(0, 256, (4, 182, 182, 3), dtype=np.uint8)
    probs, feats = backend.infer([clip, clip[::-1].copy(), clip])
    assert probs.shape == (3, 400) and feats.shape == (3, 2048)
    np.testing.assert_allclose(probs[0], probs[2], atol=1e-6)
    ref_probs, ref_feats = TorchBackend(x3d_random).infer([clip])
    assert cosine(feats[0], ref_feats[0]) >= COSINE_MIN
    np.testing.assert_allclose(probs[0], ref_probs[0], atol=1e-5)


def test_backend_rejects_bad_options_and_files(
    x3d_random: LoadedModel, x3d_onnx: Path
) -> None:
    with pytest.raises(ConfigError, match="TensorrtExecutionProvider"):
        OnnxBackend(x3d_random, providers=["TensorrtExecutionProvider"], onnx_path=x3d_onnx)
    with pytest.raises(ConfigError, match="threads"):
        OnnxBackend(x3d_random, threads=0, onnx_path=x3d_onnx)
    wrong = dataclasses.replace(x3d_random, spec=dataclasses.replace(x3d_random.spec,
                                                                    crop_size=160))
    with pytest.raises(ModelError, match="does not fit x3d_xs"):
        OnnxBackend(wrong, onnx_path=x3d_onnx)
    backend = OnnxBackend(x3d_random, providers=["CPUExecutionProvider"], onnx_path=x3d_onnx)
    assert backend.providers == ("CPUExecutionProvider",)


def test_default_providers() -> None:
    everything = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    gpu = default_providers("cuda:1", everything)
    assert [name for name, _ in gpu] == everything
    assert gpu[0][1]["device_id"] == 1 and gpu[1][1] == {"device_id": 1}
    assert [n for n, _ in default_providers("cuda", everything[1:])] == everything[1:]
    assert default_providers("cpu", everything) == [("CPUExecutionProvider", {})]
    assert default_providers("cuda", ["CPUExecutionProvider"]) == [("CPUExecutionProvider", {})]
