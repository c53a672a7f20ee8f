"""Every bench's `--smoke` mode as a user runs it (`python bench/<script> --smoke`): it exits 0 and prints the
lines the README quotes, each with a number that parses. A bench nothing runs goes stale unnoticed (one
crashed on the typed `Result` for a whole release); its smoke mode runs the same code on a tiny random model."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = r"(-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?)"

# script -> the lines its smoke run must print: a regular expression per line, each group a number
BENCHES: dict[str, list[str]] = {
    "importance.py": [rf"^speedup: {NUMBER}\s+speedup vs batched: {NUMBER}$",
                      rf"^max relative PPL difference: {NUMBER} \(OK at 1e-4\)$",
                      rf"^product achieved: {NUMBER} GFLOP/s; \d+\^3 float32 matmul: {NUMBER} GFLOP/s$",
                      rf"^product, no prefix cache \(full forwards\): +{NUMBER} s"],
    "growth.py": [rf"^ratio: {NUMBER}$", rf"^wall-clock ratio: {NUMBER}$",
                  rf"^maturation +[\d,]+ +\d+ +{NUMBER} +{NUMBER} +{NUMBER}$"],
    "scale.py": [rf"^scale speedup: {NUMBER} on 2 workers$", r"^tables equal: yes$",
                 rf"^matmul floor: {NUMBER} GFLOP at {NUMBER} GFLOP/s"],
    "load.py": [rf"^N=2: completed 4/4 jobs, wait p50 {NUMBER} s p95 {NUMBER} s, latency p50 {NUMBER} s p95 "
                rf"{NUMBER} s, throughput {NUMBER} jobs/s", r"^weights unchanged after all runs: True$"],
    "recovery.py": [rf"^speedup: {NUMBER}$", rf"^max relative PPL difference plain vs cached: {NUMBER}$",
                    rf"^one-by-one float32: +{NUMBER} s$", rf"^batched bfloat16: +{NUMBER} s",
                    rf"^floor \({NUMBER} GFLOP of matmuls\): float32 {NUMBER} s, bfloat16 {NUMBER} s",
                    rf"^batched speedup: {NUMBER}$"],
    "study.py": [rf"^recovery +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER} +{NUMBER}$",
                 rf"^study: float32 {NUMBER} s \(floor {NUMBER} s, {NUMBER}x\), bfloat16 {NUMBER} s",
                 rf"^bf16 speedup: {NUMBER}$", r"^verdicts agree: (\d+)/(\d+)$"],
    "tasks.py": [rf"^hand-written: {NUMBER} s, ", rf"^lm-eval: {NUMBER} s, ", rf"^lm-eval / hand-written: {NUMBER} "],
    "attacks.py": [rf"^config of 468M parameters over a 2-element file: {NUMBER} s, server peak \+{NUMBER} MB$",
                   rf"^chat template of two nested range\(100000\) loops: {NUMBER} s, server peak \+{NUMBER} MB$",
                   rf"^recovery, steps 10\^9 \(app\): {NUMBER} s, server peak \+{NUMBER} MB$"],
}
HELPERS = {"smoke.py"}  # imported by the benches, not run
AWAITING_SMOKE: set[str] = set()  # smoke modes on their way: move each into BENCHES with its lines


def numbers(output: str, pattern: str) -> list[float]:
    """The numbers of the first line that matches `pattern`; fails, showing the output, if none does."""
    match = re.search(pattern, output, flags=re.MULTILINE)
    assert match, f"no line matches {pattern!r} in:\n{output}"
    return [float(group.replace(",", "")) for group in match.groups()]


def test_numbers_reads_each_group_and_fails_on_a_missing_line():
    assert numbers("x\nspeedup: 2.57   speedup vs batched: 0.69\n", BENCHES["importance.py"][0]) == [2.57, 0.69]
    assert numbers("N=2: completed 4/4 jobs, wait p50 0.17 s p95 0.26 s, latency p50 0.38 s p95 0.70 s, throughput "
                   "1,234.5 jobs/s", BENCHES["load.py"][0])[-1] == 1234.5
    with pytest.raises(AssertionError, match="no line matches"):
        numbers("speedup: fast", BENCHES["importance.py"][0])


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(BENCHES))
def test_smoke_mode_prints_its_numbers(script):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for pattern in BENCHES[script]:
        assert all(math.isfinite(x) for x in numbers(done.stdout, pattern)), pattern


def test_every_bench_script_is_run_here():
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - HELPERS
    assert scripts - AWAITING_SMOKE == set(BENCHES)
    assert all("--smoke" in (ROOT / "bench" / name).read_text(encoding="utf-8") for name in BENCHES)
