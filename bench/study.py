"""Benchmark: the whole study in float32 and under bfloat16 autocast, per experiment beside its matmul floors,
and whether the two give the same verdicts; in one process.

Each dtype runs the study as `python -m anatomy study` does (`anatomy.study.run_study`, every need computed as
the study computes it), into a temporary folder. The floor of an experiment is the time its matmul work
would take at the rate of a 2048^3 matmul measured in the same run, in float32 and in bfloat16: the work is
counted by torch's `FlopCounterMode` (matmuls, convolutions and attention, forward and backward) in a third,
counted pass of the study, so the timed passes run without the counter's overhead; the counted pass runs under
bfloat16 autocast, which runs the same operations on the same shapes as float32 in less time (the counter
reads shapes, not values). A ratio near 1
means an experiment does little beyond its matmuls; a large one, that it spends its time elsewhere.

    python bench/study.py                      # the quick study (--quick settings) on the embedded model
    python bench/study.py --full               # the study's defaults (13 recovery layers, 200 steps)
    python bench/study.py --experiments importance,structure
    python bench/study.py --smoke              # seconds, on a tiny random model
    python bench/study.py --full --keep runs/bench-study --growth runs/growth-study   # keep both studies
    python bench/study.py --full --passes count    # the floors alone (FLOPs do not depend on the machine's load)

With `--keep DIR` the two timed studies stay in DIR/float32 and DIR/bfloat16, each with its report (study.md,
claims.csv; `--growth RUN` joins a growth comparison run's rows, as `python -m anatomy study --growth` does):
the float32 one is what `python -m anatomy study` writes, with its wall times measured on a quiet machine.

Prints one line per experiment (wall seconds in float32 and bfloat16, GFLOP, both floors), the study's totals,
Table 1's rank agreement in both, `classes agree: N/L` (the importance classes of the L layers, each differing
layer listed with both D), `bf16 speedup: X` (float32 wall / bfloat16 wall, the whole study) and `verdicts
agree: N/M` (the claims table's verdicts, float32 against bfloat16), listing each claim whose verdict differs
with both numbers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from math import nan
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from importance import matmul_gflops  # noqa: E402

from anatomy import findings, study  # noqa: E402
from anatomy.claims import load_claims  # noqa: E402
from anatomy.evaluate import EvalSet  # noqa: E402
from anatomy.load import LoadedModel, load_model  # noqa: E402
from anatomy.texts import default_eval_texts  # noqa: E402
from bench.smoke import SMOKE_HELP, tiny_model_folder  # noqa: E402

SMOKE_EXPERIMENTS = "importance,recovery"
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
PASSES = (*DTYPES, "count")


def run(steps: list[study.Step], overrides: dict, loaded: LoadedModel, eval_set: EvalSet,
        autocast: torch.dtype | None, quick: bool, counter: FlopCounterMode | None = None, keep: Path | None = None,
        growth: str | None = None) -> tuple[study.StudyRun, dict[str, float]]:
    """The study under `autocast`, as `python -m anatomy study` conducts it (its report included), in `keep` or
    a temporary folder; with `counter`, the FLOPs each step added."""
    model = LoadedModel(loaded.model, loaded.tokenizer, loaded.name, loaded.source, loaded.revision,
                        loaded.quantisation, autocast)
    flops: dict[str, float] = {}
    seen = [0]

    def on_step(done: int, total: int, name: str, eta_s: float) -> None:
        if counter is not None:
            flops[name] = counter.get_total_flops() - seen[0]
            seen[0] = counter.get_total_flops()

    with tempfile.TemporaryDirectory() as scratch:
        done, _ = study.conduct(steps, overrides, model, eval_set, keep or scratch, quick=quick, growth=growth,
                                on_step=on_step)
        return done, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--full", action="store_true", help="the study's defaults instead of --quick")
    parser.add_argument("--experiments", default=",".join(study.STUDY))
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_HELP} ({SMOKE_EXPERIMENTS}; quick "
                                                            "unless --full, whose settings it then runs)")
    parser.add_argument("--keep", type=Path, help="keep the timed studies in KEEP/float32 and KEEP/bfloat16")
    parser.add_argument("--growth", help="with --keep: a growth comparison run whose rows join the claims tables")
    parser.add_argument("--passes", default=",".join(PASSES),
                        help="which of the passes to run (the counted pass alone gives the floors: FLOPs do not "
                             "depend on how busy the machine is, so it may run beside other work; the timed ones "
                             "want a quiet machine)")
    args = parser.parse_args()
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    if not passes or set(passes) - set(PASSES):
        parser.error(f"--passes: choose from {', '.join(PASSES)}")
    if args.keep is not None and any((args.keep / name).exists() for name in DTYPES):
        parser.error(f"{args.keep} already holds a study: a reused step would time nothing; choose a new folder")
    if args.growth:
        load_claims(args.growth)  # a wrong folder fails now, not after the studies
    if args.smoke:
        args.model, args.experiments = tiny_model_folder(layers=12 if args.full else 4), SMOKE_EXPERIMENTS
    names = [n.strip() for n in args.experiments.split(",") if n.strip()]
    steps, overrides = study.prepare(names, quick=not args.full)  # the study command's settings, quick or its own
    loaded = load_model(args.model)
    texts = default_eval_texts()[:None if args.full else study.QUICK_TEXTS]  # the study command's texts
    eval_set = EvalSet.from_texts(texts, loaded.tokenizer, name="default")
    size = 256 if args.smoke else 2048
    rates = {name: matmul_gflops(size, dtype=dtype or torch.float32) * 1e9 for name, dtype in DTYPES.items()}
    print(f"{size}^3 matmul: float32 {rates['float32'] / 1e9:.1f} GFLOP/s, bfloat16 {rates['bfloat16'] / 1e9:.1f} "
          f"GFLOP/s; {torch.get_num_threads()} threads; {'full' if args.full else 'quick'} study of {loaded.name}")
    done = {}
    for name, dtype in DTYPES.items():
        if name in passes:
            done[name] = run(steps, overrides, loaded, eval_set, dtype, not args.full,
                             keep=args.keep and args.keep / name, growth=args.growth)[0]
            print(f"{name}: {done[name].wall_s['study']:.1f} s; " + ", ".join(
                f"{step.name} {done[name].wall_s.get(step.name, nan):.1f}" for step in steps), flush=True)
    flops: dict[str, float] = {}
    if "count" in passes:
        with FlopCounterMode(display=False) as counter:
            flops = run(steps, overrides, loaded, eval_set, torch.bfloat16, not args.full, counter)[1]

    def wall(name: str, step: str) -> float:
        """A timed pass's wall seconds for `step` ("study": the whole), NaN for a pass not run."""
        return done[name].wall_s.get(step, nan) if name in done else nan

    print(f"{'experiment':16s} {'float32_s':>10s} {'bfloat16_s':>10s} {'speedup':>8s} {'GFLOP':>10s} "
          f"{'f32_floor_s':>11s} {'bf16_floor_s':>12s}")
    for step in steps:
        walls = [wall(name, step.name) for name in DTYPES]
        work = flops.get(step.name, nan)
        print(f"{step.name:16s} {walls[0]:10.1f} {walls[1]:10.1f} {walls[0] / walls[1]:8.2f} {work / 1e9:10.1f} "
              f"{work / rates['float32']:11.1f} {work / rates['bfloat16']:12.1f}")
    total = sum(flops.values()) if flops else nan
    whole = {name: wall(name, "study") for name in DTYPES}
    print(f"study: float32 {whole['float32']:.1f} s (floor {total / rates['float32']:.1f} s, "
          f"{whole['float32'] * rates['float32'] / total:.2f}x), bfloat16 {whole['bfloat16']:.1f} s (floor "
          f"{total / rates['bfloat16']:.1f} s, {whole['bfloat16'] * rates['bfloat16'] / total:.2f}x)")
    if len(done) < len(DTYPES):
        return  # speedup and verdicts compare the two timed passes
    growth = load_claims(args.growth) if args.growth else None
    claims = {name: findings.findings(done[name].results, loaded.name, done[name].refused, growth) for name in DTYPES}
    differ = [(a, b) for a, b in zip(claims["float32"], claims["bfloat16"]) if a.verdict != b.verdict]
    for a, b in differ:
        print(f"verdict differs: {a.finding}: float32 {a.verdict} ({a.ours}); bfloat16 {b.verdict} ({b.ours})")
    for a, b in zip(claims["float32"], claims["bfloat16"]):
        if a.finding == "Table 1 rank agreement":
            print(f"{a.finding}: float32 {a.ours}; bfloat16 {b.ours}")
    if all("importance" in done[name].results for name in DTYPES):
        tables = [done[name].results["importance"].table.set_index("layer") for name in DTYPES]
        same = tables[0]["class"] == tables[1]["class"]
        for layer in same.index[~same]:
            print(f"class differs: layer {layer}: " + "; ".join(
                f"{name} {t.at[layer, 'class']} (D {t.at[layer, 'degradation_pct']:.2f}%)"
                for name, t in zip(DTYPES, tables)))
        print(f"classes agree: {int(same.sum())}/{len(same)}")
    print(f"bf16 speedup: {whole['float32'] / whole['bfloat16']:.2f}")
    print(f"verdicts agree: {len(claims['float32']) - len(differ)}/{len(claims['float32'])}")


if __name__ == "__main__":
    main()
