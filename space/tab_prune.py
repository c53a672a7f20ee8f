"""Pruning tab: remove K layers chosen by alpha, block influence, ablation or last; compare PPL (SPEC section 9).

The library's `prune` experiment. Removal happens inside `layer_stack`, which puts the layers back before
the model's lock is released. Saving the pruned model (the CLI's `--save`) is left to the CLI: a model
folder is too large for a download button.
"""

from __future__ import annotations

from dataclasses import dataclass

from anatomy.experiments.prune import EXPERIMENT, PruneConfig
from anatomy.options import option

from .tab import Tab

FROM_RUN = "Block influence and D of my latest importance run"
COMPUTE = "An importance map computed now"
SOURCES = (COMPUTE, FROM_RUN)


@dataclass
class PruneInputs(PruneConfig):
    """The experiment's config plus the app's choice of importance map, which the CLI makes with --importance."""

    source: str = option(COMPUTE, "where block influence and ablation D come from",
                         label="Block influence and ablation D from", choices=SOURCES, cli=False)


TAB = Tab(EXPERIMENT, config=PruneInputs, from_session=lambda config: config.source == FROM_RUN,
          plots={"prune": "PPL per pruned model"}, gpu_s=240, go_label="Run pruning",
          intro="Each criterion ranks the layers once on the intact model; the K it rates least needed leave the "
                "stack (layer_idx renumbered) and the PPL is measured. alpha = highest mean power-law alpha, "
                "block_influence = lowest 1 - cos(in, out), ablation = lowest single-layer D, last = the last K. "
                "To generate with a pruned model, give the Generate tab a plan that leaves those layers out.")
build = TAB.build
