"""Benchmark: task scoring through lm-evaluation-harness against the hand-written scorer, on the same items.

The items are the shipped lm-eval tasks' (anatomy/data/lm_eval_tasks/*.jsonl, 200 additions and 124 facts).
Hand-written = `task_accuracy` below (the layer plans' scorer before they used lm-eval): one right-padded forward
per task over all its items, correct when the argmax at every answer position is the answer token. lm-eval = `anatomy.lm_eval_tasks.score_tasks` (HFLM on the model in memory, its requests
in batches of BATCH_SIZE, the task manager, the documents, the metrics and their stderr included). Each is
timed after one warm-up run of both; the accuracies are printed beside the times (the two tokenise an item
differently: the hand-written scorer prompt and answer apart, lm-eval their concatenation).

    python bench/tasks.py                  # the embedded model
    python bench/tasks.py --batch-size 1   # lm_eval's own default batch size
    python bench/tasks.py --smoke          # seconds: the tiny random model

Prints `lm-eval / hand-written: <ratio>` (target: within 1.5).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anatomy.lm_eval_tasks import BATCH_SIZE, SHIPPED, SHIPPED_ITEMS, score_tasks, task_folder  # noqa: E402
from anatomy.load import load_model  # noqa: E402
from bench.smoke import SMOKE_HELP, tiny_model_folder  # noqa: E402


def shipped_items(tokenizer: PreTrainedTokenizerBase) -> dict[str, tuple[list[list[int]], list[list[int]]]]:
    """Per shipped task, its prompts' and answers' token ids, tokenised apart so the answer positions are exact."""
    items = {}
    for task in SHIPPED:
        with open(task_folder() / SHIPPED_ITEMS[task], encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        items[task] = ([tokenizer(r["prompt"])["input_ids"] for r in rows],
                       [tokenizer(r["answer"], add_special_tokens=False)["input_ids"] for r in rows])
    return items


@torch.no_grad()
def task_accuracy(model: PreTrainedModel, items: dict[str, tuple[list[list[int]], list[list[int]]]],
                  pad_id: int) -> dict[str, float]:
    """Exact-match accuracy per task: one right-padded forward over all of a task's items; an item is right
    when the argmax at every answer position is the answer token (the logit at t predicts token t+1)."""
    accuracy = {}
    for task, (prompts, answers) in items.items():
        rows = [p + a for p, a in zip(prompts, answers)]
        ids = torch.full((len(rows), max(map(len, rows))), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
        predicted = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.argmax(-1)
        right = [predicted[r, len(p) - 1:len(p) - 1 + len(a)].tolist() == a
                 for r, (p, a) in enumerate(zip(prompts, answers))]
        accuracy[task] = sum(right) / len(right)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = parser.parse_args()
    if args.smoke:
        args.model = tiny_model_folder()
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    items = shipped_items(tokenizer)
    pad_id = tokenizer.pad_token_id or 0

    def hand_written() -> dict[str, float]:
        return task_accuracy(model, items, pad_id)

    def through_lm_eval() -> dict[str, float]:
        scores = score_tasks(model, tokenizer, SHIPPED, batch_size=args.batch_size)
        return {task: scores.value(task) for task in SHIPPED}

    hand_written(), through_lm_eval()  # warm-up: first forwards, lm-eval's imports and task index
    times = {}
    for name, run in (("hand-written", hand_written), ("lm-eval", through_lm_eval)):
        start = time.perf_counter()
        accuracy = run()
        times[name] = time.perf_counter() - start
        print(f"{name}: {times[name]:.1f} s, " + ", ".join(f"{t} {a:.3f}" for t, a in accuracy.items()))
    print(f"lm-eval / hand-written: {times['lm-eval'] / times['hand-written']:.2f} "
          f"(lm-eval batch size {args.batch_size})")


if __name__ == "__main__":
    main()
