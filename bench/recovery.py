"""Benchmark: recovery's loops side by side in one process: the plain full-model loop against the cached
one-by-one loop, and the one-by-one float32 loop against the fine-tunes trained as one batch under
bfloat16 autocast.

Every loop runs the same protocol (noise, AdamW fine-tune of one layer, PPL every --eval-every steps) on the
embedded model for the study's 13 layers by default, a few steps each.

- Cached vs plain (one fine-tune at a time, no control): each a whole `run_recovery` of every layer, and
  `speedup: <plain / cached>` (baseline included), and beside it the work ratio, the matmul FLOPs of the plain
  loop over those of the cached one: the most that skipping the frozen prefix can give. The two must give the
  same curves.
- Batched (the study's protocol: each layer noised and its sigma-0 control): the one-by-one float32 loop
  (`--batch-variants 1`), the batched float32 loop and the batched loop under `torch.autocast` bfloat16, each
  a whole `run_recovery`; their wall times, the floors (the cached loop's matmul FLOPs at the rate of a 2048^3
  matmul measured here in float32 and in bfloat16), and `batched speedup: <one-by-one float32 / batched
  bfloat16>`. bf16 PPLs are not float32's: the largest relative difference is printed.

    python bench/recovery.py                       # the study's 13 layers, 20 steps, PPL every 10
    python bench/recovery.py --layers 3 --steps 20 # 3 of the study's layers (or a list: --layers 11,14,17)
    python bench/recovery.py --smoke               # seconds, on a tiny random model
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from importance import matmul_gflops  # noqa: E402

from anatomy.evaluate import EvalSet  # noqa: E402
from anatomy.experiments.recovery import STUDY_LAYERS, RecoveryConfig, run_recovery  # noqa: E402
from anatomy.layers import LayerAdapter  # noqa: E402
from anatomy.load import LoadedModel, load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from anatomy.train_layer import training_rows  # noqa: E402
from bench.smoke import SMOKE_HELP, tiny_model_folder  # noqa: E402


def matmul_flops(model, eval_set: EvalSet, layers: list[int], config: RecoveryConfig) -> tuple[float, float]:
    """Matmul FLOPs of the plain loop and of the cached one (the batched loop does the cached one's work in
    larger matmuls), summed over `layers` and their variants (2 with the control), padding ignored.

    Per token, a matrix of P weights costs P multiply-adds forward and P backward for the input gradient
    (the head too: it is frozen like every matrix but the trained layer's); the trained layer costs P more
    for its weight gradient. The plain loop also runs layers 0..l-1 forward, for every training batch and
    every evaluation; the cached one runs them once per training batch, for all layers.
    """
    adapter = LayerAdapter(model)
    size = [sum(p.numel() for p in layer.parameters() if p.dim() == 2) for layer in adapter.layers]
    head = model.get_output_embeddings().weight.numel()
    train_tokens = config.steps * config.train_batch_size * (config.train_seq_len - 1)
    evals = config.steps // config.eval_every + 1 + bool(config.steps % config.eval_every)
    eval_tokens = evals * eval_set.num_tokens
    variants = 2 if config.control else 1
    plain = cached = 0
    for layer in layers:
        above = sum(size[layer:]) + head  # forward from layer l, in multiply-adds per token
        backward = above + size[layer]
        cached += variants * (train_tokens * (above + backward) + eval_tokens * above)
        plain += variants * (train_tokens * (sum(size) + head + backward) + eval_tokens * (sum(size) + head))
    cached += train_tokens * sum(size[:max(layers)])  # the frozen prefix, once per batch
    return 2.0 * plain, 2.0 * cached


def chosen_layers(text: str) -> list[int]:
    """A comma-separated list of layers, or a count N: N of the study's layers spread over its depth."""
    if "," not in text and text.strip().isdigit() and 0 < int(text) <= len(STUDY_LAYERS):
        picks = np.linspace(0, len(STUDY_LAYERS) - 1, int(text)).round().astype(int)
        return [STUDY_LAYERS[i] for i in dict.fromkeys(picks.tolist())]
    return [int(x) for x in text.split(",") if x.strip()]


def timed_recovery(loaded: LoadedModel, eval_set: EvalSet, config: RecoveryConfig, rows: torch.Tensor,
                   autocast: torch.dtype | None = None):
    """A whole `run_recovery` (baseline, caches, every variant) and its wall time, under `autocast` if given."""
    compute = LoadedModel(loaded.model, loaded.tokenizer, loaded.name, loaded.source, autocast=autocast).compute()
    start = time.perf_counter()
    with compute:
        result = run_recovery(loaded.model, eval_set, config, train_rows=rows)
    return time.perf_counter() - start, result


def cached_vs_plain(loaded: LoadedModel, eval_set: EvalSet, layers: list[int], rows: torch.Tensor,
                    base: RecoveryConfig) -> None:
    """One fine-tune at a time, no control: the plain loop (every step through the whole model) against the
    cached one (`--batch-variants 1`: the frozen prefix once per step for all layers, then layers l..N-1 per
    layer), each a whole `run_recovery` of every layer."""
    config = RecoveryConfig(**{**vars(base), "layers": layers, "control": False, "batch_variants": 1})
    plain_s, plain = timed_recovery(loaded, eval_set, RecoveryConfig(**{**vars(config), "cached": False}), rows)
    cached_s, cached = timed_recovery(loaded, eval_set, config, rows)
    print(f"plain:  {plain_s:8.1f} s (one fine-tune at a time through the whole model)")
    print(f"cached: {cached_s:8.1f} s (one fine-tune at a time; the frozen prefix once per step for all layers)")
    print(f"max relative PPL difference plain vs cached: {ppl_gap(plain, cached):.2e}")
    for label, steps in ((f"these {base.steps} steps", base.steps), ("the full protocol, 200 steps", 200)):
        work = matmul_flops(loaded.model, eval_set, layers, RecoveryConfig(**{**vars(config), "steps": steps}))
        print(f"work ratio (matmul work plain / cached: the most skipping the prefix can give), {label}: "
              f"{work[0] / work[1]:.2f}")
    print(f"speedup: {plain_s / cached_s:.2f}")


def ppl_gap(a, b) -> float:
    """The largest relative difference between two runs' recovery curves' PPLs."""
    return float(np.abs(a["recovery_curves"]["ppl"].to_numpy() / b["recovery_curves"]["ppl"].to_numpy() - 1).max())


def batched(loaded: LoadedModel, eval_set: EvalSet, layers: list[int], rows: torch.Tensor, base: RecoveryConfig,
            matmul_size: int) -> None:
    """The study's protocol (with controls): one by one in float32, batched in float32, batched under bf16."""
    config = RecoveryConfig(**{**vars(base), "layers": layers, "control": True})
    one_s, one = timed_recovery(loaded, eval_set, RecoveryConfig(**{**vars(config), "batch_variants": 1}), rows)
    f32_s, f32 = timed_recovery(loaded, eval_set, config, rows)
    bf16_s, bf16 = timed_recovery(loaded, eval_set, config, rows, torch.bfloat16)
    rates = {name: matmul_gflops(matmul_size, dtype=dtype) * 1e9
             for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    flops = matmul_flops(loaded.model, eval_set, layers, config)[1]
    print(f"{len(layers)} layers x (noised, sigma-0 control) = {2 * len(layers)} fine-tunes; batched "
          f"{bf16['batched']['per_batch']} per step in {bf16['batched']['passes']} pass(es)")
    print(f"one-by-one float32: {one_s:8.1f} s")
    print(f"batched float32:    {f32_s:8.1f} s ({one_s / f32_s:.2f}x; PPL max relative difference "
          f"{ppl_gap(f32, one):.1e})")
    print(f"batched bfloat16:   {bf16_s:8.1f} s (autocast; PPL max relative difference {ppl_gap(bf16, one):.1e})")
    print(f"{matmul_size}^3 matmul: float32 {rates['float32'] / 1e9:.1f} GFLOP/s, bfloat16 "
          f"{rates['bfloat16'] / 1e9:.1f} GFLOP/s")
    print(f"floor ({flops / 1e9:.1f} GFLOP of matmuls): float32 {flops / rates['float32']:.1f} s, bfloat16 "
          f"{flops / rates['bfloat16']:.1f} s; batched bfloat16 at {bf16_s * rates['bfloat16'] / flops:.2f}x its "
          "floor")
    print(f"batched speedup: {one_s / bf16_s:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--layers", default=",".join(map(str, STUDY_LAYERS)),
                    help="layers (0,14,29) or a count N of the study's layers spread over its depth")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--train-batch-size", type=int, default=RecoveryConfig.train_batch_size)
    ap.add_argument("--train-seq-len", type=int, default=RecoveryConfig.train_seq_len)
    ap.add_argument("--only", choices=["cached", "batched"], help="run one of the two comparisons")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP} (layers 1,2, 4 steps)")
    args = ap.parse_args()
    texts = default_eval_texts()
    if args.smoke:
        args.model, args.layers, args.steps, args.eval_every, args.train_seq_len = tiny_model_folder(), "1,2", 4, 2, 16
        texts = texts[:6]
    loaded = load_model(args.model)
    eval_set = EvalSet.from_texts(texts, loaded.tokenizer, name="default")
    rows = training_rows(loaded.tokenizer, args.train_seq_len, exclude=eval_set.texts)
    layers = chosen_layers(args.layers)
    base = RecoveryConfig(steps=args.steps, eval_every=args.eval_every, train_batch_size=args.train_batch_size,
                          train_seq_len=args.train_seq_len)
    print(f"threads {torch.get_num_threads()}, layers {','.join(map(str, layers))}, {args.steps} steps of "
          f"{args.train_batch_size}x{args.train_seq_len} tokens, PPL every {args.eval_every} steps on "
          f"{eval_set.num_tokens} eval tokens")
    if args.only != "batched":
        cached_vs_plain(loaded, eval_set, layers, rows, base)
    if args.only != "cached":
        batched(loaded, eval_set, layers, rows, base, 256 if args.smoke else 2048)


if __name__ == "__main__":
    main()
