"""Checkpoints: download + cache against a real local HTTP server, local files, safety
checks, strict matching, class maps and device selection (all with x3d_xs, fast)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import os
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from streamclf.cli.main import main as cli_main
from streamclf.errors import ConfigError, WeightsError
from streamclf.models import MODEL_ZOO, get_spec, load_classmap, load_model
from streamclf.models.network import build_network, resolve_device
from streamclf.models.weights import download_checkpoint

MODEL = "x3d_xs"
FILE_NAME = "X3D_XS.pyth"
TEN = [f"class {i}" for i in range(10)]

StateDict = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- helpers


def _state_dict(num_classes: int | None = None, seed: int = 0) -> StateDict:
    """A seeded x3d_xs state dict (different from any unseeded build)."""
    torch.manual_seed(seed)
    return build_network(get_spec(MODEL), num_classes=num_classes).state_dict()


def _pyth_bytes(sd: StateDict) -> bytes:
    """``sd`` serialised the way pytorchvideo publishes its checkpoints."""
    buf = io.BytesIO()
    torch.save({"model_state": sd}, buf)
    return buf.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _assert_same_weights(model: torch.nn.Module, expected: StateDict) -> None:
    got = model.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _point_zoo_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setitem(MODEL_ZOO, MODEL, dataclasses.replace(MODEL_ZOO[MODEL], weights_url=url))


def _forward(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    spec = get_spec(MODEL)
    gen = torch.Generator().manual_seed(1)
    clip = torch.rand((1, *spec.input_shapes[0]), generator=gen)
    with torch.inference_mode():
        scores, feats = model(clip)
    return scores, feats


class _Server(HTTPServer):
    """Serves ``routes[path] = (body, mode)``; counts requests per path."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.hits: collections.Counter[str] = collections.Counter()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_port}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, mode = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "chunked-cut":
            # Chunked transfer that dies inside the first chunk.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(f"{len(body):x}\r\n".encode() + body[: len(body) // 2])
        elif mode == "truncate":
            # Announce the whole file, send half of it, close the connection.
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def served_sd() -> StateDict:
    return _state_dict(seed=1234)


@pytest.fixture(scope="module")
def served_bytes(served_sd: StateDict) -> bytes:
    return _pyth_bytes(served_sd)


@pytest.fixture(scope="module")
def ten_class_sd() -> StateDict:
    return _state_dict(num_classes=10, seed=7)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive(), "HTTP server thread did not stop"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TORCH_HOME`` in tmp: returns the checkpoint cache folder torch hub will use."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub"
    return home / "hub" / "checkpoints"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The CLI reconfigures the root logger (basicConfig force=True); undo that."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


# --------------------------------------------------------------------------- download


def test_download_verifies_caches_and_writes_digest(
    server: _Server, served_bytes: bytes, served_sd: StateDict, tmp_path: Path
) -> None:
    server.routes["/" + FILE_NAME] = (served_bytes, "ok")
    url = server.url("/" + FILE_NAME)
    digest = _sha256(served_bytes)

    path = download_checkpoint(url, MODEL, expected_sha256=digest, directory=tmp_path)
    assert path == tmp_path / FILE_NAME
    assert path.read_bytes() == served_bytes
    assert (tmp_path / (FILE_NAME + ".sha256")).read_text().strip() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME, FILE_NAME + ".sha256"]
    loaded = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    assert all(torch.equal(loaded[k], v) for k, v in served_sd.items())

    again = download_checkpoint(url, MODEL, expected_sha256=digest, directory=tmp_path)
    assert again == path
    assert server.hits["/" + FILE_NAME] == 1, "second call must be served from the cache"
    # Without a published digest, the recorded one still lets the cache be trusted.
    download_checkpoint(url, MODEL, directory=tmp_path)
    assert server.hits["/" + FILE_NAME] == 1


def test_damaged_cache_file_is_downloaded_again(
    server: _Server, served_bytes: bytes, tmp_path: Path
) -> None:
    server.routes["/" + FILE_NAME] = (served_bytes, "ok")
    url = server.url("/" + FILE_NAME)
    path = download_checkpoint(url, MODEL, directory=tmp_path)
    assert server.hits["/" + FILE_NAME] == 1

    damaged = bytearray(served_bytes)
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(damaged))

    assert download_checkpoint(url, MODEL, directory=tmp_path) == path
    assert server.hits["/" + FILE_NAME] == 2
    assert path.read_bytes() == served_bytes
    assert not list(tmp_path.glob("*.part"))


def test_sha256_mismatch_raises_and_caches_nothing(
    server: _Server, served_bytes: bytes, tmp_path: Path
) -> None:
    server.routes["/" + FILE_NAME] = (served_bytes, "ok")
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="fail verification"):
        download_checkpoint(
            server.url("/" + FILE_NAME), MODEL, expected_sha256="0" * 64, directory=cache
        )
    assert server.hits["/" + FILE_NAME] == 1
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("mode", ["truncate", "chunked-cut"])
def test_cut_transfer_raises_and_leaves_no_partial_file(
    server: _Server, served_bytes: bytes, tmp_path: Path, mode: str
) -> None:
    server.routes["/" + FILE_NAME] = (served_bytes, mode)
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError) as info:
        download_checkpoint(server.url("/" + FILE_NAME), MODEL, directory=cache)
    assert server.hits["/" + FILE_NAME] == 1
    assert "\n" not in str(info.value)
    assert list(cache.iterdir()) == []


def test_http_404_raises(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"404|Not Found"):
        download_checkpoint(server.url("/missing.pyth"), MODEL, directory=tmp_path / "c")
    assert server.hits["/missing.pyth"] == 1
    assert list((tmp_path / "c").iterdir()) == []


def test_load_model_kinetics400_downloads_once_into_torch_hub_cache(
    server: _Server,
    served_bytes: bytes,
    served_sd: StateDict,
    torch_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.routes["/" + FILE_NAME] = (served_bytes, "ok")
    url = server.url("/" + FILE_NAME)
    _point_zoo_at(monkeypatch, url)

    first = load_model(MODEL, "kinetics400", device="cpu")
    assert first.weights == url
    _assert_same_weights(first.net.net, served_sd)
    assert (torch_home / FILE_NAME).read_bytes() == served_bytes
    assert (torch_home / (FILE_NAME + ".sha256")).read_text().strip() == _sha256(served_bytes)

    second = load_model(MODEL, "kinetics400", device="cpu")
    assert server.hits["/" + FILE_NAME] == 1
    _assert_same_weights(second.net.net, served_sd)


# --------------------------------------------------------------------------- offline


def test_unreachable_url_message_names_both_ways_out(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/{FILE_NAME}"
    with pytest.raises(WeightsError) as info:
        download_checkpoint(url, MODEL, directory=tmp_path, timeout_s=5)
    message = str(info.value)
    assert "--weights PATH" in message
    assert "--weights random" in message
    assert url in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("restore_logging")
def test_cli_offline_is_one_line_without_traceback(
    tai_chi_clip: Path,
    torch_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Set what the CLI would setdefault, so that monkeypatch restores the environment.
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "ERROR")
    _point_zoo_at(monkeypatch, f"http://127.0.0.1:{_closed_port()}/{FILE_NAME}")

    status = cli_main(["classify", str(tai_chi_clip), "--model", MODEL])

    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streamclf: error: ")
    assert "--weights PATH" in lines[0]
    assert "--weights random" in lines[0]
    assert "Traceback" not in err
    assert not torch_home.exists() or not any(torch_home.iterdir())


# --------------------------------------------------------------------------- local files


def test_local_formats_load_identically(served_sd: StateDict, tmp_path: Path) -> None:
    pyth = tmp_path / "X3D_XS.pyth"
    pyth.write_bytes(_pyth_bytes(served_sd))
    plain = tmp_path / "plain.pt"
    torch.save(served_sd, plain)
    st_file = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(served_sd, str(st_file))
    prefixed = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in served_sd.items()}}, prefixed)

    outputs = []
    for path in (pyth, plain, st_file, prefixed):
        loaded = load_model(MODEL, path, device="cpu")
        assert loaded.weights == str(path)
        assert loaded.spec.labels == get_spec(MODEL).labels
        _assert_same_weights(loaded.net.net, served_sd)
        outputs.append(_forward(loaded.net))
    scores, feats = outputs[0]
    assert scores.shape == (1, 400)
    assert feats.shape == (1, get_spec(MODEL).feature_dim)
    for other_scores, other_feats in outputs[1:]:
        assert torch.equal(other_scores, scores)
        assert torch.equal(other_feats, feats)


def _leave_marker(path: str) -> None:
    """What the malicious checkpoint below would run when unpickled."""
    Path(path).write_text("code ran")


class _Payload:
    """Unpickles by calling ``_leave_marker``: stands for arbitrary code in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_leave_marker, (str(self.marker),))


def test_checkpoint_with_pickled_code_is_refused_unexecuted(
    served_sd: StateDict, tmp_path: Path
) -> None:
    marker = tmp_path / "marker.txt"
    evil = tmp_path / "evil.pth"
    torch.save({"model_state": dict(served_sd), "extra": _Payload(marker)}, evil)

    with pytest.raises(WeightsError, match="contains Python code") as info:
        load_model(MODEL, evil, device="cpu")
    assert "weights-only" in str(info.value) and "_leave_marker" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "the checkpoint's code was executed"

    # Control: the payload is real, a plain unpickle runs it.
    torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.read_text() == "code ran"


def test_checkpoint_holding_a_function_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fn.pt"
    torch.save({"hook": _leave_marker}, path)
    with pytest.raises(WeightsError, match="contains Python code"):
        load_model(MODEL, path, device="cpu")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_an_os_system_pickle_is_refused_as_code_not_called_corrupt(
        tmp_path: Path, protocol: int) -> None:
    """A plain pickle that calls ``os.system`` (not torch's zip format) was once reported as
    "corrupt"; torch's reader gives up on protocol 4 before naming the global."""
    import pickle

    class System:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": System()}, protocol=protocol))
    with pytest.raises(WeightsError, match=r"contains Python code \((posix|os)\.system\)"):
        load_model(MODEL, path, device="cpu")
    assert not (tmp_path / "ran").exists()


# --------------------------------------------------------------------------- mismatches


def test_other_architecture_is_refused_naming_model_and_key(tmp_path: Path) -> None:
    torch.manual_seed(0)
    slow = build_network(get_spec("slow_r50")).state_dict()
    path = tmp_path / "SLOW_8x8_R50.pyth"
    path.write_bytes(_pyth_bytes(slow))
    with pytest.raises(WeightsError) as info:
        load_model(MODEL, path, device="cpu")
    message = str(info.value)
    assert "x3d_xs" in message
    assert "key '" in message
    assert "\n" not in message


def test_wrong_shape_names_the_key(served_sd: StateDict, tmp_path: Path) -> None:
    head = get_spec(MODEL).head_path
    key = next(k for k, v in served_sd.items() if v.ndim >= 2 and not k.startswith(head))
    bad = dict(served_sd)
    bad[key] = torch.zeros(3, 3)
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(WeightsError) as info:
        load_model(MODEL, path, device="cpu")
    message = str(info.value)
    assert f"key {key!r}" in message
    assert "(3, 3)" in message
    assert "more" not in message


def test_missing_key_is_named(served_sd: StateDict, tmp_path: Path) -> None:
    key = next(iter(served_sd))
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in served_sd.items() if k != key}, path)
    with pytest.raises(WeightsError, match=f"missing key '{key}'"):
        load_model(MODEL, path, device="cpu")


def test_nonexistent_path_raises(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_model(MODEL, tmp_path / "nope.pyth", device="cpu")


@pytest.mark.parametrize("suffix", [".pyth", ".pt", ".safetensors"])
@pytest.mark.parametrize("content", ["random", "zeros", "text", "empty", "truncated"])
def test_garbage_file_is_one_line_weights_error(
    served_bytes: bytes, tmp_path: Path, suffix: str, content: str
) -> None:
    data = {
        "random": random.Random(0).randbytes(4096),
        "zeros": bytes(4096),
        "text": b"not a checkpoint\n" * 50,
        "empty": b"",
        "truncated": served_bytes[: len(served_bytes) // 2],
    }[content]
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(data)
    with pytest.raises(WeightsError) as info:
        load_model(MODEL, path, device="cpu")
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    # A corrupt file is not a security refusal, and the advice must never be to unpickle it.
    assert "pickled" not in message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message


# --------------------------------------------------------------------------- class maps


def test_random_weights_with_classmap_gives_that_head() -> None:
    loaded = load_model(MODEL, "random", classmap=TEN, device="cpu")
    assert loaded.spec.labels == tuple(TEN)
    assert loaded.weights == "random"
    head = loaded.net.net.get_submodule(loaded.spec.head_path)
    assert head.out_features == 10
    scores, _ = _forward(loaded.net)
    assert scores.shape == (1, 10)


def test_classmap_size_must_match_the_head(ten_class_sd: StateDict, tmp_path: Path) -> None:
    path = tmp_path / "ten.pt"
    torch.save(ten_class_sd, path)
    with pytest.raises(ConfigError, match="7 classes"):
        load_model(MODEL, path, classmap=TEN[:7], device="cpu")
    loaded = load_model(MODEL, path, classmap=TEN, device="cpu")
    assert loaded.spec.labels == tuple(TEN)
    _assert_same_weights(loaded.net.net, ten_class_sd)


def test_non_kinetics_head_without_names_asks_for_classmap(
    ten_class_sd: StateDict, tmp_path: Path
) -> None:
    path = tmp_path / "ten.pyth"
    path.write_bytes(_pyth_bytes(ten_class_sd))
    with pytest.raises(ConfigError, match="--classmap"):
        load_model(MODEL, path, device="cpu")


def test_finetuned_checkpoint_sidecar_gives_labels(
    ten_class_sd: StateDict, tmp_path: Path
) -> None:
    path = tmp_path / "best.safetensors"
    safetensors.torch.save_file(ten_class_sd, str(path))
    (tmp_path / "best.json").write_text(json.dumps({"model": MODEL, "labels": TEN}))
    loaded = load_model(MODEL, path, device="cpu")
    assert loaded.spec.labels == tuple(TEN)
    _assert_same_weights(loaded.net.net, ten_class_sd)


def test_sidecar_for_another_model_is_refused(ten_class_sd: StateDict, tmp_path: Path) -> None:
    path = tmp_path / "best.safetensors"
    safetensors.torch.save_file(ten_class_sd, str(path))
    (tmp_path / "best.json").write_text(json.dumps({"model": "slow_r50", "labels": TEN}))
    with pytest.raises(WeightsError, match="slow_r50"):
        load_model(MODEL, path, device="cpu")


def test_sidecar_label_count_must_match_head(ten_class_sd: StateDict, tmp_path: Path) -> None:
    path = tmp_path / "best.safetensors"
    safetensors.torch.save_file(ten_class_sd, str(path))
    (tmp_path / "best.json").write_text(json.dumps({"model": MODEL, "labels": TEN[:9]}))
    with pytest.raises(WeightsError, match="9 labels"):
        load_model(MODEL, path, device="cpu")


def test_load_classmap_forms(tmp_path: Path) -> None:
    expected = ("arm wrestling", "tai chi", "yoga")
    assert load_classmap({"tai chi": 1, "yoga": 2, "arm wrestling": 0}) == expected
    assert load_classmap(list(expected)) == expected

    quoted = tmp_path / "kinetics_classnames.json"  # pytorchvideo's own format
    quoted.write_text('{"\\"tai chi\\"": 1, "\\"arm wrestling\\"": 0, "yoga": 2}')
    assert load_classmap(quoted) == expected
    assert load_classmap(str(quoted)) == expected

    as_list = tmp_path / "names.json"
    as_list.write_text(json.dumps(list(expected)))
    assert load_classmap(as_list) == expected

    text = tmp_path / "names.txt"
    text.write_text("arm wrestling\n tai chi \n\nyoga\n")
    assert load_classmap(text) == expected


@pytest.mark.parametrize("mapping", [{"a": 0, "c": 2}, {"a": 0, "b": 0}, {"a": 1, "b": 2}])
def test_load_classmap_rejects_gaps_and_repeats(mapping: dict[str, int], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no gaps"):
        load_classmap(mapping)
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    with pytest.raises(ConfigError, match="no gaps"):
        load_classmap(path)


def test_load_classmap_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_classmap(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_classmap(broken)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="no class names"):
        load_classmap(empty)


# --------------------------------------------------------------------------- devices


def test_resolve_device_auto_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_resolve_device_cuda_unavailable(device: str) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["tpu", "gpu", "", "CPU"])
def test_resolve_device_unknown(device: str) -> None:
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device(device)
