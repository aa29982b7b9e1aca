"""``POST /api/classify``: parse a ``multipart/form-data`` upload and classify the video.

The upload is parsed with the standard library's ``email`` parser (``cgi`` is deprecated),
written to a private temporary file with a sanitised suffix, classified with one shared
:class:`~streamclf.offline.classify.ActionClassifier` (built on first use, one request at a time),
and deleted.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamclf.errors import DataError

if TYPE_CHECKING:
    from streamclf.offline.classify import ActionClassifier

__all__ = ["ClassifyService", "parse_upload"]

log = logging.getLogger(__name__)
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def parse_upload(content_type: str, body: bytes, field: str = "file") -> tuple[str, bytes]:
    """The file part named ``field`` of a ``multipart/form-data`` body.

    Returns:
        ``(filename, data)``; the filename as the browser sent it (only its suffix is used).

    Raises:
        DataError: not multipart, no such part, or an empty file.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise DataError("upload must be multipart/form-data with a 'file' field")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise DataError("upload: malformed multipart body")
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") != field:
            continue
        data = part.get_payload(decode=True) or b""
        if not data:
            raise DataError("upload: the file is empty")
        if not isinstance(data, bytes):
            raise DataError(f"upload: the {field!r} field is not a file")
        return part.get_filename() or "upload", data
    raise DataError(f"upload: no {field!r} field in the form")


class ClassifyService:
    """Classify uploaded videos with a lazily built classifier (thread-safe: serialised).

    Args:
        make_classifier: builds the :class:`ActionClassifier` on the first request (so
            ``streamclf serve`` starts fast and a run without uploads loads nothing).
        clips: windows per video, averaged (as ``streamclf classify --clips``).
    """

    def __init__(self, make_classifier: Callable[[], ActionClassifier], clips: int = 1) -> None:
        self._make = make_classifier
        self._clf: ActionClassifier | None = None
        self._lock = threading.Lock()
        self.clips = clips

    def classify(self, filename: str, data: bytes) -> dict[str, Any]:
        """Labels and scores (top-k, high to low) for one uploaded video.

        Raises:
            DataError: the bytes are not a decodable video. Other StreamclfErrors from
            building the classifier (bad weights) pass through.
        """
        suffix = Path(filename).suffix
        suffix = suffix if _SUFFIX.match(suffix) else ".bin"
        fd, tmp = tempfile.mkstemp(prefix="streamclf-upload-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            with self._lock:
                if self._clf is None:
                    self._clf = self._make()
                t0 = time.perf_counter()
                try:
                    result = self._clf.classify_file(tmp, clips=self.clips)
                except DataError as exc:
                    # The message names the temporary file; name the upload instead.
                    raise DataError(str(exc).replace(tmp, Path(filename).name or "upload")) \
                        from None
                seconds = time.perf_counter() - t0
                model = self._clf.spec.name
        finally:
            Path(tmp).unlink(missing_ok=True)
        log.info("classified upload %s in %.2f s: %s", filename, seconds, result.labels[0])
        return {"file": Path(filename).name, "model": model, "labels": result.labels,
                "scores": [round(float(s), 4) for s in result.scores],
                "seconds": round(seconds, 3)}
