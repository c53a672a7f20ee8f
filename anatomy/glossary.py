"""The words the reports, the app and the docs use, defined once: the app's glossary and the README's are drawn
from `GLOSSARY` (tests/test_docs.py checks that the README's section says the same)."""

from __future__ import annotations

GLOSSARY: dict[str, str] = {
    "PPL": "perplexity of the model on the evaluation text: exp of the mean negative log-likelihood per predicted "
           "token (lower is better), with a 95% bootstrap interval over the texts.",
    "D": "degradation of an intervention: (PPL with the intervention / PPL without - 1) x 100%. The importance "
         "map's D is that of replacing a layer by the mean of its neighbours (SPEC section 1).",
    "Classes": "a layer's class from its D: Redundant below 10%, Minor 10-30%, Important 30-100%, Critical 100% "
               "and above; Untouched where D was not measured (the study's boundary layers).",
    "Anti-layer": "a layer whose removal or noising lowers PPL (D below 0, its interval too): the model does better "
                  "without it on this text.",
    "Block Influence": "1 - cosine similarity between a layer's input and output hidden states (ShortGPT): a "
                       "one-pass view of how much a layer changes the residual stream.",
    "Angular distance": "arccos of the cosine similarity between a layer's input and output, over pi: Block "
                        "Influence on an angular scale.",
    "alpha": "the power-law exponent of a weight matrix's eigenvalue spectrum (heavy-tailed self-regularisation), "
             "fitted by maximum likelihood above the tail start that the Kolmogorov-Smirnov distance chooses: lower alpha, a heavier tail, often read as a better-trained matrix.",
    "Stable rank": "||W||_F^2 / ||W||_2^2 of a weight matrix: how many directions carry its energy, at most its rank.",
    "R(l)": "a layer's training-budget ratio in [0, 1] from its class and its recovery; the budget gives a layer "
            "R(l) x 200 steps (SPEC section 6).",
    "sigma-0 control": "the same fine-tune as a recovery run, on the same batches, with no noise: what fine-tuning "
                       "alone does to PPL, so recovery is read against it.",
    "Spearman": "Spearman's rho, the correlation of two rankings (-1 to 1): whether two views order the layers "
                "alike, with a 95% bootstrap interval.",
    "Layer plan": "the order in which layers run, e.g. 0-12,[13-16]x2,17-29: a range in order, a bracketed group "
                  "in parallel (outputs averaged), xN repeated (SPEC section 8).",
}


def glossary_markdown() -> str:
    """The glossary as a markdown list, as the app shows it and the README holds it."""
    return "\n".join(f"- **{term}**: {text}" for term, text in GLOSSARY.items())
