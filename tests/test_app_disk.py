"""Bounded disk: runs expire by age and total size, a full disk leaves no finished-looking run, and a Hub
download that would not fit is refused from the metadata before the first byte."""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from huggingface_hub import constants
from transformers import AutoConfig

from anatomy.disk import download_bytes
from anatomy.errors import AnatomyError
from anatomy.experiments.importance import ImportanceConfig, importance_artefacts, run_importance
from anatomy.load import LoadedModel, check_hub_model, config_parameters
from space import jobs, runs
from tests.conftest import make_tiny_model
from tests.hub_fake import SHA, FakeHub, FakeRepo, config_json

HOUR = 3600


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS_ROOT", tmp_path / "runs")
    return tmp_path / "runs"


def fake_run(root: Path, session: str, name: str, size: int, age_s: float, now: float) -> Path:
    """A run folder of `size` bytes and its zip, last modified `age_s` ago."""
    folder = root / session / name
    folder.mkdir(parents=True)
    (folder / "results.json").write_bytes(b"x" * size)
    zipped = runs.archive_of(folder)
    zipped.write_bytes(b"z" * 10)
    for path in (folder / "results.json", folder, zipped):
        os.utime(path, (now - age_s, now - age_s))
    return folder


def test_runs_older_than_the_age_limit_expire_and_empty_sessions_go(root, monkeypatch):
    monkeypatch.setenv("ANATOMY_RUNS_MAX_AGE_H", "2")
    now = time.time()
    old = fake_run(root, "a" * 32, "importance-old", 100, 3 * HOUR, now)
    fresh = fake_run(root, "b" * 32, "importance-fresh", 100, 1 * HOUR, now)
    crashed = root / ("b" * 32) / f"spectral-crashed{runs.PARTIAL}"  # a job that died mid-write, long ago
    crashed.mkdir()
    os.utime(crashed, (now - 3 * HOUR, now - 3 * HOUR))
    deleted = runs.sweep(now)
    assert set(deleted) == {old, runs.archive_of(old), crashed}
    assert not (root / ("a" * 32)).exists()  # its session folder was left empty
    assert fresh.is_dir() and runs.archive_of(fresh).is_file()


def test_the_oldest_runs_go_until_the_rest_fit_the_quota_but_not_a_run_being_written(root, monkeypatch):
    monkeypatch.setenv("ANATOMY_RUNS_MAX_GB", str(2500 / 2**30))  # 2,500 bytes
    now = time.time()
    session = root / ("c" * 32)
    folders = [fake_run(root, session.name, f"run-{i}", 1000, (5 - i) * 60, now) for i in range(5)]  # 1,010 B each
    writing = session / f"recovery-now{runs.PARTIAL}"  # a long job started before all of them, still writing
    writing.mkdir()
    (writing / "recovery.csv").write_bytes(b"r" * 1000)
    os.utime(writing, (now - 600, now - 600))
    runs.sweep(now)
    kept = sorted(p.name for p in session.iterdir())
    assert kept == ["recovery-now.partial", "run-4", "run-4.zip"]  # 2,010 bytes; a run goes with its zip
    assert not folders[3].exists()


def test_a_new_run_sweeps_first(root, monkeypatch):
    monkeypatch.setenv("ANATOMY_RUNS_MAX_AGE_H", "1")
    old = fake_run(root, "d" * 32, "budget-old", 10, 2 * HOUR, time.time())
    with runs.new_run("e" * 32, "budget") as run:
        run.write_report("# report")
        run.finish(None, None, {}, {})
    assert not old.exists()
    assert (run.path / "results.json").is_file() and runs.archive_of(run.path).is_file()
    assert not run.path.name.endswith(runs.PARTIAL)


def test_limits_that_are_not_numbers_are_a_one_line_error(monkeypatch):
    monkeypatch.setenv("ANATOMY_RUNS_MAX_GB", "lots")
    with pytest.raises(AnatomyError, match="must be numbers"):
        runs.limits()


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """No file may grow past `limit` bytes: a write that would fails half-way (EFBIG), as on a full disk
    (ENOSPC); SIGXFSZ is ignored so the write fails instead of the process."""
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_full_disk_is_a_clear_error_and_leaves_no_run_that_looks_complete(root, tiny_tokenizer, tiny_eval_set):
    loaded = LoadedModel(make_tiny_model("llama", layers=3), tiny_tokenizer, "tiny", "test")
    config = ImportanceConfig(mode="zero")
    result = run_importance(loaded.model, tiny_eval_set, config)
    artefacts = importance_artefacts(result, loaded, tiny_eval_set, config)
    with file_size_limit(4096), pytest.raises(AnatomyError, match="disk is full") as info:
        jobs.save_run(None, "importance", loaded, tiny_eval_set, config, result, artefacts)  # the PNG passes 4 KiB
    assert "\n" not in str(info.value)
    left = list(root.rglob("*"))
    assert not [p for p in left if p.name in ("results.json", "importance.png") or p.suffix == ".zip"], left
    assert not [p for p in left if p.is_dir() and p.parent != root], left  # no run folder, finished or partial
    saved = jobs.save_run(None, "importance", loaded, tiny_eval_set, config, result, artefacts)  # room again: it works
    assert saved.is_file() and (saved.with_suffix("") / "results.json").is_file()


def test_results_json_is_written_whole_or_not_at_all(tmp_path):
    from anatomy.report import RunFolder
    run = RunFolder(tmp_path / "run", "budget")
    with file_size_limit(2048), pytest.raises(OSError):
        run.finish(None, None, {}, {"values": list(range(2000))})  # ~10 kB of JSON
    assert not (tmp_path / "run" / "results.json").exists()


def test_download_bytes_counts_only_the_files_not_yet_cached(tmp_path, monkeypatch):
    from types import SimpleNamespace
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--alice--tiny" / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    siblings = [SimpleNamespace(rfilename=name, size=size) for name, size in
                (("config.json", 500), ("model.safetensors", 7000), ("README.md", 90), ("onnx/model.onnx", 10**9))]
    assert download_bytes("alice/tiny", SHA, siblings) == 7000


def test_a_hub_model_larger_than_the_free_disk_is_refused_before_any_weight_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    huge = 10 * 2**50  # 10 PiB of weights, reported by the metadata; no disk has that free
    config = dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64, num_attention_heads=4, vocab_size=320)
    described, _ = config_parameters(AutoConfig.for_model("llama", **config))  # the weights match the config
    hub = FakeHub({"alice/huge": FakeRepo({"config.json": config_json(**config), "model.safetensors": b"w"},
                                          sizes={"model.safetensors": huge}, parameters=described)}
                  ).install(monkeypatch)
    try:
        with pytest.raises(AnatomyError, match="Not enough disk for downloading 'alice/huge'"):
            check_hub_model("alice/huge", token=False)
    finally:
        hub.uninstall()
    weights = list((tmp_path / "hub").rglob("model.safetensors"))
    assert weights == []  # refused from the metadata: the weights were never fetched
