"""Fixtures every test reuses: a tiny tokenizer, tiny random models of each supported architecture, and
the embedded SmolLM2-135M model (loaded once per session; integration tests only)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AutoConfig, AutoModelForCausalLM, GemmaConfig, GPT2Config, GPTNeoXConfig, LlamaConfig,
                          MistralConfig, OPTConfig, Phi3Config, PreTrainedTokenizerFast, Qwen2Config)

from anatomy.texts import default_eval_texts

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURES = ("llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox", "opt")

if "PYTEST_XDIST_WORKER" in os.environ:  # `pytest -n N` (pytest.ini): the workers split the cores, not fight for them
    _THREADS = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)  # and the processes their tests start
    torch.set_num_threads(_THREADS)


def _tiny_config(arch: str, vocab: int, layers: int) -> AutoConfig:
    common = dict(vocab_size=vocab, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if arch in ("llama", "mistral", "qwen2", "gemma", "phi3"):
        cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "gemma": GemmaConfig,
               "phi3": Phi3Config}[arch]
        extra = {"head_dim": 8} if arch == "gemma" else {}
        return cls(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256, **extra, **common)
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=layers, n_head=4, n_positions=256, **common)
    if arch == "gpt_neox":
        return GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                             max_position_embeddings=256, **common)
    if arch == "opt":
        return OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=layers, num_attention_heads=4,
                         word_embed_proj_dim=32, max_position_embeddings=256, **common)
    raise ValueError(arch)


def make_tiny_model(arch: str = "llama", vocab: int = 320, layers: int = 6, seed: int = 0) -> torch.nn.Module:
    """A random causal LM of the given family, small enough that a forward takes milliseconds."""
    torch.manual_seed(seed)
    config = _tiny_config(arch, vocab, layers)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # larger weights than the default init, so ablations make visible differences
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model.eval()


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A 320-token byte-level BPE trained on the default evaluation set in well under a second (the benches'
    smoke modes save it beside a tiny model, so it is a plain function as well as the fixture below)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(default_eval_texts(), trainer)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return build_tiny_tokenizer()


def free_port() -> int:
    """A port no server here listens on: one the kernel hands out, so that servers started side by side (xdist's
    workers) never race for the same one."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def in_ci() -> bool:
    """CI sets CI=true; there every prerequisite comes from setup.sh, so a missing one is a failure."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(available: bool, what: str) -> None:
    """Fail in CI when a prerequisite is missing; on a developer's machine skip, saying how to get it."""
    if available:
        return
    if in_ci():
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def shakespeare() -> None:
    """The default training corpus, cached by setup.sh (`python -m anatomy.corpus`): no test downloads it."""
    from anatomy.corpus import shakespeare_cached
    require(shakespeare_cached(), "the Shakespeare corpus is not cached: run `python -m anatomy.corpus` "
                                  "(setup.sh does)")


@pytest.fixture(params=ARCHITECTURES)
def arch(request) -> str:
    return request.param


@pytest.fixture
def tiny_eval_set(tiny_tokenizer):
    from anatomy.evaluate import EvalSet
    return EvalSet.from_texts(default_eval_texts()[:12], tiny_tokenizer, name="tiny", batch_size=5)


@pytest.fixture(scope="session")
def texts(tmp_path_factory) -> Path:
    """Four default sentences as a --text-file named texts.txt (pushed copies name it by that name)."""
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text("\n".join(default_eval_texts()[:4]), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def app_url() -> Iterator[str]:
    """One app server in local mode for every module that drives the app through gradio_client (a server per
    module cost seconds each). Each module registers its tiny model in the app's cache under its own spec and
    patches what it needs (a fake Hub, the runs root, environment) around its own tests: the app reads those
    per request. Public mode is read when the app is built, so tests/test_app_public.py starts its own."""
    from space import build_demo
    demo = build_demo("embedded")
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield url
    demo.close()


def quick_study_command(out: Path) -> list[str]:
    """The quick study of the embedded model as a user starts it, writing to `out`."""
    return [sys.executable, "-m", "anatomy", "study", "--model", "embedded", "--quick", "--out", str(out)]


def offline_env() -> dict[str, str]:
    """This environment, offline, with OMP_NUM_THREADS kept (2 if unset)."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


QUICK_STUDY_TIMEOUT_S = 900  # about 4x the 233 s it took at one thread beside two busy test workers


def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every xdist worker of this run shares (the run's base folder when there are no workers)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


@pytest.fixture(scope="session", autouse=True)
def quick_study_started(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Start the quick study (minutes) in the background as the session starts, when a selected test reads it, so
    that it runs beside the other tests instead of before the first that needs it. The first worker here starts it
    (the folder's creation is the lock); `quick_study` waits for its exit status. The worker that started it waits
    for it at the end, so it never outlives the run, and ends it if the run was stopped."""
    folder = shared_tmp(tmp_path_factory) / "quick-study"
    if not any("quick_study" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield
        return
    try:
        folder.mkdir()
    except FileExistsError:  # another worker started it
        yield
        return
    with open(folder / "log", "wb") as log:  # the exit status appears by a rename, so it is never read half-written
        process = subprocess.Popen(["sh", "-c", '"$@"; echo $? > "$0.part" && mv "$0.part" "$0"', str(folder / "rc"),
                                    *quick_study_command(folder / "quick")],
                                   cwd=ROOT, env=offline_env(), stdout=log, stderr=subprocess.STDOUT)
    yield
    if request.session.shouldstop or request.session.shouldfail:
        process.terminate()
    try:
        process.wait(timeout=QUICK_STUDY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def quick_study(tmp_path_factory: pytest.TempPathFactory, quick_study_started: None) -> Path:
    """The quick study's folder, computed once per run (see `quick_study_started`) for every test that reads it."""
    folder = shared_tmp(tmp_path_factory) / "quick-study"
    deadline = time.monotonic() + QUICK_STUDY_TIMEOUT_S
    while not (folder / "rc").exists():
        assert time.monotonic() < deadline, f"the quick study did not finish within {QUICK_STUDY_TIMEOUT_S} s"
        time.sleep(1)
    assert (folder / "rc").read_text().strip() == "0", (folder / "log").read_text(errors="replace")[-2000:]
    return folder / "quick"


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M (LoadedModel), shared by the integration tests of the session."""
    from anatomy.load import load_model
    return load_model("embedded")


@pytest.fixture(scope="session")
def embedded_eval_set(embedded):
    """Twelve of the default sentences: enough for an interval, fast enough for CI."""
    from anatomy.evaluate import EvalSet
    return EvalSet.from_texts(default_eval_texts()[:12], embedded.tokenizer, name="default[:12]", batch_size=12)
