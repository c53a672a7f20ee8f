"""A checkpoint folder anyone can load: weights, code, tokenizer, curves, plan and a model card.

`save_pretrained` writes `model.safetensors` and a config whose `auto_map` points at the two
flat code files it copies beside them, so `AutoModelForCausalLM.from_pretrained(folder,
trust_remote_code=True)` needs nothing of this project.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .curves import save_curves
from .modeling_growth import GrowthForCausalLM
from .plan import ROLE_NAMES, GrowthPlan


def layer_parameter_counts(model: GrowthForCausalLM) -> list[int]:
    """Parameters of each decoder layer (attention, two norms, SwiGLU FFN), 0-based order."""
    return [sum(p.numel() for p in layer.parameters()) for layer in model.model.layers]


def total_parameters(model: GrowthForCausalLM) -> int:
    """All distinct parameters; the tied LM head is counted once."""
    return sum(p.numel() for p in model.parameters())


def model_card(model: GrowthForCausalLM, schedule: str, val_loss: float, dataset: str, summary: str) -> ModelCard:
    """A `huggingface_hub` ModelCard with metadata and model-index results (loss, perplexity)."""
    name = f"growth-transformer-{schedule}"
    data = ModelCardData(
        language="en", license="apache-2.0", library_name="transformers", pipeline_tag="text-generation",
        tags=["growth-transformer", "transformer-anatomy", "custom_code", schedule],
        datasets=[dataset], model_name=name,
        eval_results=[
            EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=f"{dataset} (validation split)",
                       metric_type="loss", metric_value=round(val_loss, 4), metric_name="validation loss (nats/token)"),
            EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=f"{dataset} (validation split)",
                       metric_type="perplexity", metric_value=round(math.exp(val_loss), 3), metric_name="validation perplexity"),
        ],
    )
    cfg = model.config
    roles = cfg.layer_roles or ["?"] * cfg.num_hidden_layers
    layer_rows = "\n".join(f"| {i} | {r} ({ROLE_NAMES.get(r, r)}) | {w} | {n:,} |" for i, (r, w, n) in
                           enumerate(zip(roles, cfg.intermediate_sizes, layer_parameter_counts(model))))
    content = f"""---
{data.to_yaml()}
---

# {name}

A {cfg.num_hidden_layers}-layer decoder from the Transformer Anatomy project's `growth_models` (hidden {cfg.hidden_size},
RMSNorm, SwiGLU, RoPE, tied embeddings), trained with the **{schedule}** schedule.
{summary}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("REPO_OR_FOLDER", trust_remote_code=True)
tok = AutoTokenizer.from_pretrained("REPO_OR_FOLDER")
out = model.generate(**tok("ROMEO.", return_tensors="pt"), max_new_tokens=40, do_sample=False)
print(tok.decode(out[0]))
```

Validation loss {val_loss:.4f} nats/token (perplexity {math.exp(val_loss):.2f}), token-weighted over
full-length held-out chunks. Parameters: {total_parameters(model):,} in all,
{sum(layer_parameter_counts(model)):,} in the decoder layers.

| layer (0-based) | role | FFN width | parameters |
|---|---|---|---|
{layer_rows}

Files: `model.safetensors`, `config.json` (with `auto_map`), `configuration_growth.py`,
`modeling_growth.py`, tokenizer files, `curves.png`, `history.csv`, `growth_plan.json`.
"""
    return ModelCard(content)


def save_checkpoint(out: Path, model: GrowthForCausalLM, tokenizer, history: pd.DataFrame, plan: GrowthPlan | None,
                    schedule: str, dataset: str, summary: str) -> Path:
    """Write the full artefact folder and return it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    history.to_csv(out / "history.csv", index=False)
    save_curves(history.assign(config=schedule), out / "curves.png")
    if plan is not None:
        (out / "growth_plan.json").write_text(plan.to_json())
    val = float(history["val_loss"].dropna().iloc[-1])
    model_card(model, schedule, val, dataset, summary).save(out / "README.md")
    return out
