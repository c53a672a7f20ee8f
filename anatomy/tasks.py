"""The layer plans' other axis: a small built-in task set scored by exact next-token match.

`anatomy/data/tasks.json` holds 30 fill-in-the-blank facts and 30 two-digit additions (with a three-line
few-shot prefix). An item counts as correct when greedy decoding would produce every answer token: one
teacher-forced forward, argmax at each answer position equal to the answer token. The SmolLM2 tokenizer
splits numbers into single digits, so an addition is right only if both digits are; a fact answer is one
word token. Prompt and answer are tokenised separately and concatenated so the answer positions are exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import AnatomyError


@dataclass
class TaskItems:
    """One kind of task, tokenised: prompt ids and answer ids per item."""

    name: str
    prompts: list[list[int]]
    answers: list[list[int]]


def load_tasks(tokenizer: PreTrainedTokenizerBase, path: str | None = None) -> list[TaskItems]:
    """The built-in task set (or a JSON file of the same shape), tokenised for `tokenizer`."""
    if path is None:
        text = resources.files("anatomy").joinpath("data/tasks.json").read_text(encoding="utf-8")
    else:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    tasks = []
    for name, spec in json.loads(text)["tasks"].items():
        prompts, answers = [], []
        for item in spec["items"]:
            prompts.append(tokenizer(spec.get("prefix", "") + item["prompt"])["input_ids"])
            answers.append(tokenizer(item["answer"], add_special_tokens=False)["input_ids"])
        if not prompts or not all(answers):
            raise AnatomyError(f"Task '{name}' has no items or an empty answer.")
        tasks.append(TaskItems(name, prompts, answers))
    return tasks


def task_accuracy(model: PreTrainedModel, tasks: list[TaskItems], pad_id: int = 0) -> dict[str, float]:
    """Exact-match accuracy per task kind (one right-padded forward per kind)."""
    return {name: sum(right) / len(right) for name, right in task_correct(model, tasks, pad_id).items()}


@torch.no_grad()
def task_correct(model: PreTrainedModel, tasks: list[TaskItems], pad_id: int = 0) -> dict[str, list[bool]]:
    """Whether each item of each task kind is answered exactly, in the items' order: what a paired bootstrap
    over items resamples."""
    device = next(model.parameters()).device
    scores = {}
    for task in tasks:
        rows = [p + a for p, a in zip(task.prompts, task.answers)]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        predicted = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits.argmax(-1)
        scores[task.name] = [predicted[r, len(prompt) - 1:len(prompt) - 1 + len(answer)].tolist() == answer
                             for r, (prompt, answer) in enumerate(zip(task.prompts, task.answers))]  # the logit at
        # position t predicts token t+1
    return scores
