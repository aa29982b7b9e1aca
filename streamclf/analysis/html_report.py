"""One self-contained HTML file: headings, paragraphs, tables and PNG images.

The page needs nothing else: the images are embedded as ``data:image/png;base64`` URLs, the
style sheet is inline, there is no script and no external URL. Every text is escaped with
:func:`html.escape`. :meth:`HtmlReport.write` writes atomically (a temporary file in the
same folder, renamed into place), so a reader never sees half a report.

Example::

    from streamclf.analysis.html_report import HtmlReport
    from streamclf.analysis.plots import delay_histogram_png

    (HtmlReport("Detection report")
        .paragraph("model x3d_xs, 12 files")
        .heading("Summary")
        .table([{"metric": "recall", "value": 0.83}, {"metric": "false alarms/h", "value": 1.5}])
        .image(delay_histogram_png(delays), alt="time to detection")
        .write("report.html"))

Every method but :meth:`HtmlReport.html` and :meth:`HtmlReport.write` returns the report, so
the calls chain.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streamclf.errors import ConfigError
from streamclf.files import write_atomic

__all__ = ["HtmlReport"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: .3em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
"""


def _text(value: Any) -> str:
    """A table cell's text: ``None`` is empty, floats keep 6 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


class HtmlReport:
    """A report built piece by piece, then rendered by :meth:`html` or :meth:`write`.

    Not thread-safe: build one report on one thread.
    """

    def __init__(self, title: str) -> None:
        """``title``: the page's ``<title>`` and its first heading."""
        self.title = title
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        """A heading ``<h{level}>``; ``level`` 2-6 (1 is the title's)."""
        if not 2 <= level <= 6:
            raise ConfigError(f"heading level must be 2 to 6, got {level}")
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> HtmlReport:
        """A paragraph of plain text (escaped; line breaks are kept)."""
        body = "<br>\n".join(html.escape(line) for line in text.splitlines())
        self._parts.append(f"<p>{body}</p>")
        return self

    def table(self, rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
              header: Sequence[str] | None = None, caption: str | None = None) -> HtmlReport:
        """A table.

        Args:
            rows: dicts (the columns are their keys, in order of first appearance; a
                missing key is an empty cell) or sequences of cells. Cells are shown with
                ``str``; None and NaN as empty, other floats with 6 significant digits.
            header: the column names (default: the dicts' keys; none for sequences).
            caption: a caption above the table.

        Raises:
            ConfigError: rows that mix dicts and sequences.
        """
        dicts = [r for r in rows if isinstance(r, Mapping)]
        if dicts and len(dicts) != len(rows):
            raise ConfigError("table rows must be all dicts or all sequences")
        if dicts:
            keys = list(header) if header is not None else list(
                dict.fromkeys(k for r in dicts for k in r))
            cells = [[r.get(k) for k in keys] for r in dicts]
            header = keys
        else:
            cells = [list(r) for r in rows]
        parts = ["<table>"]
        if caption:
            parts.append(f"<caption>{html.escape(caption)}</caption>")
        if header:
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>"
                                                 for h in header) + "</tr></thead>")
        parts.append("<tbody>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(_text(c))}</td>" for c in row) + "</tr>"
                  for row in cells]
        parts.append("</tbody></table>")
        self._parts.append("\n".join(parts))
        return self

    def image(self, png: bytes, alt: str, caption: str | None = None) -> HtmlReport:
        """A PNG image embedded in the page (``data:image/png;base64``), with its ``alt``
        text and an optional caption below it.

        Raises:
            ConfigError: ``png`` is not a PNG file's bytes.
        """
        if not png.startswith(_PNG_SIGNATURE):
            raise ConfigError(f"image {alt!r} is not a PNG (its first bytes are {png[:8]!r})")
        data = base64.b64encode(png).decode("ascii")
        figure = [f'<figure><img src="data:image/png;base64,{data}" '
                  f'alt="{html.escape(alt, quote=True)}">']
        if caption:
            figure.append(f"<figcaption>{html.escape(caption)}</figcaption>")
        figure.append("</figure>")
        self._parts.append("".join(figure))
        return self

    def html(self) -> str:
        """The whole page as one HTML5 document."""
        title = html.escape(self.title)
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
            f"<h1>{title}</h1>", *self._parts, "</body>", "</html>", "",
        ])

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the page to ``path`` (UTF-8), atomically; returns the path.

        Raises:
            ConfigError: the file cannot be written (a missing folder, no permission, ...).
        """
        return write_atomic(path, self.html())
