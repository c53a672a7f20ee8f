"""REPORT: the run folder every experiment writes (results.json, CSV tables, PNG plots, report.md).

A run folder is self-describing: results.json records the model and its revision, the config, the
library versions, the timings and every number of every table, so a run can be compared or re-plotted
without re-running it.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import transformers
from matplotlib.figure import Figure

from . import offload, sweep
from .claims import RULES_VERSION
from .evaluate import EvalSet
from .experiment import Artefacts, Result
from .layers import LayerAdapter
from .load import LoadedModel

PPL_CONVENTION = ("PPL = exp(total next-token NLL / total predicted tokens) over all evaluation texts "
                  "(token-weighted), each text scored alone with its special tokens, padding excluded; "
                  "95% intervals bootstrap the texts (2,000 resamples, paired across rows).")


def to_jsonable(obj: object) -> object:
    """Dataclasses, DataFrames, numpy and torch values as plain JSON values."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, pd.DataFrame):
        return json.loads(obj.to_json(orient="records"))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    if isinstance(obj, np.ndarray):  # a whole array (Result.arrays); a numpy scalar takes the branch below
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return obj


def text_hash(texts: list[str]) -> str:
    """The evaluation text's identity: two runs on the same texts, in the same order, share it."""
    return hashlib.sha256("\x1e".join(texts).encode("utf-8", "surrogatepass")).hexdigest()


def environment() -> dict:
    from . import __version__
    return {"anatomy": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "threads": torch.get_num_threads()}


def model_record(loaded: LoadedModel | None) -> dict | None:
    """What results.json says of the model a run measured: its name and revision, shape, dtype and placement."""
    if loaded is None:
        return None
    adapter = LayerAdapter(loaded.model)
    return {"name": loaded.name, "source": loaded.source, "revision": loaded.revision,
            "class": type(loaded.model).__name__, "num_parameters": loaded.num_parameters,
            "num_layers": adapter.num_layers, "components": adapter.describe(),
            "dtype": str(next(loaded.model.parameters()).dtype), "device": str(offload.input_device(loaded.model)),
            "device_map": offload.placement(loaded.model), "quantisation": loaded.quantisation,
            "autocast": loaded.autocast_name}


def eval_record(eval_set: EvalSet | None) -> dict | None:
    """What results.json says of the evaluation text: its name, size, sha256 and the settings that move PPL."""
    if eval_set is None:
        return None
    return {"name": eval_set.name, "num_texts": len(eval_set.texts), "num_tokens": eval_set.num_tokens,
            "sha256": text_hash(eval_set.texts), "max_length": eval_set.max_length, "seed": eval_set.seed,
            "ppl_convention": PPL_CONVENTION}


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    return df.to_markdown(index=False, floatfmt=floatfmt)


class RunFolder:
    """Writes one run: `write(result, artefacts, ...)`, or the `write_*` methods and then `finish()`.

    results.json is written last and whole (a temporary name, then a rename): its presence means complete.
    """

    def __init__(self, out: str | Path, experiment: str):
        self.path = Path(out)
        self.path.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.started = time.perf_counter()
        self.tables: dict[str, pd.DataFrame] = {}
        self.files: list[str] = []

    def write_table(self, name: str, df: pd.DataFrame) -> Path:
        path = self.path / f"{name}.csv"
        df.to_csv(path, index=False)
        self.tables[name] = df
        self.files.append(path.name)
        return path

    def write_figure(self, name: str, figure: Figure) -> Path:
        path = self.path / f"{name}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        self.files.append(path.name)
        return path

    def write_report(self, markdown: str) -> Path:
        path = self.path / "report.md"
        path.write_text(markdown, encoding="utf-8")
        self.files.append(path.name)
        return path

    def write_file(self, name: str, text: str) -> Path:
        path = self.path / name
        path.write_text(text, encoding="utf-8")
        self.files.append(path.name)
        return path

    def finish(self, loaded: LoadedModel | None, eval_set: EvalSet | None, config: object,
               results: dict, timings: dict | None = None, arrays: dict | None = None,
               needs: dict | None = None) -> Path:
        """results.json. `timings` are the run's own wall times (`run_s`: the whole experiment); the writing
        of the files is added as `write_s`, and `total_s` is their sum. `needs`: what each result the run read
        measured (`run.need_record`), so a stored run is reused only where its inputs match too."""
        timings = dict(timings or {})
        write_s = round(time.perf_counter() - self.started, 3)
        payload = {
            "experiment": self.experiment,
            "table": self.experiment,
            "rules": RULES_VERSION,  # the claims rules its claims were judged under (anatomy/claims.py)
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),  # the date a results repo lists
            "model": model_record(loaded),
            "eval_set": eval_record(eval_set),
            "config": to_jsonable(config),
            "needs": dict(needs or {}),
            "environment": environment(),
            "processes": sweep.taken(),  # how many processes ran it and, under `accelerate launch`, which items each
            "timings": {**timings, "write_s": write_s,
                        "total_s": round(float(timings.get("run_s", 0.0)) + write_s, 3)},
            "results": to_jsonable(results),
            "tables": {name: inline_or_file(name, df) for name, df in self.tables.items()},
            "dtypes": {name: {str(c): str(t) for c, t in df.dtypes.items()} for name, df in self.tables.items()},
            "arrays": to_jsonable(arrays or {}),
            "files": self.files,
        }
        path = self.path / "results.json"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(payload, indent=2, allow_nan=True), encoding="utf-8")
        return partial.replace(path)

    def write(self, result: Result, artefacts: Artefacts, loaded: LoadedModel | None, eval_set: EvalSet | None,
              config: object) -> Path:
        """Tables, figures, extra files, report.md and results.json of one run; returns the results.json path."""
        for name, df in result.all_tables.items():
            self.write_table(name, df)
        for name, figure in artefacts.figures.items():
            self.write_figure(name, figure)
        for name, text in artefacts.files.items():
            self.write_file(name, text)
        self.write_report(artefacts.markdown)
        return self.finish(loaded, eval_set, config, result.scalars, result.timings, result.arrays,
                           result.source.get("needs"))

    def zip(self) -> Path:
        """The whole folder as one .zip next to it (the app's download button)."""
        return Path(shutil.make_archive(str(self.path), "zip", root_dir=self.path))


INLINE_CELLS = 20_000
"""Tables up to this many cells are also inlined in results.json (one file holds a small run whole); a larger
one (spectral's singular values: 13 MB as JSON beside a 3 MB CSV) is named by its CSV file only."""


def inline_or_file(name: str, df: pd.DataFrame) -> list | dict:
    """results.json's entry for a table: its rows, or `{"csv": file, "rows": n}` when it is large."""
    return to_jsonable(df) if df.size <= INLINE_CELLS else {"csv": f"{name}.csv", "rows": len(df)}


def parameters_markdown(config: object) -> str:
    """The report's parameter table: every declared field of the config, by its CLI flag."""
    from .options import parameter_table
    rows = parameter_table(config)
    if not rows:
        return ""
    table = pd.DataFrame(rows, columns=["field", "flag", "value", "meaning"])
    return "\n## Parameters\n\n" + table.to_markdown(index=False) + "\n"


def header(title: str, loaded: LoadedModel | None, eval_set: EvalSet | None) -> str:
    """The first lines of every report.md: what was measured, on which model and text."""
    lines = [f"# {title}", ""]
    if loaded is not None:
        rev = f" @ {loaded.revision}" if loaded.revision else ""
        lines.append(f"- Model: `{loaded.name}`{rev} ({type(loaded.model).__name__}, "
                     f"{loaded.num_parameters / 1e6:.1f}M parameters, "
                     f"{LayerAdapter(loaded.model).num_layers} layers, numbered from 0)")
        lines.append(components_line(LayerAdapter(loaded.model)))
        spread = offload.placement(loaded.model)
        lines.append(f"- Weights: {str(next(loaded.model.parameters()).dtype).removeprefix('torch.')}"
                     + (", spread by accelerate over " + ", ".join(f"{d} ({n} modules)" for d, n in spread.items())
                        if spread else f" on {loaded.model.device}") + f"; quantisation: {loaded.quantisation}"
                     + (f"; computed under torch.autocast in {loaded.autocast_name}" if loaded.autocast else ""))
    if eval_set is not None:
        lines.append(f"- Evaluation text: {eval_set.name}: {len(eval_set.texts)} texts, {eval_set.num_tokens} "
                     "predicted tokens")
        lines.append(f"- {PPL_CONVENTION}")
    return "\n".join(lines) + "\n"


def components_line(adapter: LayerAdapter) -> str:
    """Which real parameter each component is, and which ones per-component experiments include (those
    every layer has with one shape); layer-level interventions always act on all of them."""
    parts = []
    for row in adapter.describe():
        notes = [n for n in (row["view"] and "a view into it", row["experts"] and f"experts: {row['experts']}",
                             row["layers"] != "all" and f"layers {row['layers']}",
                             not row["included"] and "not in per-component experiments") if n]
        parts.append(f"`{row['component']}` = `{row['parameter']}`" + (f" ({'; '.join(notes)})" if notes else ""))
    return "- Components (layer-level interventions act on all of them): " + ", ".join(parts)
