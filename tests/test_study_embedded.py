"""The quick study end to end on the embedded model, as a user runs it: uninterrupted (the session's
`quick_study`), then killed during its third experiment and started again; and its HTML report in headless
Chromium."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from anatomy import study
from anatomy.claims import VERDICTS
from conftest import offline_env, quick_study_command, require

pytestmark = [pytest.mark.embedded, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def test_the_quick_study_writes_every_experiment_and_one_report(quick_study):
    for name in study.STUDY:
        assert (quick_study / name / "results.json").is_file(), name
    claims = pd.read_csv(quick_study / "claims.csv", keep_default_na=False)
    assert list(claims.columns)[:6] == ["finding", "study", "ours", "verdict", "reason", "conditions"]
    assert len(claims) >= 24 and set(claims["verdict"]) <= set(VERDICTS)
    by = claims.set_index("finding")
    assert by.loc["Table 1 rank agreement", "verdict"] == "holds"
    for row in ("hardest layer's recovery", "recovery vs importance", "alpha gradient persists over training",
                "compression waves", "query/key vs value/output over training"):
        assert by.loc[row, "verdict"] == "not comparable", row  # 10 steps, one checkpoint: conditions differ
    assert "10 steps (study: 200)" in by.loc["hardest layer's recovery", "conditions"]
    assert by.loc["manipulation survivors", "conditions"].startswith("9 layers changed (study: 9)")
    markdown = (quick_study / "study.md").read_text()
    assert "QUICK (reduced)" in markdown and "## Wall time" in markdown
    assert not list(quick_study.glob("*.partial"))


RESUMED = ("importance", "predictability", "structure", "manipulate")  # the study's first four: killed in the third
DECIDED = ["importance range", "critical core: most important layer", "R^2 of gate_proj", "delta correlation",
           "manipulation survivors", "Table 1 rank agreement"]


def test_a_killed_study_resumes_without_recomputing_what_finished(quick_study, tmp_path):
    """The study's first four experiments (a minute, where the whole quick study takes three), killed during
    the third and started again: its runs and every claim they decide equal the uninterrupted study's, whose
    runs of those four were made under the same keys."""
    out = tmp_path / "b"
    resumed = [*quick_study_command(out), "--experiments", ",".join(RESUMED)]
    process = subprocess.Popen(resumed, cwd=ROOT, env=offline_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    second = out / RESUMED[1] / study.KEY_FILE  # written last, just before the third experiment starts
    deadline = time.monotonic() + 600
    while not second.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    finished = {p.name: (p / "results.json").stat().st_mtime_ns for p in out.iterdir()
                if p.is_dir() and (p / study.KEY_FILE).is_file()}
    assert set(RESUMED[:2]) <= set(finished) and set(finished) != set(RESUMED)
    assert not (out / "study.md").exists()  # the report is written only when every experiment is done
    done = subprocess.run(resumed, cwd=ROOT, env=offline_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    for name, stamp in finished.items():
        assert (out / name / "results.json").stat().st_mtime_ns == stamp, f"{name} was recomputed"
    assert f"Reused from an earlier run of the same command: {', '.join(n for n in RESUMED if n in finished)}" \
        in (out / "study.md").read_text()
    for name in RESUMED:
        assert (out / name / study.KEY_FILE).read_text() == (quick_study / name / study.KEY_FILE).read_text()
        ours, theirs = pd.read_csv(out / name / f"{name}.csv"), pd.read_csv(quick_study / name / f"{name}.csv")
        pd.testing.assert_frame_equal(ours, theirs, obj=name)
    ours, theirs = (pd.read_csv(f / "claims.csv", keep_default_na=False).set_index("finding")
                    for f in (out, quick_study))
    decided = ours.loc[DECIDED]  # the findings whose rules read these four experiments only
    assert "not comparable" not in set(decided["verdict"])
    pd.testing.assert_frame_equal(decided, theirs.loc[DECIDED])


def test_the_html_report_opens_offline_in_chromium(quick_study):
    require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (setup.sh does)")
    from playwright.sync_api import expect, sync_playwright

    shots = ROOT / "tests" / "artefacts"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto((quick_study / "study.html").as_uri())
        expect(page.get_by_role("heading", name="Claims of the study")).to_be_visible()
        image = page.locator("img").first
        expect(image).to_be_visible()
        assert page.evaluate("img => img.naturalWidth", image.element_handle()) > 500
        assert page.locator("tr.holds").count() >= 1
        page.screenshot(path=str(shots / "study.png"), full_page=True)
        browser.close()
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # nothing fetched from outside
    assert (shots / "study.png").stat().st_size > 20_000
