"""The developmental trainer on `accelerate`: phases of growth, or one uniform phase.

Per phase: grow the phase's new layers (clone or fresh), put only the grown layers in the
forward pass, set `requires_grad` on the phase's layers (plus the shared embedding and final
norm), then prepare model and a new optimizer with the Accelerator. The trainable set changes
between phases, so the model is prepared again each phase (DDP registers only parameters that
require grad when it wraps). New parameters get fresh AdamW state; the shared parameters keep
theirs. Mixed precision is used only where a GPU has it (bf16, or fp16 where bf16 is missing).

Batches are drawn with replacement by default; `epochs=True` draws them as passes over a shuffled
training set instead, so a phase given `phase_steps` of k x (rows / batch) steps sees the data exactly
k times: the study regime counts phases in epochs. Each phase logs its active and trained layers, its
steps and tokens, and its FLOPs (`count_flops`: the first step of the phase counted by torch's
`FlopCounterMode`, forward and backward, times the phase's steps; the optimizer's arithmetic is left out).

Validation loss is token-weighted over a fixed set of held-out chunks. The run's clock counts
training steps only; evaluation and spectral logging are timed apart, so loss-vs-seconds curves
compare training cost.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch.utils.flop_counter import FlopCounterMode
from accelerate.utils import DistributedDataParallelKwargs
from tqdm.auto import tqdm

from .grow import clone_layer
from .modeling_growth import GrowthForCausalLM
from .plan import GrowthPlan, Phase, phase_steps


@dataclass
class TrainConfig:
    """Optimisation and logging settings shared by growth and uniform runs."""

    steps: int = 656
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 41
    eval_chunks: int = 64
    spectra_every: int = 0  # 0 turns spectral logging off
    seed: int = 0
    progress: bool = True
    epochs: bool = False  # batches as passes over the shuffled training rows, not draws with replacement
    phase_steps: tuple[int, ...] | None = None  # steps of each phase; None: `steps` split by the plan's shares
    count_flops: bool = False


def make_accelerator() -> Accelerator:
    """An Accelerator with bf16/fp16 only on a GPU, and DDP tolerant of layers a step skips. Without a GPU it is
    told so (`cpu=True`): only then do the processes of `accelerate launch --multi_gpu` form one gloo group
    instead of training alone, each on its own batches."""
    gpu = torch.cuda.is_available()
    precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if gpu else "no"
    return Accelerator(mixed_precision=precision, cpu=not gpu,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def uniform_phases() -> list[Phase]:
    """A uniform run is one phase that trains every layer from the first step."""
    return [Phase("uniform", "all", {}, 1.0)]


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio` x lr, within one phase."""
    warm = min(cfg.warmup_steps, max(1, total // 10))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model: GrowthForCausalLM, chunks: torch.Tensor, batch_size: int, device) -> float:
    """Token-weighted mean cross-entropy (nats) over `chunks`; every chunk is full length, no padding."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(chunks), batch_size):
        x = chunks[i:i + batch_size].to(device)
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        n = x.numel() - x.shape[0]
        total += float(loss) * n
        count += n
    model.train(was_training)
    return total / count


class Trainer:
    """Runs one schedule (growth phases or uniform) and records the curves.

    `history` rows: step, phase, train_loss, val_loss (at eval steps), train_seconds, tokens.
    `phase_log` rows: phase, layers (trained), active_layers (in the forward pass), steps, tokens,
    train_seconds, cpu_seconds (process CPU time, which other jobs on a shared machine do not inflate),
    tokens_per_s, flops (NaN unless `count_flops`).
    `on_spectra(step, model)` is called every `spectra_every` steps when given.
    """

    def __init__(self, model: GrowthForCausalLM, plan: GrowthPlan | None, train_chunks: torch.Tensor,
                 val_chunks: torch.Tensor, cfg: TrainConfig, accelerator: Accelerator | None = None,
                 on_spectra: Callable[[int, GrowthForCausalLM], None] | None = None) -> None:
        self.model = model
        self.phases = plan.phases if plan is not None else uniform_phases()
        self.plan = plan
        self.train_chunks = train_chunks
        self.val_chunks = val_chunks[: cfg.eval_chunks]
        self.cfg = cfg
        self.acc = accelerator or make_accelerator()
        self.on_spectra = on_spectra
        self.history: list[dict] = []
        self.phase_log: list[dict] = []
        self.train_seconds = 0.0
        self.gen = torch.Generator().manual_seed(cfg.seed)  # batch order: same for every schedule
        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self._epoch_order = torch.zeros(0, dtype=torch.long)

    def _indices(self, count: int) -> torch.Tensor:
        """The next `count` row indices: with replacement, or in epochs (one shuffled pass after another)."""
        if not self.cfg.epochs:
            return torch.randint(len(self.train_chunks), (count,), generator=self.gen)
        while len(self._epoch_order) < count:
            self._epoch_order = torch.cat([self._epoch_order,
                                           torch.randperm(len(self.train_chunks), generator=self.gen)])
        idx, self._epoch_order = self._epoch_order[:count], self._epoch_order[count:]
        return idx

    def _batch(self) -> torch.Tensor:
        """Next batch for this process: all processes draw the same indices, each takes its slice."""
        n_proc, rank, b = self.acc.num_processes, self.acc.process_index, self.cfg.batch_size
        idx = self._indices(b * n_proc)
        return self.train_chunks[idx[rank * b:(rank + 1) * b]].to(self.acc.device, non_blocking=True)

    def _grow(self, phase: Phase) -> None:
        layers = self.model.model.layers
        for layer, src in phase.sources.items():
            if src is not None:
                noise = self.plan.clone_noise if self.plan else 0.0
                clone_layer(layers[src], layers[layer], noise, phase.ffn_scale, self.noise_gen)
            elif phase.ffn_scale != 1.0:
                layers[layer].mlp.down_proj.weight.data.mul_(phase.ffn_scale)

    def _set_trainable(self, phase: Phase) -> list[torch.nn.Parameter]:
        m = self.model
        m.requires_grad_(False)
        n = len(m.model.layers)
        for i in phase.trained_layers(n):
            m.model.layers[i].requires_grad_(True)
        if self.plan is None or self.plan.train_shared or phase.train == "all":
            m.model.embed_tokens.requires_grad_(True)
            m.model.norm.requires_grad_(True)
        return [p for p in m.parameters() if p.requires_grad]

    def _optimizer(self, params: list[torch.nn.Parameter], previous) -> torch.optim.AdamW:
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=self.cfg.lr, betas=(0.9, 0.95), fused=False)
        if previous is not None:  # shared parameters keep their moments; new ones start fresh
            old_state = getattr(previous, "optimizer", previous).state
            for p in params:
                if p in old_state:
                    opt.state[p] = old_state[p]
        return opt

    def _log_eval(self, step: int, phase: str, train_loss: float) -> None:
        model = self.acc.unwrap_model(self.model_prepared)
        val = evaluate(model, self.val_chunks, self.cfg.batch_size, self.acc.device)
        self.history.append({"step": step, "phase": phase, "train_loss": train_loss, "val_loss": val,
                             "train_seconds": self.train_seconds, "tokens": self._tokens(step)})

    def _tokens(self, step: int) -> int:
        return step * self.cfg.batch_size * self.cfg.seq_len * self.acc.num_processes

    def fit(self) -> list[dict]:
        """Train every phase; returns `history`. The final row always holds the end-of-run losses."""
        cfg, acc = self.cfg, self.acc
        shares = [p.share for p in self.phases]
        steps_per_phase = list(cfg.phase_steps) if cfg.phase_steps else phase_steps(shares, cfg.steps)
        if len(steps_per_phase) != len(self.phases) or min(steps_per_phase) < 1:
            raise ValueError(f"phase_steps {steps_per_phase} must give >= 1 step to each of the "
                             f"{len(self.phases)} phases")
        total = sum(steps_per_phase)
        grown: list[int] = []
        optimizer, step = None, 0
        self.model.train()
        self.model_prepared = self.model
        bar = tqdm(total=total, disable=not (cfg.progress and acc.is_main_process), mininterval=2.0,
                   desc="train")
        for phase, n_steps in zip(self.phases, steps_per_phase):
            if self.plan is None:
                grown = list(range(len(self.model.model.layers)))
            else:
                self._grow(phase)
                grown = sorted(set(grown) | set(phase.sources))
            self.model.model.active_layers = grown
            params = self._set_trainable(phase)
            acc.free_memory()  # drop the previous phase's wrapped model and optimizer
            self.model_prepared = acc.prepare(self.model)
            optimizer = acc.prepare(self._optimizer(params, optimizer))
            bar.set_description(phase.name)
            phase_start, phase_seconds, phase_cpu, last_loss = step, 0.0, 0.0, float("nan")
            step_flops = float("nan")
            if step == 0:
                self._log_eval(0, phase.name, float("nan"))
            for k in range(n_steps):
                t0, c0 = time.perf_counter(), time.process_time()
                lr = lr_at(k, n_steps, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x = self._batch()
                counter = FlopCounterMode(display=False) if cfg.count_flops and k == 0 else None
                with counter or contextlib.nullcontext():
                    with acc.autocast():
                        loss = self.model_prepared(input_ids=x, labels=x, use_cache=False).loss
                    acc.backward(loss)
                if counter is not None:
                    step_flops = float(counter.get_total_flops())
                if cfg.grad_clip:
                    acc.clip_grad_norm_(params, cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if step % 10 == 0 or k == n_steps - 1 or step % cfg.eval_every == 0:
                    # a sync, only when the value is used; the mean over the processes' batches (DDP: each
                    # holds its share of the global batch), so the curve is the one-process curve
                    last_loss = acc.reduce(loss.detach(), reduction="mean").item()
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                phase_seconds += dt
                phase_cpu += time.process_time() - c0
                bar.update(1)
                if step % cfg.eval_every == 0 or step == total:
                    self._log_eval(step, phase.name, last_loss)
                    bar.set_postfix(val=f"{self.history[-1]['val_loss']:.3f}")
                if (self.on_spectra and cfg.spectra_every and acc.is_main_process
                        and (step % cfg.spectra_every == 0 or step == total)):
                    self.on_spectra(step, acc.unwrap_model(self.model_prepared))
            tokens = self._tokens(step - phase_start)
            self.phase_log.append({"phase": phase.name, "layers": ",".join(map(str, phase.trained_layers(len(self.model.model.layers)))),
                                   "active_layers": ",".join(map(str, grown)),
                                   "steps": step - phase_start, "tokens": tokens, "train_seconds": phase_seconds,
                                   "cpu_seconds": phase_cpu,
                                   "tokens_per_s": tokens / phase_seconds if phase_seconds else float("nan"),
                                   "flops": step_flops * (step - phase_start)})
        bar.close()
        self.model = acc.unwrap_model(self.model_prepared)
        self.model.requires_grad_(True)
        acc.free_memory()
        return self.history
