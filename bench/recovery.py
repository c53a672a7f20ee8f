"""Benchmark: the cached recovery loop (layers l..N-1 only) against the plain full-model loop, side by side.

Both run the same protocol (noise, AdamW fine-tune of one layer, PPL every --eval-every steps) on the
embedded model for the study's 13 layers by default, a few steps each, and must give the same curves.
Prints per-layer seconds, the shares, and `speedup: <plain total / cached total>` (baseline and cache
building included), and beside it the work ratio: the matmul FLOPs of the plain loop over those of the
cached one for the same layers, i.e. the most that skipping the frozen prefix can give, since everything
from layer l up (forward, backward, the head on every predicted token) is needed by both. Run with
OMP_NUM_THREADS=1 on a shared 2-core machine (two threads contending with other jobs made every op ~7x
slower here).

    OMP_NUM_THREADS=1 python bench/recovery.py            # the study's 13 layers, 20 steps, PPL every 10
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
from anatomy.experiments.recovery import STUDY_LAYERS, RecoveryConfig, run_recovery  # noqa: E402
from anatomy.layers import LayerAdapter  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from anatomy.train_layer import batch_schedule, training_cache, training_rows  # noqa: E402


def work_ratio(model, eval_set: EvalSet, layers: list[int], config: RecoveryConfig) -> float:
    """Matmul work of the plain loop / the cached loop, summed over `layers` (padding ignored).

    Per token, a matrix of P weights costs P multiply-adds forward and P backward for the input gradient
    (the head too: it is frozen like every matrix but the trained layer's); the trained layer costs P more
    for its weight gradient. The plain loop also runs layers 0..l-1 forward, for every training batch and
    every evaluation.
    """
    adapter = LayerAdapter(model)
    size = [sum(p.numel() for p in layer.parameters() if p.dim() == 2) for layer in adapter.layers]
    head = model.get_output_embeddings().weight.numel()
    train_tokens = config.steps * config.train_batch_size * (config.train_seq_len - 1)
    eval_tokens = (config.steps // config.eval_every + 1 + bool(config.steps % config.eval_every)) * eval_set.num_tokens
    plain = cached = 0
    for layer in layers:
        above = sum(size[layer:]) + head  # forward from layer l, in multiply-adds per token
        backward = above + size[layer]
        cached += train_tokens * (above + backward) + eval_tokens * above
        plain += train_tokens * (sum(size) + head + backward) + eval_tokens * (sum(size) + head)
    return plain / cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default=",".join(map(str, STUDY_LAYERS)))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--train-batch-size", type=int, default=RecoveryConfig.train_batch_size)
    ap.add_argument("--train-seq-len", type=int, default=RecoveryConfig.train_seq_len)
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
            result = run_recovery(loaded.model, eval_set, config, train_rows=rows)
            times[name][layer] = result.timings["layers_s"][layer]
            shared[name] = max(shared[name], result.timings["baseline_s"])
            curves[name].append(result["recovery_curves"])
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
    for label, steps in ((f"these {args.steps} steps", args.steps), ("the full protocol, 200 steps", 200)):
        protocol = RecoveryConfig(steps=steps, eval_every=args.eval_every, train_batch_size=args.train_batch_size,
                                  train_seq_len=args.train_seq_len)
        print(f"work ratio (matmul work plain / cached: the most skipping the prefix can give), {label}: "
              f"{work_ratio(loaded.model, eval_set, layers, protocol):.2f}")
    print(f"speedup: {plain_total / cached_total:.2f}")


if __name__ == "__main__":
    main()
