"""`python -m anatomy <experiment>`: the shared flags and the dispatcher.

Each module in `anatomy/experiments/` that defines `add_cli(subparsers)` becomes a subcommand, so adding
an experiment never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import math
import pkgutil
import sys

import pandas as pd
from accelerate.utils import convert_file_size_to_int

from . import experiments
from .errors import AnatomyError, shown
from .evaluate import EvalSet
from .load import DTYPES, EMBEDDED, LoadedModel, Placement, load_model
from .offload import input_device
from .report import RunFolder
from .texts import resolve_eval_texts


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


def add_common_args(parser: argparse.ArgumentParser, out: str) -> None:
    """Model, evaluation text and output flags every experiment shares."""
    add_model_args(parser)
    add_eval_args(parser)
    parser.add_argument("--out", default=out, help=f"run folder to write (default {out})")


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
    print(f"loading model {args.model} ...", file=sys.stderr)
    return load_model(args.model, dtype=args.dtype, device=args.device, revision=args.revision, placement=placement)


def eval_set_from_args(args: argparse.Namespace, loaded: LoadedModel) -> EvalSet:
    texts, name = resolve_eval_texts(args.text_file, args.dataset)
    return EvalSet.from_texts(texts, loaded.tokenizer, name=name, batch_size=args.batch_size,
                              max_length=args.max_length, device=input_device(loaded.model), seed=args.seed)


def load_model_and_eval_set(args: argparse.Namespace) -> tuple[LoadedModel, EvalSet]:
    loaded = load_from_args(args)
    return loaded, eval_set_from_args(args, loaded)


def parse_floats(text: str, count: int | None, flag: str) -> tuple[float, ...]:
    """Comma-separated finite numbers (`count` of them, if given); nan and inf are refused here, because
    every comparison with nan is False and would slip past the range checks of a config."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise AnatomyError(f"{flag} takes comma-separated numbers, got {shown(text)}.") from None
    if not all(map(math.isfinite, values)):
        raise AnatomyError(f"{flag} takes finite numbers, got {shown(text)}.")
    if count is not None and len(values) != count:
        raise AnatomyError(f"{flag} takes {count} comma-separated numbers, got {shown(text)}.")
    return values


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """Comma-separated whole numbers in plain digits (a count of layers, a block size)."""
    tokens = [t.strip() for t in text.split(",")]
    if not all(t.isascii() and t.isdigit() and len(t) <= 6 for t in tokens):
        raise AnatomyError(f"{flag} takes comma-separated whole numbers like 3,6, got {shown(text)}.")
    return tuple(int(t) for t in tokens)


def print_summary(run: RunFolder, table: pd.DataFrame) -> None:
    with pd.option_context("display.max_rows", 200, "display.width", 160):
        print(table.to_string(index=False))
    print(f"\nrun folder: {run.path} ({', '.join(run.files)}, results.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m anatomy",
                                     description="Measure the layer anatomy of a Hugging Face causal LM. "
                                                 "Layers are numbered from 0.")
    subparsers = parser.add_subparsers(dest="experiment", required=True, metavar="<experiment>")
    for info in sorted(pkgutil.iter_modules(experiments.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{experiments.__name__}.{info.name}")
        if hasattr(module, "add_cli"):
            module.add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except AnatomyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
