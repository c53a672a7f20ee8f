"""A real app server on localhost driven by gradio_client: every endpoint, bad input, two users, Stop."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client

from anatomy.interventions import fingerprint
from space.models import CACHE

pytestmark = pytest.mark.embedded
FAST_EVAL = ("embedded", 2, "", 32)  # model, sentences, own text, max tokens: the fast settings
PROMPT = "The capital of France is"
ENDPOINTS = {"/check_model", "/load_model", "/importance", "/interventions", "/generate",
             "/stop_importance", "/stop_interventions", "/stop_generate"}


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def weights_fingerprint() -> str:
    with CACHE.use("embedded") as loaded:  # waits until no job holds the model
        return fingerprint(loaded.model)


def text(highlighted: list[dict]) -> str:
    return "".join(part["token"] for part in highlighted)


def generate(client: Client, kind: str, layers: str = "0-29", value: float = 0.5) -> list:
    return client.predict("embedded", PROMPT, kind, layers, value, 0, 8, api_name="/generate")


@pytest.mark.slow
def test_every_endpoint_answers(client):
    calls = {}
    calls["/check_model"] = client.predict("embedded", api_name="/check_model")
    calls["/load_model"] = status, components, norms = client.predict("embedded", api_name="/load_model")
    assert "30 layers" in status and len(components["data"]) == 7 and len(norms["data"]) == 30
    before = weights_fingerprint()
    headline, plot, table, report, archive = client.predict(*FAST_EVAL, "neighbour-mean", "one-neighbour", "0-3",
                                                            api_name="/importance")
    calls["/importance"] = headline
    assert plot is not None and [row[0] for row in table["data"]] == [0, 1, 2, 3]
    assert "Baseline PPL" in headline and archive.endswith(".zip")
    headline, plot, table, report, archive = client.predict(*FAST_EVAL, "scale", "10-12", "1.0,0.5", [], 0,
                                                            "one-neighbour", api_name="/interventions")
    calls["/interventions"] = headline
    assert [row[2] for row in table["data"]] == [1.0, 0.5] and abs(table["data"][0][6]) < 1e-6
    greedy_original, greedy_altered, sampled_original, sampled_altered, diff = generate(client, "scale", "10-12")
    calls["/generate"] = diff
    assert text(greedy_original) and [row[0] for row in diff["data"]] == ["greedy", "sampled"]
    plan_original, plan_altered, *_ = generate(client, "plan", "0-9,[10-13]x2,14-29")
    assert text(plan_original) == text(greedy_original) and text(plan_altered) != text(plan_original)
    identity_original, identity_altered, *_ = generate(client, "plan", "0-29")
    assert text(identity_altered) == text(identity_original)  # the identity plan changes nothing
    for name in ("importance", "interventions", "generate"):
        calls[f"/stop_{name}"] = client.predict(api_name=f"/stop_{name}")
    assert set(calls) == ENDPOINTS
    assert weights_fingerprint() == before


@pytest.mark.parametrize("args, api, message", [
    ((*FAST_EVAL, "neighbour-mean", "one-neighbour", "99"), "/importance", "does not exist"),
    (("/no/such/folder", 2, "", 32, "zero", "0", "", [], 0, "one-neighbour"), "/interventions", "neither"),
    ((*FAST_EVAL, "scale", "0", "a,b", [], 0, "one-neighbour"), "/interventions", "comma-separated"),
    (("embedded", "  ", "scale", "0", 0.5, 0, 8), "/generate", "prompt is empty"),
])
def test_bad_input_is_a_short_message_and_the_app_keeps_serving(client, args, api, message):
    with pytest.raises(Exception, match=message) as info:
        client.predict(*args, api_name=api)
    assert "Traceback" not in str(info.value)
    assert "embedded" in client.predict("embedded", api_name="/check_model")


@pytest.mark.slow
def test_two_clients_never_see_each_others_altered_weights(app_url):
    before = weights_fingerprint()
    reference = text(generate(Client(app_url, verbose=False), "none")[0])
    alterer, reader = Client(app_url, verbose=False), Client(app_url, verbose=False)

    def alter() -> list[str]:
        out = []
        for _ in range(2):
            greedy_original, greedy_altered, *_ = generate(alterer, "zero")
            out += [text(greedy_original), "ALTERED " + text(greedy_altered)]
        return out

    def read() -> list[str]:
        return [text(generate(reader, "none")[0]) for _ in range(3)]

    with ThreadPoolExecutor(2) as pool:
        altered, read_back = pool.submit(alter), pool.submit(read)
        altered, read_back = altered.result(), read_back.result()
    assert read_back == [reference] * 3
    assert [t for t in altered if not t.startswith("ALTERED ")] == [reference] * 2
    assert all(t != "ALTERED " + reference for t in altered if t.startswith("ALTERED "))
    assert weights_fingerprint() == before


def test_stop_cancels_a_running_job_and_restores_the_weights(app_url):
    client = Client(app_url, verbose=False)
    before = weights_fingerprint()
    job = client.submit("embedded", 12, "", 128, "zero", "one-neighbour", "all", api_name="/importance")
    deadline = time.monotonic() + 300
    while not job.status().progress_data and not job.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    client.predict(api_name="/stop_importance")
    with pytest.raises(Exception, match="Stopped"):
        job.result()
    assert weights_fingerprint() == before
    assert threading.active_count() < 200  # the server is still healthy and not leaking threads
