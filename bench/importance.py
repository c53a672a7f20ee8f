"""Benchmark: the product's importance map vs two plain references, side by side in one process.

Reference = what a throwaway notebook does: deepcopy the model for every layer, overwrite the layer's
seven matrices with the mean of its neighbours, and run the full model one text at a time.
Batched reference = what a competent notebook does: the evaluator's own padded batches (attention mask,
-100 on padding), one in-place neighbour-mean swap per layer (copied back after), a full forward per
batch and Hugging Face's logits with a summed cross-entropy. Product = `run_importance` (in-place edit +
restore, prefix activation cache, texts packed several to a row where the model allows it, head on
vocabulary blocks). All use the same evaluation set; their PPLs must agree within 1e-4 (relative).

    python bench/importance.py                   # all 30 layers of the embedded model, default eval set
    python bench/importance.py --layers 0,10,20  # a quicker subset
    python bench/importance.py --breakdown       # also time the product without each of its ideas
    python bench/importance.py --smoke           # seconds, on a tiny random model (breakdown included)

Prints `speedup: <ratio>` (vs the reference) and `speedup vs batched: <ratio>`, and the product's achieved
GFLOP/s beside a 2048^3 float32 matmul's, and the time the product's matmul work alone would take at that
matmul's rate: the floor for this machine. `--breakdown` times the product with padded rows instead of
packed ones, with the whole vocabulary in one head block, and without the prefix cache (the product's
full-forward path), so each idea's share of the gain over the batched reference is measured, not guessed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anatomy import evaluate  # noqa: E402
from anatomy.evaluate import IGNORE, EvalSet, perplexity, replay_batches  # noqa: E402
from anatomy.experiments.importance import ImportanceConfig, run_importance  # noqa: E402
from anatomy.interventions import neighbours  # noqa: E402
from anatomy.layers import LayerAdapter, parse_layers  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from bench.smoke import SMOKE_HELP, tiny_model_folder  # noqa: E402


@torch.no_grad()
def reference_ppl(model, tokenizer, texts: list[str]) -> float:
    nll, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        loss = model(ids, labels=ids, use_cache=False).loss.item()
        nll += loss * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return math.exp(nll / count)


@torch.no_grad()
def reference_map(model, tokenizer, texts: list[str], layers: list[int]) -> dict[int, float]:
    out = {}
    kinds = LayerAdapter(model).kinds
    for layer in layers:
        clone = copy.deepcopy(model)
        adapter = LayerAdapter(clone)
        for ref in adapter.layer_components(layer):
            sources = [adapter.component(s, ref.component).weight for s in neighbours(layer, kinds)]
            ref.weight.copy_(torch.stack(sources).mean(0))
        out[layer] = reference_ppl(clone, tokenizer, texts)
        del clone
    return out


@torch.no_grad()
def batched_reference_map(model, eval_set: EvalSet, layers: list[int]) -> dict[int, float]:
    """Per layer: swap in the neighbour mean in place, run the padded batches through the full model, put
    the weights back. The only product code used is the batch layout, so both sides do the same rows."""
    out = {}
    adapter = LayerAdapter(model)
    for layer in layers:
        refs = adapter.layer_components(layer)
        saved = [ref.weight.clone() for ref in refs]
        for ref in refs:
            sources = [adapter.component(s, ref.component).weight for s in neighbours(layer, adapter.kinds)]
            ref.weight.copy_(torch.stack(sources).mean(0))
        nll, count = 0.0, 0
        for batch in eval_set.batches:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            nll += F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=IGNORE,
                                   reduction="sum").item()
            count += int((batch.targets != IGNORE).sum())
        for ref, weight in zip(refs, saved):
            ref.weight.copy_(weight)
        assert count == eval_set.num_tokens
        out[layer] = math.exp(nll / count)
    return out


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def breakdown(model, eval_set: EvalSet, layers: list[int], t_product: float, t_batched: float) -> None:
    """The product with one idea at a time taken away; each line's time minus the product's is that idea's share."""
    config = ImportanceConfig(layers=layers)
    padded = dataclasses.replace(eval_set, packed_batches=[])
    t_padded, _ = timed(lambda: run_importance(model, padded, config))
    whole_vocab = functools.partial(evaluate.token_nll, block=model.get_output_embeddings().weight.shape[0])
    blockwise, evaluate.token_nll = evaluate.token_nll, whole_vocab
    try:
        t_one_block, _ = timed(lambda: run_importance(model, eval_set, config))
    finally:
        evaluate.token_nll = blockwise
    t_no_cache, _ = timed(lambda: run_importance(model, eval_set, dataclasses.replace(config, use_prefix_cache=False)))
    print(f"product, padded rows instead of packed:   {t_padded:8.2f} s (packing saves {t_padded - t_product:.1f} s)")
    print(f"product, whole vocabulary in one block:   {t_one_block:8.2f} s "
          f"(blockwise head saves {t_one_block - t_product:.1f} s)")
    print(f"product, no prefix cache (full forwards): {t_no_cache:8.2f} s "
          f"(batched reference {t_batched:.2f} s: same work, the product's own full-forward path)")


def matmul_gflops(size: int = 2048, repeats: int = 5, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)  # GPU matmuls run async
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def product_flops(model, eval_set: EvalSet, layers: list[int]) -> float:
    """Matmul FLOPs of the product's work: one pass through the layers for the cache and, per ablation of
    layer l, layers l..N-1 on the rows the cache replays (packed or padded) plus the head on the predicted
    positions (baseline too)."""
    adapter = LayerAdapter(model)
    batches = replay_batches(model, eval_set)
    per_layer = [sum(p.numel() for n, p in layer.named_parameters() if p.dim() == 2) for layer in adapter.layers]
    head = model.get_output_embeddings().weight.numel()
    slots = sum(b.input_ids.numel() for b in batches)
    attention = sum(4 * b.input_ids.shape[0] * b.input_ids.shape[1] ** 2 * model.config.hidden_size
                    for b in batches)
    head_flops = 2 * eval_set.num_tokens * head
    cache = 2 * slots * sum(per_layer) + attention * adapter.num_layers + head_flops
    return cache + sum(2 * slots * sum(per_layer[l:]) + attention * (adapter.num_layers - l) + head_flops
                       for l in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--layers", help="0-based layers to ablate (default: all)")
    parser.add_argument("--texts", type=int, default=48, help="number of default sentences (default 48)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the product with padded rows, one head block, and no prefix cache")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP} (6 texts, with --breakdown)")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.texts, args.breakdown = tiny_model_folder(), 6, True

    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    texts = default_eval_texts()[:args.texts]
    layers = parse_layers(args.layers, model.config.num_hidden_layers)
    eval_set = EvalSet.from_texts(texts, tokenizer, name="default")
    print(f"model {loaded.name}: {len(layers)} layers ablated, {len(texts)} texts, {eval_set.num_tokens} tokens, "
          f"{torch.get_num_threads()} threads")

    perplexity(model, eval_set)  # untimed warm-ups: no side pays the process's first-call costs
    run_importance(model, eval_set, ImportanceConfig(layers=layers[:1]))
    t_product, product = timed(lambda: run_importance(model, eval_set, ImportanceConfig(layers=layers)))
    t_batched, batched = timed(lambda: batched_reference_map(model, eval_set, layers))
    t_reference, reference = timed(lambda: reference_map(model, tokenizer, texts, layers))

    ppl = product.table.set_index("layer")["ppl"]
    worst = max(abs(ppl[l] / ref[l] - 1) for ref in (reference, batched) for l in layers)
    print(f"product:           {t_product:8.2f} s")
    print(f"batched reference: {t_batched:8.2f} s (in-place swap, the evaluator's padded batches, full forwards)")
    print(f"reference:         {t_reference:8.2f} s (deepcopy per layer, one text at a time)")
    print(f"max relative PPL difference: {worst:.2e} ({'OK' if worst < 1e-4 else 'MISMATCH'} at 1e-4)")
    if args.breakdown:
        breakdown(model, eval_set, layers, t_product, t_batched)
    size = 256 if args.smoke else 2048
    flops, peak = product_flops(model, eval_set, layers), matmul_gflops(size) * 1e9
    print(f"product achieved: {flops / t_product / 1e9:.1f} GFLOP/s; {size}^3 float32 matmul: {peak / 1e9:.1f} GFLOP/s")
    print(f"product's matmul work at the matmul's rate: {flops / peak:.2f} s, so at most "
          f"{t_reference * peak / flops:.2f}x the reference on this machine")
    print(f"speedup: {t_reference / t_product:.2f}   speedup vs batched: {t_batched / t_product:.2f}")


if __name__ == "__main__":
    main()
