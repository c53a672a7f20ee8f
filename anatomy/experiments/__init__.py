"""Experiments: one module each, `run_<name>(model, eval_set, config) -> DataFrame` plus its CLI."""
