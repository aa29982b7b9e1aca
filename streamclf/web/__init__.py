"""The web view: live overlay (MJPEG), top-k, events (SSE), health, stream control,
upload, and the review of past alerts with their clips.

``streamclf serve`` / ``streamclf run --web HOST:PORT``; see :mod:`streamclf.web.server`
for the endpoints. Importing this package loads no cv2, torch or web framework: Starlette
and uvicorn load when a :class:`WebServer` is built.
"""

from streamclf.web.hub import WebHub
from streamclf.web.server import TOKEN_ENV, WebServer, parse_bind

__all__ = ["TOKEN_ENV", "WebHub", "WebServer", "parse_bind"]
