"""Backend selection: explicit names, the measured and cached ``auto`` choice, bad combos."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamclf.engine.backends import FakeBackend, factory
from streamclf.errors import ConfigError
from streamclf.models import load_model


@pytest.fixture(scope="module")
def x3d():  # type: ignore[no-untyped-def]
    return load_model("x3d_xs", "random", device="cpu")


def test_auto_measures_picks_the_fastest_and_caches(x3d, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []

    def fake_build(name: str, model, precision: str, threads):  # type: ignore[no-untyped-def]
        built.append(name)
        backend = FakeBackend(labels=model.spec.labels)
        backend.name = name
        return backend

    speeds = {"torch": 95.0, "onnxruntime": 126.0, "openvino": 32.0}
    monkeypatch.setattr(factory, "_build", fake_build)
    cache = tmp_path / "choice.json"
    choice = factory.create_backend(x3d, "auto", cache_file=cache,
                                    timer=lambda b, clip: speeds[b.name])
    assert choice.backend.name == "openvino"
    assert "openvino: fastest of openvino 32 ms, torch 95 ms, onnxruntime 126 ms" in choice.reason
    assert sorted(built) == ["onnxruntime", "openvino", "torch"] and cache.is_file()
    built.clear()
    again = factory.create_backend(x3d, "auto", cache_file=cache,
                                   timer=lambda b, clip: pytest.fail("measured twice"))
    assert again.backend.name == "openvino" and built == ["openvino"]
    assert "cached" in again.reason


def test_auto_skips_backends_that_fail(x3d, tmp_path: Path,  # type: ignore[no-untyped-def]
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_build(name: str, model, precision: str, threads):  # type: ignore[no-untyped-def]
        if name != "torch":
            raise RuntimeError(f"{name} cannot run this")
        backend = FakeBackend(labels=model.spec.labels)
        backend.name = name
        return backend

    monkeypatch.setattr(factory, "_build", fake_build)
    choice = factory.create_backend(x3d, "auto", cache_file=tmp_path / "c.json",
                                    timer=lambda b, clip: 10.0)
    assert choice.backend.name == "torch"


def test_explicit_torch_and_bad_combinations(x3d) -> None:  # type: ignore[no-untyped-def]
    choice = factory.create_backend(x3d, "torch")
    assert choice.backend.name == "torch" and "as requested" in choice.reason
    with pytest.raises(ConfigError, match="unknown backend"):
        factory.create_backend(x3d, "tensorflow")
    with pytest.raises(ConfigError, match="unknown precision"):
        factory.create_backend(x3d, "torch", precision="int4")
    with pytest.raises(ConfigError, match="int8 needs"):
        factory.create_backend(x3d, "torch", precision="int8")
    with pytest.raises(ConfigError, match="fp16 autocast needs CUDA"):
        factory.create_backend(x3d, "torch", precision="fp16")
    with pytest.raises(ConfigError, match="onnxruntime supports precision fp32"):
        factory.create_backend(x3d, "onnxruntime", precision="int8")
