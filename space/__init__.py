"""The Gradio app: a thin UI over the `anatomy` library, one `Tab` per experiment in the table of space/tabs.py
(laid out by ui.build_demo)."""

from .ui import build_demo, launch

__all__ = ["build_demo", "launch"]
