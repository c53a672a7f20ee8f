"""In headless Debian Chromium, a Hub id where the Hub cannot be reached: one line under the model box and in
the tab that runs it, nothing of the network error's internals on screen, no traceback in the server log; then
before it, the embedded model loads and the Model tab shows the norms experiment's table.

The app is started with HF_ENDPOINT on a name that never resolves (RFC 6761 reserves `.invalid`), so every Hub
request fails as on a machine without network ("Name or service not known"), whatever network the machine
running the test has; HF_HUB_OFFLINE, which fails before any request, is left unset.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import free_port, require
from tests.test_browser_app import ARTEFACTS, CHROMIUM, ROOT, wait_for_server

if TYPE_CHECKING:
    from playwright.sync_api import Locator

pytestmark = [pytest.mark.browser, pytest.mark.embedded, pytest.mark.slow]
HUB_ID = "HuggingFaceTB/SmolLM2-135M"
OFFLINE_LINE = f"Cannot reach the Hub to look up '{HUB_ID}' (offline?)"
INTERNALS = ("Traceback", "ConnectError", "Errno", "Name or service", "error id")  # an unexpected failure's marks
MODEL_BOX = "Model: 'embedded', a Hub id (owner/name) or a local folder"


def start_unreachable_hub_app(port: int, log: Path) -> subprocess.Popen:
    """The app on the embedded model, every Hub request failing at name resolution; its log kept in `log`."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               HF_ENDPOINT="http://hub.invalid")
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", "from space import build_demo, launch; "
                                 "launch(build_demo('embedded'))"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def shows_one_offline_line(place: Locator) -> None:
    """`place` (a locator) ends up holding the visitor's line alone, progress gone: the offline explanation on one
    line, with none of the error's internals."""
    from playwright.sync_api import expect

    line = re.compile(r"^\s*\S*\s*Error: " + re.escape(OFFLINE_LINE) + r"[^\n]*\s*$")  # the mark, then the message
    expect(place).to_have_text(line, timeout=120_000)
    text = place.inner_text()
    assert "\n" not in text.strip() and not [mark for mark in INTERNALS if mark in text], text


def test_a_hub_id_offline_is_one_line_under_the_model_box_and_in_the_tab(tmp_path):
    require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (setup.sh does)")
    from playwright.sync_api import expect, sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), tmp_path / "server.log"
    process = start_unreachable_hub_app(port, log)
    try:
        wait_for_server(port, process)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            status, norms = page.locator("#model-status"), page.locator("#model-norms")
            expect(status).to_contain_text("The embedded SmolLM2-135M-Instruct", timeout=60_000)  # the page's check
            page.get_by_role("tab", name="Model").click()
            load = page.get_by_role("button", name="Load", exact=True)
            load.click()
            expect(norms).to_be_visible(timeout=120_000)  # the norms experiment's table, one row per layer
            expect(norms).to_contain_text("LlamaDecoderLayer")
            expect(status).to_contain_text("Norms: 210 matrices: the largest norm is layers.28.mlp.up_proj")
            box = page.get_by_label(MODEL_BOX)
            box.fill(HUB_ID)
            box.press("Enter")
            shows_one_offline_line(status)
            expect(norms).to_be_hidden()  # the embedded model's table does not stay beside another model's name
            load.click()
            expect(page.locator(".toast-body", has_text=OFFLINE_LINE).first).to_be_visible(timeout=60_000)  # failed
            shows_one_offline_line(status)  # the load's own line, which stays under the model box
            expect(norms).to_be_hidden()
            page.get_by_role("tab", name="Importance").click()
            page.get_by_role("button", name="Run importance map").click()
            headline = page.locator("#importance-headline")
            shows_one_offline_line(headline)
            page.screenshot(path=str(ARTEFACTS / "offline-hub-id.png"), full_page=True)
            browser.close()
    finally:
        process.terminate()
        process.wait(30)
    served = log.read_text(encoding="utf-8", errors="replace")
    assert "Running on local URL" in served  # the log is the server's
    assert not [mark for mark in INTERNALS if mark in served], served[-3000:]  # expected failures: no traceback
