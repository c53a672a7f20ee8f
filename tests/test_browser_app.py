"""End to end in headless Debian Chromium: `python app.py` as a user starts it, the landing tab's shipped study,
an importance map, a generation."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, require

pytestmark = [pytest.mark.browser, pytest.mark.embedded, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = ROOT / "tests" / "artefacts"
CHROMIUM = "/usr/bin/chromium"


def start_app(port: int) -> subprocess.Popen:
    """`python app.py` offline (so on the embedded model), on a free local port."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_for_server(port: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "app.py exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("app.py did not start serving")


def run_session(n_sentences: int = 2, layers: str = "all") -> dict[str, float]:
    """Drive the app like a person; return seconds from process start to server up and to the plot visible."""
    from playwright.sync_api import expect, sync_playwright

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    port, started = free_port(), time.monotonic()
    process = start_app(port)
    timings = {}
    try:
        wait_for_server(port, process)
        timings["serving_s"] = time.monotonic() - started
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            expect(page.get_by_text("Transformer Anatomy").first).to_be_visible(timeout=60_000)
            expect(page.locator("#study-glance img, #study-glance canvas, #study-glance svg").first).to_be_visible(
                timeout=60_000)  # the shipped study's anatomy, before any click
            expect(page.locator("#study-claims")).to_contain_text("Table 1 rank agreement")
            expect(page.locator("#study-claims")).to_contain_text("reason")  # the claims' columns beside the verdict
            expect(page.locator("#study-estimate")).to_contain_text("Full study:")
            expect(page.get_by_label("Full", exact=True)).to_be_checked()  # locally the full study is the default
            expect(page.locator("#class-legend")).to_contain_text("Redundant (D < 10%)")
            expect(page.locator("#start-here")).to_contain_text("Start here")
            page.locator("#glossary").get_by_text("Glossary").click()
            expect(page.locator("#glossary")).to_contain_text("Block Influence")
            page.screenshot(path=str(ARTEFACTS / "landing.png"), full_page=True)
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(f"http://127.0.0.1:{port}/")
            expect(phone.locator("#study-claims")).to_contain_text("reason", timeout=60_000)
            cell = phone.locator("#study-claims td").first.bounding_box()
            assert cell and cell["width"] >= 60, cell  # words stay whole: the table scrolls instead
            image = phone.locator("#study-glance img").first.bounding_box()
            assert image and image["width"] >= 800, image  # readable, in a box that scrolls sideways
            phone.screenshot(path=str(ARTEFACTS / "landing-phone.png"), full_page=False)
            phone.close()
            page.locator("#eval-accordion").get_by_text("Evaluation text").click()
            sentences = page.locator("#n-sentences input[type=number]")
            sentences.fill(str(n_sentences))
            sentences.press("Enter")
            page.get_by_role("tab", name="Importance").click()
            page.get_by_label("Layers (0-based, e.g. 0,3,5-8 or all)").fill(layers)
            page.get_by_role("button", name="Run importance map").click()
            expect(page.locator("#importance-plot img")).to_be_visible(timeout=300_000)
            timings["first_plot_s"] = time.monotonic() - started
            expect(page.locator("#importance-headline")).to_contain_text("Baseline PPL")
            page.screenshot(path=str(ARTEFACTS / "importance.png"), full_page=True)
            page.get_by_label("Layers (0-based, e.g. 0,3,5-8 or all)").fill("abc")  # a bad input: its error stays
            page.get_by_role("button", name="Run importance map").click()
            headline = page.locator("#importance-headline")
            expect(headline).to_contain_text("Error:", timeout=60_000)
            error_at = time.monotonic()  # checked again 20 s later, after other tabs' jobs (below)
            page.get_by_label("Layers (0-based, e.g. 0,3,5-8 or all)").fill(layers)
            page.get_by_role("tab", name="Generate").click()
            page.get_by_role("button", name="Generate side by side").click()
            altered = page.locator("#gen-greedy-altered")
            expect(page.locator("#gen-greedy-original")).to_contain_text("Paris", timeout=300_000)
            expect(altered).not_to_be_empty()
            page.screenshot(path=str(ARTEFACTS / "generate.png"), full_page=True)
            page.get_by_role("tab", name="Manipulation").click()  # its default runs on the session's importance map
            run_manipulation = page.get_by_role("button", name="Run manipulation")
            run_manipulation.click()
            expect(page.locator("#manipulate-headline")).to_contain_text("layers", timeout=300_000)
            page.get_by_role("tab", name="Importance").click()
            page.wait_for_timeout(max(0.0, 20 - (time.monotonic() - error_at)) * 1000)
            expect(headline).to_contain_text("'Layers (0-based")  # still on screen 20 s later, naming the field
            timings["error_shown"] = time.monotonic() - error_at
            page.get_by_role("tab", name="Manipulation").click()
            run_manipulation.click()  # again, and Stop it: the tab says so
            page.wait_for_timeout(1_500)
            page.get_by_role("button", name="Stop", exact=True).first.click()  # the one on screen: this tab's
            expect(page.locator("#manipulate-headline")).to_contain_text("Stopped", timeout=60_000)
            timings["stopped_shown"] = 1.0
            browser.close()
    finally:
        process.terminate()
        process.wait(30)
    return timings


def test_importance_map_and_side_by_side_generation_in_chromium():
    require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (setup.sh does)")
    timings = run_session()
    assert timings["first_plot_s"] > timings["serving_s"] and timings["error_shown"] >= 20 and timings["stopped_shown"]
    assert (ARTEFACTS / "landing.png").stat().st_size > 10_000
    assert (ARTEFACTS / "importance.png").stat().st_size > 10_000
    assert (ARTEFACTS / "generate.png").stat().st_size > 10_000
    assert (ARTEFACTS / "landing-phone.png").stat().st_size > 10_000


if __name__ == "__main__":  # python tests/test_browser_app.py [sentences]: measure start-to-first-plot
    print(run_session(int(sys.argv[1]) if len(sys.argv) > 1 else 12))
