"""Transformer Anatomy: measure the layer anatomy of any Hugging Face causal LM.

Data flow: `load` (model in) -> `interventions` (edit, always restore) -> `evaluate` (PPL with intervals)
-> `experiments` (one module each) -> `report`/`plots` (run folder).
"""

__version__ = "0.1.0"
