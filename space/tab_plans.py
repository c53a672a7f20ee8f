"""Layer-plans tab: skip, reverse, shuffle, repeat or parallelise middle blocks, plus the user's own plans
(SPEC section 8, "Transformer Layers as Painters").

The same `run_painters`, figures and report as `python -m anatomy painters`. Plans never touch a weight:
`apply_plan` swaps the layer list and puts it back. Every row's plan text works in the Generate tab.
"""

from __future__ import annotations

import gradio as gr

from anatomy.cli import parse_ints
from anatomy.errors import AnatomyError
from anatomy.experiments.painters import PaintersConfig, painters_artefacts, run_painters
from anatomy.plans import GRAMMAR, VARIANTS

from . import jobs
from .common import Shared, model_job, result_components, run_outputs, stop_button, wire_job
from .gpu import gpu


@gpu(duration=300)
@jobs.user_errors
def run(spec: str, n_sentences: float, custom_text: str, max_length: float, variants: list[str], block_sizes: str,
        plans: str, loops: float, seed: float, latency_repeats: float, latency_tokens: float, batched: bool,
        tasks: bool, state: dict | None, request: gr.Request, oauth_token: gr.OAuthToken | None = None,
        progress=gr.Progress()) -> tuple:
    """PPL, task accuracy and paired latency for every variant and plan; the layer list is restored after each."""
    own = [line.strip() for line in plans.splitlines() if line.strip()]
    sizes = parse_ints(block_sizes, "Block sizes") if block_sizes.strip() else ()
    if not own and not (variants and sizes):
        raise AnatomyError("Nothing to run: choose variants and block sizes, or type a plan.")
    config = PaintersConfig(variants=tuple(variants), block_sizes=sizes, loops=int(loops), seed=int(seed),
                            plans=own, latency_repeats=int(latency_repeats), latency_tokens=int(latency_tokens),
                            batched=bool(batched), tasks=bool(tasks))
    with model_job(spec, request, progress, (n_sentences, custom_text, max_length), token=oauth_token) as job:
        df = run_painters(job.loaded.model, job.eval_set, config, progress=job.progress,
                          tokenizer=job.loaded.tokenizer)
    return run_outputs(request, "painters", job, config, df, df,
                       painters_artefacts(df, job.loaded, job.eval_set, config), state)


def build(shared: Shared) -> None:
    gr.Markdown("Middle blocks of each size, centred, run skipped, reversed, shuffled, as their middle layer "
                "repeated, in parallel (outputs averaged) or in parallel twice; your own plans too. PPL, the "
                "built-in fact and arithmetic tasks, and decode/prefill latency paired with the unchanged model. "
                "Paste any plan of the table into the Generate tab (alteration 'plan') to read what it writes.")
    with gr.Row():
        variants = gr.CheckboxGroup(list(VARIANTS), value=list(VARIANTS), label="Variants")
        block_sizes = gr.Textbox("2,4,8", label="Middle-block sizes (empty: only your plans)")
        plans = gr.Textbox("", lines=2, label="Your plans, one a line, e.g. 0-12,[13-16]x2,17-29")
    with gr.Row():
        loops = gr.Number(2, precision=0, label="Loops of looped-parallel")
        seed = gr.Number(0, precision=0, label="Shuffle seed")
        latency_repeats = gr.Number(3, precision=0, label="Timed runs per row (CLI: 5)")
        latency_tokens = gr.Number(16, precision=0, label="Tokens per decode run")
        batched = gr.Checkbox(True, label="Parallel groups as one batched call (Llama family)")
        tasks = gr.Checkbox(True, label="Fact and arithmetic tasks")
    with gr.Accordion("Plan grammar", open=False):
        gr.Markdown(f"```\n{GRAMMAR}\n```")
    with gr.Row():
        go, stop = gr.Button("Run layer plans", variant="primary"), stop_button()
    outputs = result_components("painters", ["PPL by middle-block size", "Decode latency by middle-block size"])
    wire_job("painters", run, [*shared.eval_inputs, variants, block_sizes, plans, loops, seed, latency_repeats,
                               latency_tokens, batched, tasks], outputs, shared, go, stop)
