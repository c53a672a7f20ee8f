"""Side-by-side generation: the same prompt and seed through the original and the altered model (an
intervention on chosen layers, or a layer plan), greedy and sampled, and where the new tokens differ.

The prompt goes through the tokenizer's chat template by default where the tokenizer has one (an Instruct
model answers it instead of continuing it); --no-chat-template sends it raw. Nothing is measured on the
evaluation text.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import work
from ..errors import AnatomyError
from ..evaluate import EvalSet
from ..experiment import Artefacts, Experiment, Result
from ..generate import MODES, SIDES, Alteration, SideBySide, check_new_tokens, generate_side_by_side
from ..interventions import INTERVENTION_KINDS
from ..load import LoadedModel
from ..options import LAYERS, SEED_MAX, Codec, option
from ..plans import parse_plan
from ..progress import ProgressCallback
from ..report import header, markdown_table


def _plan(text: str, where: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    parse_plan(text, 10**6)  # the syntax now; the layers against the model once it is loaded
    return text


PLAN = Codec(_plan, lambda v: v or "")
"""A layer plan such as 0-12,15x4,17-29; empty: none."""


@dataclass
class GenerateConfig:
    """The prompt, the alteration of the altered side (a plan, when given, replaces the intervention), and
    the decoding shared by both sides."""

    prompt: str = option("What is the capital of France?", "the prompt both models answer or continue",
                         label="Prompt")
    intervention: str = option("skip", "what the altered side does to --layers (the default, skipping 3 middle "
                               "layers, changes the embedded model's answer)", label="Intervention",
                               choices=INTERVENTION_KINDS)
    layers: str | list[int] | None = option("10-12", "0-based layers the intervention changes, e.g. 0,3,5-8",
                                            label="Layers (0-based)", codec=LAYERS)
    value: float = option(0.5, "alpha for scale, sigma (x std(W)) for noise", label="Value (alpha for scale, "
                          "sigma for noise)", minimum=-1000, maximum=1000)
    plan: str | None = option(None, "a layer plan for the altered side, such as 0-12,15x4,17-29, instead of the "
                              "intervention", label="Layer plan (replaces the intervention)", codec=PLAN)
    seed: int = option(0, "seed of the sampled generations and of noise", label="Seed", minimum=0, maximum=SEED_MAX)
    new_tokens: int = option(30, "new tokens per generation (1-512)", label="New tokens", minimum=1, maximum=512,
                             public_maximum=128)
    chat_template: bool = option(True, "send the prompt raw, not through the tokenizer's chat template (used by "
                                 "default where the tokenizer has one)",
                                 label="Chat template (where the tokenizer has one)")

    def validate(self) -> None:
        if not self.prompt or not self.prompt.strip():
            raise AnatomyError("The prompt is empty: type a few words for the models to continue.")
        if self.intervention not in INTERVENTION_KINDS:
            raise AnatomyError(f"Unknown intervention '{self.intervention}': use one of "
                               f"{', '.join(INTERVENTION_KINDS)}.")
        check_new_tokens(self.new_tokens)

    @property
    def alteration(self) -> Alteration:
        return Alteration(self.intervention, self.layers, self.value, self.seed, self.plan)


def side_by_side_of(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: GenerateConfig,
                    progress: ProgressCallback | None = None) -> SideBySide:
    """The generations a config asks for: what the CLI writes and the app's Generate tab shows."""
    config.validate()
    return generate_side_by_side(model, tokenizer, config.prompt, config.alteration,
                                 max_new_tokens=config.new_tokens, seed=config.seed,
                                 chat_template=config.chat_template, progress=progress)


def run_generate(model: PreTrainedModel, eval_set: EvalSet | None = None, config: GenerateConfig | None = None,
                 progress: ProgressCallback | None = None, *, tokenizer: PreTrainedTokenizerBase) -> Result:
    """One row per decoding mode and side; the differences per mode as the `differences` table."""
    config = config or GenerateConfig()
    out = side_by_side_of(model, tokenizer, config, progress)
    return Result("generate", out.table(), tables={"differences": out.differences()},
                  scalars={"prompt": out.prompt, "chat_template": out.chat_template, "input_ids": out.input_ids,
                           "alteration": config.alteration.describe()})


def template_note(result: Result, config: GenerateConfig) -> str:
    if result["chat_template"]:
        return "used (the prompt is the user's turn; the models write the assistant's answer)"
    return "switched off (the prompt is sent raw)" if not config.chat_template else \
        "not used: the tokenizer has none (the prompt is sent raw)"


def generate_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet | None,
                       config: GenerateConfig) -> Artefacts:
    """The report: prompt, alteration, chat template, both sides' texts per mode and the differences."""
    lines = [header("Side-by-side generation", loaded, None), f"- Prompt: {result['prompt']!r}",
             f"- Chat template: {template_note(result, config)}",
             f"- Altered side: {result['alteration']}; seed {config.seed}, {config.new_tokens} new tokens", ""]
    for row in result.table.itertuples(index=False):
        lines += [f"### {row.mode}, {row.side}", "", "```text", row.text.replace("```", "'''"), "```", ""]
    lines += ["## Differences", "", markdown_table(result["differences"]), ""]
    return Artefacts(figures={}, markdown="\n".join(lines))


def headline(result: Result) -> str:
    """Per mode: how many tokens differ and where the first does."""
    parts = []
    for row in result["differences"].itertuples(index=False):
        first = "none differ" if row.tokens_differing == 0 else \
            f"{row.tokens_differing} differ, the first at token {int(row.first_difference_at)}"
        parts.append(f"{row.mode}: {first}")
    return ("Chat template used; " if result["chat_template"] else "Prompt sent raw; ") + "; ".join(parts) + "."


def generate_work(config: GenerateConfig, shape: work.Shape) -> float:
    """Four generations (greedy and sampled, original and altered) of `new_tokens` each."""
    return shape.generations(len(MODES) * len(SIDES), config.new_tokens)


EXPERIMENT = Experiment(
    name="generate", title="Side-by-side generation", summary="original vs altered model on one prompt, greedy "
    "and sampled, differing tokens marked", description=__doc__, config=GenerateConfig, run=run_generate,
    artefacts=generate_artefacts, uses_eval=False, uses_tokenizer=True, columns=("mode", "side", "text"),
    headline=headline, work=generate_work)
