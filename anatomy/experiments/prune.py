"""Layer pruning by criterion (SPEC section 9): choose K layers, remove them, measure PPL.

Criteria (each picks the K layers it rates least needed, in one shot from the intact model):
- `alpha`: highest mean power-law alpha over the layer's matrices (heavy-tailed self-regularisation reads a
  large alpha as a less-trained layer);
- `block_influence`: lowest Block Influence, 1 - cos(layer input, layer output) (ShortGPT);
- `ablation`: lowest degradation D when the layer alone is ablated (skip by default, i.e. removal itself);
- `last`: the last K layers, N-K..N-1 (the heuristic the spectral study compares against).
Removal is real: the layers leave the ModuleList (anatomy.surgery), `layer_idx` renumbered.
With `--tasks` (lm-eval task names), the intact and every pruned model are scored on those tasks in memory:
accuracy with its stderr before and after, and the drop with its paired 95% interval (the `tasks` table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import findings, plots, processes, report, work
from ..errors import AnatomyError
from ..evaluate import EvalSet, degradation, perplexity
from ..experiment import Artefacts, Experiment, Need, Result, StudyRole
from ..interventions import ABLATION_MODES
from ..layers import LayerAdapter
from ..lm_eval_tasks import TaskDrops, check_tasks, lm_eval_version, task_passes, task_section, tasks_option
from ..load import LoadedModel
from ..options import INTS, OPTIONAL_TEXT, option
from ..progress import ProgressCallback
from ..sweep import sweep
from ..surgery import build_layer_stack, kept_layers, layer_stack, save_model
from .importance import ImportanceConfig
from .spectral import SpectralConfig, layer_alpha, run_spectral

CRITERIA = ("alpha", "block_influence", "ablation", "last")
READ_IMPORTANCE = {"block_influence", "ablation"}  # the criteria ranked by an importance map
COLUMNS = ["criterion", "k", "removed", "ppl", "ppl_low", "ppl_high", "degradation_pct", "degradation_low",
           "degradation_high", "params_removed_pct"]


@dataclass
class PruneConfig:
    """`ablation_mode` is how the importance map is computed when none is given (skip: a layer's D is the
    cost of its removal); a map given was measured with its own mode, which the result records."""

    ks: tuple[int, ...] = option((3, 6), "layers to remove, one or a list", label="Layers removed (K, one or a list)",
                                 flag="-k", codec=INTS, minimum=1, maximum=100_000, max_items=16)
    criteria: tuple[str, ...] = option(CRITERIA, "criteria, comma-separated", label="Criteria",
                                       flag="--by", choices=CRITERIA, multiple=True)
    ablation_mode: str = option("skip", "single-layer ablation for the ablation criterion (with --importance: that "
                                "run's mode)", label="Ablation for the ablation criterion (computed now)",
                                choices=ABLATION_MODES)
    save: str | None = option(None, "write the pruned model(s) as Hugging Face folder(s) here", codec=OPTIONAL_TEXT,
                              ui=False)
    tasks: tuple[str, ...] = tasks_option("accuracy before and after each pruned model")

    def validate(self, num_layers: int | None = None) -> None:
        check_tasks(self.tasks)
        if not self.criteria:
            raise AnatomyError("Choose at least one criterion.")
        unknown = set(self.criteria) - set(CRITERIA)
        if unknown:
            raise AnatomyError(f"Unknown criteria {sorted(unknown)}: use some of {', '.join(CRITERIA)}.")
        if not self.ks:
            raise AnatomyError("Give at least one K (layers to remove), e.g. 3,6.")
        if num_layers is None:
            if min(self.ks) < 1:
                raise AnatomyError(f"K must be at least 1, got {list(self.ks)}.")
            return
        bad = [k for k in self.ks if not 1 <= k < num_layers]
        if bad:
            raise AnatomyError(f"K must be between 1 and {num_layers - 1} for this {num_layers}-layer model, got {bad}.")

    def importance_config(self) -> ImportanceConfig | None:
        """The importance map this config ranks layers by, computed when none is given (None: not read)."""
        return ImportanceConfig(mode=self.ablation_mode) if READ_IMPORTANCE & set(self.criteria) else None


def layer_scores(model: PreTrainedModel, config: PruneConfig, importance: Result | None = None,
                 progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Per layer, the score of every requested criterion; lower = removed first (alpha is negated)."""
    n = LayerAdapter(model).num_layers
    scores = pd.DataFrame({"layer": range(n)})
    if "alpha" in config.criteria:
        scores["alpha"] = -layer_alpha(run_spectral(model, None, SpectralConfig(keep_singular_values=False),
                                                    progress).table).to_numpy()
    if READ_IMPORTANCE & set(config.criteria):
        if importance is None:
            raise AnatomyError("block_influence and ablation rank layers by an importance map: give an importance "
                               "result (importance=, --importance RUN).")
        table = importance.table
        if sorted(table["layer"]) != list(range(n)):
            raise AnatomyError(f"The importance map must cover every layer 0..{n - 1} to rank them for pruning.")
        ordered = table.sort_values("layer")
        scores["block_influence"] = ordered["block_influence"].to_numpy()
        # a layer left untouched by the study's boundary convention has no measured D: never pick it
        scores["ablation"] = ordered["degradation_pct"].where(ordered["class"] != "Untouched", float("inf")).to_numpy()
    scores["last"] = -scores["layer"]
    return scores


def choose(scores: pd.DataFrame, criterion: str, k: int) -> list[int]:
    """The k layers with the lowest score for `criterion` (ties: the lower layer first)."""
    return sorted(scores.sort_values([criterion, "layer"], kind="stable")["layer"].head(k).astype(int).tolist())


def run_prune(model: PreTrainedModel, eval_set: EvalSet, config: PruneConfig | None = None,
              progress: ProgressCallback | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
              importance: Result | None = None) -> Result:
    """One row per (criterion, K) plus the baseline; extra tables: the comparison and the scores per layer.
    With `config.save`, the pruned models are written there too (`tokenizer` saved beside them)."""
    config = config or PruneConfig()
    adapter = LayerAdapter(model)
    n = adapter.num_layers
    config.validate(n)
    tasks = TaskDrops(model, tokenizer, config.tasks, progress)  # the intact model's scores first
    tasks.add_unchanged(criterion="baseline (none)", k=0, removed="")
    task_rows = tasks.take()
    t0 = time.perf_counter()
    scores = layer_scores(model, config, importance, progress)
    t_scores = time.perf_counter() - t0
    base = perplexity(model, eval_set)
    layer_params = sum(p.numel() for p in adapter.layers[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    rows = [{"criterion": "baseline (none)", "k": 0, "removed": "", **base.as_dict(), "degradation_pct": 0.0,
             "degradation_low": 0.0, "degradation_high": 0.0, "params_removed_pct": 0.0}]
    runs = [(c, k) for k in config.ks for c in config.criteria]
    def pruned(run: tuple[str, int]) -> dict:
        criterion, k = run
        removed = choose(scores, criterion, k)
        with layer_stack(model, kept_layers(n, removed)):
            result = perplexity(model, eval_set)
            tasks.add(criterion=criterion, k=k, removed=",".join(map(str, removed)))
        d, d_low, d_high = degradation(result, base, eval_set)
        return {"criterion": criterion, "k": k, "removed": ",".join(map(str, removed)), **result.as_dict(),
                "degradation_pct": d, "degradation_low": d_low, "degradation_high": d_high,
                "params_removed_pct": 100 * k * layer_params / total, "task_rows": tasks.take()}

    rows += sweep(runs, pruned, "prune (criterion x K)", progress, label=lambda run: f"{run[0]} k{run[1]}")
    task_rows += [r for row in rows for r in row.pop("task_rows", [])]  # gathered from every process
    df = pd.DataFrame(rows, columns=COLUMNS)
    t_evals = time.perf_counter() - t0 - t_scores
    saved = ([str(p) for p in save_pruned(model, tokenizer, df, config.save)]
             if config.save and processes.is_main() else [])  # under `accelerate launch`: one process writes them
    mode = config.ablation_mode
    if importance is not None and "mode" in importance.table:  # D of a given map was measured with its own mode
        mode = str(importance.table["mode"].iloc[0])
    versions = {"lm_eval_version": lm_eval_version()} if config.tasks else {}
    return Result("prune", df, scalars={"baseline": base.as_dict(), "ablation_mode": mode, "saved": saved, **versions},
                  tables={"comparison": comparison_table(df), "scores": scores,
                          **tasks.tables(["criterion", "k", "removed"], task_rows)},
                  timings={"scores_s": t_scores, "pruned_evals_s": t_evals})


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """PPL per criterion (rows) and K (columns), with each criterion's ratio to `last` at the same K."""
    pruned = df[df["k"] > 0]
    table = pruned.pivot(index="criterion", columns="k", values="ppl")
    table.columns = [f"ppl_k{k}" for k in table.columns]
    if "last" in table.index:
        for column in list(table.columns):
            table[column.replace("ppl", "last_over")] = table.loc["last", column] / table[column]
    return table.reset_index()


def save_pruned(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, df: pd.DataFrame,
                directory: str | Path) -> list[Path]:
    """A standard HF folder per pruned model of the main table `df`: `directory` itself for one row,
    `directory/<criterion>-k<K>` else."""
    n = LayerAdapter(model).num_layers
    pruned = df[df["k"] > 0]
    folders = []
    for row in pruned.itertuples():
        target = Path(directory) if len(pruned) == 1 else Path(directory) / f"{row.criterion}-k{row.k}"
        copy = build_layer_stack(model, kept_layers(n, [int(i) for i in row.removed.split(",")]))
        folders.append(save_model(copy, tokenizer, target))
        del copy
    return folders


def prune_report(result: Result, header: str) -> str:
    df = result.table
    lines = [header, "## Layer pruning",
             "- Criteria: alpha = highest mean power-law alpha first; block_influence = lowest 1 - cos(in, out) "
             f"first; ablation = lowest single-layer D first ({result['ablation_mode']} ablation); last = layers "
             "N-K..N-1. Layers are removed from the stack (layer_idx renumbered), chosen in one shot.",
             f"- Baseline PPL {result['baseline']['ppl']:.3f}.", "",
             "### Comparison (PPL; last_over_kK = PPL of `last` / PPL of the criterion: > 1 means better than last)",
             report.markdown_table(result["comparison"].round(3)), "",
             "### Every run", report.markdown_table(df.round(4)), "",
             "### Layer scores (lower = removed first; alpha and last negated)",
             report.markdown_table(result["scores"].round(4)), "",
             *task_section(result.tables, "each pruned model"),
             *([f"- Pruned models saved: {', '.join(f'`{p}`' for p in result['saved'])}", ""] if result["saved"]
               else [])]
    return "\n".join(lines)


def task_line(result: Result) -> str:
    """Accuracy with stderr before and after, per task and pruned model: the headline's task part."""
    if "tasks" not in result.tables:
        return ""
    rows = result["tasks"][result["tasks"]["k"] > 0]
    return "".join(f"; {r.task} {r.metric} {r.before:.3f}±{r.before_stderr:.3f} -> "
                   f"{r.after:.3f}±{r.after_stderr:.3f} ({r.criterion} K={r.k})" for r in rows.itertuples())


def prune_artefacts(result: Result, loaded: LoadedModel, eval_set: EvalSet, config: PruneConfig) -> Artefacts:
    """Figure and report of a pruning run (the CLI's run folder and the app's)."""
    df = result.table
    labels = df.assign(run=[f"{c} k={k}" if k else c for c, k in zip(df["criterion"], df["k"])])
    return Artefacts(
        figures={"prune": plots.ppl_rows_figure(labels, "run", f"Pruned models: {loaded.title}",
                                                result["baseline"]["ppl"])},
        markdown=prune_report(result, report.header("Layer pruning", loaded, eval_set)))


def headline(result: Result) -> str:
    """The baseline, the best criterion at each K, and the model folders saved."""
    pruned = result.table[result.table["k"] > 0]
    best = pruned.sort_values(["k", "ppl"], kind="stable").drop_duplicates("k")  # a NaN PPL sorts last
    return (f"Baseline PPL {result['baseline']['ppl']:.3f}; lowest PPL: "
            + ", ".join(f"K={r.k} {r.criterion} {r.ppl:.3f}" for r in best.itertuples())
            + task_line(result) + "".join(f"; saved pruned model: {p}" for p in result["saved"]) + ".")


def prune_work(config: PruneConfig, shape: work.Shape) -> float:
    """The baseline and one forward of the pruned model per (criterion, K), each with its task scoring; a map it
    computes is its need's."""
    runs = len(config.criteria) * len(config.ks)
    return (1.0 + runs) * (1.0 + task_passes(config.tasks, shape.tokens))


EXPERIMENT = Experiment(
    name="prune", title="Layer pruning",
    summary="remove K layers chosen by alpha, block influence, ablation or last; compare PPL; save the pruned model "
            "(SPEC section 9)",
    description=__doc__, config=PruneConfig, run=run_prune, artefacts=prune_artefacts, uses_tokenizer=True,
    needs=(Need("importance", "read block influence and ablation D from this importance run folder (default: "
                "compute the importance map now with --ablation-mode)", configure=PruneConfig.importance_config),),
    columns=("criterion", "k", "removed", "ppl", "degradation_pct"), headline=headline,
    check=lambda config, model: config.validate(LayerAdapter(model).num_layers), work=prune_work,
    study=StudyRole(order=6, quick={"ks": "3"}, findings=(findings.alpha_pruning, findings.pruning_gap)))
