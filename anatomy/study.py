"""The whole study of a model in one command: every declared experiment in dependency order, each into its
own run folder inside the study folder, resumable after a kill.

A run folder counts as finished only when it was written completely (under `<name>.partial`, renamed when
whole) and its `study-key.json` matches what the experiment would run now: the model and its revision,
the evaluation text (its hash), the experiment's config and the keys of the runs it needs. So the same
command started again continues at the first unfinished experiment, and a changed flag reruns what it
affects and what depends on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import findings, processes, study_report, sweep, work
from .claims import load_claims
from .errors import AnatomyError
from .inference import CONVENTION
from .evaluate import EvalSet
from .experiment import Experiment, Result, registry, study_experiments
from .layers import LayerAdapter
from .load import LoadedModel
from .options import build_config, params
from .progress import ProgressCallback
from .report import RunFolder, text_hash, to_jsonable
from .run import artefacts, execute

KEY_FILE = "study-key.json"
REFUSED_LINE = "- Could not run on this model: "  # study.md's line per refused experiment, read back by
# `refused_in`, so a stored study is known whole without the folders of the steps it could not run
PARTIAL = ".partial"


@dataclass
class Step:
    """One experiment of a study with the config it runs under."""

    experiment: Experiment
    config: object

    @property
    def name(self) -> str:
        return self.experiment.name


@dataclass
class StudyRun:
    """What a study produced: each experiment's result, its folder, whether it was reused, and its wall time."""

    results: dict[str, Result] = field(default_factory=dict)
    folders: dict[str, Path] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    wall_s: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # experiment -> why it could not run on this model


def in_dependency_order(names: Sequence[str], experiments: Mapping[str, Experiment]) -> list[str]:
    """The experiments to run, each after the ones it needs (a need not in the study is not run for it)."""
    chosen, order, visiting = set(names), [], set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise AnatomyError(f"The experiments' needs form a cycle through {name}.")
        visiting.add(name)
        for need in experiments[name].needs:
            if need.experiment in chosen:
                visit(need.experiment)
        order.append(name)

    for name in names:
        if name not in experiments:
            raise AnatomyError(f"Unknown experiment '{name}' in the study: use {', '.join(experiments)}.")
        visit(name)
    return order


def plan(names: Sequence[str], overrides: Mapping[str, Mapping[str, object]] | None = None) -> list[Step]:
    """Steps in dependency order, each config built from its defaults and `overrides` (raw values by field
    name, parsed and checked like CLI flags), so a bad override fails before any model is loaded."""
    experiments = registry()
    overrides = overrides or {}
    for name, values in overrides.items():
        known = {p.name for p in params(experiments[name].config)} if name in experiments else set()
        unknown = sorted(set(values) - known)
        if unknown:
            raise AnatomyError(f"The study sets {', '.join(unknown)} of {name}, which it does not have.")
    return [Step(experiments[n], build_config(experiments[n].config, {**cli_defaults(experiments[n]),
                                                                      **overrides.get(n, {})}))
            for n in in_dependency_order(names, experiments)]


def cli_defaults(experiment: Experiment) -> dict[str, object]:
    """The fields whose command-line default differs from the library's (recovery runs its sigma-0 control):
    the study is a command, so it runs each experiment as its command would."""
    return {p.name: p.option.cli_default for p in params(experiment.config) if p.option.cli_default is not None}


def study_layers(num_layers: int, layers: Sequence[int]) -> str:
    """The study's layers of its 30-layer model at the same relative depth in a model of `num_layers`."""
    return ",".join(map(str, sorted(set(findings.at_depth(layers, num_layers)))))


def with_recovery_layers(steps: list[Step], num_layers: int, choice: str | None, quick: bool) -> list[Step]:
    """Recovery's layers once the model's depth is known: the study's 13 (3 with --quick) at their relative
    depth by default, `all` for every layer, or the layers given."""
    layers = (study_layers(num_layers, QUICK_RECOVERY_LAYERS if quick else STUDY_RECOVERY_LAYERS) if choice is None
              else None if choice.strip().lower() == "all" else choice)
    return [Step(s.experiment, dataclasses.replace(s.config, layers=layers)) if s.name == "recovery" else s
            for s in steps]


def step_key(step: Step, loaded: LoadedModel | None, eval_set: EvalSet | None, need_keys: Mapping[str, str]) -> dict:
    """Everything that decides a step's numbers; equal keys mean the finished run can be reused."""
    return {"experiment": step.name, "config": to_jsonable(step.config),
            "model": None if loaded is None else {"name": loaded.name, "revision": loaded.revision,
                                                  "dtype": str(next(loaded.model.parameters()).dtype),
                                                  **({"autocast": loaded.autocast_name} if loaded.autocast else {})},
            "eval_set": None if eval_set is None or not step.experiment.uses_eval else
            {"sha256": text_hash(eval_set.texts), "num_tokens": eval_set.num_tokens},
            "needs": {n.experiment: need_keys.get(n.experiment) for n in step.experiment.needs}}


def digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def finished(folder: Path, key: dict) -> bool:
    """A complete run folder (renamed from .partial, results.json present) made under the same key."""
    marker = folder / KEY_FILE
    return (folder / "results.json").is_file() and marker.is_file() and \
        json.loads(marker.read_text(encoding="utf-8")) == json.loads(json.dumps(key, sort_keys=True))


def run_study(steps: Sequence[Step], loaded: LoadedModel, eval_set: EvalSet, out: str | Path,
              progress: ProgressCallback | None = None,
              on_step: Callable[[int, int, str, float], None] | None = None) -> StudyRun:
    """Run (or reuse) every step into `out/<experiment>`; `on_step(done, total, name, eta_s)` after each."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    study, keys = StudyRun(), {}
    started = time.perf_counter()
    configs = {s.name: s.config for s in steps}
    shape = work.shape_of(loaded.model, eval_set)
    estimates = [step_work(step, configs, shape) for step in steps]  # in passes; seconds once a step has run
    ran_s = ran_work = 0.0
    for index, step in enumerate(steps):
        folder = out / step.name
        key = step_key(step, loaded, eval_set, keys)
        keys[step.name] = digest(key)
        reuse = finished(folder, key)
        sweep.wait_for_everyone()  # under `accelerate launch`: every process decided before the main one writes
        if reuse:
            study.results[step.name] = Result.load(folder, step.name)
            study.reused.append(step.name)
            study.wall_s[step.name] = float(study.results[step.name].timings.get("run_s", 0.0))
            study.folders[step.name] = folder
        else:
            t0 = time.perf_counter()
            try:
                inputs = step_inputs(step, study, configs, loaded, eval_set, progress)
                result = execute(step.experiment, loaded, eval_set, step.config, progress, inputs)
            except sweep.WorkerLost:
                raise
            except AnatomyError as err:  # this model cannot run it (all layers redundant, say): go on without it
                study.refused[step.name] = str(err)
                if processes.is_main():
                    shutil.rmtree(folder, ignore_errors=True)  # an older run of it no longer belongs to this study
            else:
                if processes.is_main():  # every process holds the gathered result; one writes it
                    write_step(folder, step, result, loaded, eval_set, key)
                study.results[step.name] = result
                study.wall_s[step.name] = time.perf_counter() - t0
                study.folders[step.name] = folder
                ran_s += study.wall_s[step.name]
                ran_work += estimates[index]
        if on_step is not None:  # the steps to come at the speed (seconds per pass) of the ones that ran
            on_step(index + 1, len(steps), step.name,
                    ran_s / ran_work * sum(estimates[index + 1:]) if ran_work else float("nan"))
    study.wall_s["study"] = time.perf_counter() - started
    return study


def step_work(step: Step, configs: Mapping[str, object], shape: work.Shape) -> float:
    """A step's computing in passes (`anatomy/work.py`), with a need it computes for itself under its own
    config (prune's skip-mode importance map), as `step_inputs` decides."""
    experiments, total = registry(), estimated(step.experiment, step.config, shape)
    for need in step.experiment.needs:
        wanted = need.configure(step.config) if need.configure is not None else configs.get(need.experiment)
        from_study = need.experiment in configs and (wanted is None or wanted == configs[need.experiment])
        if not from_study and need.computable and wanted is not None:
            total += estimated(experiments[need.experiment], wanted, shape)
    return total


def estimated(experiment: Experiment, config: object, shape: work.Shape) -> float:
    """An experiment's work in passes; nothing for one this model cannot run (the full study's 8-layer block of
    a model under 10 layers), which `conduct` records as refused when it comes to it instead of failing first."""
    return experiment.work(config, shape) if can_run(experiment, config, shape) else 0.0


def can_run(experiment: Experiment, config: object, shape: work.Shape) -> bool:
    """Whether the model of `shape` can run `experiment` under `config` at all (its work can be counted)."""
    try:
        experiment.work(config, shape)
    except AnatomyError:
        return False
    return True


def step_inputs(step: Step, study: StudyRun, configs: Mapping[str, object], loaded: LoadedModel,
                eval_set: EvalSet, progress: ProgressCallback | None) -> dict[str, Result | None]:
    """The results a step reads: the study's own run of each need when the step reads it under the study's
    config; a need the step wants under another config (prune's ablation criterion reads a skip-mode map) is
    computed for it, as the experiment's command would; a need it does not read under its config is None."""
    inputs: dict[str, Result | None] = {}
    for need in step.experiment.needs:
        wanted = need.configure(step.config) if need.configure is not None else configs.get(need.experiment)
        if need.configure is not None and wanted is None:
            inputs[need.experiment] = None
        elif need.experiment in study.results and (wanted is None or wanted == configs.get(need.experiment)):
            inputs[need.experiment] = study.results[need.experiment]
        elif need.computable and wanted is not None:
            inputs[need.experiment] = execute(registry()[need.experiment], loaded, eval_set, wanted, progress)
        elif need.required:
            raise AnatomyError(f"it needs {need.experiment}, which did not run in this study")
        else:
            inputs[need.experiment] = None
    return inputs


def refused_in(folder: Path) -> set[str]:
    """The experiments a finished study folder (its study.md) says could not run on its model."""
    study_md = folder / "study.md"
    lines = study_md.read_text(encoding="utf-8").splitlines() if study_md.is_file() else []
    return {line.removeprefix(REFUSED_LINE).split(":", 1)[0] for line in lines if line.startswith(REFUSED_LINE)}


def write_step(folder: Path, step: Step, result: Result, loaded: LoadedModel | None, eval_set: EvalSet | None,
               key: dict) -> None:
    """Write under `<name>.partial`, the key file inside it, then swap it in for any older run of the step."""
    partial = folder.with_name(folder.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    made = artefacts(step.experiment, result, loaded, eval_set, step.config)
    RunFolder(partial, step.name).write(result, made, loaded, eval_set, step.config)
    (partial / KEY_FILE).write_text(json.dumps(key, sort_keys=True, indent=1), encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


STUDY = tuple(study_experiments())
"""The experiments of the study (Wietrzykowski 2026): those declaring a `StudyRole`, in its order."""


def prepare(names: Sequence[str], quick: bool = False, layers: str | None = None) -> tuple[list[Step], dict]:
    """The study's steps and its settings (experiment -> field -> raw value: the study's own, or --quick's, and
    the recovery layers typed), checked before any model is loaded."""
    overrides = {name: dict(values) for name, values in (QUICK if quick else FULL).items() if name in names}
    if layers and "recovery" in names:
        overrides["recovery"] = {**overrides.get("recovery", {}), "layers": layers}
    return plan(names, overrides), overrides


def conduct(steps: list[Step], overrides: Mapping[str, Mapping[str, object]], loaded: LoadedModel,
            eval_set: EvalSet, out: str | Path, *, quick: bool = False, layers: str | None = None,
            growth: str | Path | None = None, progress: ProgressCallback | None = None,
            on_step: Callable[[int, int, str, float], None] | None = None) -> tuple[StudyRun, str]:
    """A study from its prepared steps to its report, for the CLI and the app alike: the recovery layers once
    the model's depth is known (stated in the Settings line as run), every step, then study.md, study.html,
    glance.png and claims.csv (by the main process; the others return an empty report)."""
    steps = with_recovery_layers(steps, LayerAdapter(loaded.model).num_layers, layers, quick)
    settings = {name: dict(values) for name, values in overrides.items()}
    recovery = next((s.config for s in steps if s.name == "recovery"), None)
    if recovery is not None:
        settings["recovery"] = {**settings.get("recovery", {}), "layers": recovery.layers or "all"}
    done = run_study(steps, loaded, eval_set, out, progress, on_step)
    markdown = write_report(done, loaded, eval_set, out, settings, quick=quick, growth=growth) \
        if processes.is_main() else ""
    return done, markdown


def write_report(study: StudyRun, loaded: LoadedModel, eval_set: EvalSet, out: str | Path,
                 settings: Mapping[str, Mapping[str, object]], quick: bool = False,
                 growth: str | Path | None = None) -> str:
    """study.md, study.html, glance.png and claims.csv in the study folder; returns the markdown. `growth`: a
    growth comparison run folder whose claims join the table."""
    out = Path(out)
    title = f"Study of {loaded.name}" + (f" @ {loaded.revision}" if loaded.revision else "")
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    lines = [f"- Shared conditions (no row is `not comparable` for these alone: no claim is about instruction tuning "
             f"or quantisation): model {loaded.title}, quantisation {loaded.quantisation}, {dtype} (study: "
             f"SmolLM2-135M base, unquantised); evaluation text {len(eval_set.texts)} texts (study: 10 sentences)",
             f"- Rules: version {findings.RULES_VERSION} (anatomy/findings.py). {CONVENTION}",
             f"- Evaluation text: {eval_set.name}: {len(eval_set.texts)} texts, {eval_set.num_tokens} predicted tokens",
             f"- Compute: weights {dtype}, "
             + (f"autocast {loaded.autocast_name} (torch.autocast)" if loaded.autocast else "autocast off"),
             "- Settings: " + ("QUICK (reduced) " if quick else "") + ("; ".join(
                 f"{name} " + ", ".join(f"{k}={v if v != '' else 'none'}" for k, v in values.items()) for name, values in settings.items())
                 or "the study's defaults") + " (every other setting: the experiment's command default)",
             "- Experiments: " + ", ".join(f"{name} (`{folder.name}/`)" for name, folder in study.folders.items()),
             "- Reused from an earlier run of the same command: " + (", ".join(study.reused) or "none"),
             *(f"{REFUSED_LINE}{name}: {why}" for name, why in study.refused.items())]
    for name, result in study.results.items():
        experiment = registry()[name]
        if experiment.headline is not None:
            lines.append(f"- {experiment.title}: {experiment.headline(result)}")
    views = study_report.layer_views(study.results)
    glance = study_report.glance_figure(views, f"The anatomy of {loaded.title} at a glance")
    glance.savefig(out / "glance.png", dpi=120, bbox_inches="tight")
    claims = findings.findings(study.results, loaded.name, study.refused,
                               load_claims(growth) if growth is not None else None)
    findings.findings_table(claims).to_csv(out / "claims.csv", index=False)
    agreement = study_report.agreement_table(views)
    times = study_report.wall_times(study.wall_s, study.reused)
    tables = study_report.panels(study.results)
    markdown = study_report.study_markdown(title, lines, claims, agreement, times, study.wall_s["study"], tables)
    (out / "study.md").write_text(markdown, encoding="utf-8")
    (out / "study.html").write_text(study_report.study_html(title, lines, glance, claims, agreement, times, tables),
                                    encoding="utf-8")
    return markdown


STUDY_DEPTH = findings.STUDY_DEPTH  # SmolLM2-135M's layers, in which the study's layer numbers are written
STUDY_RECOVERY_LAYERS = (0, 1, 3, 5, 8, 10, 11, 14, 17, 23, 24, 27, 29)  # its Table 5
QUICK_RECOVERY_LAYERS = (11, 14, 17)  # the hardest layer and the two anti-layers
QUICK_TEXTS = 16  # evaluation texts of a quick study (the default set has 48)
FULL: dict[str, dict[str, object]] = {name: dict(e.study.settings) for name, e in study_experiments().items()
                                      if e.study.settings}
"""The study's own settings where an experiment's command default differs from them (each `StudyRole.settings`):
manipulation changes the 9 layers of lowest D, as the study changed 9 layers at once."""
QUICK: dict[str, dict[str, object]] = {name: {**e.study.settings, **e.study.quick}
                                       for name, e in study_experiments().items() if e.study.settings or e.study.quick}
"""--quick: the reduced settings of each experiment (`StudyRole.quick` over `StudyRole.settings`), stated in
study.md, beside QUICK_TEXTS evaluation texts and QUICK_RECOVERY_LAYERS."""
