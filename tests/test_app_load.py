"""Eight visitors at once on one model through a real server: all finish, none sees another's altered weights,
queue positions reach them, and one visitor's pile of jobs cannot keep the others waiting."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client

from anatomy.interventions import fingerprint
from anatomy.load import LoadedModel
from anatomy.plans import VARIANTS
from bench.load import PROMPT, JobRecord, run_load, summary, watch
from space.models import CACHE
from tests.conftest import make_tiny_model

SPEC = "load-tiny"


@pytest.fixture(scope="module")
def url(tiny_tokenizer, app_url):
    CACHE.put(SPEC, LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test"))
    return app_url


def weights() -> str:
    with CACHE.use(SPEC) as loaded:
        return fingerprint(loaded.model)


def text(highlighted: list[dict]) -> str:
    return "".join(part["token"] for part in highlighted)


@pytest.mark.slow
def test_eight_concurrent_visitors_all_finish_and_never_see_altered_weights(url):
    before = weights()
    reference = Client(url, verbose=False).predict(SPEC, PROMPT, "none", "0", 0.5, 0, 8, api_name="/generate")
    records, elapsed, _ = run_load(url, 8, SPEC, layers="0-1", generate_layers="1-2")
    stats = summary(records, elapsed)
    assert stats["completed"] == 16 and stats["failed"] == 0, [r.error for r in records if r.error]
    generated = [r.outputs for r in records if r.kind == "generate"]
    # the original side ran while other visitors' ablations and zeroed layers were in flight: all equal the
    # untouched model's text, and every altered side differs from it
    assert {text(out[0]) for out in generated} == {text(reference[0])}
    assert {text(out[2]) for out in generated} == {text(reference[2])}
    assert all(text(out[1]) != text(reference[0]) for out in generated)
    headlines = {r.outputs[0].split(";")[0] for r in records if r.kind == "importance"}
    assert len(headlines) == 1 and headlines.pop().startswith("Baseline PPL")  # same intact model for all
    assert stats["queue_positions_shown"]  # each waiting visitor was told how many jobs were ahead
    assert weights() == before


def test_one_visitors_pile_of_jobs_cannot_starve_another(url, monkeypatch):
    monkeypatch.setenv("ANATOMY_JOBS_PER_SESSION", "1")
    hog, other = Client(url, verbose=False), Client(url, verbose=False)
    long_job = (SPEC, 6, "", 32, list(VARIANTS), "2", "", 2, 0, 4, 8, True, False)  # seconds: decode timings
    piled = [hog.submit(*long_job, api_name="/plans") for _ in range(6)]
    time.sleep(0.3)
    record = watch(other, JobRecord(1, "generate", time.monotonic()), SPEC, PROMPT, "none", "0", 0.5, 0, 4,
                   api_name="/generate")
    assert record.error is None
    outcomes = []
    for job in piled:
        try:
            job.result()
            outcomes.append("done")
        except Exception as err:  # noqa: BLE001
            assert "Traceback" not in str(err) and "\n" not in str(err)
            outcomes.append(str(err))
    refused = [o for o in outcomes if "You already have 1 job running or waiting" in o]
    # one of the six ran; the rest were refused as they reached the front, so the other visitor waited for
    # one job, not six
    assert len(refused) >= 4, outcomes
    assert record.finished - record.submitted < 60
