"""`u2s app` in a real browser: the command serves the page on 127.0.0.1, headless Chromium (Debian's package:
Playwright cannot download its own browsers here) uploads files and presses "Anonymize", and the test reads back the
image the page shows. U2S_APP_SCREENSHOT=1 also writes the README's screenshot, docs/app.png."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from u2s_hf import app, cli
from u2s_hf.backends.detectors import FaceDetector
from u2s_hf.editors.redact import FILL_GREY

CHROMIUM = shutil.which("chromium")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "app.png"
RUN_TIMEOUT_MS = 180_000  # the first run loads the detectors; a shared 2-core machine is slow


@pytest.fixture
def server(tmp_path):
    """`u2s app` on a free port of 127.0.0.1, with its own TMPDIR: the process, its URL and that folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path / "tmp"
    temp.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "u2s_hf.cli", "app", "--port", str(port)], env={**os.environ, "TMPDIR": str(temp)}
    )
    try:
        for _ in range(240):
            assert process.poll() is None, "u2s app exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("u2s app did not start listening within 2 minutes")
        yield process, f"http://127.0.0.1:{port}", temp
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # root needs --no-sandbox
        yield chromium
        chromium.close()


def anonymize(page, files: list[Path]):
    """Upload `files` through the page's first file input (in place of those there), press Anonymize, and wait for
    one result row per file."""
    picker = page.locator("input[type=file]").first
    clear = page.locator(".block", has=picker).get_by_role("button", name="Clear", exact=True)
    if clear.count():
        clear.click()
    picker.set_input_files([str(f) for f in files])
    for f in files:  # uploaded, not just chosen
        page.get_by_text(f.name, exact=True).first.wait_for()
    page.get_by_role("button", name="Anonymize", exact=True).click()
    results = page.locator(".u2s-result")
    page.wait_for_function(
        f"document.querySelectorAll('.u2s-result').length == {len(files)}"
        f" && document.querySelector('.u2s-result').innerText.includes('{files[0].name}')",
        timeout=RUN_TIMEOUT_MS,
    )
    return results


def shown(page, img) -> np.ndarray:
    """The bytes behind an <img> of the page, as the browser fetched them."""
    response = page.request.get(img.get_attribute("src"))
    assert response.ok
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB")).astype(int)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium (Debian's package)")
def test_the_page_redacts_a_face_and_reports_a_corrupt_upload(server, browser, photos, tmp_path):
    process, url, temp = server
    upload = tmp_path / "upload"
    upload.mkdir()
    photo = upload / "astronaut.png"  # lossless, so pixels away from the face must come back unchanged
    photos["astronaut"].save(photo)
    broken = upload / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(url)

    # A corrupt file alone: an error row with the decoder's reason, and the page goes on working.
    rows = anonymize(page, [broken])
    assert "broken.jpg: error, not verified: not an image" in rows.first.inner_text()

    rows = anonymize(page, [photo, broken])
    assert "broken.jpg: error" in rows.nth(1).inner_text()
    slider = rows.first.locator("[data-testid=imageslider-image]")
    slider.nth(1).wait_for()
    before, after = slider.all()
    original = np.asarray(photos["astronaut"].convert("RGB")).astype(int)
    assert np.array_equal(shown(page, before), original)
    out = shown(page, after)
    assert out.shape == original.shape

    x0, y0, x1, y1 = (round(v) for v in face_box(original))
    diff = np.abs(out - original).mean(axis=2)
    assert diff[y0:y1, x0:x1].mean() > 20, "the face must be redacted in what the page shows"
    w, h = x1 - x0, y1 - y0
    away = np.ones(diff.shape, bool)
    away[max(0, y0 - h) : y1 + h, max(0, x0 - w) : x1 + w] = False  # the face and a wide margin around it
    assert diff[away].mean() < 1, "pixels away from the face must stay as they were"
    assert "astronaut.png: redacted" in rows.first.inner_text()

    hosts = {urlsplit(u).netloc for u in requested if urlsplit(u).scheme in ("http", "https", "ws", "wss")}
    assert hosts == {urlsplit(url).netloc}, f"the page asked other hosts: {hosts}"
    if os.environ.get("U2S_APP_SCREENSHOT") == "1":
        write_screenshot(page)

    # Each run works in a folder of its own, gone once the page has its results; everything else the app wrote
    # (Gradio's uploads and shown images) lives in one folder, which goes when the app is stopped.
    for _ in range(100):
        if not list(temp.glob("u2s-app-*/run-*")):
            break
        time.sleep(0.1)
    assert list(temp.glob("u2s-app-*/run-*")) == []
    assert len(list(temp.glob("u2s-app-*"))) == 1
    process.terminate()
    assert process.wait(timeout=60) == 0
    assert list(temp.glob("u2s-app-*")) == []


def test_rows_of_a_dataset_go_through_the_cli_with_the_settings_changed(photos, tmp_path):
    """The page's other source, without a browser: rows of an image folder, and a setting that reaches the run."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        photos[name].save(folder / f"{name}.png")
    work = tmp_path / "work"
    work.mkdir()
    settings = {**app.DEFAULTS, "method": "fill"}

    def anonymize(argv):
        assert cli.main(["anonymize", *argv]) == 0

    rows, line, files = app.anonymize_rows(work, anonymize, None, str(folder), "", 0, 1, "lite", settings)
    [row] = rows
    assert (row.name, row.status) == ("row 0", "redacted, verified")  # its path-only cell read from the folder
    x0, y0, x1, y1 = (round(v) for v in face_box(row.before))
    assert (row.after[y0:y1, x0:x1] == FILL_GREY).all()
    assert "1 rows" in line and [Path(f).name for f in files] == ["000-row-0-safe.png", "u2s-release.zip"]


def face_box(rgb: np.ndarray) -> list[float]:
    faces = FaceDetector("cpu", 1)(rgb.astype(np.uint8), threshold=0.5, max_side=1536)
    assert faces, "the test photo must have a face"
    return faces[0]["box"]


def write_screenshot(page) -> None:
    """docs/app.png: the page at 3/4 size in 256 colours, so that it stays small."""
    shot = Image.open(io.BytesIO(page.screenshot(full_page=True)))
    shot = shot.resize((shot.width * 3 // 4, shot.height * 3 // 4), Image.LANCZOS)
    shot.quantize(256).save(SCREENSHOT, optimize=True)
