"""PUBLIC: what a visitor of a public app may ask to load: Hub ids and the embedded model, never a server path.

A path, existing or not, is refused with the same message before the file system is touched, so the answer
tells a visitor nothing about the server's files.
"""

from __future__ import annotations

import re

from .errors import AnatomyError

EMBEDDED = "embedded"  # the spec of the model shipped with the package; anatomy.load re-exports it
# owner/name as the Hub spells them: ASCII letters, digits, '-', '_', '.', no '--' or '..', at most 96 each
HUB_ID = re.compile(r"(?!.*(--|\.\.))[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)
REFUSED = ("This public app opens Hub models (owner/name) and 'embedded' only, never files on the server: "
           "run the app locally (`python app.py`) or the CLI to analyse a folder or a .gguf file.")


def is_hub_id(spec: str) -> bool:
    return bool(HUB_ID.fullmatch(spec)) and not spec.endswith(".git")


def require_public_spec(spec: str) -> str:
    """`spec` stripped, if a public visitor may load it; otherwise the one message that reveals nothing."""
    spec = (spec or "").strip()
    if spec != EMBEDDED and not is_hub_id(spec):
        raise AnatomyError(REFUSED)
    return spec
