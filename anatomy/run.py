"""Running a declared experiment: its needs resolved, the run timed, the run folder written.

The CLI, the app and the study all go through `execute` and `write`, so a number computed in one place is
the number every other place shows, and `resolve_needs` is the one place that decides where a needed
result comes from: a run folder the user names, a result the caller already holds (the app's session), or
computed now with the needed experiment's defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from contextlib import nullcontext
from pathlib import Path

from .errors import AnatomyError
from .evaluate import EvalSet
from .experiment import Artefacts, Experiment, Need, Result, registry
from .load import LoadedModel
from .progress import ProgressCallback
from .report import eval_record, model_record, parameters_markdown, to_jsonable

Source = str | Path | Result | None


def resolve_needs(experiment: Experiment, given: Mapping[str, Source], *,
                  compute: Callable[..., Result] | None = None,
                  missing: Callable[[Need], str] | None = None,
                  require: Collection[str] = (), config: object = None) -> dict[str, Result | None]:
    """One result (or None for an optional need nobody gave) per need of `experiment`.

    `given` maps a need's name to a run folder or a `Result`; a need not given is computed with `compute`
    when the need allows it and the caller can (it has a model), else refused with `missing(need)` as the
    way out (the CLI names its flag, the app its tab). `require` names optional needs the caller wants
    refused when missing all the same (the app, unless the user chose to do without them). With `config`
    (the reader's), a need whose `configure` says this config does not read it is None, and one computed
    gets the config it names.
    """
    out: dict[str, Result | None] = {}
    for need in experiment.needs:
        needed_config = None
        if need.configure is not None and config is not None:
            needed_config = need.configure(config)
            if needed_config is None:
                out[need.experiment] = None
                continue
        source = given.get(need.experiment)
        if isinstance(source, Result):
            out[need.experiment] = source
        elif source is not None and str(source).strip():
            out[need.experiment] = Result.load(source, need.experiment)
        elif need.computable and compute is not None:
            needed = registry()[need.experiment]
            out[need.experiment] = compute(needed) if needed_config is None else compute(needed, needed_config)
        elif need.required or need.experiment in require:
            hint = missing(need) if missing else f"give a {need.experiment} run"
            raise AnatomyError(f"{experiment.title} needs a {need.experiment} result: {hint}.")
        else:
            out[need.experiment] = None
    return out


def execute(experiment: Experiment, loaded: LoadedModel | None, eval_set: EvalSet | None, config: object,
            progress: ProgressCallback | None = None, inputs: Mapping[str, Result | None] | None = None) -> Result:
    """Run the experiment, under the model's autocast where it has one (`LoadedModel.compute`), and record its
    wall time (`timings.run_s`, everything from the first step to the result, needs given as inputs excluded)."""
    if hasattr(config, "validate"):
        config.validate()
    kwargs: dict = dict(inputs or {})
    if experiment.uses_tokenizer:
        kwargs["tokenizer"] = None if loaded is None else loaded.tokenizer
    t0 = time.perf_counter()
    with nullcontext() if loaded is None else loaded.compute():
        result = experiment.run(None if loaded is None else loaded.model, eval_set, config, progress, **kwargs)
    result.timings = {**result.timings, "run_s": round(time.perf_counter() - t0, 3)}
    result.source = {"model": model_record(loaded), "eval_set": eval_record(eval_set), "config": to_jsonable(config),
                     "needs": {name: need_record(r) for name, r in (inputs or {}).items() if r is not None},
                     **result.source}
    return result


NEED_MODEL = ("name", "source", "revision", "dtype", "autocast", "num_layers")
NEED_EVAL = ("name", "sha256", "max_length", "seed")


def need_record(result: Result) -> dict:
    """What a result another one read measured, as its reader's results.json records it: enough to file and
    reuse the reader (`atlas.stored_key` reads it like a results.json), and the name of its run folder."""
    model, eval_set = result.source.get("model"), result.source.get("eval_set")
    run = result.source.get("run")
    return {"experiment": result.experiment, "run": Path(run).name if run else None,
            "model": None if model is None else {k: model.get(k) for k in NEED_MODEL},
            "eval_set": None if eval_set is None else {k: eval_set.get(k) for k in NEED_EVAL},
            "config": result.source.get("config")}


def compute_with(loaded: LoadedModel | None, eval_set: EvalSet | None,
                 progress: ProgressCallback | None) -> Callable[..., Result] | None:
    """How a needed experiment is computed on the spot: its defaults (or the config its reader names), the
    same model and text."""
    if loaded is None:
        return None
    return lambda needed, config=None: execute(needed, loaded, eval_set,
                                               needed.config() if config is None else config, progress)


def artefacts(experiment: Experiment, result: Result, loaded: LoadedModel | None, eval_set: EvalSet | None,
              config: object) -> Artefacts:
    """The experiment's figures and report, the report ending with the parameter table of its config."""
    made = experiment.artefacts(result, loaded, eval_set, config)
    made.markdown = made.markdown.rstrip("\n") + "\n" + parameters_markdown(config)
    return made

