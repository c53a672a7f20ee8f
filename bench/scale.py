"""Benchmark: the importance map with one process and with every worker of this machine (`accelerate launch`).

    python bench/scale.py                          # embedded model, all 30 layers, the 48 default texts
    python bench/scale.py --layers 0-9 --texts 16  # quicker
    python bench/scale.py --workers 4              # another count of processes
    OMP_NUM_THREADS=1 python bench/scale.py        # the one-process side on one thread (a shared CPU)
    python bench/scale.py --smoke                  # seconds: a tiny random model on 2 workers

Workers: the GPUs where there are two or more, else the CPU's physical cores, one process each (gloo). Both
sides are the CLI command itself, `python -m anatomy importance`, then the same under `accelerate launch
--multi_gpu --num_processes N`; each side's time is the run's own `timings.run_s` (the baseline pass, the
sweep and the gather; loading the model and starting the processes are left out and printed apart as the
command's wall time). The two tables must be equal. On a CPU with torch's default threads one process
already runs its matmuls on every core, so N processes of cores/N threads share the same cores: no speedup is
expected beyond what fewer threads per process save, and every process computes the baseline pass and the
prefix cache itself. With `OMP_NUM_THREADS=1` (advised on a shared CPU) one process uses one core and the
split uses the others. Prints `scale speedup: X on N workers` and, beside it, the floor: the map's matmul work
at the 2048^3 float32 matmul rate of one GPU (times N GPUs), or of this process's threads on a CPU (scaled by
the cores each side uses).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from importance import matmul_gflops, product_flops  # noqa: E402

from anatomy.evaluate import EvalSet  # noqa: E402
from anatomy.layers import parse_layers  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from bench.smoke import SMOKE_HELP, tiny_model_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def workers() -> int:
    """GPUs where there are several, else physical CPU cores."""
    gpus = torch.cuda.device_count()
    return gpus if gpus >= 2 else psutil.cpu_count(logical=False) or 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_run(processes: int, args: list[str], out: Path) -> tuple[float, float, pd.DataFrame, int]:
    """(run_s, command wall seconds, importance table, threads per process) of one `python -m anatomy
    importance` run. One process keeps this environment's OMP_NUM_THREADS (torch's default: every core)."""
    command = [sys.executable, "-m", "anatomy", "importance", *args, "--out", str(out)]
    env = dict(os.environ)
    if processes > 1:
        command[1:3] = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_port", str(free_port()), "-m", "anatomy"]
        if not torch.cuda.is_available():  # the cores shared out: cores/N threads per process
            env["OMP_NUM_THREADS"] = str(max(1, (psutil.cpu_count(logical=False) or 1) // processes))
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    return (results["timings"]["run_s"], wall, pd.read_csv(out / "importance.csv"),
            results["environment"]["threads"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layers", help="0-based layers to ablate (default: all)")
    parser.add_argument("--texts", type=int, default=48, help="number of default sentences (default 48)")
    parser.add_argument("--workers", type=int, default=workers(),
                        help=f"processes of the split run (default here: {workers()})")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP} (4 texts, 2 workers)")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.texts, args.workers = tiny_model_folder(), 4, 2

    loaded = load_model(args.model)  # for the matmul floor, and the embedded model's cache before timing
    texts = default_eval_texts()[:args.texts]
    layers = parse_layers(args.layers, loaded.model.config.num_hidden_layers)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "texts.txt"
        text_file.write_text("\n".join(texts), encoding="utf-8")
        common = ["--model", args.model, "--text-file", str(text_file), "--layers", ",".join(map(str, layers))]
        one = timed_run(1, common, Path(tmp) / "one")
        many = timed_run(args.workers, common, Path(tmp) / "many")
    equal = one[2].equals(many[2])
    eval_set = EvalSet.from_texts(texts, loaded.tokenizer, name="default", device=loaded.model.device)
    flops = product_flops(loaded.model, eval_set, layers)
    size = 256 if args.smoke else 2048
    rate = matmul_gflops(size, device=device) * 1e9  # on this process's threads: the one-process side's
    if device == "cuda":
        used = f"{args.workers} GPUs"
        split_rate = rate * args.workers
    else:  # the matmul rate taken to grow with the cores in use, up to the machine's
        cores = psutil.cpu_count(logical=False) or 1
        one_cores, split_cores = min(one[3], cores), min(args.workers * many[3], cores)
        used = f"{split_cores} of {cores} cores, against {one_cores}"
        split_rate = rate * split_cores / one_cores
    print(f"model {loaded.name}: {len(layers)} layers ablated, {len(texts)} texts, {eval_set.num_tokens} tokens; "
          f"{'GPUs' if device == 'cuda' else 'CPU cores (physical)'}: {workers()}")
    for name, (run_s, wall, _, threads) in (("1 process", one), (f"{args.workers} processes", many)):
        print(f"{name + ':':<14} run {run_s:8.2f} s   (command {wall:6.1f} s), {threads} thread(s) per process")
    print(f"tables equal: {'yes' if equal else 'NO'}")
    print(f"matmul floor: {flops / 1e9:.1f} GFLOP at {rate / 1e9:.1f} GFLOP/s ({size}^3 float32 on one {device}"
          + (f", {torch.get_num_threads()} thread(s)" if device == "cpu" else "") + f"): {flops / rate:.2f} s with "
          f"1 process, {flops / split_rate:.2f} s with {args.workers} ({used})")
    if device == "cpu" and one[3] >= (psutil.cpu_count(logical=False) or 1):
        print("(one process already ran on every core: the processes share the same cores, so no speedup is "
              "expected beyond what fewer threads per process save; every process computes the baseline pass "
              "and the prefix cache itself)")
    print(f"scale speedup: {one[0] / many[0]:.2f} on {args.workers} workers")


if __name__ == "__main__":
    main()
