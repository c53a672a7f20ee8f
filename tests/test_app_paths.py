"""Hostile session ids on a real server: whatever a client sends, the app writes only under its runs root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from gradio_client import Client

from anatomy.load import LoadedModel
from space import runs
from space.models import CACHE
from space.tabs import ManipulateInputs
from tests.conftest import make_tiny_model

TINY_EVAL = ("paths-tiny", 2, "", 16)
# every endpoint that writes a run folder, with the cheapest arguments that still write one
WRITERS = {
    "/importance": (*TINY_EVAL, "zero", "one-neighbour", "0-1"),
    "/interventions": (*TINY_EVAL, "scale", "1", "0.5", [], 0, "one-neighbour"),
    "/manipulate": (*TINY_EVAL, "1", 10, ["scale"], "0.5", 0, "", ManipulateInputs.GIVEN),
    "/prune": (*TINY_EVAL, "1", ["last"], "skip", "", "An importance map computed now"),
    "/plans": (*TINY_EVAL, ["repeat"], "2", "", 2, 0, 1, 2, False, False),
    "/structure": ("paths-tiny", 4, 0),
    "/spectral": ("paths-tiny", 4),
    "/predictability": (*TINY_EVAL, 100, 1.0, 2),
    "/recovery": (*TINY_EVAL, "1", 2, 2, 0.5, 1e-4, 0),
    "/budget": (True, 200, "0.15,0.2", "0,0.05", "0.3,0.5", "0.5,0.8", "0.8,1.0", 1.0, 10, True, True),
}
# ~10 s a call on CI's two cores, so each of these gets two of the six ids (every id reaches one of them)
SLOW = {"/structure": ("absolute", "long"), "/spectral": ("dotdot", "unicode"), "/recovery": ("nul", "deep-dotdot")}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_tokenizer, app_url):
    base = tmp_path_factory.mktemp("paths")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "RUNS_ROOT", base / "runs")
        CACHE.put("paths-tiny", LoadedModel(make_tiny_model("llama", layers=4), tiny_tokenizer, "tiny", "test"))
        yield app_url, base


def hostile_ids(base: Path) -> dict[str, str]:
    return {"absolute": str(base / "absolute-target"), "dotdot": "../escaped", "deep-dotdot": "../../escaped-up",
            "nul": "run\x00/../../nul-escape", "long": "a" * 5000, "unicode": "..\u2215\u202eэкс/😀/../../uni"}


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "deep-dotdot", "nul", "long", "unicode"])
def test_hostile_session_ids_write_only_under_the_runs_root(server, kind):
    url, base = server
    root = base / "runs"
    session = hostile_ids(base)[kind]
    before_parent = set(os.listdir(base.parent))
    zips_before = {p for p in files_under(root) if p.suffix == ".zip"}
    client = Client(url, verbose=False)
    client.session_hash = session
    for api, args in WRITERS.items():
        if kind not in SLOW.get(api, (kind,)):
            continue
        if api == "/budget":  # reads this session's importance run, written above under the same id
            *_, archive, schedule, = client.predict(*args, api_name=api)
            assert Path(schedule).name == "budget.json"
        else:
            archive = client.predict(*args, api_name=api)[-1]
        assert archive.endswith(".zip"), (api, archive)
    written = files_under(root)
    zips = {p for p in written if p.suffix == ".zip"} - zips_before
    assert len(zips) == len(WRITERS) - sum(kind not in ids for ids in SLOW.values())
    assert all(p.resolve().is_relative_to(root.resolve()) for p in written)
    assert not any(p.name.endswith(runs.PARTIAL) for p in written)  # every run finished and was renamed
    sessions = [p.name for p in root.iterdir()]  # a hash of the client's id, never its text
    assert sessions and all(len(name) == 32 and set(name) <= set("0123456789abcdef") for name in sessions)
    assert sorted(os.listdir(base)) == ["runs"]  # nothing beside the runs root
    assert set(os.listdir(base.parent)) == before_parent  # nor above it
    for target in ("absolute-target", "escaped", "escaped-up", "nul-escape", "uni"):
        assert not (base / target).exists() and not (base.parent / target).exists()
