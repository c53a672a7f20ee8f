"""PUBLIC: what a visitor of a public app may ask to load: Hub ids and the embedded model, never a server path.

A path, existing or not, is refused with the same message before the file system is touched, so the answer
tells a visitor nothing about the server's files. What a spec is, is decided in `anatomy.model_spec`.
"""

from __future__ import annotations

from .model_spec import REFUSED, parse_model_spec

__all__ = ["REFUSED", "require_public_spec"]


def require_public_spec(spec: str) -> str:
    """`spec` stripped, if a public visitor may load it; otherwise the one message that reveals nothing."""
    return parse_model_spec(spec, local=False).text
