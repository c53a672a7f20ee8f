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
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anatomy.evaluate import EvalSet  # noqa: E402
from anatomy.experiments.recovery import STUDY_LAYERS, RecoveryConfig, recovery_curves, run_recovery  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from anatomy.train_layer import batch_schedule, training_cache, training_rows  # noqa: E402


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
    # Interleaved per layer (plain and cached back to back, order alternating) so that load drift on a
    # shared machine hits both loops alike. Shared costs are counted once per loop: the baseline (and
    # for the cached loop the evaluation cache) and one training-input cache for all layers, which is
    # what a multi-layer `run_recovery` builds; the per-layer runs' own cache builds are not counted.
    times = {"plain": {}, "cached": {}}
    shared = {"plain": 0.0, "cached": 0.0}
    curves = {"plain": [], "cached": []}
    for k, layer in enumerate(layers):
        for name in (("plain", "cached") if k % 2 == 0 else ("cached", "plain")):
            config = RecoveryConfig(layers=[layer], steps=args.steps, eval_every=args.eval_every,
                                    cached=name == "cached", train_batch_size=args.train_batch_size,
                                    train_seq_len=args.train_seq_len)
            df = run_recovery(loaded.model, eval_set, config, train_rows=rows)
            times[name][layer] = df.attrs["timings"]["layers_s"][layer]
            shared[name] = max(shared[name], df.attrs["timings"]["baseline_s"])
            curves[name].append(recovery_curves(df))
    batches = batch_schedule(rows, args.train_batch_size, args.steps)
    t0 = time.perf_counter()
    training_cache(loaded.model, batches, layers)
    shared["cached"] += time.perf_counter() - t0
    plain_total, cached_total = (sum(times[n].values()) + shared[n] for n in ("plain", "cached"))
    table = pd.DataFrame({"layer": layers, "plain_s": [times["plain"][i] for i in layers],
                          "cached_s": [times["cached"][i] for i in layers]})
    table["ratio"] = table["plain_s"] / table["cached_s"]
    gap = np.abs(pd.concat(curves["plain"])["ppl"].to_numpy() / pd.concat(curves["cached"])["ppl"].to_numpy()
                 - 1).max()
    print(f"threads {torch.get_num_threads()}, {args.steps} steps of {args.train_batch_size}x{args.train_seq_len} "
          f"tokens, PPL every {args.eval_every} steps on {eval_set.num_tokens} eval tokens")
    print(table.round(2).to_string(index=False))
    print(f"shared: plain {shared['plain']:.1f} s (baseline); cached {shared['cached']:.1f} s "
          "(baseline, eval cache, training-input cache for all layers)")
    print(f"max relative PPL difference plain vs cached: {gap:.2e}")
    print(f"mean per-layer ratio: {table['ratio'].mean():.2f}")
    print(f"totals: plain {plain_total:.0f} s, cached {cached_total:.0f} s")
    print(f"speedup: {plain_total / cached_total:.2f}")


if __name__ == "__main__":
    main()
