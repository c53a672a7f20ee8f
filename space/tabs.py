"""Every experiment tab of the app after the Study and Model tabs, in order: one `Tab` entry each (a dict of them
is a tab of sub-tabs), built by `space/tab.py` from the experiment's declaration. An experiment gets a tab by
one entry here; `space/ui.py` lays out the table.

Two tabs add a choice that the CLI makes with its flags: where manipulation's layer set, and pruning's block
influence and ablation D, come from. Their configs below are the experiments' own plus that choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from anatomy.errors import AnatomyError
from anatomy.experiments import (budget, importance, interventions, manipulate, plans, predictability, prune, recovery,
                                 spectral, structure)
from anatomy.options import option
from anatomy.plans import GRAMMAR

from . import tab_generate
from .gpu import refuse_on_zero_gpu
from .tab import Tab


@dataclass
class ManipulateInputs(manipulate.ManipulateConfig):
    """Manipulation's config plus the app's choice of layer set: the visitor's latest importance run (the CLI's
    `--importance`), an importance map computed now, or the layers typed here (the CLI's `--layers`)."""

    FROM_RUN: ClassVar[str] = "Redundant layers of my latest importance run"
    COMPUTE: ClassVar[str] = "Redundant layers of an importance map computed now"
    GIVEN: ClassVar[str] = "The layers typed here"
    SOURCES: ClassVar[tuple[str, ...]] = (FROM_RUN, COMPUTE, GIVEN)
    source: str = option(COMPUTE, "where the layer set comes from", label="Layer set", choices=SOURCES, cli=False)

    def __post_init__(self) -> None:
        if self.source != self.GIVEN:  # the textbox keeps its text, but only 'typed here' reads it
            self.layers = None

    def validate(self) -> None:
        super().validate()
        if self.source == self.GIVEN and not self.layers:
            raise AnatomyError("Type the layers to change (e.g. 10-12), or pick another layer set.")


@dataclass
class PruneInputs(prune.PruneConfig):
    """Pruning's config plus the app's choice of importance map, which the CLI makes with `--importance`."""

    FROM_RUN: ClassVar[str] = "Block influence and D of my latest importance run"
    COMPUTE: ClassVar[str] = "An importance map computed now"
    SOURCES: ClassVar[tuple[str, ...]] = (COMPUTE, FROM_RUN)
    source: str = option(COMPUTE, "where block influence and ablation D come from",
                         label="Block influence and ablation D from", choices=SOURCES, cli=False)


def from_latest_run(config: ManipulateInputs | PruneInputs) -> bool:
    """Whether the visitor chose their latest importance run (else one is computed, or not needed)."""
    return config.source == config.FROM_RUN


TABS: dict[str, Tab | dict[str, Tab]] = {
    # the layer importance map (SPEC section 1)
    "Importance": Tab(importance.EXPERIMENT, plots={"importance": "Degradation per layer"}, gpu_s=180,
                      go_label="Run importance map",
                      intro="Each layer in turn is ablated, the perplexity measured, and the layer classed by its "
                            "degradation D: Redundant < 10% <= Minor < 30% <= Important < 100% <= Critical."),
    # scale, noise, zero, neighbour-mean or skip chosen layers, with PPL and degradation
    "Interventions": Tab(interventions.EXPERIMENT, plots={"interventions": "Degradation"}, go_label="Run intervention",
                         intro="Change chosen layers in place, measure PPL and D, restore the weights "
                               "bit-identically. Scale takes alphas and noise takes sigmas (x std(W)), "
                               "comma-separated, one row each."),
    # zero / clone / blend / low-rank / scale the redundant layers all at once (SPEC section 4); the layer set
    # from ManipulateInputs.source
    "Manipulation": Tab(manipulate.EXPERIMENT, config=ManipulateInputs, from_session=from_latest_run,
                        plots={"manipulate": "PPL per strategy"}, gpu_s=240, go_label="Run manipulation",
                        ui_defaults={"layers": "10-12"},
                        intro="All chosen layers are changed together by each strategy in turn (restored in "
                              "between): zero; clone or blend the nearest layers outside the set; low-rank (their "
                              "singular vectors, the layer's own singular values); scale by each factor. Compare "
                              "generations in the Generate tab."),
    # remove K layers chosen by alpha, block influence, ablation or last (SPEC section 9). Removal happens inside
    # `layer_stack`, which puts the layers back before the model's lock is released. Saving the pruned model (the
    # CLI's --save) is left to the CLI: a model folder is too large for a download button.
    "Pruning": Tab(prune.EXPERIMENT, config=PruneInputs, from_session=from_latest_run,
                   plots={"prune": "PPL per pruned model"}, gpu_s=240, go_label="Run pruning",
                   intro="Each criterion ranks the layers once on the intact model; the K it rates least needed "
                         "leave the stack (layer_idx renumbered) and the PPL is measured. alpha = highest mean "
                         "power-law alpha, block_influence = lowest 1 - cos(in, out), ablation = lowest "
                         "single-layer D, last = the last K. To generate with a pruned model, give the Generate "
                         "tab a plan that leaves those layers out."),
    # SPEC section 8, "Transformer Layers as Painters". Plans never touch a weight: `apply_plan` swaps the layer
    # list and puts it back. The endpoint is /plans; /painters (and /stop_painters), its former name, is kept
    # as an alias for existing clients.
    "Layer plans": Tab(plans.EXPERIMENT, aliases=("painters",), gpu_s=300, go_label="Run layer plans",
                       plots={"painters_ppl": "PPL by middle-block size",
                              "painters_latency": "Decode latency by middle-block size"},
                       ui_defaults={"latency_repeats": 3}, notes={"Plan grammar": f"```\n{GRAMMAR}\n```"},
                       intro="Middle blocks of each size, centred, run skipped, reversed, shuffled, as their middle "
                             "layer repeated, in parallel (outputs averaged) or in parallel twice; your own plans "
                             "too. PPL, the built-in fact and arithmetic tasks, and decode/prefill latency paired "
                             "with the unchanged model. Paste any plan of the table into the Generate tab "
                             "(alteration 'plan') to read what it writes."),
    # structure, spectra and predictability of the weights (SPEC sections 2, 3 and 9), one sub-tab each
    "Weight space": {
        "Structure": Tab(structure.EXPERIMENT, go_label="Run structure",
                         plots={"delta_correlation": "Delta correlation", "pca_path": "PCA path",
                                "cosine_similarity": "Cosine similarity"},
                         intro="Correlation of consecutive layer deltas beside the -0.5 of independent layers and "
                               "a layer-shuffled control; PCA path of the layers; layer-by-layer cosine similarity."),
        "Spectral": Tab(spectral.EXPERIMENT, go_label="Run spectral", table=lambda result: result["components"],
                        plots={"depth_profiles": "Depth profiles", "singular_values": "Singular values"},
                        intro="Singular values, stable rank and the power-law alpha of every weight matrix, by "
                              "depth."),
        "Predictability": Tab(predictability.EXPERIMENT, go_label="Run predictability", gpu_s=240,
                              table=lambda result: result["summary"],
                              plots={"r2_by_layer": "R^2 by layer", "functional": "PPL with predicted layers"},
                              intro="Ridge regression predicts each layer's weights from the layers before it (R^2, "
                                    "cosine); then whole layers are replaced by predictions and the PPL measured."),
    },
    # noise one layer, fine-tune it alone, watch the PPL come back (SPEC section 5): minutes per layer on a CPU,
    # so refused on ZeroGPU, whose daily quota is minutes; the app's defaults are one layer and 50 steps
    "Recovery": Tab(recovery.EXPERIMENT, plots={"recovery": "PPL during recovery"}, gpu_s=300, go_label="Run recovery",
                    ui_defaults={"layers": "11", "steps": 50}, before_run=lambda config: refuse_on_zero_gpu("Recovery"),
                    intro="Gaussian noise (sigma x std(W)) on each matrix of a layer, every other parameter frozen, "
                          "AdamW on held-out modern English, the standard library's docstrings (never the evaluation "
                          "text), PPL every few steps. Minutes per layer on a CPU; refused on ZeroGPU Spaces."),
    # a training step budget per layer (SPEC section 6) from the run folders of the visitor's latest Importance
    # and Recovery runs, as `python -m anatomy budget --importance ... --recovery ...` reads them, or from their
    # tables given as JSON by an API client (the columns `run_budget` reads). Pure table work (milliseconds, no
    # model), so it needs neither the model's lock nor a Stop button.
    "Budget": Tab(budget.EXPERIMENT, plots={"budget": "Steps per layer"}, go_label="Compute the budget",
                  downloads={"budget.json": "Download the schedule (budget.json, for growth_models)"},
                  without={"recovery": "Class-only rules (no recovery run: the top of each class's range)"},
                  table_inputs={"importance": {"layer": "layer", "class": "text", "anti_layer_candidate": "flag"},
                                "recovery": {"layer": "layer", "noise_ppl": "number", "steps_to_*": "number",
                                             "final_ppl": "number", "final_ratio": "number", "steps": "number",
                                             "anti_layer_candidate": "flag"}},
                  intro="Steps per layer = R x B_max, R from the layer's importance class, its position and how "
                        "fast it recovered: anti-layers 0, boundary layers low, redundant layers that recover at "
                        "once almost nothing, critical layers the most. Uses your latest Importance and Recovery "
                        "runs on this page."),
    # the original and the altered model side by side: its own layout (space/tab_generate.py)
    "Generate": tab_generate.TAB,
}
