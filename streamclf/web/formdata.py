"""``multipart/form-data`` uploads streamed into a private temporary file.

python-multipart's push parser (the one Starlette itself uses) is fed the body chunk by
chunk as it arrives; the bytes of the ``file`` part go straight to disk, every other part is
discarded, and part headers are capped, so an upload costs a few hundred KB of memory
whatever its size (the old reader held the body, a parsed copy and a decoded copy: ~11x).
The size limit itself is enforced by the body reader (:func:`streamclf.web.bodies.iter_body`).

Thread-safety: one :class:`FormFileWriter` per request, fed by that request's coroutine.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from streamclf.errors import DataError

__all__ = ["FormFileWriter", "SavedFile", "receive_file"]

_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
#: Longest header block of one part (a browser sends ~150 bytes).
_MAX_PART_HEADERS = 16 * 1024


@dataclass(frozen=True)
class SavedFile:
    """An uploaded file on disk: ``path`` (private temporary file), the ``filename`` the
    client sent (only its name is ever shown), and its ``size`` in bytes."""

    path: Path
    filename: str
    size: int


class FormFileWriter:
    """Writes the ``field`` part of a ``multipart/form-data`` body to a temporary file.

    Call :meth:`feed` per chunk, then :meth:`finish`; always :meth:`discard` (deletes the
    file). Not thread-safe: one request's coroutine drives it.

    Raises (from any method): DataError for a missing boundary or a malformed body.
    """

    def __init__(self, content_type: str, field: str = "file",
                 directory: str | None = None) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary or len(boundary) > 200:
            raise DataError("upload: multipart/form-data needs a boundary parameter")
        self.field = field
        self._directory = directory
        self._headers: dict[str, bytes] = {}
        self._name = bytearray()
        self._value = bytearray()
        self._header_bytes = 0
        self._in_file = False
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._filename = "upload"
        self._size = 0
        self._done = False
        self._ended = False
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_piece(self._name, d, s, e),
            "on_header_value": lambda d, s, e: self._header_piece(self._value, d, s, e),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        })

    # -- parser callbacks ----------------------------------------------------------------
    def _part_begin(self) -> None:
        self._headers, self._header_bytes = {}, 0

    def _header_piece(self, into: bytearray, data: bytes, start: int, end: int) -> None:
        self._header_bytes += end - start
        if self._header_bytes > _MAX_PART_HEADERS:
            raise DataError("upload: a multipart part's headers are too large")
        into += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._name).decode("latin-1").lower()] = bytes(self._value)
        self._name.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        self._in_file = name == self.field and self._file is None and not self._done
        if self._in_file:
            raw = params.get(b"filename", b"upload").decode("utf-8", "replace")
            self._filename = Path(raw.replace("\\", "/")).name or "upload"
            suffix = Path(self._filename).suffix
            fd, tmp = tempfile.mkstemp(prefix="streamclf-upload-", dir=self._directory,
                                       suffix=suffix if _SUFFIX.match(suffix) else ".bin")
            self._path = Path(tmp)
            self._file = os.fdopen(fd, "wb")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file and self._file is not None:
            self._file.write(data[start:end])
            self._size += end - start

    def _part_end(self) -> None:
        if self._in_file:
            self._in_file, self._done = False, True

    def _end(self) -> None:
        self._ended = True

    # -- driving -------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise DataError(f"upload: malformed multipart body ({exc})") from None

    def finish(self) -> SavedFile:
        """The saved file. Raises DataError: no ``field`` part, an empty file, or a body
        that ended before its closing boundary."""
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise DataError(f"upload: malformed multipart body ({exc})") from None
        if self._file is not None:
            self._file.close()
        if self._path is None:
            raise DataError(f"upload: no {self.field!r} field in the form")
        if not self._done or not self._ended:
            raise DataError("upload: the multipart body ended before its closing boundary")
        if self._size == 0:
            raise DataError("upload: the file is empty")
        return SavedFile(self._path, self._filename, self._size)

    def discard(self) -> None:
        """Close and delete the temporary file (idempotent)."""
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def receive_file(chunks: AsyncIterator[bytes], content_type: str, field: str = "file",
                       directory: str | None = None) -> AsyncIterator[SavedFile]:
    """Stream ``chunks`` (a request body) into a temporary file; yields the
    :class:`SavedFile`, deleted when the block ends, however it ends.

    Raises:
        DataError: see :class:`FormFileWriter`; whatever ``chunks`` raises passes through.
    """
    writer = FormFileWriter(content_type, field, directory)
    try:
        async for chunk in chunks:
            writer.feed(chunk)
        yield writer.finish()
    finally:
        writer.discard()
