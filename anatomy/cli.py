"""`python -m anatomy <experiment>`: every command built from the experiments' declarations.

Each declared experiment (`anatomy.experiment.registry()`) becomes a subcommand: the shared model and
evaluation-text flags, one flag per config field (its name in kebab case, its default and help from the
field), one `--<need> RUN` flag per experiment it reads, and `--out`. This is the only module that uses
argparse, so adding an experiment never touches it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm
from accelerate.utils import convert_file_size_to_int
from huggingface_hub import HfApi, get_token

from . import atlas, hub, hub_model, processes, study, study_report, sweep
from .claims import load_claims
from .errors import AnatomyError
from .evaluate import EvalSet
from .experiment import Experiment, Result, registry
from .load import AUTOCAST, DTYPES, EMBEDDED, LoadedModel, Placement, load_model
from .model_spec import parse_model_spec
from .options import build_config, params
from .report import RunFolder, text_hash, to_jsonable
from .run import artefacts, compute_with, execute, resolve_needs
from .texts import EvalTextOptions, build_eval_set, resolve_eval_texts


def add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=EMBEDDED,
                       help="'embedded' (SmolLM2-135M-Instruct shipped offline, default), a Hub id "
                            "(owner/name), a local model folder, or a .gguf file")
    group.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    group.add_argument("--device", help="torch device (default: what accelerate picks: cuda if present, else cpu)")
    group.add_argument("--dtype", choices=["auto", *DTYPES], default="float32",
                       help="weights dtype (default float32); auto: bfloat16 on GPUs that have it, float16 on "
                            "older GPUs (T4), float32 on CPU. Log-likelihoods are computed in float32 always")
    group.add_argument("--autocast", choices=list(AUTOCAST),
                       help="compute in this dtype under torch.autocast over float32 weights (training keeps float32 "
                            "weights and optimizer state): bfloat16 on a CPU with AVX512-BF16/AMX or a GPU that has "
                            "it; float16 with a gradient scaler on a GPU without (T4). Default: off. Recorded in "
                            "results.json and study.md")
    group.add_argument("--device-map", choices=["auto"],
                       help="spread a model folder or Hub model too large for one device over the GPUs, then the "
                            "CPU (accelerate), instead of --device")
    group.add_argument("--max-memory", help="with --device-map: memory per device, e.g. 0=20GiB,1=20GiB,cpu=64GiB "
                                            "(default: what is free)")
    group.add_argument("--offload-folder", help="with --device-map: allow offloading what does not fit to this "
                                                "folder on disk (slow)")


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation text")
    group.add_argument("--text-file", help="evaluation texts: a plain-text file (paragraphs, or one per line)")
    group.add_argument("--dataset", help="online: one file of a Hub dataset, owner/name:path/file.jsonl")
    group.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (default 16)")
    group.add_argument("--max-length", type=int, default=256, help="tokens kept per text (default 256)")
    group.add_argument("--seed", type=int, default=0, help="seed for bootstrap resampling and noise (default 0)")


def placement_from_args(args: argparse.Namespace) -> Placement:
    if args.device_map is None:
        if args.max_memory or args.offload_folder:
            raise AnatomyError("--max-memory and --offload-folder work with --device-map auto: add it.")
        return Placement()
    max_memory = None
    if args.max_memory:
        try:
            pairs = [item.split("=") for item in args.max_memory.split(",")]
            max_memory = {int(k) if k.strip().isdigit() else k.strip(): convert_file_size_to_int(v.strip())
                          for k, v in pairs}
        except ValueError:
            raise AnatomyError(f"--max-memory takes device=size pairs like 0=20GiB,cpu=64GiB, got "
                               f"'{args.max_memory}'.") from None
    return Placement(args.device_map, max_memory, args.offload_folder)


def load_from_args(args: argparse.Namespace) -> LoadedModel:
    placement = placement_from_args(args)
    if processes.is_main():
        print(f"loading model {args.model} ...", file=sys.stderr)
    return load_model(args.model, dtype=args.dtype, device=args.device, revision=args.revision, placement=placement,
                      autocast=args.autocast)


def sizes_from_args(args: argparse.Namespace) -> EvalTextOptions:
    """--batch-size and --max-length within their declared ranges (checked before the model loads)."""
    return EvalTextOptions.checked(where={"batch_size": "--batch-size", "max_length": "--max-length"},
                                   batch_size=args.batch_size, max_length=args.max_length)


def eval_set_from_args(args: argparse.Namespace, loaded: LoadedModel, limit: int | None = None) -> EvalSet:
    """The evaluation set the flags name; `limit` keeps its first texts (a quick study)."""
    sizes = sizes_from_args(args)
    texts, name = resolve_eval_texts(args.text_file, args.dataset)
    if limit is not None and len(texts) > limit:
        texts, name = texts[:limit], f"{name}, first {limit}"
    return build_eval_set(texts, name, loaded.model, loaded.tokenizer, sizes, seed=args.seed)


def add_config_args(parser: argparse.ArgumentParser, experiment: Experiment) -> None:
    """One flag per declared config field, and one per need; values stay text until `config_from_args`."""
    group = parser.add_argument_group(experiment.name)
    taken = set(parser._option_string_actions)  # a field named like a shared flag (`--seed`) is that flag
    for param in params(experiment.config):
        opt = param.option
        if not opt.cli or param.flag in taken:
            continue
        default = param.default if opt.cli_default is None else opt.cli_default
        names = [param.flag, *opt.aliases]
        if param.is_switch:
            group.add_argument(*names, dest=param.name, action="store_true", default=None,
                               help=opt.help.replace("%", "%%"))
            continue
        shown_default = param.text(default)
        group.add_argument(*names, dest=param.name, default=None, action="append" if opt.repeat else "store",
                           choices=opt.choices if opt.choices and not opt.multiple else None,
                           metavar=None if opt.choices and not opt.multiple else param.name.upper(),
                           help=f"{opt.help} (default: {shown_default or 'none'})".replace("%", "%%"))
    for need in experiment.needs:
        parser.add_argument(f"--{need.experiment}", metavar="RUN", help=need.help.replace("%", "%%"))


def config_from_args(experiment: Experiment, args: argparse.Namespace) -> object:
    """The config from the flags given (a switch flips its field's default), checked before any heavy work."""
    values = {}
    for param in params(experiment.config):
        value = getattr(args, param.name, None)
        if value is None:
            if param.option.cli_default is not None:
                values[param.name] = param.option.cli_default
            continue
        if isinstance(value, list):  # a repeated flag: one item of the codec's text each
            value = "\n".join(value)
        default = param.default if param.option.cli_default is None else param.option.cli_default
        values[param.name] = (not default) if param.is_switch else value
    return build_config(experiment.config, values, where=lambda p: p.flag)


def add_hub_args(parser: argparse.ArgumentParser, reuse: bool = True) -> None:
    """--push-to-hub, and --from-hub where a stored run can stand for this one (`reuse`: it names a model)."""
    group = parser.add_argument_group("results on the Hub")
    group.add_argument("--push-to-hub", metavar="OWNER/NAME",
                       help="publish the finished run folder to this Hub dataset repo (created if missing; other "
                            "runs in it are kept). Token: HF_TOKEN or `hf auth login`")
    if not reuse:
        parser.set_defaults(from_hub=None)
        return
    group.add_argument("--from-hub", metavar="OWNER/NAME",
                       help="show this model's stored run from a results repo instead of computing it, if it was "
                            "measured with the same model revision, text and settings; refused otherwise")


def check_hub_flags(args: argparse.Namespace) -> None:
    """--push-to-hub checked (id, token, repo type, Hub reachable) before any model is loaded."""
    if args.push_to_hub and args.from_hub:
        raise AnatomyError("--push-to-hub and --from-hub together would publish what is already published: "
                           "give one.")
    if args.push_to_hub:
        args.push_to_hub = hub.check_target(args.push_to_hub, args.out)


def push_after(args: argparse.Namespace, folder: Path) -> None:
    """The push at the end of a run; a failure keeps the folder and says how to push it later."""
    if args.push_to_hub:
        print(f"pushed to {hub.push(folder, args.push_to_hub)}")


def model_slug_of(args: argparse.Namespace) -> str:
    """The repo folder of the model `--model` names, as a push of its runs spells it."""
    return hub.spec_slug(args.model)


def expected_key(args: argparse.Namespace, config: object | None, uses_eval: bool = True,
                 limit: int | None = None) -> dict:
    """What a stored run must have measured to stand for this command: its model (and the commit a Hub id
    resolves to now), the weights' dtype unless `auto` (its choice depends on the machine), the evaluation
    text's sha256 (`limit`: its first texts), its --max-length and --seed, whether it computed under autocast
    and, when given, the config."""
    spec = parse_model_spec(args.model)
    revision = None
    if spec.kind == "hub":
        try:
            revision = HfApi(token=get_token() or None).model_info(args.model, revision=args.revision).sha
        except hub.HUB_ERRORS as err:
            raise hub.hub_failure(err, args.model, f"resolving the revision of {args.model}",
                                  atlas.READ_LATER) from None
    texts = resolve_eval_texts(args.text_file, args.dataset)[0] if uses_eval else []
    texts = [t for t in texts[:limit] if t and t.strip()]  # as eval_set_from_args, then EvalSet.from_texts
    return {"model": model_slug_of(args), "revision": revision,
            "dtype": None if args.dtype == "auto" else f"torch.{args.dtype}", "autocast": args.autocast or "off",
            "eval_sha256": text_hash(texts) if uses_eval else None,
            "eval_max_length": args.max_length if uses_eval else None, "eval_seed": args.seed if uses_eval else None,
            "config": None if config is None else to_jsonable(config)}


def from_hub(args: argparse.Namespace, path_in_repo: str, expected: dict, needs: dict | None = None) -> Path:
    """The stored folder as the run folder `--out`, once its key matches `expected` and the keys of the results
    it read match `needs` (`atlas.expected_needs`); refused otherwise, and then --out is left as it was."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = atlas.download(args.from_hub, path_in_repo, tmp)
        payload = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        differ = atlas.differences(atlas.stored_key(payload), expected) + atlas.need_differences(payload, needs or {})
        if differ:
            raise AnatomyError(f"The stored {path_in_repo} in {args.from_hub} measured something else ("
                               + "; ".join(differ) + "): drop --from-hub to compute it with these settings.")
        return atlas.keep(folder, args.out)


def print_summary(experiment: Experiment, result: Result, out: Path, files: list[str]) -> None:
    columns = experiment.columns(result) if callable(experiment.columns) else experiment.columns
    table = (experiment.printed(result) if experiment.printed else
             result.table[list(columns)] if columns else result.table)
    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(table.to_string(index=False))
    if experiment.headline is not None:
        print(experiment.headline(result))
    print(f"\nrun folder: {out} ({', '.join(files)}, results.json)")


def run_command(experiment: Experiment, args: argparse.Namespace) -> None:
    """Config and given run folders checked first, then the model loaded, needs resolved, run, written."""
    config = config_from_args(experiment, args)
    if experiment.uses_eval:
        sizes_from_args(args)
    check_hub_flags(args)
    if args.from_hub:
        show_stored(experiment, args, config)
        return
    given = {need.experiment: Result.load(path, need.experiment) for need in experiment.needs
             if (path := getattr(args, need.experiment, None))}
    loaded = load_from_args(args) if experiment.uses_model else None
    eval_set = eval_set_from_args(args, loaded) if experiment.uses_eval and loaded is not None else None
    if experiment.check is not None and loaded is not None:
        experiment.check(config, loaded.model)
    inputs = resolve_needs(experiment, given, compute=compute_with(loaded, eval_set, None),
                           missing=lambda need: f"pass --{need.experiment} RUN, the folder written by "
                                                f"`python -m anatomy {need.experiment}`", config=config)
    result = execute(experiment, loaded, eval_set, config, None, inputs)
    if processes.is_main():  # under `accelerate launch` every process holds the gathered result; one writes it
        made = artefacts(experiment, result, loaded, eval_set, config)
        folder = RunFolder(args.out, experiment.name)
        folder.write(result, made, loaded, eval_set, config)
        print_summary(experiment, result, folder.path, folder.files)
        push_after(args, folder.path)
    sweep.wait_for_everyone()


def show_stored(experiment: Experiment, args: argparse.Namespace, config: object) -> None:
    """--from-hub: the stored run of this model and experiment, written to --out and printed like a new one."""
    expected = expected_key(args, config, experiment.uses_eval)
    given = {need.experiment: Result.load(path, need.experiment) for need in experiment.needs
             if (path := getattr(args, need.experiment, None))}
    needs = atlas.expected_needs(experiment, config, given, {**expected, "config": None})
    folder = from_hub(args, f"{model_slug_of(args)}/{experiment.name}", expected, needs)
    result = Result.load(folder, experiment.name)
    written = json.loads((folder / "results.json").read_text(encoding="utf-8")).get("written") or "an unknown date"
    print_summary(experiment, result, folder, sorted(p.name for p in folder.iterdir() if p.name != "results.json"))
    print(f"stored result from {args.from_hub}, measured on {written} with the same model, text and settings "
          "(drop --from-hub to compute it again)")


SPEC_NOTE = "\"SPEC section N\" is section N of docs/SPEC.md, the protocol reference in the repository."


def add_study_parser(subparsers: argparse._SubParsersAction) -> None:
    sub = subparsers.add_parser("study", help="every experiment of the study in dependency order, one folder "
                                "each, resumable; study.md at the end", description=study.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(sub)
    add_eval_args(sub)
    sub.add_argument("--out", default="runs/study", help="study folder (default runs/study); the same command "
                                                         "again continues where a killed run stopped")
    sub.add_argument("--experiments", default=",".join(study.STUDY),
                     help=f"comma-separated experiments (default: {','.join(study.STUDY)})")
    sub.add_argument("--quick", action="store_true", help="reduced settings (stated in study.md) for a few minutes "
                                                          "on a CPU")
    sub.add_argument("--layers", help="recovery layers (default: the study's 13; 'all' for every layer)")
    sub.add_argument("--growth", metavar="RUN", help="a growth comparison run (python -m growth_models.compare "
                                                     "--regime study): its growth-vs-uniform claim joins the table")
    add_hub_args(sub)


def run_study_command(args: argparse.Namespace) -> None:
    names = [n.strip() for n in args.experiments.split(",") if n.strip()]
    if args.growth:
        load_claims(args.growth)  # a wrong folder fails now, not after the study
    steps, overrides = study.prepare(names, args.quick, args.layers)
    sizes_from_args(args)
    check_hub_flags(args)
    if args.from_hub:
        show_stored_study(args, steps)
        return
    loaded = load_from_args(args)  # every flag above was checked before this
    eval_set = eval_set_from_args(args, loaded, study.QUICK_TEXTS if args.quick else None)
    with tqdm(total=len(steps), desc="study", unit="experiment", position=0, disable=not processes.is_main()) as bar:
        def on_step(done: int, total: int, name: str, eta_s: float) -> None:
            bar.update(1)
            bar.set_postfix_str(f"{name} done" + (f", about {eta_s / 60:.1f} min left" if eta_s == eta_s else ""))
        _, markdown = study.conduct(steps, overrides, loaded, eval_set, args.out, quick=args.quick,
                                    layers=args.layers, growth=args.growth, on_step=on_step)
    if processes.is_main():
        print(markdown)
        push_after(args, Path(args.out))
    sweep.wait_for_everyone()


def show_stored_study(args: argparse.Namespace, steps: list[study.Step]) -> None:
    """--from-hub on a study: the stored study of this model, each step checked against the step it would run
    (model, commit, text; the config of every step but recovery, whose layers follow the model's depth)."""
    base = expected_key(args, None, limit=study.QUICK_TEXTS if args.quick else None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = atlas.download(args.from_hub, f"{model_slug_of(args)}/{hub.STUDY}", tmp)
        check_stored_study(args, steps, folder, base)
        folder = atlas.keep(folder, args.out)
    print((folder / "study.md").read_text(encoding="utf-8"))
    print(f"stored study from {args.from_hub} (drop --from-hub to compute it again)")


def check_stored_study(args: argparse.Namespace, steps: list[study.Step], folder: Path, base: dict) -> None:
    """Refuse a stored study one of whose steps is missing or measured with other settings, naming them; a step
    the study could not run on its model (study.md says so) stands as it is."""
    refused = study.refused_in(folder)
    for step in steps:
        if step.name in refused:
            continue
        if not (folder / step.name / "results.json").is_file():
            raise AnatomyError(f"The stored study in {args.from_hub} has no {step.name} step: drop --from-hub to "
                               "compute the study.")
        config = None if step.name == "recovery" else to_jsonable(step.config)
        stored = atlas.stored_key(json.loads((folder / step.name / "results.json").read_text(encoding="utf-8")))
        differ = atlas.differences(stored, {**base, "config": config})
        if differ:
            raise AnatomyError(f"The stored study's {step.name} in {args.from_hub} measured something else ("
                               + "; ".join(differ) + "): drop --from-hub to compute the study with these settings.")


def add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    sub = subparsers.add_parser("compare-studies", help="two or more finished studies side by side (claims, maps "
                                "aligned by relative depth)")
    sub.add_argument("studies", nargs="+", metavar="STUDY", help="study folders written by `python -m anatomy study`")
    sub.add_argument("--out", default="runs/compare", help="folder for compare.md and maps.png (default runs/compare)")


def run_compare_command(args: argparse.Namespace) -> None:
    if len(args.studies) < 2:
        raise AnatomyError("compare-studies takes two or more study folders.")
    names = [Path(s).name or s for s in args.studies]
    markdown, figure = study_report.compare_studies(args.studies, names)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure.savefig(out / "maps.png", dpi=120, bbox_inches="tight")
    (out / "compare.md").write_text(markdown, encoding="utf-8")
    print(markdown)


def add_push_parser(subparsers: argparse._SubParsersAction) -> None:
    sub = subparsers.add_parser("push", help="publish a finished run or study folder to a Hub dataset repo",
                                description=hub.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("run", metavar="RUN", help="a run folder or a study folder")
    sub.add_argument("repo_id", metavar="OWNER/NAME", help="the dataset repo (created if missing)")


def add_push_model_parser(subparsers: argparse._SubParsersAction) -> None:
    sub = subparsers.add_parser(hub_model.PUSH_MODEL, help="publish a model a prune or plans run saved (--save) to "
                                "a Hub model repo with its card", description=hub_model.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("run", metavar="RUN", help="the prune or plans run folder that saved the model")
    sub.add_argument("repo_id", metavar="OWNER/NAME", help="the model repo (created if missing)")
    sub.add_argument("--folder", help="which saved model, where the run saved several (prune with several K)")


def add_atlas_parser(subparsers: argparse._SubParsersAction) -> None:
    sub = subparsers.add_parser("atlas", help="list what a results repo on the Hub holds", description=atlas.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("repo_id", metavar="OWNER/NAME", help="a dataset repo written by --push-to-hub")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m anatomy",
                                     description="Measure the layer anatomy of a Hugging Face causal LM. "
                                                 "Layers are numbered from 0.", epilog=SPEC_NOTE)
    subparsers = parser.add_subparsers(dest="experiment", required=True, metavar="<experiment>")
    for experiment in registry().values():
        sub = subparsers.add_parser(experiment.name, aliases=list(experiment.aliases), help=experiment.summary,
                                    description=experiment.description or experiment.summary,
                                    epilog=SPEC_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(experiment=experiment.name)  # the declared name, whichever alias was typed
        if experiment.uses_model:
            add_model_args(sub)
        if experiment.uses_eval:
            add_eval_args(sub)
        sub.add_argument("--out", default=experiment.default_out,
                         help=f"run folder to write (default {experiment.default_out})")
        add_config_args(sub, experiment)
        add_hub_args(sub, reuse=experiment.uses_model)
    add_study_parser(subparsers)
    add_compare_parser(subparsers)
    add_push_parser(subparsers)
    add_push_model_parser(subparsers)
    add_atlas_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sweep.stop_on_worker_loss()
    try:
        if args.experiment == "study":
            run_study_command(args)
        elif args.experiment == "compare-studies":
            run_compare_command(args)
        elif args.experiment == "push":
            hub.target_path(Path(args.run))  # a folder that is no run fails before the Hub is asked
            print(f"pushed to {hub.push(args.run, hub.check_target(args.repo_id, args.run))}")
        elif args.experiment == hub_model.PUSH_MODEL:
            print(f"pushed to {hub_model.push_model(args.run, args.repo_id, args.folder)}")
        elif args.experiment == "atlas":
            with pd.option_context("display.max_rows", 500, "display.width", 200):
                print(atlas.atlas(args.repo_id).to_string(index=False))
        else:
            run_command(registry()[args.experiment], args)
    except AnatomyError as err:
        if processes.is_main():  # under `accelerate launch` the other processes hit the same error: one line
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
