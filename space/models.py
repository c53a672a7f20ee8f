"""Models shared by every user of the app: a bounded LRU cache, and one lock per model.

A loaded model lives once in memory (never in `gr.State`, which is per session and deep-copied). Every
job that reads or edits a model's weights holds that model's lock for the whole job, so one user never
sees another user's altered weights: interventions edit in place and restore before the lock is released.
When free memory runs short, the least recently used model that no job is using is dropped.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil
import torch

from anatomy.errors import AnatomyError
from anatomy.load import (EMBEDDED, MEMORY_HEADROOM, ONLINE_DEFAULT, HubCheck, LoadedModel, check_hub_model,
                          load_model)
from anatomy.model_spec import NO_MODEL, parse_model_spec
from anatomy.progress import Cancelled

from .access import Access, env_flag

EMBEDDED_PARAMETERS = 135_000_000


def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether huggingface.co answers; HF_HUB_OFFLINE=1 means offline without trying."""
    if env_flag("HF_HUB_OFFLINE"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def default_model_spec(online: bool | None = None) -> str:
    """The study's model online (`HuggingFaceTB/SmolLM2-135M`), the embedded copy of SmolLM2 offline."""
    return ONLINE_DEFAULT if (hub_reachable() if online is None else online) else EMBEDDED


def hub_check(spec: str, token: str | bool | None = None, local: bool = True) -> HubCheck | None:
    """The metadata check of a Hub id (causal LM, safetensors, fits), made once per load: its parameter count
    sizes the room to make, and `load_model` takes it instead of asking the Hub again. None for other specs;
    a spec that is not one is left to `load_model`, which says why."""
    try:
        kind = parse_model_spec(spec, local).kind
    except AnatomyError:
        return None
    return check_hub_model(spec.strip(), token=token) if kind == "hub" else None


def estimate_bytes(spec: str, token: str | bool | None = None, local: bool = True,
                   hub: HubCheck | None = None) -> int:
    """Memory a float32 model will need, known before loading (Hub metadata, file sizes, or the embedded size).

    `token` and `local` as in `load_model`: a public visitor's spec is never looked up on the server's disk.
    `hub`: the check `hub_check` made; without it a Hub id is looked up here.
    """
    try:
        parsed = parse_model_spec(spec, local)
    except AnatomyError:
        return 0  # load_model gives the precise error
    if parsed.kind == "embedded":
        params = EMBEDDED_PARAMETERS
    elif parsed.kind == "folder":
        params = sum(p.stat().st_size for p in parsed.path.glob("*.safetensors")) // 2
    elif parsed.kind == "gguf":
        params = parsed.path.stat().st_size  # quantised: ~1 byte a parameter at most
    else:  # checked before a single weight is downloaded
        params = (hub or check_hub_model(parsed.text, token=token)).num_parameters
    return int(params * 4 * MEMORY_HEADROOM)


@dataclass
class _Entry:
    loaded: LoadedModel
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelCache:
    """Loaded models by spec, least recently used first; `max_models` and free memory bound it."""

    def __init__(self, loader: Callable[[str], LoadedModel] = load_model, max_models: int = 2,
                 estimate: Callable[[str], int] = estimate_bytes,
                 available: Callable[[], int] = lambda: psutil.virtual_memory().available):
        self._loader, self._estimate, self._available = loader, estimate, available
        self.max_models = max_models
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._guard = threading.Lock()  # protects the dict and serialises loading

    def specs(self) -> list[str]:
        """Cached model specs, least recently used first."""
        with self._guard:
            return list(self._entries)

    def get(self, spec: str, access: Access = Access()) -> LoadedModel:
        """The loaded model for `spec`, loading it (after making room) on first use."""
        return self.entry(spec, access).loaded

    def entry(self, spec: str, access: Access = Access()) -> _Entry:
        """The loaded model for `spec` and its lock, loading it on first use (a job holds the lock while it runs:
        `space.turns` hands it over)."""
        spec = (spec or "").strip()
        if not spec:
            raise AnatomyError(NO_MODEL)
        access.check_spec(spec)
        with self._guard:
            entry = self._entries.get(spec)
            if entry is not None:
                self._entries.move_to_end(spec)
        if entry is None or entry.loaded.source == "hub":
            access.authorise(spec)  # with this visitor's token: another visitor's may have loaded it
        if entry is not None:
            return entry
        with self._guard:
            if spec in self._entries:  # loaded by another job while this one waited
                return self._entries[spec]
            kwargs = access.load_kwargs()
            hub = hub_check(spec, **kwargs)
            checked = {"hub": hub} if hub is not None else {}
            self._make_room(self._estimate(spec, **kwargs, **checked))
            entry = _Entry(self._loader(spec, **kwargs, **checked))
            self._entries[spec] = entry
            return entry

    def loaded(self, spec: str) -> _Entry | None:
        """The entry for `spec` if it is loaded already, never loading it (what the app can tell without cost)."""
        with self._guard:
            return self._entries.get((spec or "").strip())

    def put(self, spec: str, loaded: LoadedModel) -> None:
        """Register an already loaded model under `spec` (a model built in code, or a test's tiny model)."""
        with self._guard:
            self._make_room(0)
            self._entries[spec] = _Entry(loaded)

    def _make_room(self, need: int) -> None:
        """Drop idle models, least recently used first, until the new one fits in count and memory."""
        for spec in list(self._entries):
            if len(self._entries) < self.max_models and self._available() >= need:
                return
            if self._entries[spec].lock.locked():
                continue  # a job is using it; dropping it would free nothing now
            del self._entries[spec]
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @contextmanager
    def use(self, spec: str, cancel: threading.Event | None = None, access: Access = Access(),
            on_wait: Callable[[], None] | None = None) -> Iterator[LoadedModel]:
        """Hold the model's lock for a whole job (waiting for other users' jobs, but stoppable while waiting);
        `on_wait` is called once if another job holds it, so the visitor learns why nothing moves yet."""
        entry = self.entry(spec, access)
        acquired = entry.lock.acquire(blocking=False)
        if not acquired and on_wait is not None:
            on_wait()
        while not acquired:
            if cancel is not None and cancel.is_set():
                raise Cancelled("stopped while waiting for another user's job on this model")
            acquired = entry.lock.acquire(timeout=0.2)
        try:
            yield entry.loaded
        finally:
            entry.lock.release()


CACHE = ModelCache(max_models=int(os.environ.get("ANATOMY_MAX_MODELS", "2")))
