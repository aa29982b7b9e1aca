"""A real RTSP server for tests: GStreamer's rtsp-server serving an Annex-B H.264 file in a loop.

Run by Debian's ``/usr/bin/python3`` (PyGObject + GstRtspServer come from apt; the project venv
cannot import ``gi``), as a subprocess of the test (see ``tests/servers.py``)::

    /usr/bin/python3 tests/rtsp_server_gst.py clip.h264 --port 0 --fps 30

Prints ``PORT <n>`` on stdout (the bound port; ``--port 0`` picks a free one) once it listens,
then serves ``rtsp://127.0.0.1:<n>/stream`` until killed (SIGTERM/SIGINT end it cleanly).

A raw ``.h264`` file has no timestamps: a pad probe stamps each access unit with ``n / fps``
(n counted per client session and across loop replays), so clients open fast and frames are paced
in real time by the server's sinks.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def _stamp_probe(fps: float) -> Callable[[Gst.Pad, Gst.PadProbeInfo], Gst.PadProbeReturn]:
    period = int(Gst.SECOND / fps)
    counter = [0]

    def probe(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buf = info.get_buffer()
        n = counter[0]
        counter[0] += 1
        buf.pts = buf.dts = n * period
        buf.duration = period
        return Gst.PadProbeReturn.OK

    return probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("h264", help="Annex-B H.264 elementary stream file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--mount", default="/stream")
    parser.add_argument("--tcp-only", action="store_true", help="refuse UDP transport")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))

    factory = GstRtspServer.RTSPMediaFactory()
    location = args.h264.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(
        f'( multifilesrc location="{location}" loop=true '
        "caps=video/x-h264,stream-format=byte-stream ! h264parse name=parse "
        "! video/x-h264,stream-format=byte-stream,alignment=au "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(False)  # each client gets its own pipeline and timestamps from 0
    if args.tcp_only:
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)

    def on_configure(_f: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        parse = media.get_element().get_by_name("parse")
        pad = parse.get_static_pad("src")
        pad.add_probe(Gst.PadProbeType.BUFFER, _stamp_probe(args.fps))

    factory.connect("media-configure", on_configure)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"ERROR cannot listen on {args.host}:{args.port}", flush=True)
        return 1
    print(f"PORT {server.get_bound_port()}", flush=True)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    parent = os.getppid()

    def orphaned() -> bool:  # never outlive the test run that started us
        if os.getppid() != parent:
            loop.quit()
            return False
        return True

    GLib.timeout_add(500, orphaned)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
