"""A hostile Hub for the public app's tests and benchmarks: the repos and the atlas an attacker would publish.

Served by the fake Hub of tests/hub_fake.py (only the HTTP hop is replaced): two honest tiny models, a config
far bigger than its weights, a tiny model whose chat template loops, and an atlas whose runs name a server
file as a table, pose as another model, or carry markup and 20,000 characters of text.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from tests.conftest import make_tiny_model
from tests.hub_fake import FakeHub, FakeRepo, config_json, folder_files

OPEN, OTHER, HUGE, LOOPING = "alice/open", "alice/other", "mallory/huge-config", "mallory/looping"
LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
SIGNED_IN, SECOND = "hf_bob_token", "hf_carl_token"
SECRET = "the-server-secret-1234"


def huge_config_repo(tmp: Path) -> FakeRepo:
    """A config of 24 layers x 1024 over one safetensors file holding a 2-element tensor."""
    save_file({"x": torch.zeros(2)}, tmp / "model.safetensors")
    config = config_json(hidden_size=1024, num_hidden_layers=24, intermediate_size=4096, num_attention_heads=16,
                         num_key_value_heads=16, vocab_size=32000)
    return FakeRepo({"config.json": config, "model.safetensors": (tmp / "model.safetensors").read_bytes()})


def atlas_files(secret: Path) -> dict[str, bytes]:
    """A malicious atlas: a run whose table is a server path, a run filed under the wrong model, and a run
    whose text is markup and 20,000 characters long."""
    model = {"source": "hub", "name": OPEN}
    return {
        "alice--open/importance/results.json": json.dumps({
            "experiment": "importance", "written": "2026-12-01T00:00:00Z", "model": model, "table": "importance",
            "tables": {str(secret.with_suffix("")): {"csv": str(secret), "rows": 1}}}).encode(),
        "alice--open/spectral/results.json": json.dumps({
            "experiment": "spectral", "written": "2026-12-01T00:00:00Z", "table": "spectral",
            "model": {"source": "hub", "name": "someone/else"}, "tables": {"spectral": [{"layer": 0}]}}).encode(),
        "alice--open/structure/results.json": json.dumps({
            "experiment": "structure", "written": "<script>alert(1)</script>[x](javascript:alert(1))",
            "model": model, "config": {"shuffles": 7, "seed": "y" * 20_000}, "table": "structure",
            "tables": {"structure": [{"component": "a"}]}}).encode()}


def hostile_hub(tmp: Path, tokenizer: PreTrainedTokenizerBase, secret: Path) -> FakeHub:
    """The fake Hub with every repo above; `secret` is a server file a malicious atlas run names as its table."""
    saved = tmp / "model"
    make_tiny_model("llama", layers=3).save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    files = folder_files(saved)
    tokenizer_config = json.loads(files["tokenizer_config.json"])
    looping = {**files, "tokenizer_config.json": json.dumps({**tokenizer_config, "chat_template": LOOP}).encode()}
    (tmp / "huge").mkdir(exist_ok=True)
    return FakeHub({OPEN: FakeRepo(files), OTHER: FakeRepo(files), LOOPING: FakeRepo(looping),
                    HUGE: huge_config_repo(tmp / "huge")},
                   datasets={"bob/atlas": FakeRepo(atlas_files(secret))}, users={SIGNED_IN: "bob", SECOND: "carl"})
