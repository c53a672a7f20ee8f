"""Layer-plans tab: the library's `plans` experiment (SPEC section 8, "Transformer Layers as Painters").

Plans never touch a weight: `apply_plan` swaps the layer list and puts it back. Every row's plan text works
in the Generate tab. The endpoint is `/plans`; `/painters` (and `/stop_painters`), its former name, is kept as an
alias for existing clients.
"""

from __future__ import annotations

from anatomy.experiments.plans import EXPERIMENT
from anatomy.plans import GRAMMAR

from .tab import Tab

TAB = Tab(EXPERIMENT, aliases=("painters",), gpu_s=300, go_label="Run layer plans",
          plots={"painters_ppl": "PPL by middle-block size", "painters_latency": "Decode latency by middle-block size"},
          ui_defaults={"latency_repeats": 3}, notes={"Plan grammar": f"```\n{GRAMMAR}\n```"},
          intro="Middle blocks of each size, centred, run skipped, reversed, shuffled, as their middle layer "
                "repeated, in parallel (outputs averaged) or in parallel twice; your own plans too. PPL, the "
                "built-in fact and arithmetic tasks, and decode/prefill latency paired with the unchanged model. "
                "Paste any plan of the table into the Generate tab (alteration 'plan') to read what it writes.")
build = TAB.build
