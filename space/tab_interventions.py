"""Interventions tab: scale, noise, zero, neighbour-mean or skip chosen layers, with PPL and degradation (the
library's `interventions` experiment)."""

from __future__ import annotations

from anatomy.experiments.interventions import EXPERIMENT

from .tab import Tab

TAB = Tab(EXPERIMENT, plots={"interventions": "Degradation"}, go_label="Run intervention",
          intro="Change chosen layers in place, measure PPL and D, restore the weights bit-identically. "
                "Scale takes alphas and noise takes sigmas (x std(W)), comma-separated, one row each.")
build = TAB.build
