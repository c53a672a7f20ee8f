"""What a training run really did, per layer: optimizer updates, tokens seen, passes over the data.

A growth run and a uniform run "of 656 steps" are not the same amount of training for each layer: a
core layer of the growth plan trains in its own phase and again in maturation, a late layer only in
the last phases, while every uniform layer trains at every step. The study's 4.7x could come from the
schedule or simply from more passes over a tiny dataset; this table is what tells them apart.

Per layer, from the trainer's phase log: `updates` (optimizer steps in which the layer was trained),
`tokens_trained` (training tokens of those steps), `tokens_forward` (tokens that went through the layer,
trained or frozen), `epochs_trained` (tokens_trained / training-set tokens), and `epochs_effective`:
the layer's own epochs plus those of the layer it was cloned from, at the time of cloning (a clone
starts from weights that already saw the data). The shared embedding and final norm get a row of their
own: with `train_shared` they train at every step of every phase.
"""

from __future__ import annotations

import pandas as pd

from .plan import GrowthPlan

SHARED = "embedding+norm"


def _layers(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x != ""]


def layer_accounting(phase_log: pd.DataFrame, plan: GrowthPlan | None, n_layers: int,
                     train_tokens: int) -> pd.DataFrame:
    """One row per layer (and one for the shared parameters) from a `Trainer.phase_log`.

    `plan` is the growth plan the run followed (None for a uniform run), `train_tokens` the number of
    tokens in the training set (one pass).
    """
    rows = {i: {"part": f"layers.{i}", "layer": i, "updates": 0, "tokens_trained": 0, "tokens_forward": 0,
                "epochs_effective": 0.0} for i in range(n_layers)}
    shared = {"part": SHARED, "layer": pd.NA, "updates": 0, "tokens_trained": 0, "tokens_forward": 0,
              "epochs_effective": 0.0}
    phases = {p.name: p for p in plan.phases} if plan is not None else {}
    for entry in phase_log.itertuples():
        phase = phases.get(entry.phase)
        for layer, source in (phase.sources.items() if phase is not None else []):
            if source is not None:  # a clone starts with what its source has seen so far
                rows[layer]["epochs_effective"] = rows[source]["epochs_effective"]
        epochs = entry.tokens / train_tokens
        for layer in _layers(entry.active_layers):
            rows[layer]["tokens_forward"] += entry.tokens
        for layer in _layers(entry.layers):
            rows[layer]["updates"] += entry.steps
            rows[layer]["tokens_trained"] += entry.tokens
            rows[layer]["epochs_effective"] += epochs
        if plan is None or plan.train_shared or (phase is not None and phase.train == "all"):
            shared["updates"] += entry.steps
            shared["tokens_trained"] += entry.tokens
            shared["epochs_effective"] += epochs
        shared["tokens_forward"] += entry.tokens
    df = pd.DataFrame([*rows.values(), shared])
    df.insert(5, "epochs_trained", df["tokens_trained"] / train_tokens)
    return df
