"""Greedy generations on fixed prompts, for the comparison's generation table."""

from __future__ import annotations

import torch

PROMPTS = [
    "ROMEO.", "To be, or not to be", "My lord,", "The king is", "What is", "O, ",
    "I will", "Enter", "Good morrow", "Thou art", "Now is the winter", "The capital of France is",
]


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[str] = PROMPTS, max_new_tokens: int = 20) -> list[str]:
    """Continuation (without the prompt) of each prompt, greedy, KV cache on; one prompt at a time
    so that no padding enters the comparison."""
    model.eval()
    out = []
    for p in prompts:
        ids = tokenizer(p, return_tensors="pt").input_ids.to(model.device)
        gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
        out.append(tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out
