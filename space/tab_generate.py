"""Generate tab: the original and the altered model side by side, same prompt and seed, differing tokens marked."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from contextlib import AbstractContextManager

import gradio as gr
import pandas as pd
import torch

from anatomy.errors import AnatomyError
from anatomy.interventions import INTERVENTION_KINDS, intervention
from anatomy.layers import LayerAdapter, parse_layers
from anatomy.plans import apply_plan, parse_plan

from . import jobs
from .common import Shared, model_job, stop_button, wire_stop
from .gpu import gpu

MODES = {"greedy": {"do_sample": False},
         "sampled": {"do_sample": True, "temperature": 0.8, "top_p": 0.95}}
DIFFERS = "differs"
ALTERATIONS = (*INTERVENTION_KINDS, "plan")


@torch.no_grad()
def generate(model, tokenizer, prompt: str, *, max_new_tokens: int, seed: int, mode: str,
             use_cache: bool = True) -> list[int]:
    """New token ids for `prompt`; the global torch seed is set first, so equal seeds give equal samples."""
    if not prompt or not prompt.strip():
        raise AnatomyError("The prompt is empty: type a few words for the models to continue.")
    if not 1 <= max_new_tokens <= 512:
        raise AnatomyError(f"New tokens must be between 1 and 512, got {max_new_tokens}.")
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    torch.manual_seed(seed)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, use_cache=use_cache,
                         pad_token_id=tokenizer.pad_token_id, **MODES[mode])
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def side_by_side(model, tokenizer, prompt: str, alter: Callable[[], AbstractContextManager], *,
                 max_new_tokens: int = 40, seed: int = 0, use_cache_altered: bool = True,
                 progress: Callable[[int, int, str], None] | None = None) -> dict[str, dict[str, list[int]]]:
    """{mode: {"original": ids, "altered": ids}} for greedy and sampled decoding, same prompt and seed.

    `alter()` is entered only around the altered generations, so the weights are the original ones for
    the rest; skip and plan changes should pass `use_cache_altered=False` (the KV cache is indexed by layer).
    """
    result: dict[str, dict[str, list[int]]] = {}
    steps = [(mode, which) for mode in MODES for which in ("original", "altered")]
    for done, (mode, which) in enumerate(steps):
        if progress is not None:
            progress(done, len(steps), f"generating ({mode}, {which})")
        kwargs = dict(max_new_tokens=max_new_tokens, seed=seed, mode=mode)
        if which == "original":
            ids = generate(model, tokenizer, prompt, **kwargs)
        else:
            with alter():
                ids = generate(model, tokenizer, prompt, use_cache=use_cache_altered, **kwargs)
        result.setdefault(mode, {})[which] = ids
    return result


def highlight(tokenizer, original: list[int], altered: list[int]) -> tuple[list, list]:
    """HighlightedText values for both sides: tokens outside the longest common blocks are marked."""
    sides: tuple[list, list] = ([], [])
    matcher = difflib.SequenceMatcher(a=original, b=altered, autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        label = None if tag == "equal" else DIFFERS
        for side, ids in ((0, original[a0:a1]), (1, altered[b0:b1])):
            for token in ids:
                sides[side].append((tokenizer.decode([token]), label))
    return sides


def difference_table(tokenizer, outputs: dict[str, dict[str, list[int]]]) -> pd.DataFrame:
    rows = []
    for mode, pair in outputs.items():
        a, b = pair["original"], pair["altered"]
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))
        rows.append({"mode": mode, "tokens_original": len(a), "tokens_altered": len(b),
                     "tokens_differing": sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b)),
                     "first_difference_at": first})
    return pd.DataFrame(rows)


@gpu(duration=60)
@jobs.user_errors
def run(spec: str, prompt: str, kind: str, layers: str, value: float, seed: float, max_new_tokens: float,
        request: gr.Request, oauth_token: gr.OAuthToken | None = None, progress=gr.Progress()) -> tuple:
    with model_job(spec, request, progress, token=oauth_token) as job:
        model, tokenizer = job.loaded.model, job.loaded.tokenizer
        adapter = LayerAdapter(model)
        if kind == "plan":  # apply_plan gives every step its own KV-cache slot, so the cache stays on
            plan = parse_plan(layers, adapter.num_layers)
            alter = lambda: apply_plan(model, plan)  # noqa: E731
        else:
            chosen = parse_layers(layers, adapter.num_layers) if kind != "none" else []
            alter = lambda: intervention(adapter, kind, chosen, alpha=value, sigma=value, seed=int(seed))  # noqa: E731
        outputs = side_by_side(model, tokenizer, prompt, alter, max_new_tokens=int(max_new_tokens), seed=int(seed),
                               use_cache_altered=kind != "skip", progress=job.progress)
    greedy = highlight(tokenizer, **outputs["greedy"])
    sampled = highlight(tokenizer, **outputs["sampled"])
    return (*greedy, *sampled, difference_table(tokenizer, outputs))


def build(shared: Shared) -> None:
    gr.Markdown("The same prompt and seed through the original and the altered model; tokens that differ are "
                "marked. The weights are altered only while the altered side generates, then restored.")
    prompt = gr.Textbox("The capital of France is", label="Prompt", lines=2)
    with gr.Row():
        kind = gr.Dropdown(list(ALTERATIONS), value="scale", label="Alteration (an intervention or a layer plan)")
        layers = gr.Textbox("10-12", label="Layers (0-based), or a plan such as 0-9,[10-13]x2,14-29")
        value = gr.Number(0.5, label="Value (alpha for scale, sigma for noise)")
        seed = gr.Number(0, precision=0, label="Seed")
        max_new = gr.Slider(1, 128, value=30, step=1, label="New tokens")
    with gr.Row():
        go = gr.Button("Generate side by side", variant="primary")
        stop = stop_button()
    colours = {DIFFERS: "#f4a3a3"}
    outputs = []
    for mode in MODES:
        with gr.Row():
            for which in ("original", "altered"):
                outputs.append(gr.HighlightedText(label=f"{which.capitalize()} ({mode})", color_map=colours,
                                                  combine_adjacent=True, show_legend=False,
                                                  show_inline_category=False,
                                                  elem_id=f"gen-{mode}-{which}"))
    table = gr.Dataframe(label="Differences", interactive=False)
    event = go.click(run, [shared.model, prompt, kind, layers, value, seed, max_new], [*outputs, table],
                     api_name="generate", concurrency_id="model")
    wire_stop(stop, [event], "generate")
