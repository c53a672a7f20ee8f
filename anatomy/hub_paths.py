"""What a pushed copy keeps of the publisher's machine: a local file or folder by its name, never its full path.

A run folder names the files it read by the path they had on the machine that ran it: a local model folder
or GGUF file, a `--text-file`, the run folders of its needs, the folders a model was saved to. Those paths
say who ran it and how their disk is laid out (a home folder holds a user name), and are of no use to
anyone reading the results repo. So the copy that is uploaded (results.json, report.md, the CSV tables,
study.md and study.html, and the card built from them) names each by its last part, `tiny-llama`, not
`/home/alice/models/tiny-llama`; the run folder on disk keeps its paths, which its owner may want to rerun.
The figures are images, which cannot be rewritten: their titles name a local model by its last part
(`LoadedModel.title`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePath

TEXT_SUFFIXES = {".json", ".md", ".csv", ".html", ".txt", ".yaml", ".yml"}
LOCAL_SOURCES = ("folder", "gguf")
TEXT_FILE = "file "  # how an evaluation text read from a file is named (`texts.resolve_eval_texts`)


def local_paths(payloads: Iterable[dict]) -> list[str]:
    """The publisher's paths that results.json payloads name: a local model, a text file, and every absolute
    path among the config's and the results' values (save folders, the runs a budget read); longest first, so
    a path is replaced before a folder that holds it."""
    found: set[str] = set()
    for payload in payloads:
        for record in [payload, *(payload.get("needs") or {}).values()]:
            model, eval_set = (record or {}).get("model") or {}, (record or {}).get("eval_set") or {}
            if model.get("source") in LOCAL_SOURCES and model.get("name"):
                found.add(str(model["name"]))
            if str(eval_set.get("name", "")).startswith(TEXT_FILE):
                found.add(str(eval_set["name"]).removeprefix(TEXT_FILE))
            found.update(v for v in strings((record or {}).get("config")) if os.path.isabs(v))
        found.update(v for v in strings(payload.get("results")) if os.path.isabs(v))
    return sorted((p for p in found if p and PurePath(p).name and PurePath(p).name != p), key=len, reverse=True)


def strings(value: object) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def name_only(folder: Path, paths: list[str]) -> None:
    """Rewrite every text file under `folder` (a staged copy, never the run folder) so that each of `paths`
    reads as its last part; in JSON also as json.dumps spells a path with non-ASCII letters."""
    if not paths:
        return
    pairs = [(p, PurePath(p).name) for p in paths]
    pairs += [(json.dumps(p)[1:-1], json.dumps(n)[1:-1]) for p, n in pairs if json.dumps(p)[1:-1] != p]
    for file in folder.rglob("*"):
        if not file.is_file() or file.suffix not in TEXT_SUFFIXES:
            continue
        text = original = file.read_text(encoding="utf-8", errors="surrogateescape")
        for path, name in pairs:
            text = text.replace(path, name)
        if text != original:
            file.write_text(text, encoding="utf-8", errors="surrogateescape")
