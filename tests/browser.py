"""Open a report page in a real headless Chromium (Debian ``chromium``, through playwright)
and read back what it shows: every image's load state, the title, and any request that
left the page (a self-contained report makes none)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class Shown:
    images: list[dict[str, Any]]  # alt, complete, width, height (natural)
    title: str
    external: list[str]  # requests other than file: and data: URLs

    @property
    def all_images_loaded(self) -> bool:
        return bool(self.images) and all(
            i["complete"] and i["width"] > 0 and i["height"] > 0 for i in self.images)


def open_page(path: Path) -> Shown:
    """Load ``path`` in headless Chromium; skips the test with the reason when Chromium or
    playwright is not installed."""
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed (.ci/run installs it with apt-get "
                    "install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e .[dev])")
    requested: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("request", lambda req: requested.append(req.url))
            page.goto(path.as_uri(), wait_until="load", timeout=30_000)
            images = page.evaluate("""() => [...document.images].map(i =>
                ({alt: i.alt, complete: i.complete, width: i.naturalWidth,
                  height: i.naturalHeight}))""")
            title = page.title()
        finally:
            browser.close()
    return Shown(images, title, [u for u in requested if not u.startswith(("file:", "data:"))])
