"""Transformer Anatomy: measure the layer anatomy of any Hugging Face causal LM."""
