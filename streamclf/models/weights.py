"""Checkpoints: download + cache + verify, local files, and strict loading.

A ``weights`` value is one of:

* ``"kinetics400"``: the spec's published checkpoint, downloaded once into the torch
  hub cache (``$TORCH_HOME/hub/checkpoints``), written atomically and verified (the
  spec's SHA-256 when published; otherwise the digest recorded at download time is
  checked on every later load, so a damaged cache file is caught and fetched again);
* a path to a pytorchvideo ``.pyth`` (``{"model_state": ...}``), a plain state dict
  (``.pt``/``.pth``/``.bin``), or a ``.safetensors`` file; a streamclf fine-tuned
  checkpoint carries a ``.json`` sidecar with its model name and labels;
* ``"random"``: no checkpoint (a loud warning; for tests and smoke runs).

Loading never unpickles arbitrary objects: ``torch.load(weights_only=True)`` or
safetensors.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from streamclf._lazy import require
from streamclf.errors import WeightsError
from streamclf.paths import input_file_problem

if TYPE_CHECKING:
    from torch import nn

    from streamclf.models.registry import ModelSpec

__all__ = [
    "Checkpoint",
    "cache_dir",
    "download_checkpoint",
    "load_checkpoint",
    "load_into",
    "read_sidecar",
]

log = logging.getLogger(__name__)

KINETICS400 = "kinetics400"
RANDOM = "random"
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_GENERIC_NAMES = frozenset({"pytorch_model.bin", "model.safetensors", "model.pth", "model.pt"})


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: tensors by key, plus what its sidecar says (may be empty).

    ``input_size`` is the ``(side_size, crop_size)`` the weights were fine-tuned at, when
    the sidecar's ``input`` names one (``streamclf train --crop-size``).
    """

    state_dict: dict[str, Any]
    origin: str
    labels: tuple[str, ...] | None = None
    model_name: str | None = None
    input_size: tuple[int, int] | None = None


def cache_dir() -> Path:
    """Where downloaded checkpoints live: torch hub's cache (honours ``$TORCH_HOME``)."""
    torch = require("torch")
    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline_message(spec_name: str, url: str, reason: str) -> str:
    return (
        f"cannot download the kinetics400 weights for {spec_name} from {url} ({reason}); "
        "if this machine is offline, pass --weights PATH with a local checkpoint, "
        "or --weights random to run with untrained weights"
    )


def download_checkpoint(
    url: str,
    spec_name: str,
    expected_sha256: str | None = None,
    directory: Path | None = None,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> Path:
    """Return the cached file for ``url``, downloading it first if needed.

    The file is streamed to a temporary name in the cache folder and renamed into
    place only once complete and verified; a ``.sha256`` file beside it records the
    digest. A cached file whose digest no longer matches is downloaded again.

    Raises:
        WeightsError: the server cannot be reached, answers an error, the transfer is
            cut short, or the digest differs from ``expected_sha256``.
    """
    directory = directory or cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name
    if name in _GENERIC_NAMES:  # e.g. Hugging Face's pytorch_model.bin: make it unique
        name = f"{spec_name}-{name}"
    target = directory / name
    digest_file = target.with_name(target.name + ".sha256")
    if target.is_file():
        recorded = digest_file.read_text().strip() if digest_file.is_file() else None
        wanted = expected_sha256 or recorded
        if wanted is None or _sha256(target) == wanted:
            return target
        log.warning("cached checkpoint %s fails its checksum; downloading it again", target)
    directory.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s weights from %s", spec_name, url)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=target.name, suffix=".part")
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "streamclf"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout_s) as resp:
            expected_len = resp.headers.get("Content-Length")
            shutil.copyfileobj(resp, out, _CHUNK)
        size = tmp.stat().st_size
        if expected_len is not None and size != int(expected_len):
            reason = f"transfer cut short: {size} of {expected_len} bytes"
            raise WeightsError(_offline_message(spec_name, url, reason))
        actual = _sha256(tmp)
        if expected_sha256 and actual != expected_sha256:
            raise WeightsError(
                f"downloaded weights for {spec_name} from {url} fail verification: "
                f"sha256 {actual[:16]}... != expected {expected_sha256[:16]}..."
            )
        os.replace(tmp, target)
        digest_file.write_text(actual + "\n")
        return target
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as exc:
        # HTTPException: IncompleteRead (a chunked transfer cut short), BadStatusLine, ...
        reason = str(getattr(exc, "reason", None) or exc)
        raise WeightsError(_offline_message(spec_name, url, reason)) from None
    finally:
        tmp.unlink(missing_ok=True)


def read_sidecar(path: Path) -> dict[str, Any]:
    """The ``.json`` beside a fine-tuned checkpoint (``{}`` when there is none)."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise WeightsError(f"checkpoint sidecar {sidecar} is not valid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise WeightsError(f"checkpoint sidecar {sidecar} is not UTF-8 JSON text") from None
    except OSError as exc:
        raise WeightsError(f"cannot read checkpoint sidecar {sidecar}: "
                           f"{exc.strerror or exc}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"checkpoint sidecar {sidecar} must hold a JSON object")
    return data


#: torch's weights-only refusals: "Unsupported global: GLOBAL os.system" (2.4+), "Trying to
#: load unsupported GLOBAL posix.system whose module posix is blocked" (2.6+), "Unsupported
#: class" (older); group 1 names what the file asked to run.
_CODE_IN_PICKLE = re.compile(
    r"unsupported (?:global|class)\b[:\s]*(?:GLOBAL\s+)?([A-Za-z_][\w.]{0,80})", re.IGNORECASE)


_SAFE_GLOBALS = ("torch.", "numpy.", "collections.OrderedDict", "_codecs.encode",
                 "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.complex",
                 "builtins.bytearray")


def _code_in_pickle(path: Path, max_bytes: int = 64 << 20) -> str | None:
    """The first callable a plain (non-zip) pickle file names outside torch, numpy and the
    data types torch allows, found by reading its opcodes (nothing is run); None if none or
    unreadable. torch's weights-only reader gives up on some of them before naming it."""
    import pickletools
    import zipfile

    if zipfile.is_zipfile(path) or path.stat().st_size > max_bytes:
        return None
    strings: list[str] = []
    try:
        with path.open("rb") as fh:
            for op, arg, _ in pickletools.genops(fh):
                if isinstance(arg, str):
                    strings = [*strings[-1:], arg]
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    name = arg.replace(" ", ".")
                elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                    name = ".".join(strings)
                else:
                    continue
                if not name.startswith(_SAFE_GLOBALS):
                    return name[:80]
    except Exception:  # not a pickle, or a broken one: not code, just unreadable
        return None
    return None


def _read_state_dict(path: Path) -> dict[str, Any]:
    torch = require("torch")
    if path.suffix == ".safetensors":
        st = require("safetensors.torch")
        try:
            return dict(st.load_file(str(path)))
        except Exception as exc:  # safetensors raises its own untyped errors
            raise WeightsError(f"cannot read safetensors checkpoint {path}: {exc}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        # "Unsupported global" (torch >= 2.4) / "Unsupported class" (older): the file
        # names Python code to run. Any other weights-only failure is a corrupt or
        # non-checkpoint file; never relay torch's advice to retry with weights_only=False.
        code = _CODE_IN_PICKLE.search(text)
        name = code.group(1) if code else _code_in_pickle(path)
        if name:
            raise WeightsError(
                f"refusing to load {path}: the checkpoint contains Python code "
                f"({name}), not only tensors (streamclf loads checkpoints "
                "weights-only)") from None
        if "Weights only load failed" in text or "weights_only" in text:
            text = "not a valid checkpoint (corrupt, truncated, or not a tensor checkpoint)"
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        raise WeightsError(f"cannot read checkpoint {path}: {first}") from None
    if isinstance(obj, dict):
        for key in ("model_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    problem = _not_a_state_dict(obj, torch.Tensor)
    if problem:
        raise WeightsError(f"checkpoint {path} does not hold a state dict (parameter names "
                           f"mapped to tensors): {problem}")
    return obj


def _not_a_state_dict(obj: object, tensor_type: type) -> str | None:
    """Why ``obj`` is not a ``{name: tensor}`` dict (``None`` when it is one)."""
    if not isinstance(obj, dict):
        return f"it holds {_a(obj)}"
    if not obj:
        return "it is empty"
    for key, value in obj.items():
        if not isinstance(key, str):
            return f"key {key!r} is {_a(key)}, not a name"
        if not isinstance(value, tensor_type):
            return f"{key!r} holds {_a(value)}, not a tensor"
    return None


def _a(obj: object) -> str:
    """``"a list"``, ``"an int"``: the type of ``obj`` with its article."""
    name = type(obj).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def load_checkpoint(spec: ModelSpec, weights: str | os.PathLike[str]) -> Checkpoint | None:
    """Resolve ``weights`` for ``spec`` into tensors (``None`` for ``"random"``).

    Raises:
        WeightsError: download failure, missing or unreadable file, pickled code, or a
            sidecar naming another model.
    """
    if str(weights) == RANDOM:
        log.warning(
            "RANDOM WEIGHTS: %s is running untrained; its labels are meaningless", spec.name
        )
        return None
    if str(weights) == KINETICS400:
        path = download_checkpoint(spec.weights_url, spec.name, spec.weights_sha256)
        return Checkpoint(_read_state_dict(path), origin=spec.weights_url)
    path = Path(weights).expanduser()
    problem = input_file_problem(path)
    if problem == "file not found":
        raise WeightsError(
            f"checkpoint not found: {path} (use kinetics400, random, or a path to a file)")
    if problem:
        raise WeightsError(f"checkpoint {path} {problem}")
    meta = read_sidecar(path)
    model_name = meta.get("model")
    if model_name is not None and model_name != spec.name:
        raise WeightsError(
            f"checkpoint {path} was trained for model {model_name!r}, not {spec.name!r}"
        )
    labels = meta.get("labels")
    valid = isinstance(labels, list) and all(isinstance(x, str) for x in labels)
    if labels is not None and not valid:
        raise WeightsError(f"checkpoint sidecar for {path}: 'labels' must be a list of names")
    if isinstance(labels, list) and len(set(labels)) != len(labels):
        raise WeightsError(f"checkpoint sidecar for {path}: 'labels' repeats a name")
    return Checkpoint(
        _read_state_dict(path), origin=str(path),
        labels=tuple(labels) if labels else None, model_name=model_name,
        input_size=_sidecar_input_size(path, meta),
    )


def _sidecar_input_size(path: Path, meta: dict[str, Any]) -> tuple[int, int] | None:
    """``(side_size, crop_size)`` from a sidecar's ``input`` object, if it has one."""
    spec_input = meta.get("input")
    if spec_input is None:
        return None
    side, crop = (spec_input.get(k) if isinstance(spec_input, dict) else None
                  for k in ("side_size", "crop_size"))
    if not (_positive_int(side) and _positive_int(crop)):
        raise WeightsError(f"checkpoint sidecar for {path}: 'input' must hold positive "
                           "integers 'side_size' and 'crop_size'")
    return side, crop


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load_into(model: nn.Module, checkpoint: Checkpoint, spec: ModelSpec) -> None:
    """Copy ``checkpoint`` into ``model`` with strict key and shape matching.

    Raises:
        WeightsError: naming the model and the first missing, unexpected or
            mis-shaped key.
    """
    own = model.state_dict()
    given = checkpoint.state_dict
    if given and all(k.startswith("module.") for k in given):
        given = {k[len("module."):]: v for k, v in given.items()}
    problems: list[str] = []
    for key, value in given.items():
        if key not in own:
            problems.append(f"unexpected key {key!r}")
        elif tuple(own[key].shape) != tuple(getattr(value, "shape", ())):
            problems.append(
                f"key {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)}"
            )
    problems.extend(f"missing key {key!r}" for key in own if key not in given)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise WeightsError(
            f"checkpoint {checkpoint.origin} does not fit model {spec.name}: "
            f"{problems[0]}{more}"
        )
    model.load_state_dict(given, strict=True)
