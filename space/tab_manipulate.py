"""Manipulation tab: zero / clone / blend / low-rank / scale the redundant layers all at once (SPEC section 4).

The library's `manipulate` experiment; the layer set comes from the visitor's latest importance run (the
CLI's `--importance`), an importance map computed now, or the layers typed here (the CLI's `--layers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from anatomy.errors import AnatomyError
from anatomy.experiments.manipulate import EXPERIMENT, ManipulateConfig
from anatomy.options import option

from .tab import Tab

FROM_RUN = "Redundant layers of my latest importance run"
COMPUTE = "Redundant layers of an importance map computed now"
GIVEN = "The layers typed here"
SOURCES = (FROM_RUN, COMPUTE, GIVEN)


@dataclass
class ManipulateInputs(ManipulateConfig):
    """The experiment's config plus the app's choice of layer set, which the CLI makes with its flags."""

    source: str = option(COMPUTE, "where the layer set comes from", label="Layer set", choices=SOURCES, cli=False)

    def __post_init__(self) -> None:
        if self.source != GIVEN:  # the textbox keeps its text, but only 'typed here' reads it
            self.layers = None

    def validate(self) -> None:
        super().validate()
        if self.source == GIVEN and not self.layers:
            raise AnatomyError("Type the layers to change (e.g. 10-12), or pick another layer set.")


TAB = Tab(EXPERIMENT, config=ManipulateInputs, from_session=lambda config: config.source == FROM_RUN,
          plots={"manipulate": "PPL per strategy"}, gpu_s=240, go_label="Run manipulation",
          ui_defaults={"layers": "10-12"},
          intro="All chosen layers are changed together by each strategy in turn (restored in between): zero; "
                "clone or blend the nearest layers outside the set; low-rank (their singular vectors, the "
                "layer's own singular values); scale by each factor. Compare generations in the Generate tab.")
build = TAB.build
