"""The Gradio app: a thin UI over the `anatomy` library, one module per tab (see ui.build_demo)."""

from .ui import build_demo, launch

__all__ = ["build_demo", "launch"]
