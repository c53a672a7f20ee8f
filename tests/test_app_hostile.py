"""One hostile visitor against a public-mode server: every attack of the hostile-visitor review, tried as an
attacker would, through gradio_client against a real server over the fake Hub (tests/hub_fake.py).

Each test bounds what the attack could cost with a limit of its own (a client-side timeout, a capped
subprocess), so on code without the defence it fails by that limit, never by filling the machine.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

import pytest
from gradio_client import Client

from anatomy.interventions import fingerprint
from anatomy.load import LoadedModel
from space import limits
from space.models import CACHE
from tests.conftest import make_tiny_model
from tests.hostile import HUGE, LOOPING, OPEN, OTHER, SECOND, SIGNED_IN, hostile_hub
from tests.hub_fake import SHA, public_server

EVAL = (OPEN, 4, "", 32)
SECRET = "the-server-secret-1234"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_tokenizer):
    secret = tmp_path_factory.mktemp("server") / "secret.csv"
    secret.write_text(f"layer\n{SECRET}\n")
    hub = hostile_hub(tmp_path_factory.mktemp("hub"), tiny_tokenizer, secret)
    for spec in (OPEN, OTHER):  # the visitors' models, as the app's cache holds them once loaded
        CACHE.put(spec, LoadedModel(make_tiny_model("llama", layers=3), tiny_tokenizer, spec, "hub", revision=SHA))
    with public_server(hub, tmp_path_factory.mktemp("hub-cache"), env={"ANATOMY_ATLAS": "bob/atlas"}) as url:
        yield url, hub, secret


def visitor(url: str, address: str = "198.51.100.1", token: str | None = None) -> Client:
    """A visitor's own session; the address is only a header value (the documentation range, never dialled)."""
    return Client(url, verbose=False, headers={"X-Forwarded-For": address}, oauth_token=token)


def refusal(job_or_call, timeout: float = 60.0) -> tuple[str, float]:
    """The one-line message a job ends with, and the seconds it took."""
    start = time.monotonic()
    with pytest.raises(Exception) as caught:
        job_or_call.result(timeout=timeout) if hasattr(job_or_call, "result") else job_or_call()
    message = str(caught.value)
    assert "Traceback" not in message and "\n" not in message.strip(), message
    return message, time.monotonic() - start


def open_fingerprint() -> str:
    with CACHE.use(OPEN) as loaded:
        return fingerprint(loaded.model)


def test_over_the_budget_the_quick_study_is_offered_and_the_full_one_refused_in_one_line(server, monkeypatch):
    url, _, _ = server
    monkeypatch.setenv("ANATOMY_PUBLIC_MAX_S", "0.001")  # read per job: no study fits
    client = visitor(url)
    depth, line = client.predict(*EVAL, api_name="/study_offer")
    assert depth == "Quick" and "The full study would take about" in line  # the run's own refusal, told first
    assert line.endswith(f"run it on your own machine: python -m anatomy study --model {OPEN}")
    message, seconds = refusal(client.submit(*EVAL, "Full", api_name="/study"), timeout=60)
    assert message.startswith("The full study would take about") and seconds < 30
    assert message.endswith(f"run it on your own machine: python -m anatomy study --model {OPEN}")
    monkeypatch.setenv("ANATOMY_PUBLIC_MAX_S", "100000")
    assert client.predict(*EVAL, api_name="/study_offer")[0] == "Full"  # it fits: Full is the default again


def test_a_billion_recovery_steps_are_refused_at_once_by_the_app_and_the_cli(server, tmp_path, tiny_tokenizer):
    url, _, _ = server
    job = visitor(url).submit(*EVAL, "1", 10**9, 10, 0.5, 1e-4, 0, api_name="/recovery")
    message, seconds = refusal(job, timeout=30)
    assert "Steps (study: 200)" in message and "1000 on this public app" in message and seconds < 5
    folder = tmp_path / "tiny"
    make_tiny_model("llama", layers=2).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)

    def cap() -> None:  # the CLI's own process: 4 GiB and 60 s of CPU at most, whatever it tries
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        resource.setrlimit(resource.RLIMIT_CPU, (60, 60))
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "anatomy", "recovery", "--model", str(folder), "--layers", "1",
                           "--steps", "1000000000", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120, preexec_fn=cap)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == \
        "error: --steps must be <= 100000, got '1000000000'."
    assert time.monotonic() - start < 60 and not (tmp_path / "run").exists()


def test_a_job_over_the_budget_is_refused_before_it_runs_naming_the_local_command(server, monkeypatch):
    url, _, _ = server
    before = open_fingerprint()
    monkeypatch.setenv("ANATOMY_PUBLIC_MAX_S", "0.001")
    message, seconds = refusal(visitor(url).submit(*EVAL, "1", 500, 10, 0.5, 1e-4, 0, api_name="/recovery"))
    assert "over this Space's 0 s a job" in message and seconds < 10
    assert "python -m anatomy recovery --model alice/open --layers 1 --steps 500" in message
    assert open_fingerprint() == before


def test_a_job_past_its_hard_limit_is_ended_and_says_so(server, monkeypatch):
    url, _, _ = server
    before = open_fingerprint()
    monkeypatch.setattr(limits, "hard_limit", lambda estimate_s: 1.0)  # the estimate passes; the run is longer
    message, seconds = refusal(visitor(url).submit(*EVAL, "0-2", 1000, 1, 0.5, 1e-4, 0, api_name="/recovery"))
    assert message.startswith("Over time: ended at this Space's limit of 1 s") and "python -m anatomy recovery" \
        in message and seconds < 30
    assert open_fingerprint() == before  # the noised layer was restored on the way out


def test_stop_ends_a_long_job_within_two_seconds(server):
    url, _, _ = server
    client = visitor(url)
    job = client.submit(*EVAL, "0-2", 1000, 1, 0.5, 1e-4, 0, api_name="/recovery")
    deadline = time.monotonic() + 60
    while not (job.status().progress_data or [None])[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    pressed = time.monotonic()
    client.predict(api_name="/stop_recovery")
    message, _ = refusal(job)
    assert "Stopped" in message and time.monotonic() - pressed < 2.0


def test_a_config_far_bigger_than_its_weights_is_refused_before_any_allocation(server):
    url, _, _ = server
    message, seconds = refusal(lambda: visitor(url).predict(HUGE, api_name="/load_model"))
    assert "describes 468,239,360 parameters, but its safetensors hold 2" in message and seconds < 30
    assert HUGE not in CACHE.specs()


def test_a_looping_chat_template_is_ended_and_frees_the_model(server):
    url, _, _ = server
    message, seconds = refusal(visitor(url).submit(LOOPING, "Hi", "none", "0", 0.5, 0, 4, True,
                                                    api_name="/generate"), timeout=60)
    assert "did not finish rendering within 5 s" in message and seconds < 30
    other = visitor(url, "198.51.100.2").submit(LOOPING, "Hi", "none", "0", 0.5, 0, 4, False, api_name="/generate")
    assert other.result(timeout=60)  # the model's lock came back: the next visitor's raw prompt runs


def test_visitors_waiting_for_a_busy_model_leave_the_other_models_free(server):
    url, _, _ = server
    entry = CACHE.entry(OPEN)
    entry.lock.acquire()  # another visitor's long job on OPEN
    try:
        waiting = [visitor(url, f"198.51.100.{10 + i}").submit(*EVAL, "neighbour-mean", "one-neighbour", "all",
                                                               api_name="/importance") for i in range(3)]
        time.sleep(1.0)
        started = time.monotonic()
        done = visitor(url, "198.51.100.20").submit(OTHER, 4, "", 32, "neighbour-mean", "one-neighbour", "all",
                                                    api_name="/importance")
        assert done.result(timeout=60)[0].startswith("Baseline PPL") and time.monotonic() - started < 30
        said = [unit.desc for job in waiting for unit in job.status().progress_data or []]
        assert any(d and d.startswith("waiting for your turn: ") for d in said), said
        assert not any(job.done() for job in waiting)
    finally:
        entry.lock.release()
    assert all(job.result(timeout=120)[0].startswith("Baseline PPL") for job in waiting)


def test_one_signed_in_visitor_one_job_and_anonymous_visitors_share_a_cap(server, monkeypatch):
    url, _, _ = server
    entry = CACHE.entry(OPEN)
    entry.lock.acquire()
    monkeypatch.setenv("ANATOMY_ANONYMOUS_JOBS", "2")
    try:
        job = ("neighbour-mean", "one-neighbour", "all")
        first = visitor(url, "198.51.100.30", SIGNED_IN).submit(*EVAL, *job, api_name="/importance")
        time.sleep(0.5)
        message, _ = refusal(visitor(url, "198.51.100.31", SIGNED_IN).submit(*EVAL, *job, api_name="/importance"))
        assert message.startswith("You (bob) already have a job running or waiting")
        carl = visitor(url, "198.51.100.32", SECOND).submit(*EVAL, *job, api_name="/importance")
        anonymous = [visitor(url, f"198.51.100.{40 + i}").submit(*EVAL, *job, api_name="/importance")
                     for i in range(2)]
        time.sleep(0.5)
        message, _ = refusal(visitor(url, "198.51.100.50").submit(*EVAL, *job, api_name="/importance"))
        assert message.startswith("Anonymous visitors together have 2 jobs running or waiting")
    finally:
        entry.lock.release()
    for done in (first, carl, *anonymous):
        assert done.result(timeout=120)[0].startswith("Baseline PPL")


def test_a_published_run_cannot_read_server_files_or_pose_as_another_model(server):
    url, _, secret = server
    client = visitor(url)
    message, _ = refusal(lambda: client.predict(OPEN, api_name="/published_importance"))
    assert "not a plain file name" in message and SECRET not in message and "bob/atlas/alice--open" in message
    message, _ = refusal(lambda: client.predict(OPEN, api_name="/published_spectral"))
    assert "measured another model" in message


def test_published_text_is_escaped_and_cut(server):
    url, _, _ = server
    updates = visitor(url).predict(OPEN, api_name="/published_offers")
    texts = [u["value"] for u in updates if u.get("visible")]
    structure = next(t for t in texts if "alice--open/structure" in t)
    assert "<script>" not in structure and "](javascript:" not in structure and len(structure) < 1000


def test_a_public_app_lists_no_publish_endpoint_so_its_mcp_server_has_no_publish_tool(server):
    named = set(visitor(server[0]).view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert "/importance" in named and "/plans" in named  # the experiments stay tools
    assert not [name for name in named if name.startswith("/publish_")]  # the MCP server lists these very names
