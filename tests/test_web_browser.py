"""The web view in a real headless Chromium (Debian ``chromium``, driven by playwright),
served by a real ``streamclf serve`` process streaming a real clip."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.servers import static_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed "
                       "(.ci/run installs it with apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, tai_chi_clip: Path
          ) -> Iterator[tuple[str, Path]]:
    """``streamclf serve`` on a looping real clip (one for the module); yields (url, event
    log)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    events, log = tmp_path / "events.jsonl", tmp_path / "serve.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamclf", "serve", "--port", "0", "--source",
             str(tai_chi_clip), "--loop", "--weights", "random", "--backend", "torch",
             "--events", str(events), "--stream-id", "hall"],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
        )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"web view on (http://127\.0\.0\.1:\d+/)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.1)
        assert url, f"serve did not start (exit {proc.poll()}): {log.read_text()}"
        # Up means the stream runs (and with it the controller behind /api/streams).
        streams: list[str] = []
        while "hall" not in streams and time.monotonic() < deadline and proc.poll() is None:
            with urllib.request.urlopen(url + "api/streams", timeout=10) as resp:
                streams = json.loads(resp.read())["streams"]
            time.sleep(0.1)
        assert "hall" in streams, f"the stream did not start: {log.read_text()}"
        yield url, events
    finally:
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            pytest.fail("streamclf serve did not stop within 10 s of SIGINT")
    assert proc.returncode == 0, log.read_text()
    assert time.monotonic() - t0 < 3.0


def test_page_in_headless_chromium(serve: tuple[str, Path], tai_chi_clip: Path,
                                   tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    url, _ = serve
    shot = Path(os.environ.get("STREAMCLF_SCREENSHOT_DIR", tmp_path)) / "web-view.png"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url, wait_until="domcontentloaded")

            # The stream's grid cell shows the MJPEG overlay, and it keeps changing.
            img = "document.querySelector('.cell[data-stream=hall] img.video')"
            page.wait_for_function(f"() => {img} && {img}.naturalWidth > 0", timeout=60_000)
            grab = f"""() => {{ const img = {img};
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                const d = g.getImageData(0, 0, c.width, c.height).data;
                let h = 0; for (let i = 0; i < d.length; i += 97) h = (h * 31 + d[i]) | 0;
                return [c.width, c.height, h]; }}"""
            width, height, first = page.evaluate(grab)
            assert (width, height) == (340, 256)  # the clip's own size, overlay drawn on it
            page.wait_for_function(f"() => ({grab})()[2] !== {first}", timeout=15_000)

            # Live events arrive over SSE: predictions draw the score chart, the event list
            # shows the rest (not every prediction).
            chart = ".cell[data-stream=hall] canvas.chart"
            page.wait_for_function(f"() => +document.querySelector('{chart}').dataset.points > 1",
                                   timeout=30_000)
            page.wait_for_selector(".cell[data-stream=hall] .legend span", timeout=10_000)
            assert page.locator("#events li.source_opened").count() >= 1
            assert page.locator("#events li.prediction").count() == 0

            # Health from /api/status, under readable names.
            table = ".cell[data-stream=hall] table.health"
            page.wait_for_function(
                f"() => document.querySelector('{table}').innerText.includes('Model rate')",
                timeout=10_000)
            health = page.inner_text(table)
            assert "Input\tlive" in health and "Dropped frames" in health

            # Upload a real video and get labels back.
            page.set_input_files("#upload-file", str(tai_chi_clip))
            page.click("#upload-form button")
            page.wait_for_function(
                "() => document.querySelectorAll('#upload-bars .bar').length === 5",
                timeout=60_000)
            assert f"{tai_chi_clip.name}: x3d_xs" in page.inner_text("#upload-status")

            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()


ATTACK_PAGE = """<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="TARGETapi/streams">
<input name='{"id":"formv","source":"synthetic:64x64@5","output":"VICTIM","x":"' value='"}'>
</form>
<script>
const item = {id: "v", source: "synthetic:64x64@5", output: "VICTIM"};
const form = new FormData();
form.append("file", new Blob(["not a video"]), "x.mp4");
Promise.allSettled([
  fetch("TARGETapi/streams", {method: "POST", mode: "no-cors",
        headers: {"Content-Type": "text/plain"}, body: JSON.stringify(item)}),
  fetch("TARGETapi/streams", {method: "POST", mode: "no-cors", body: JSON.stringify(item)}),
  fetch("TARGETapi/classify", {method: "POST", mode: "no-cors", body: form}),
]).then(() => { document.getElementById("f").submit(); document.title = "sent"; });
</script></body></html>"""


def _browser(sync_api: object, pw: object, *rules: str) -> object:
    return pw.chromium.launch(  # type: ignore[attr-defined]
        executable_path=CHROMIUM, headless=True,
        args=["--no-sandbox", "--disable-gpu", *rules])


def test_a_page_on_another_site_cannot_add_streams_or_write_files(
        serve: tuple[str, Path], tmp_path: Path) -> None:
    """The reported attack in a real browser: a page on another site (evil.test, resolved
    to 127.0.0.1) posts a stream with an output path as text/plain JSON, with a bare
    fetch, as a text/plain form, and uploads a file. Nothing is added, nothing is written."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    url, _ = serve
    victim = tmp_path / "victim.mp4"
    victim.write_bytes(b"precious")
    site = tmp_path / "site"
    site.mkdir()
    (site / "attack.html").write_text(ATTACK_PAGE.replace("TARGET", url)
                                      .replace("VICTIM", str(victim)))
    with static_server(site) as port, sync_api.sync_playwright() as pw:
        browser = _browser(sync_api, pw, "--host-resolver-rules=MAP evil.test 127.0.0.1")
        try:
            page = browser.new_page()  # type: ignore[attr-defined]
            page.goto(f"http://evil.test:{port}/attack.html")
            page.wait_for_function("() => document.title === 'sent'", timeout=15_000)
            time.sleep(1.5)  # a stream, had one been added, would have started writing
        finally:
            browser.close()  # type: ignore[attr-defined]
    with urllib.request.urlopen(url + "api/streams", timeout=10) as resp:
        assert json.loads(resp.read()) == {"streams": ["hall"]}
    assert victim.read_bytes() == b"precious"


def test_dns_rebinding_gets_no_page(serve: tuple[str, Path]) -> None:
    """A name the attacker controls, rebound to our address: the browser sends its own
    Host, and every endpoint refuses it."""
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    url, _ = serve
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with sync_api.sync_playwright() as pw:
        browser = _browser(sync_api, pw, "--host-resolver-rules=MAP rebind.test 127.0.0.1")
        try:
            page = browser.new_page()  # type: ignore[attr-defined]
            for path in ("", "api/status", "api/streams"):
                response = page.goto(f"http://rebind.test:{port}/{path}")
                assert response is not None and response.status == 421, path
            assert page.goto(url) is not None  # the real address still works
            assert page.goto(url + "api/status").status == 200
        finally:
            browser.close()  # type: ignore[attr-defined]
