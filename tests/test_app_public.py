"""Public mode on a real server: Hub ids and `embedded` only, one message for every path, and every Hub call
with the visitor's own token (gradio_client's oauth_token, as "Sign in with Hugging Face" gives it), never
the deployer's HF_TOKEN. The Hub is the fake one in tests/hub_fake.py, serving a real tiny model."""

from __future__ import annotations


import pytest
from gradio_client import Client

from anatomy.public import REFUSED
from space import access, build_demo
from tests.conftest import make_tiny_model
from tests.hub_fake import FakeHub, FakeRepo, folder_files, public_server

DEPLOYER, VISITOR = "hf_deployer_secret", "hf_visitor_own"


@pytest.fixture(scope="module")
def public(tmp_path_factory, tiny_tokenizer):
    saved = tmp_path_factory.mktemp("model")
    make_tiny_model("llama", layers=2).save_pretrained(saved)
    tiny_tokenizer.save_pretrained(saved)
    files = folder_files(saved)
    hub = FakeHub({"alice/open": FakeRepo(files), "alice/gated": FakeRepo(files, gated_for_all_but={VISITOR})})
    with public_server(hub, tmp_path_factory.mktemp("hub-cache"), env={"HF_TOKEN": DEPLOYER}) as url:
        yield url, hub, saved


def message(client: Client, *args, api_name: str) -> str:
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api_name)
    assert "Traceback" not in str(info.value)
    return str(info.value)


def test_every_local_path_gets_one_message_whether_it_exists_or_not(public):
    url, hub, saved = public
    client = Client(url, verbose=False)
    paths = [str(saved), str(saved / "missing"), "/etc/passwd", "/no/such/file.gguf", "~", "../../etc", "./anatomy",
             str(saved / "model.safetensors"), "anatomy/data/../../tests", "C:\\models\\x", "a/b/c"]
    for spec in paths:
        for api, args in (("/check_model", (spec,)), ("/load_model", (spec,)), ("/spectral", (spec, 4))):
            assert message(client, *args, api_name=api).endswith(REFUSED), (spec, api)
    assert hub.model_requests() == []  # refused before any Hub call, and before the file system


def test_a_hub_id_that_is_also_a_server_folder_goes_to_the_hub(public):
    url, hub, _ = public
    client = Client(url, verbose=False)
    existing, missing = message(client, "anatomy/data", api_name="/load_model"), \
        message(client, "anatomy/nodata", api_name="/load_model")
    assert existing.replace("anatomy/data", "X") == missing.replace("anatomy/nodata", "X")
    assert "not found on the Hub" in existing


def test_visitors_load_with_their_own_token_never_the_deployers(public):
    url, hub, _ = public
    anonymous, signed_in = Client(url, verbose=False), Client(url, verbose=False, oauth_token=VISITOR)
    status, *_ = anonymous.predict("alice/open", api_name="/load_model")
    assert "2 layers" in status
    assert "gated" in message(anonymous, "alice/gated", api_name="/load_model")
    status, *_ = signed_in.predict("alice/gated", api_name="/load_model")
    assert "2 layers" in status and "hub" in status
    *_, archive = signed_in.predict("alice/gated", 4, api_name="/spectral")
    assert archive.endswith(".zip")
    # the model is now in the shared cache, loaded with the visitor's token: others still need their own
    assert "gated" in message(anonymous, "alice/gated", 4, api_name="/spectral")
    sent = [auth for _, auth in hub.model_requests()]
    assert f"Bearer {VISITOR}" in sent and None in sent
    assert not [r for r in hub.model_requests() if r[1] and DEPLOYER in r[1]]


def test_public_mode_is_on_for_spaces_and_by_flag_and_off_locally(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("ANATOMY_PUBLIC", raising=False)
    assert not access.public_mode() and access.visitor(None).load_kwargs() == {}
    monkeypatch.setenv("SPACE_ID", "alice/anatomy")
    assert access.public_mode() and access.sign_in_offered()
    assert access.visitor(None).load_kwargs() == {"token": False, "local": False}  # anonymous, not HF_TOKEN
    monkeypatch.setenv("ANATOMY_PUBLIC", "0")
    assert not access.public_mode()
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("ANATOMY_PUBLIC", "1")
    assert access.public_mode() and not access.sign_in_offered()



def oauth_endpoints(info: dict) -> set[str]:
    """The endpoints the API page says act on the caller's behalf with their token (gradio marks those)."""
    return {name for name, endpoint in info["named_endpoints"].items() if endpoint.get("oauth_token")}


def test_only_publishing_acts_on_the_callers_behalf_locally_and_every_hub_reading_job_does_publicly(public,
                                                                                                   monkeypatch):
    monkeypatch.setenv("ANATOMY_PUBLIC", "0")
    monkeypatch.delenv("SPACE_ID", raising=False)
    local = oauth_endpoints(build_demo("embedded").get_api_info())  # what /gradio_api/info serves
    assert local and all(name.startswith("/publish_") for name in local), local  # publishing pushes as the caller
    assert not {"/importance", "/generate", "/load_model", "/study", "/budget"} & local
    shown = oauth_endpoints(Client(public[0], verbose=False).view_api(return_format="dict", print_info=False))
    assert {"/importance", "/plans", "/painters", "/generate", "/load_model", "/check_model", "/study",
            "/published_offers", "/published_importance"} <= shown  # whatever loads a model or reads the atlas
    assert "/budget" not in shown and not any(name.startswith("/stop_") for name in shown)  # no model, no Hub
