"""A fake Hugging Face Hub behind huggingface_hub's own HTTP client: the only part of the Hub tests replace.

`FakeHub` answers model_info, auth-check and file downloads for the repos it is given, records the
Authorization header of every request (so a test can prove whose token was sent), and refuses gated repos
to any token but the ones allowed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import httpx2 as httpx
import huggingface_hub
from huggingface_hub.utils import _http

SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    sizes: dict[str, int] = field(default_factory=dict)  # reported sizes overriding len(content)
    parameters: int = 1000
    gated_for_all_but: set[str] | None = None  # tokens allowed; None: public


class FakeHub:
    def __init__(self, repos: dict[str, FakeRepo]):
        self.repos = repos
        self.requests: list[tuple[str, str | None]] = []  # (method and URL, Authorization header)

    def model_requests(self) -> list[tuple[str, str | None]]:
        """The requests about models (metadata, auth checks, files), not the libraries' own telemetry."""
        return [(url, auth) for url, auth in self.requests if any(repo in url for repo in self.repos)]

    def _denied(self, repo: FakeRepo, auth: str | None) -> httpx.Response | None:
        if repo.gated_for_all_but is None or (auth or "").removeprefix("Bearer ") in repo.gated_for_all_but:
            return None
        return httpx.Response(403, headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"},
                              json={"error": "gated"})

    def handle(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        self.requests.append((f"{request.method} {request.url}", auth))
        parts = request.url.path.strip("/").split("/")
        not_found = httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "not found"})
        if parts[:2] == ["api", "models"]:
            repo = self.repos.get("/".join(parts[2:4]))
            if repo is None:
                return not_found
            if parts[4:5] == ["auth-check"]:
                return self._denied(repo, auth) or httpx.Response(200, json={})
            if parts[4:5] not in ([], ["revision"]):  # trees, templates: nothing beyond the files
                return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "none"})
            siblings = [{"rfilename": name, "size": repo.sizes.get(name, len(data))}
                        for name, data in repo.files.items()]
            return httpx.Response(200, json={"id": "/".join(parts[2:4]), "sha": SHA, "siblings": siblings,
                                             "safetensors": {"total": repo.parameters, "parameters": {}},
                                             "private": False, "gated": repo.gated_for_all_but is not None})
        repo = self.repos.get("/".join(parts[:2]))
        if repo is None or parts[2:3] != ["resolve"]:
            return not_found
        denied = self._denied(repo, auth)
        if denied is not None:
            return denied
        data = repo.files.get("/".join(parts[4:]))
        if data is None:
            return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "no file"})
        etag = hashlib.sha256(data).hexdigest()
        headers = {"X-Repo-Commit": SHA, "ETag": f'"{etag}"', "Content-Length": str(len(data))}
        return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)

    def install(self, monkeypatch) -> FakeHub:
        """Route every huggingface_hub request (metadata and downloads) to this fake until `uninstall()`."""
        transport = httpx.MockTransport(self.handle)
        huggingface_hub.set_client_factory(lambda: httpx.Client(
            transport=transport, follow_redirects=True, event_hooks={"request": [_http.hf_request_event_hook]}))
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        return self

    @staticmethod
    def uninstall() -> None:
        huggingface_hub.set_client_factory(_http.default_client_factory)


def config_json(**extra) -> bytes:
    return json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], **extra}).encode()
