"""DISK: where the project caches things, and refusing a Hub download that would not fit on the disk, from the
Hub's file sizes, before the first byte.

A download that fills the disk fails half-way, leaves a broken cache entry and, on a Space, breaks every
other visitor's runs too; the metadata already lists each file's size, so the check costs nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .errors import AnatomyError

# the files from_pretrained fetches besides the weights: config, tokenizer, generation config
_FETCHED = (".safetensors", ".json", ".txt", ".model", ".tiktoken")
DISK_HEADROOM = 1.1  # the cache writes each file under a temporary name first


def cache_dir() -> Path:
    """The project's cache (the embedded model converted once, corpora, growth tokenizers):
    `$TRANSFORMER_ANATOMY_CACHE` or `~/.cache/transformer-anatomy`."""
    return Path(os.environ.get("TRANSFORMER_ANATOMY_CACHE") or Path.home() / ".cache" / "transformer-anatomy")


def hub_cache() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def download_bytes(repo_id: str, revision: str, siblings: Iterable) -> int:
    """Bytes still to download for `repo_id` at `revision`: the files from_pretrained fetches, less cached ones."""
    from huggingface_hub import try_to_load_from_cache

    need = 0
    for sibling in siblings:
        name = sibling.rfilename
        if name.endswith(_FETCHED) and "/" not in name:
            if not isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str):
                need += sibling.size or 0
    return need


def free_bytes(where: Path) -> int:
    """Free bytes on the file system that holds `where` (or its nearest existing parent)."""
    where = Path(where).absolute()
    while not where.exists():
        where = where.parent
    return shutil.disk_usage(where).free


def check_free_disk(need: int, where: Path, what: str) -> None:
    """Refuse `what` when `need` bytes (plus headroom) exceed the free disk under `where`."""
    have = free_bytes(where)
    if need * DISK_HEADROOM > have:
        raise AnatomyError(f"Not enough disk for {what}: it needs ~{need / 2**30:.2f} GiB in {where}, but only "
                           f"{have / 2**30:.2f} GiB is free. Free some space (or set HF_HOME to a larger disk), "
                           "or pick a smaller model.")
