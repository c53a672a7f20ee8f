"""MODEL SPEC: what the text a user types as "the model" names, decided once for the CLI, the library and the app.

A spec is `embedded` (the model shipped with the package), a local `.gguf` file, a local model folder, or a
Hub id (owner/name). A local path wins over a Hub id of the same spelling; anything else is refused in one
line, before a file is read or the Hub is asked, so the loader, the app's memory estimate and the app's
"check" all agree on what a spec is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import AnatomyError, shown

EMBEDDED = "embedded"  # the spec of the model shipped with the package; anatomy.load re-exports it
# owner/name as the Hub spells them: ASCII letters, digits, '-', '_', '.', no '--' or '..', at most 96 each
HUB_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
NO_MODEL = "No model given: use 'embedded', a Hub id (owner/name), a local folder or a .gguf file."
NEITHER = "is neither a model folder, a .gguf file nor a Hub id (owner/name)"
REFUSED = ("This public app opens Hub models (owner/name) and 'embedded' only, never files on the server: "
           "run the app locally (`python app.py`) or the CLI to analyse a folder or a .gguf file.")

Kind = Literal["embedded", "gguf", "folder", "hub"]


@dataclass(frozen=True)
class ModelSpec:
    """A spec and what it names; `path` for a local file or folder."""

    text: str
    kind: Kind
    path: Path | None = None


def is_hub_id(spec: str) -> bool:
    return bool(HUB_ID.fullmatch(spec)) and not spec.endswith(".git")


def parse_model_spec(spec: str | None, local: bool = True) -> ModelSpec:
    """What `spec` names. `local=False` (a public app's visitor) never looks at the file system: only
    `embedded` and Hub ids are specs then, and every other text, existing path or not, gets the one
    message `REFUSED`, which tells a visitor nothing about the server's files."""
    text = (spec or "").strip()
    if text == EMBEDDED:
        return ModelSpec(text, "embedded")
    if not local:
        if not is_hub_id(text):
            raise AnatomyError(REFUSED)
        return ModelSpec(text, "hub")
    if not text:
        raise AnatomyError(NO_MODEL)
    try:  # '~nobody/x' cannot be expanded; a name longer than the file system allows cannot be looked up
        path = Path(text).expanduser()
        is_file, is_dir = path.is_file(), path.is_dir()
    except (RuntimeError, OSError) as err:
        raise AnatomyError(f"{shown(text)} {NEITHER}: {type(err).__name__} looking it up.") from None
    if path.suffix == ".gguf":
        if not is_file:
            raise AnatomyError(f"GGUF file '{path}' does not exist.")
        return ModelSpec(text, "gguf", path)
    if is_dir:
        return ModelSpec(text, "folder", path)
    if is_file or not is_hub_id(text):
        raise AnatomyError(f"{shown(text)} {NEITHER}.")
    return ModelSpec(text, "hub")
