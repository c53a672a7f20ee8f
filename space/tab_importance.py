"""Importance tab: the layer importance map (SPEC section 1), the library's `importance` experiment."""

from __future__ import annotations

from anatomy.experiments.importance import EXPERIMENT

from .tab import Tab

TAB = Tab(EXPERIMENT, plots={"importance": "Degradation per layer"}, gpu_s=180, go_label="Run importance map",
          intro="Each layer in turn is ablated, the perplexity measured, and the layer classed by its degradation "
                "D: Redundant < 10% <= Minor < 30% <= Important < 100% <= Critical.")
build = TAB.build
