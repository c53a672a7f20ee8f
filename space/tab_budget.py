"""Budget tab: a training step budget per layer from this session's importance and recovery runs (SPEC section 6).

The library's `budget` experiment, read from the run folders of the user's latest Importance and Recovery
runs, as `python -m anatomy budget --importance ... --recovery ...` reads them. Pure table work (milliseconds,
no model), so it needs neither the model's lock nor a Stop button.
"""

from __future__ import annotations

from anatomy.experiments.budget import EXPERIMENT

from .tab import Tab

TAB = Tab(EXPERIMENT, plots={"budget": "Steps per layer"}, go_label="Compute the budget",
          downloads={"budget.json": "Download the schedule (budget.json, for growth_models)"},
          without={"recovery": "Class-only rules (no recovery run: the top of each class's range)"},
          intro="Steps per layer = R x B_max, R from the layer's importance class, its position and how fast it "
                "recovered: anti-layers 0, boundary layers low, redundant layers that recover at once almost "
                "nothing, critical layers the most. Uses your latest Importance and Recovery runs on this page.")
build = TAB.build
