"""Interventions sweep: one intervention (scale, noise, zero, neighbour-mean or skip) on chosen layers, its
PPL and degradation D per value (alpha for scale, sigma for noise), the weights restored after each value.

The kinds without a value (zero, neighbour-mean, skip) give one row; their `value` is empty.
With `--tasks` (lm-eval task names), the unchanged model and each value are scored on those tasks too: the
accuracy with its stderr and the drop with its paired 95% interval (the `tasks` table).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import plots, report, work
from ..errors import AnatomyError
from ..evaluate import EvalSet, degradation, perplexity
from ..experiment import Artefacts, Experiment, Result
from ..interventions import BOUNDARY_CONVENTIONS, INTERVENTION_KINDS, intervention
from ..layers import COMPONENTS, LayerAdapter
from ..lm_eval_tasks import TaskDrops, check_tasks, task_passes, task_section, tasks_option
from ..load import LoadedModel
from ..options import LAYERS, SEED_MAX, Codec, option, parse_floats
from ..progress import ProgressCallback, track

KINDS = tuple(k for k in INTERVENTION_KINDS if k != "none")
SWEPT = {"scale": "alpha", "noise": "sigma"}  # the kinds that take a value, and its name
COLUMNS = ["intervention", "layers", "value", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high"]

VALUES = Codec(lambda text, where: parse_floats(text, None, where) if text.strip() else (),
               lambda v: ",".join(f"{x:g}" for x in v))
"""Comma-separated values; empty for the kinds that take none."""


@dataclass
class InterventionsConfig:
    """What to change and on which layers; `values` are read only by scale (alphas) and noise (sigmas)."""

    intervention: str = option("scale", "what to do to the layers", label="Intervention", choices=KINDS)
    layers: str | list[int] | None = option("10-12", "0-based layers to change together, e.g. 0,3,5-8 (all: every "
                                            "layer)", label="Layers (0-based, e.g. 0,3,5-8)", codec=LAYERS)
    values: tuple[float, ...] = option((0.9, 0.7, 0.5), "comma-separated alphas (scale) or sigmas x std(W) (noise), "
                                       "one row each", label="Values (alpha for scale, sigma for noise)",
                                       codec=VALUES, minimum=-1000, maximum=1000)
    components: tuple[str, ...] = option((), "components to change, comma-separated (none: all of them; skip "
                                         "always removes the whole layer)", label="Components (none ticked: all)",
                                         choices=COMPONENTS, multiple=True)
    seed: int = option(0, "noise seed", label="Noise seed", minimum=0, maximum=SEED_MAX)
    boundary: str = option("one-neighbour", "first/last layer under neighbour-mean: use their one neighbour, or "
                           "leave them untouched", label="Boundary (neighbour-mean)", choices=BOUNDARY_CONVENTIONS)
    tasks: tuple[str, ...] = tasks_option("accuracy of the unchanged model and at each value")

    def validate(self) -> None:
        check_tasks(self.tasks)
        if self.intervention not in KINDS:
            raise AnatomyError(f"Unknown intervention '{self.intervention}': use one of {', '.join(KINDS)}.")
        if self.intervention in SWEPT and not self.values:
            raise AnatomyError(f"{self.intervention} needs at least one {SWEPT[self.intervention]}: give values "
                               "such as 0.9,0.5.")

    @property
    def swept(self) -> tuple[float, ...]:
        """The values run: the given ones for scale and noise, one empty value (NaN) for the other kinds."""
        return tuple(self.values) if self.intervention in SWEPT else (float("nan"),)


def run_interventions(model: PreTrainedModel, eval_set: EvalSet, config: InterventionsConfig | None = None,
                      progress: ProgressCallback | None = None,
                      tokenizer: PreTrainedTokenizerBase | None = None) -> Result:
    """One row per value; the scalars hold the baseline PPL. Every pass runs the full forward (no prefix
    cache): an intervention on several layers at once has no single first changed layer to resume from.
    With `config.tasks` (and the `tokenizer`), the `tasks` table holds the accuracy drop per value."""
    config = config or InterventionsConfig()
    config.validate()
    adapter = LayerAdapter(model)
    layers = adapter.resolve_layers(config.layers)
    tasks = TaskDrops(model, tokenizer, config.tasks, progress)  # the unchanged model's scores first
    base = perplexity(model, eval_set)
    rows = []
    for value in track(config.swept, f"intervention ({config.intervention})", progress):
        with intervention(adapter, config.intervention, layers, alpha=value, sigma=value, seed=config.seed,
                          boundary=config.boundary, components=config.components or None):
            result = perplexity(model, eval_set)
            tasks.add(value=value)
        d, low, high = degradation(result, base, eval_set)
        rows.append({"intervention": config.intervention, "layers": ",".join(map(str, layers)), "value": value,
                     **result.as_dict(), "degradation_pct": d, "degradation_low": low, "degradation_high": high})
    return Result("interventions", pd.DataFrame(rows, columns=COLUMNS), scalars={"baseline": base.as_dict()},
                  tables=tasks.tables(["value"]))


def figure(df: pd.DataFrame, kind: str, title: str) -> Figure:
    """D against the swept value; a single point for the kinds that take none."""
    return plots.line_figure(df.fillna({"value": 0.0}), "value", "degradation_pct", title=title,
                             xlabel=SWEPT.get(kind, "(no value)"), ylabel="degradation D (%)",
                             logy=bool((df["degradation_pct"] > 0).all()))


def interventions_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet,
                            config: InterventionsConfig) -> Artefacts:
    """The D-per-value figure and the report (the CLI's run folder and the app's)."""
    df, base = result.table, result["baseline"]
    markdown = (report.header("Interventions", loaded, eval_set)
                + f"\n- Baseline PPL {base['ppl']:.3f}\n\n" + report.markdown_table(df) + "\n\n"
                + "\n".join(task_section(result.tables, "the intervention at each value")))
    title = f"{config.intervention} of layers {LAYERS.format(config.layers)}: {loaded.title}"
    return Artefacts(figures={"interventions": figure(df, config.intervention, title)}, markdown=markdown)


def headline(result: Result) -> str:
    """Baseline PPL and the largest degradation, in one line."""
    return f"Baseline PPL {result['baseline']['ppl']:.3f}; worst D {result.table['degradation_pct'].max():.1f}%."


def interventions_work(config: InterventionsConfig, shape: work.Shape) -> float:
    """The baseline and one full forward per value (no prefix cache: several layers change at once), each with
    its task scoring."""
    return (1.0 + len(config.swept)) * (1.0 + task_passes(config.tasks, shape.tokens))


EXPERIMENT = Experiment(
    name="interventions", title="Interventions", summary="PPL and degradation of one intervention on chosen layers, "
    "per value", description=__doc__, config=InterventionsConfig, run=run_interventions,
    artefacts=interventions_artefacts, uses_tokenizer=True,
    columns=("intervention", "layers", "value", "ppl", "degradation_pct"), headline=headline, work=interventions_work)
