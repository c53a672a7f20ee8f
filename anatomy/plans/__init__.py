"""Layer plans ("Transformer Layers as Painters", SPEC section 8): run a frozen model's decoder layers
skipped, reordered, repeated or in parallel, without touching a weight; copy or save a plan as a model.

One job a module: `grammar` (the `Plan`, its text form `parse_plan`/`GRAMMAR`, the painters variants),
`execution` (`apply_plan` in place, its KV-cache and config edits), `batched` (a parallel group of
Llama-family layers as one call), `export` (a plan as an independent model or a saved folder). Removing
or reordering layers (`anatomy.surgery`) is a plan of single steps. The names below are the public API.
"""

from .batched import BatchedLlamaGroup, can_batch
from .execution import PlanStep, SequentialGroup, apply_plan, plan_refusal
from .export import export_plan, plan_copy, save_model
from .grammar import GRAMMAR, MAX_STEPS_PER_LAYER, VARIANTS, Plan, Step, middle_block, parse_plan, variant_plan

__all__ = ["GRAMMAR", "MAX_STEPS_PER_LAYER", "VARIANTS", "BatchedLlamaGroup", "Plan", "PlanStep", "SequentialGroup",
           "Step", "apply_plan", "can_batch", "export_plan", "middle_block", "parse_plan", "plan_copy",
           "plan_refusal", "save_model", "variant_plan"]
