"""The app and the Hub on a real server: a signed-in visitor publishes this session's run with their own token
(never the deployer's HF_TOKEN), and the tabs offer, then show, a published result of the chosen model from
the deployer's atlas (ANATOMY_ATLAS) without computing; offline or with a silent Hub, no offer and no wait.
Only the Hub's HTTP hop is replaced (tests/hub_fake.py); the model is a tiny random Llama in the app's cache
under a Hub id, and the visitor's token arrives as gradio_client's oauth_token, as "Sign in" gives it."""

from __future__ import annotations

import json
import time
import zipfile

import gradio as gr
import pandas as pd
import pytest
from gradio_client import Client
from huggingface_hub import constants
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anatomy.errors import AnatomyError
from anatomy.load import LoadedModel
from space import published, tab_study
from space.models import CACHE
from space.publish import publish_run
from tests.conftest import make_tiny_model
from tests.hub_fake import SHA, FakeHub, FakeRepo

DEPLOYER, VISITOR, READER = "hf_deployer_secret", "hf_visitor_own", "hf_reader_only"
MODEL = "alice/tiny"
EVAL = (MODEL, 4, "", 32)  # model, sentences, own text, max tokens
IMPORTANCE = ("neighbour-mean", "one-neighbour", "all")
TABS = ("importance", "interventions", "manipulate", "prune", "plans", "structure", "spectral", "predictability",
        "recovery", "budget", "study")
HUB_ENDPOINTS = {f"/{kind}_{name}" for name in TABS for kind in ("publish", "published")} | {"/published_offers"}


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_tokenizer, app_url):
    saved = tmp_path_factory.mktemp("model")
    model = make_tiny_model("llama", layers=3)
    model.save_pretrained(saved)
    tiny_tokenizer.save_pretrained(saved)
    files = {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()}
    hub = FakeHub({MODEL: FakeRepo(files)}, users={VISITOR: "bob", DEPLOYER: "deployer", READER: "carl"},
                  writers={VISITOR, DEPLOYER})
    CACHE.put(MODEL, LoadedModel(model, tiny_tokenizer, MODEL, "hub", revision=SHA))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", DEPLOYER)
        patch.delenv("ANATOMY_ATLAS", raising=False)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path_factory.mktemp("no-login") / "token"))
        patch.setattr(constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub-cache")))
        hub.install(patch)
        yield app_url, hub
        hub.uninstall()


def message(client: Client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    text = str(info.value)
    assert "Traceback" not in text and "\n" not in text.strip() and VISITOR not in text and READER not in text
    return text


def zip_files(path: str) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}


def test_a_signed_in_visitor_publishes_the_sessions_run_with_their_own_token(app):
    url, hub = app
    visitor = Client(url, verbose=False, oauth_token=VISITOR)
    assert "No importance result in this session" in message(visitor, "results", api_name="/publish_importance")
    headline, figure, table, markdown, archive = visitor.predict(*EVAL, *IMPORTANCE,
                                                                 api_name="/importance")
    before = len(hub.requests)
    said = visitor.predict("results", api_name="/publish_importance")
    assert "bob/results" in said and "alice--tiny/importance/" in said
    pushed = {k.removeprefix("alice--tiny/importance/"): v for k, v in hub.datasets["bob/results"].files.items()
              if k != "README.md"}
    assert pushed == zip_files(archive)  # the run folder, file for file
    sent = [auth for _, auth in hub.requests[before:]]
    assert sent and set(sent) == {f"Bearer {VISITOR}"}  # every call of the push, the visitor's token alone
    assert not [auth for _, auth in hub.requests if auth and DEPLOYER in auth]
    assert "bob/results" in visitor.predict("bob/results", api_name="/publish_importance")  # OWNER/NAME, own
    assert "own namespace only" in message(visitor, "carol/results", api_name="/publish_importance")
    assert "not a repo name" in message(visitor, "my results!", api_name="/publish_importance")
    assert "carol/results" not in hub.datasets


def test_signed_out_visitors_are_told_to_sign_in_and_nothing_reaches_the_hub(app):
    url, hub = app
    anonymous = Client(url, verbose=False)
    anonymous.predict(*EVAL, *IMPORTANCE, api_name="/importance")
    before = len(hub.requests)
    said = message(anonymous, "results", api_name="/publish_importance")
    assert "Sign in with Hugging Face to publish" in said and "python -m anatomy push" in said
    assert len(hub.requests) == before


def test_a_token_without_write_access_is_one_line_and_the_run_stays(app):
    url, hub = app
    reader = Client(url, verbose=False, oauth_token=READER)
    reader.predict(*EVAL, *IMPORTANCE, api_name="/importance")
    said = message(reader, "results", api_name="/publish_importance")
    assert "refused the token for carl/results (HTTP 403)" in said and "your run stays in this session" in said
    assert READER not in said and "carl/results" not in hub.datasets


def test_the_handler_takes_a_browser_sign_in_as_gradio_injects_it(app, tmp_path):
    url, hub = app
    *_, archive = Client(url, verbose=False).predict(*EVAL, *IMPORTANCE, api_name="/importance")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "run")
    profile = gr.OAuthProfile({"name": "Bob", "preferred_username": "bob", "profile": "", "picture": ""})
    token = gr.OAuthToken(token=VISITOR, scope="openid profile write-repos manage-repos", expires_at=0)
    before = len(hub.requests)
    assert "bob/profiled" in publish_run(tmp_path / "run", "profiled", token, profile)
    assert not [u for u, _ in hub.requests[before:] if "whoami" in u]  # the profile names the user
    with pytest.raises(AnatomyError, match="Sign in with Hugging Face to publish"):
        publish_run(tmp_path / "run", "profiled", None, profile)


def offers(client: Client, spec: str) -> list[str]:
    """The offers the tabs show for `spec` (gradio_client returns each tab's text update; buttons are not sent)."""
    updates = client.predict(spec, api_name="/published_offers")
    assert len(updates) == len(TABS)
    return [update["value"] for update in updates if update["visible"]]


def test_the_tabs_offer_a_published_result_and_show_it_without_computing(app, monkeypatch):
    url, hub = app
    visitor = Client(url, verbose=False, oauth_token=VISITOR)
    headline, figure, table, markdown, archive = visitor.predict(*EVAL, *IMPORTANCE,
                                                                 api_name="/importance")
    visitor.predict("atlas", api_name="/publish_importance")
    monkeypatch.setenv("ANATOMY_ATLAS", "bob/atlas")
    published.forget()
    anonymous = Client(url, verbose=False)
    found, = offers(anonymous, MODEL)  # one tab's offer: the importance tab's
    stored = json.loads(hub.datasets["bob/atlas"].files["alice--tiny/importance/results.json"])
    assert "/alice--tiny/importance)" in found and f"measured on {stored['written'].replace('T', ' ')}" in found
    assert "the default settings; run it again?" in found and f"commit {SHA[:10]}" in found
    assert offers(anonymous, "embedded") == []  # nothing published for it
    fingerprint = CACHE.get(MODEL).model.model.layers[0].self_attn.q_proj.weight.clone()
    shown_headline, shown_figure, shown_table, shown_markdown, shown_archive = anonymous.predict(
        MODEL, api_name="/published_importance")
    assert shown_headline.startswith("Published result from bob/atlas") and shown_figure is not None
    assert shown_table == table  # the stored run's table, and its report as inert text
    assert shown_markdown == "```text\n" + markdown.replace("`", "'") + "\n```"
    assert zip_files(shown_archive) == zip_files(archive)
    assert (CACHE.get(MODEL).model.model.layers[0].self_attn.q_proj.weight == fingerprint).all()
    reads = [auth for url_, auth in hub.requests if "bob/atlas" in url_ and "GET" in url_]
    assert reads and not [a for a in reads if a and DEPLOYER in a]  # anonymous reads: no token at all


@pytest.mark.slow
def app_requests(hub) -> list:
    """The requests the app made: gradio_client's telemetry ping (from the test's own client, on its own thread,
    at any moment) is not the app's."""
    return [r for r in hub.requests if "/api/telemetry/" not in r[0]]


def test_offline_or_a_silent_hub_means_no_offer_and_no_wait(app, monkeypatch):
    url, hub = app
    stored = {"alice--tiny/importance/results.json": json.dumps({"experiment": "importance", "written": "x"}).encode()}
    hub.datasets["bob/slow"] = FakeRepo(dict(stored))
    client = Client(url, verbose=False)
    monkeypatch.setenv("ANATOMY_ATLAS", "bob/slow")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    published.forget()
    asked = app_requests(hub)
    assert offers(client, MODEL) == [] and app_requests(hub) == asked  # offline: the Hub is not even asked
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("ANATOMY_ATLAS", "bob/unreachable")  # its own read: huggingface_hub retries it for a while
    hub.unreachable = True
    t0 = time.perf_counter()
    assert offers(client, MODEL) == [] and time.perf_counter() - t0 < 2.5
    hub.unreachable = False
    monkeypatch.setenv("ANATOMY_ATLAS", "bob/slow")
    hub.delay_s = 3.0
    t0 = time.perf_counter()
    assert offers(client, MODEL) == []
    waited = time.perf_counter() - t0
    hub.delay_s = 0.0
    assert waited < 2.5, waited
    time.sleep(5.0)  # the slow answers arrive meanwhile: a later choice of the model finds the offer
    assert len(offers(client, MODEL)) == 1


def test_the_study_tab_offers_a_published_study_and_shows_its_claims(app, monkeypatch):
    url, hub = app
    shipped = tab_study.SHIPPED  # the quick study of the embedded model, as a push lays it out (without figures)
    hub.datasets["bob/studies"] = FakeRepo({f"embedded/study/{p.relative_to(shipped).as_posix()}": p.read_bytes()
                                            for p in shipped.rglob("*") if p.is_file()})
    monkeypatch.setenv("ANATOMY_ATLAS", "bob/studies")
    published.forget()
    client = Client(url, verbose=False)
    found, = offers(client, "embedded")
    assert "/embedded/study)" in found and "the steps budget, importance, manipulate, plans" in found
    assert offers(client, MODEL) == []
    says, glance, claims, markdown, page, md, archive = client.predict("embedded", api_name="/published_study")
    assert says.startswith("Published result from bob/studies") and glance is None and page is None  # none stored
    written = pd.read_csv(shipped / "claims.csv", keep_default_na=False)
    assert [row[0] for row in claims["value"]["data"]] == written["finding"].tolist()
    assert [row[1] for row in claims["value"]["data"]] == written["verdict"].tolist()
    quick = "- Settings: QUICK (reduced)" in (shipped / "study.md").read_text()  # labelled by what it is
    assert claims["label"].startswith("QUICK study: claims" if quick else "Study: claims")
    # a published report is shown as text, never rendered: a hostile one's links and HTML stay inert
    assert markdown.startswith("```text\n") and markdown.rstrip().endswith("```")
    assert markdown.removeprefix("```text\n").strip().removesuffix("```").strip() == \
        (shipped / "study.md").read_text().replace("`", "'").strip()
    assert open(md, encoding="utf-8").read() == (shipped / "study.md").read_text()  # the file itself, to download
    assert zip_files(archive) == {p.relative_to(shipped).as_posix(): p.read_bytes()
                                  for p in shipped.rglob("*") if p.is_file()}


HOSTILE = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", " ", "\x00", "../../etc/passwd", "bob/../x", "/x", "bob/", "bob/x/y", "BOB/x", "datasets/bob/x", "a" * 5000,
     "https://huggingface.co/datasets/bob/x", "\u202ebob/x", "💥" * 30, "embedded", MODEL, "~", "C:\\x"]))


def test_hostile_repo_names_and_model_specs_get_one_line_and_never_leave_the_visitors_namespace(app, monkeypatch):
    url, hub = app
    monkeypatch.setenv("ANATOMY_ATLAS", "bob/atlas")
    visitor = Client(url, verbose=False, oauth_token=VISITOR)
    visitor.predict(*EVAL, *IMPORTANCE, api_name="/importance")
    others = {repo for repo in hub.datasets if not repo.startswith("bob/")}

    @settings(max_examples=16, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(text=HOSTILE)
    def search(text):
        try:
            said = visitor.predict(text, api_name="/publish_importance")
        except Exception as err:  # noqa: BLE001 - gradio_client's error carries the app's one line
            assert "Traceback" not in str(err) and "\n" not in str(err).strip() and VISITOR not in str(err)
        else:
            assert "to [bob/" in said
        assert {repo for repo in hub.datasets if not repo.startswith("bob/")} == others
        shown = [update for update in visitor.predict(text, api_name="/published_offers") if update["visible"]]
        assert shown == [] or text.strip() == MODEL

    search()
