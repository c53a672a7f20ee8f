"""Benchmark: the whole study's wall time per experiment beside its matmul floor, in one process.

The floor of an experiment is the time its matmul work would take at the rate of a 2048^3 float32 matmul
measured in the same run: the work is counted by torch's `FlopCounterMode` (matmuls, convolutions and
attention, forward and backward) in a second, counted pass of the same experiment with the same config, so
the timed pass runs without the counter's overhead. A ratio near 1 means the experiment does little beyond
its matmuls; a large one, that it spends its time elsewhere (Python, memory, small kernels).

    python bench/study.py                      # the quick study (--quick settings) on the embedded model
    python bench/study.py --full               # the study's defaults (13 recovery layers, 200 steps)
    python bench/study.py --experiments importance,structure

Prints one line per experiment (`wall_s`, `GFLOP`, `floor_s`, `wall/floor`) and `study wall/floor: X`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from importance import matmul_gflops  # noqa: E402

from anatomy import study  # noqa: E402
from anatomy.evaluate import EvalSet  # noqa: E402
from anatomy.layers import LayerAdapter  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from anatomy.run import execute  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--full", action="store_true", help="the study's defaults instead of --quick")
    parser.add_argument("--experiments", default=",".join(study.STUDY))
    args = parser.parse_args()
    names = [n.strip() for n in args.experiments.split(",") if n.strip()]
    steps, _ = study.prepare(names, quick=not args.full)  # the study command's settings, quick or its own
    loaded = load_model(args.model)
    steps = study.with_recovery_layers(steps, LayerAdapter(loaded.model).num_layers, None, quick=not args.full)
    texts = default_eval_texts()[:None if args.full else study.QUICK_TEXTS]  # the study command's texts
    eval_set = EvalSet.from_texts(texts, loaded.tokenizer, name="default")
    rate = matmul_gflops() * 1e9
    print(f"2048^3 float32 matmul: {rate / 1e9:.1f} GFLOP/s; {torch.get_num_threads()} threads; "
          f"{'full' if args.full else 'quick'} study of {loaded.name}")
    results, total_wall, total_floor = {}, 0.0, 0.0
    for step in steps:
        inputs = {n.experiment: results.get(n.experiment) for n in step.experiment.needs}
        start = time.perf_counter()
        results[step.name] = execute(step.experiment, loaded, eval_set, step.config, None, inputs)
        wall = time.perf_counter() - start
        with FlopCounterMode(display=False) as counter:
            execute(step.experiment, loaded, eval_set, step.config, None, inputs)
        flops = counter.get_total_flops()
        floor = flops / rate
        total_wall, total_floor = total_wall + wall, total_floor + floor
        print(f"{step.name:16s} wall_s {wall:8.1f}   GFLOP {flops / 1e9:10.1f}   floor_s {floor:7.1f}   "
              f"wall/floor {wall / floor if floor else float('nan'):6.2f}")
    print(f"study wall_s {total_wall:.1f}, floor_s {total_floor:.1f}")
    print(f"study wall/floor: {total_wall / total_floor:.2f}")


if __name__ == "__main__":
    main()
