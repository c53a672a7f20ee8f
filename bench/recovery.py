"""Benchmark: the cached recovery loop (layers l..N-1 only) against the plain full-model loop, side by side.

Both run the same protocol (noise, AdamW fine-tune of one layer, PPL every --eval-every steps) on the
embedded model for the study's 13 layers by default, a few steps each, and must give the same curves.
Prints per-layer seconds, the shares, and `speedup: <plain total / cached total>` (baseline and cache
building included). Run with OMP_NUM_THREADS=1 on a shared 2-core machine (two threads contending with
other jobs made every op ~7x slower here).

    OMP_NUM_THREADS=1 python bench/recovery.py --steps 10 --eval-every 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anatomy.evaluate import EvalSet  # noqa: E402
from anatomy.experiments.recovery import STUDY_LAYERS, RecoveryConfig, recovery_curves, run_recovery  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from anatomy.train_layer import training_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default=",".join(map(str, STUDY_LAYERS)))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--train-batch-size", type=int, default=2)
    ap.add_argument("--train-seq-len", type=int, default=32)
    args = ap.parse_args()
    loaded = load_model("embedded")
    eval_set = EvalSet.from_texts(default_eval_texts(), loaded.tokenizer, name="default")
    rows = training_rows(loaded.tokenizer, args.train_seq_len, exclude=eval_set.texts)
    layers = [int(x) for x in args.layers.split(",")]
    results = {}
    for name, cached in (("plain", False), ("cached", True)):
        config = RecoveryConfig(layers=layers, steps=args.steps, eval_every=args.eval_every, cached=cached,
                                train_batch_size=args.train_batch_size, train_seq_len=args.train_seq_len)
        results[name] = run_recovery(loaded.model, eval_set, config, train_rows=rows)
    plain, cached = (results[k].attrs["timings"] for k in ("plain", "cached"))
    table = pd.DataFrame({"layer": layers, "plain_s": [plain["layers_s"][i] for i in layers],
                          "cached_s": [cached["layers_s"][i] for i in layers]})
    table["ratio"] = table["plain_s"] / table["cached_s"]
    gap = np.abs(recovery_curves(results["plain"])["ppl"].to_numpy() / recovery_curves(results["cached"])["ppl"]
                 .to_numpy() - 1).max()
    print(f"threads {torch.get_num_threads()}, {args.steps} steps of {args.train_batch_size}x{args.train_seq_len} "
          f"tokens, PPL every {args.eval_every} steps on {eval_set.num_tokens} eval tokens")
    print(table.round(2).to_string(index=False))
    print(f"shared: plain baseline {plain['baseline_s']:.1f} s; cached baseline+eval cache {cached['baseline_s']:.1f} s, "
          f"training-input cache {cached['train_cache_s']:.1f} s")
    print(f"max relative PPL difference plain vs cached: {gap:.2e}")
    print(f"mean per-layer ratio: {table['ratio'].mean():.2f}")
    print(f"speedup: {plain['total_s'] / cached['total_s']:.2f}")


if __name__ == "__main__":
    main()
