"""Sweeps across processes under `accelerate launch` (gloo on this CPU): the same tables as one process, the split
in results.json, one line and no finished run folder when a worker dies, and the growth trainer's DDP path on the
one-process loss curve.

The launcher is `accelerate launch --multi_gpu` with ACCELERATE_USE_CPU=1: it starts the processes through
torchrun (`--cpu --num_processes 2` alone starts one process unless mpirun is set up). Both runs of a comparison
use one thread per process, so their arithmetic is the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from anatomy import cli
from growth_models import train
from conftest import free_port, make_tiny_model
from growth_helpers import write_text

pytestmark = pytest.mark.slow  # every test starts processes that import torch and load a model
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
TIMED = ("ms_per_token", "speedup")  # latency columns: measured, so never equal between two runs
STOPPED = "error: the run was stopped: a process of `accelerate launch` died"


def launch_command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", module, *args]


def run(command: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def in_process(main, argv: list[str]) -> None:
    """The one-process reference, run here (a process start costs more than the run), on one thread as each
    launched process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(argv) == 0
    finally:
        torch.set_num_threads(threads)


def one_and_two(tmp_path: Path, *args: str) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """The same `python -m anatomy` command with one process and with two; their folders and the two-process
    run's output."""
    one, two = tmp_path / "one", tmp_path / "two"
    in_process(cli.main, [*args, "--out", str(one)])
    return one, two, run(launch_command("anatomy", *args, "--out", str(two)))


def assert_same_tables(one: Path, two: Path) -> int:
    """Every CSV of `one` (a run or a study folder) equal, exactly, in `two`, latency columns apart."""
    tables = sorted(one.rglob("*.csv"))
    assert tables
    for csv in tables:
        a, b = pd.read_csv(csv), pd.read_csv(two / csv.relative_to(one))
        if csv.name == "claims.csv":  # the latency claim quotes measured speedups
            a, b = (t[t["finding"] != "latency"].reset_index(drop=True) for t in (a, b))
        timed = [c for c in a.columns if any(t in c for t in TIMED)]
        pd.testing.assert_frame_equal(a.drop(columns=timed), b.drop(columns=timed), check_exact=True, obj=str(csv))
    return len(tables)


def rank_of(process: psutil.Process) -> str | None:
    """The RANK torchrun gave a process (None for one that is gone or not a worker)."""
    try:
        return process.environ().get("RANK")
    except psutil.Error:
        return None


def processes_of(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())["processes"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def test_study_with_recovery_on_two_processes_equals_one(tmp_path, tiny):
    """The study's steps (recovery, prune with the skip-mode importance map it computes, plans) under launch."""
    one, two, _ = one_and_two(tmp_path, "study", "--model", str(tiny), "--quick",
                              "--experiments", "importance,prune,recovery,plans")
    assert assert_same_tables(one, two) >= 8  # claims.csv and every step's tables
    split = processes_of(two / "recovery")["sweeps"]
    assert split == [{"sweep": "recovery (layers)", "items": [2, 3], "by_process": [[2], [3]]}]
    assert [s["sweep"] for s in processes_of(two / "prune")["sweeps"]] == ["importance (skip)",
                                                                          "prune (criterion x K)"]
    assert (two / "study.md").is_file() and not list(two.glob("*.partial"))


@pytest.mark.parametrize("experiment, sweep", [
    (("importance", "--layers", "27-29"), "importance (neighbour-mean)"),
    (("recovery", "--layers", "27-29", "--steps", "2", "--eval-every", "1", "--no-control"), "recovery (layers)"),
], ids=["importance", "recovery"])
def test_embedded_model_on_two_processes_equals_one(tmp_path, texts, experiment, sweep):
    """The last layers: with the prefix cache only layers l..29 run, so they cost least."""
    recovery = experiment[0] == "recovery"
    train = ["--train-file", str(write_text(tmp_path / "train.txt", n_lines=300))] if recovery else []
    one, two, proc = one_and_two(tmp_path, *experiment, *train, "--model", "embedded", "--text-file", str(texts))
    assert assert_same_tables(one, two) >= 1
    results = [json.loads((f / "results.json").read_text()) for f in (one, two)]
    for result in results:  # how a process batched its own share of the fine-tunes, not what they measured
        result["results"].pop("batched", None)
    assert results[0]["results"] == results[1]["results"]  # the baseline with its interval, the correlations
    assert results[0]["processes"] == {"count": 1}
    assert results[1]["processes"] == {"count": 2, "sweeps": [{"sweep": sweep, "items": [27, 28, 29],
                                                               "by_process": [[27, 29], [28]]}]}
    assert proc.stdout.count("run folder:") == 1  # one process prints and writes
    # the main process ran 2 of the 3 layers; its bar counted the other process's one too
    assert f"{sweep} [2 processes]: 100%" in proc.stderr and "3/3" in proc.stderr


def test_a_killed_worker_fails_the_run_in_one_line_and_writes_no_run_folder(tmp_path, tiny):
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    command = launch_command("anatomy", "recovery", "--model", str(tiny), "--steps", "2000", "--eval-every", "500",
                             "--out", str(out))
    with log.open("w") as err:
        launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True, env=ENV)
        try:
            deadline = time.monotonic() + 300
            while "[2 processes]" not in log.read_text() and launcher.poll() is None:  # the sweep has started
                assert time.monotonic() < deadline, "the sweep never started"
                time.sleep(0.5)
            workers = [p for p in psutil.Process(launcher.pid).children(recursive=True) if rank_of(p) == "1"]
            assert len(workers) == 1
            workers[0].send_signal(signal.SIGKILL)
            launcher.wait(timeout=120)
        finally:
            if launcher.poll() is None:
                launcher.kill()
    stderr = log.read_text()
    assert launcher.returncode != 0
    assert sum(STOPPED in line for line in stderr.splitlines()) == 1
    assert "its run folder was not written" in stderr
    assert not out.exists()  # it died in the sweep: nothing of the run folder was written


def test_growth_trainer_on_two_processes_follows_the_one_process_curve(tmp_path):
    """DDP through accelerate: 2 processes of batch 4 each make the global batch of 8 that one process draws."""
    text = write_text(tmp_path / "verse.txt", n_lines=800)
    args = ("--schedule", "growth", "--preset", "tiny", "--steps", "12", "--train-file", str(text))
    one, two = tmp_path / "one", tmp_path / "two"
    in_process(train.main, [*args, "--batch-size", "8", "--out", str(one)])
    run(launch_command("growth_models.train", *args, "--batch-size", "4", "--out", str(two)))
    a, b = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    assert list(a["step"]) == list(b["step"]) == [0, 6, 12] and list(a["tokens"]) == list(b["tokens"])
    pd.testing.assert_series_equal(a["val_loss"], b["val_loss"], rtol=1e-5, atol=1e-5)
    pd.testing.assert_series_equal(a["train_loss"], b["train_loss"], rtol=1e-5, atol=1e-5)
    assert a["val_loss"].iloc[-1] < a["val_loss"].iloc[0] - 0.5  # it trained: the curve is not flat
