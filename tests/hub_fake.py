"""A fake Hugging Face Hub behind huggingface_hub's own HTTP client: the only part of the Hub tests replace.

`FakeHub` answers model_info, auth-check and file downloads for the repos it is given, records the
Authorization header of every request (so a test can prove whose token was sent), and refuses gated repos
to any token but the ones allowed. Dataset repos (`datasets=`) also take uploads: create, preupload (every
file "regular", so no LFS or Xet storage is needed), commit, and file lists; `writers` limits who may
write, `users` names each token's owner (whoami), `unreachable` makes every request fail as a dropped
connection would, and `delay_s` makes every answer that slow.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import huggingface_hub
import pytest
import yaml
from huggingface_hub.utils import _http

HUB_LICENSES = {"apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc0-1.0", "openrail", "other"}  # a few of them
SHA = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    sizes: dict[str, int] = field(default_factory=dict)  # reported sizes overriding len(content)
    parameters: int | None = None  # the safetensors total the Hub reports; None: counted from the files' headers,
    # as the Hub counts it
    gated_for_all_but: set[str] | None = None  # tokens allowed; None: public
    license: str | None = None  # its card's license, as model_info reports it


    def total(self) -> int:
        """The parameter count of the repo's safetensors files, read from their headers like the Hub does."""
        if self.parameters is not None:
            return self.parameters
        count = 0
        for name, data in self.files.items():
            if name.endswith(".safetensors"):
                size = int.from_bytes(data[:8], "little")
                header = json.loads(data[8:8 + size])
                count += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        return count


class FakeHub:
    def __init__(self, repos: dict[str, FakeRepo], datasets: dict[str, FakeRepo] | None = None,
                 writers: set[str] | None = None, users: dict[str, str] | None = None):
        self.repos = repos
        self.users = users or {}  # token -> user name
        self.datasets = {} if datasets is None else datasets
        self.writers = writers  # tokens that may create and commit; None: any token
        self.unreachable = False
        self.delay_s = 0.0
        self.validated: list[dict] = []  # bodies sent to validate-yaml (a card's content and repo type)
        self.commits: list[tuple[str, list[str], list[str]]] = []  # (repo, paths added, paths deleted) per commit
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
        if self.unreachable:
            raise httpx.ConnectError("connection refused", request=request)
        time.sleep(self.delay_s)
        parts = request.url.path.strip("/").split("/")
        not_found = httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"}, json={"error": "not found"})
        if parts[:2] == ["api", "whoami-v2"]:
            user = self.users.get((auth or "").removeprefix("Bearer "))
            return httpx.Response(200, json={"name": user, "type": "user"}) if user else \
                httpx.Response(401, json={"error": "Invalid credentials"})
        if parts[:2] == ["api", "validate-yaml"]:
            return self.validate_yaml(json.loads(request.content))
        if parts[:3] == ["api", "repos", "create"] or parts[:2] == ["api", "datasets"] or parts[:1] == ["datasets"]:
            return self.handle_repo(request, parts, auth, not_found, self.datasets)
        if parts[:2] == ["api", "models"]:
            repo = self.repos.get("/".join(parts[2:4]))
            if repo is None:
                return not_found
            if parts[4:5] in (["preupload"], ["commit"], ["tree"]):
                return self.handle_repo(request, parts, auth, not_found, self.repos)
            if parts[4:5] == ["auth-check"]:
                return self._denied(repo, auth) or httpx.Response(200, json={})
            if parts[4:5] not in ([], ["revision"]):  # trees, templates: nothing beyond the files
                return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "none"})
            siblings = [{"rfilename": name, "size": repo.sizes.get(name, len(data))}
                        for name, data in repo.files.items()]
            return httpx.Response(200, json={"id": "/".join(parts[2:4]), "sha": SHA, "siblings": siblings,
                                             "safetensors": {"total": repo.total(), "parameters": {}},
                                             "private": False, "gated": repo.gated_for_all_but is not None,
                                             **({"cardData": {"license": repo.license}} if repo.license else {})})
        repo = self.repos.get("/".join(parts[:2]))
        if repo is None or parts[2:3] != ["resolve"]:
            return not_found
        denied = self._denied(repo, auth)
        if denied is not None:
            return denied
        data = repo.files.get("/".join(parts[4:]))
        if data is None:
            return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "no file"})
        return file_response(request, data)

    def validate_yaml(self, body: dict) -> httpx.Response:
        """The Hub's check of a card's YAML before a commit: it must parse to a mapping; a license, where given,
        must be a Hub license id."""
        self.validated.append(body)
        try:
            data = yaml.safe_load(body["content"].split("---\n")[1])
        except (IndexError, yaml.YAMLError) as err:
            return httpx.Response(400, json={"errors": [{"message": f"no YAML front matter: {err}"}]})
        if not isinstance(data, dict) or data.get("license", "other") not in HUB_LICENSES:
            return httpx.Response(400, json={"errors": [{"message": "license: not a Hub license id"}]})
        return httpx.Response(200, json={"warnings": [], "errors": []})

    def handle_repo(self, request: httpx.Request, parts: list[str], auth: str | None, not_found: httpx.Response,
                    store: dict[str, FakeRepo]) -> httpx.Response:
        """Creating any repo; for the repos of `store` (datasets, or models being uploaded to): info, preupload,
        commit, tree, and file downloads."""
        token = (auth or "").removeprefix("Bearer ")
        may_write = self.writers is None or token in self.writers
        forbidden = httpx.Response(403, json={"error": "no write access"})
        if parts[:3] == ["api", "repos", "create"]:
            body = json.loads(request.content)
            repo_id = f"{body.get('organization')}/{body['name']}"
            store = self.datasets if body.get("type") == "dataset" else self.repos
            if not may_write:
                return forbidden
            if repo_id in store:
                return httpx.Response(409, json={"error": "You already created this repo", "url": repo_id})
            store[repo_id] = FakeRepo({})
            kind = "datasets/" if store is self.datasets else ""
            return httpx.Response(200, json={"url": f"https://huggingface.co/{kind}{repo_id}", "name": repo_id})
        api = parts[0] == "api"
        repo_id = "/".join(parts[2:4] if api else parts[1:3])
        repo = store.get(repo_id)
        if repo is None:
            return not_found
        if not api:  # /datasets/OWNER/NAME/resolve/REVISION/PATH
            data = repo.files.get("/".join(parts[5:])) if parts[3:4] == ["resolve"] else None
            if data is None:
                return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "no file"})
            return file_response(request, data)
        action = parts[4:5]
        if action in ([], ["revision"]):
            siblings = [{"rfilename": name} for name in repo.files]
            return httpx.Response(200, json={"id": repo_id, "sha": SHA, "siblings": siblings, "private": False})
        if action == ["tree"]:
            prefix = "/".join(parts[6:])
            return httpx.Response(200, json=[{"type": "file", "path": name, "size": len(data), "oid": SHA}
                                             for name, data in sorted(repo.files.items())
                                             if not prefix or name.startswith(prefix + "/")])
        if action == ["preupload"]:
            if not may_write:
                return forbidden
            files = json.loads(request.content)["files"]
            return httpx.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False} for f in files]})
        if action == ["commit"]:
            if not may_write:
                return forbidden
            added, deleted = [], []
            for line in request.content.splitlines():
                key, value = json.loads(line)["key"], json.loads(line)["value"]
                if key == "file":
                    repo.files[value["path"]] = base64.b64decode(value["content"])
                    added.append(value["path"])
                elif key in ("deletedFile", "deletedFolder"):
                    folder = value["path"].rstrip("/") + "/"
                    gone = [p for p in repo.files if p == value["path"] or p.startswith(folder)]
                    for path in gone:
                        del repo.files[path]
                    deleted += gone
            self.commits.append((repo_id, added, deleted))
            kind = "datasets/" if store is self.datasets else ""
            return httpx.Response(200, json={"commitUrl": f"https://huggingface.co/{kind}{repo_id}/commit/{SHA}",
                                             "commitOid": SHA})
        return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"}, json={"error": "none"})

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


def file_response(request: httpx.Request, data: bytes) -> httpx.Response:
    """A file download (or its HEAD) as the Hub answers it: the commit, the content's hash and its length."""
    headers = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Content-Length": str(len(data))}
    return httpx.Response(200, headers=headers, content=b"" if request.method == "HEAD" else data)


def config_json(**extra) -> bytes:
    return json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"], **extra}).encode()


def folder_files(folder: Path) -> dict[str, bytes]:
    """A saved model folder as a repo's files."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@contextmanager
def public_server(hub: FakeHub, cache: Path, model: str = "embedded", env: dict[str, str] | None = None
                  ) -> Iterator[str]:
    """The app in public mode on a local port, every Hub call going to `hub` (downloads into `cache`), with
    `env` set too; yields its URL, and restores everything after."""
    from space import build_demo

    with pytest.MonkeyPatch.context() as patch:
        for name, value in {"ANATOMY_PUBLIC": "1", **(env or {})}.items():
            patch.setenv(name, value)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)  # build_demo sets it
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        hub.install(patch)
        demo = build_demo(model)
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        try:
            yield url
        finally:
            demo.close()
            hub.uninstall()
