"""Recovery tab: noise one layer, fine-tune it alone, watch the PPL come back (SPEC section 5).

A long job (minutes per layer on CPU), so it is refused on ZeroGPU, whose daily quota is minutes; the app's
defaults are one layer and 50 steps.
"""

from __future__ import annotations

from anatomy.experiments.recovery import EXPERIMENT

from .gpu import refuse_on_zero_gpu
from .tab import Tab

TAB = Tab(EXPERIMENT, plots={"recovery": "PPL during recovery"}, gpu_s=300, go_label="Run recovery",
          ui_defaults={"layers": "11", "steps": 50}, before_run=lambda config: refuse_on_zero_gpu("Recovery"),
          intro="Gaussian noise (sigma x std(W)) on each matrix of a layer, every other parameter frozen, AdamW on "
                "held-out modern English, the standard library's docstrings (never the evaluation text), PPL every "
                "few steps. Minutes per layer on a CPU; refused on ZeroGPU Spaces.")
build = TAB.build
