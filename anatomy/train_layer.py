"""Fine-tune decoder layers alone: one by one through the whole model, or several variants as one batch.

A *variant* is one fine-tune of recovery: a layer, the noise it starts from (sigma x std(W), or 0 for the
control), its own copy of that layer with its own AdamW, and its losses. Variants share every frozen weight
and differ in one layer each, so they train as one batch (`finetune_variants`): each step, one no-grad
forward of the training rows through the unchanged model records the input of every variant's layer (the
frozen prefix, computed once for all variants); at each depth from there the rows of every variant already
past its own layer go through the shared layer in one call, and the rows of the variants trained at that
depth go through their own copies; the head runs on all rows at once. No trainable parameter is shared, so
the variants' losses add and one backward gives each variant exactly its own gradients; clipping and AdamW
are per variant, so each fine-tune is what it is alone (a test checks it against the one-by-one loop). A
4-row step is 128 tokens per matmul, far below the rate a CPU or GPU reaches; 26 variants make it 3,328.
Memory decides how many variants share a step (`variant_plan`).

The plain loop (`finetune_layer`) is the ordinary full-model step with `labels=` on the model's own layer:
the reference the batched loop is checked against.

Training rows are fixed-length token chunks of a text that is never the evaluation text (the modern
English prose of the standard library's docstrings by default, Shakespeare on request, via `anatomy.corpus`);
every variant sees the same seeded batch order, so layers are compared on the same data. Batches are drawn
lazily (`batch_schedule` is a generator): a run of 10^9 steps holds one batch at a time.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import corpus, offload
from .errors import AnatomyError
from .evaluate import Batch, EvalSet, PPLResult, PrefixCache, TextNLL
from .interventions import add_noise
from .layers import LayerAdapter, text_config
from .load import available_memory
from .progress import ProgressCallback, track

# Share of the available memory the variants of a recovery may take: their weights and optimizer state (at most
# half of it), and the activations of the variants that share a step.
TRAIN_MEMORY_SHARE = 0.5
# Floats a training step keeps per token and decoder layer for the backward, in units of (hidden, intermediate):
# the norms' inputs, q, k, v, the attention output, the MLP's gate, up, activation and product, with room. On the
# embedded model (8 variants of layer 0, 4 x 31 tokens each) a step's peak grew by 346 MiB per variant, about
# 304 of them activations; this estimate says 318.
ACTIVATION_PER_HIDDEN, ACTIVATION_PER_INTERMEDIATE = 14, 6

HELD_OUT_TEXTS = {"held-out": corpus.stdlib_documents, "shakespeare": corpus.shakespeare_documents}


def training_rows(tokenizer, seq_len: int, *, train_file: str | None = None, train_dataset: str | None = None,
                  exclude: Sequence[str] = (), text: str = "held-out",
                  progress: ProgressCallback | None = None) -> torch.Tensor:
    """Token rows [n, seq_len] from the training side of the corpus split: `text` (a key of HELD_OUT_TEXTS),
    or a file, or a Hub dataset; `progress` hears of every document tokenized (seconds for the default text).

    Refuses a training text that contains any of `exclude` (the evaluation texts) verbatim, so a
    recovered PPL is never measured on text the layer was trained on.
    """
    if train_dataset:
        from .texts import hub_dataset_texts
        docs = {f"doc{i:05d}": t for i, t in enumerate(hub_dataset_texts(train_dataset, limit=100_000))}
    else:
        docs = corpus.load_text_file(train_file) if train_file else None
        if docs is None and text not in HELD_OUT_TEXTS:
            raise AnatomyError(f"Unknown training text {text!r}: choose one of {', '.join(HELD_OUT_TEXTS)}.")
        docs = corpus.text_to_documents(docs) if docs is not None else HELD_OUT_TEXTS[text]()
    train = corpus.split_documents(docs).train
    joined = "\n".join(train.values())
    leaked = [t for t in exclude if len(t.strip()) >= 20 and " ".join(t.split()) in " ".join(joined.split())]
    if leaked:
        raise AnatomyError(f"The training text contains {len(leaked)} evaluation text(s), e.g. {leaked[0][:60]!r}: "
                           "pass a --train-file that does not hold the evaluation text.")
    return corpus.token_chunks(track(list(train.values()), "training text", progress), tokenizer, seq_len,
                               separator_id=tokenizer.eos_token_id)


def batch_schedule(rows: torch.Tensor, batch_size: int, steps: int, seed: int = 0) -> Iterator[torch.Tensor]:
    """`steps` batches [batch_size, seq_len] in a seeded shuffled order (reshuffled when the rows run out),
    drawn one at a time; the arguments are checked now, not at the first batch."""
    if batch_size < 1 or steps < 1 or len(rows) < 1:
        raise AnatomyError(f"batch size, steps and training rows must be >= 1 (got {batch_size}, {steps}, "
                           f"{len(rows)}).")
    return _drawn(rows, batch_size, steps, torch.Generator().manual_seed(int(seed)))


def _drawn(rows: torch.Tensor, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.zeros(0, dtype=torch.long)
    for _ in range(steps):
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(len(rows), generator=generator)])
        yield rows[order[:batch_size]]
        order = order[batch_size:]


@contextmanager
def trainable_only(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter except `params`, in eval mode (no dropout); flags, mode and grads come back after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for p in params:
            p.grad = None
        model.train(was_training)


def training_batch(ids: torch.Tensor) -> Batch:
    """A full batch of training rows as the evaluator's `Batch`: every row but its last token fed, the next
    token as target (the last position predicts nothing and nothing attends to it)."""
    fed = ids[:, :-1]
    return Batch(fed, torch.ones_like(fed), ids[:, 1:], torch.arange(len(ids))[:, None].expand_as(fed))


def step_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a full batch of rows through the whole model."""
    return model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, use_cache=False).loss


class _TokenCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits [n, vocab] in their own dtype against targets [n], computed in float32.

    What `F.cross_entropy(logits.float(), targets)` gives, in value and gradient (the gradient comes back in the
    logits' dtype, as the backward of `.float()` casts it), without its [n, vocab] float32 log-softmax kept for
    the backward and the zero-filled [n, vocab] gradient it scatters into: the backward recomputes the softmax
    from the saved logits and their log-sum-exp. Under bfloat16 autocast the batched recovery's training step
    ran 3.04 s against 3.30 with the plain loss (26 variants, quiet machine)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        wide = logits.float()
        lse = torch.logsumexp(wide, dim=-1)
        ctx.save_for_backward(logits, targets, lse)
        return (lse - wide.gather(-1, targets[:, None]).squeeze(-1)).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, lse = ctx.saved_tensors
        softmax = logits.to(torch.float32, copy=True).sub_(lse[:, None]).exp_()
        softmax[torch.arange(len(targets), device=targets.device), targets] -= 1
        return softmax.mul_(grad / len(targets)).to(logits.dtype), None


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of logits [n, vocab] (any float dtype) against targets [n], in float32."""
    return _TokenCrossEntropy.apply(logits, targets)


def attention_for_training(model: nn.Module) -> AbstractContextManager:
    """The attention kernel a batched training step runs: on a CPU the math one, whose backward on short rows
    (32 tokens) beat the flash one's under bfloat16 autocast (2.69 s against 2.90-3.11 per step of 26 variants,
    quiet machine) and matched it in float32 (5.62 against 5.40-5.54); elsewhere torch's own choice."""
    if offload.input_device(model).type != "cpu":
        return nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def grad_scaler(model: nn.Module) -> torch.amp.GradScaler:
    """A gradient scaler that acts under float16 autocast only (a GPU without bfloat16, such as the T4, where
    small gradients would underflow); elsewhere it passes the loss and the steps through unchanged."""
    device = offload.input_device(model).type
    half = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16
    return torch.amp.GradScaler(device, enabled=half)


def clipped_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: Iterable[nn.Parameter],
                 grad_clip: float) -> None:
    """One optimizer step on gradients unscaled, then clipped to `grad_clip` in norm."""
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(list(params), grad_clip)
    scaler.step(optimizer)


def finetune_layer(model: nn.Module, layer: int, batches: Iterable[torch.Tensor], steps: int, *, lr: float,
                   grad_clip: float, weight_decay: float, eval_every: int,
                   evaluate: Callable[[int, Callable[[], None]], None],
                   progress: ProgressCallback | None = None) -> list[float]:
    """Train the parameters of decoder layer `layer` in place, through the whole model, with a fresh AdamW;
    return the loss per step.

    `evaluate(step, beat)` runs after noise (step 0), every `eval_every` steps and after the last step (see
    `finetune_variants` for `beat`). The caller restores the weights (see `anatomy.interventions.preserve`);
    this function restores the requires-grad flags, the train/eval mode and the gradients.
    """
    adapter = LayerAdapter(model)
    params = list(adapter.layers[adapter.check_layer(layer)].parameters())
    losses: list[float] = []
    description = f"layers.{layer} fine-tune"
    with trainable_only(model, params), torch.enable_grad():  # callers (the app, tests) may run under no_grad
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        scaler = grad_scaler(model)
        evaluate(0, heartbeat(progress, 0, steps, description))
        for step, ids in zip(track(range(1, steps + 1), description, progress, total=steps), batches):
            optimizer.zero_grad(set_to_none=True)
            loss = step_loss(model, ids)
            scaler.scale(loss).backward()
            clipped_step(optimizer, scaler, params, grad_clip)
            scaler.update()
            losses.append(float(loss.detach()))
            if step % eval_every == 0 or step == steps:
                evaluate(step, heartbeat(progress, step, steps, description))
    return losses


def heartbeat(progress: ProgressCallback | None, done: int, total: int, description: str) -> Callable[[], None]:
    """A call that reports `done` of `total` to `progress` again: what a long stretch between two steps (an
    evaluation) calls between its batches, so a Stop is heard within one batch."""
    return (lambda: progress(done, total, description)) if progress is not None else (lambda: None)


@dataclass
class Variant:
    """One fine-tune of a batch: its layer, its starting noise, its own copy of the layer, AdamW and losses."""

    layer: int
    sigma: float
    module: nn.Module = field(repr=False)
    optimizer: torch.optim.Optimizer = field(repr=False)
    losses: list[float] = field(default_factory=list)


def make_variants(model: nn.Module, specs: Sequence[tuple[int, float]], *, seed: int, lr: float,
                  weight_decay: float) -> list[Variant]:
    """A trainable copy of each (layer, sigma)'s layer with the noise `add_noise` gives the model's own layer
    (the same seeded draw; the model comes back bit-identical), and a fresh AdamW; in layer order (stable), the
    order `variant_hidden` stacks their rows in."""
    adapter = LayerAdapter(model)
    variants = []
    for layer, sigma in sorted(specs, key=lambda spec: spec[0]):
        with add_noise(adapter, [adapter.check_layer(layer)], sigma, seed):
            module = copy.deepcopy(adapter.layers[layer])
        module.requires_grad_(True)
        variants.append(Variant(layer, sigma, module,
                                torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)))
    return variants


def _first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


ROWS_TIMES_HEADS = {"alibi"}  # call arguments whose first dimension is rows x heads, row-major (Bloom)


def repeat_rows(value: object, rows: int, times: int, rows_times_heads: bool = False) -> object:
    """A layer's call argument for `times` variants' rows stacked: a per-row tensor ([rows, ...], at least 2-D:
    masks, position ids, rotary tables; [rows x heads, ...] for the arguments of ROWS_TIMES_HEADS) repeated; a
    broadcast one ([1, ...]), a per-head one (MPT's position bias) and anything else kept."""
    if torch.is_tensor(value):
        per_row = value.shape[0] % rows == 0 if rows_times_heads else value.shape[0] == rows
        if times > 1 and rows > 1 and value.dim() >= 2 and per_row:
            return value.repeat(times, *([1] * (value.dim() - 1)))
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(repeat_rows(v, rows, times, rows_times_heads) for v in value)
    if isinstance(value, dict):
        return {k: repeat_rows(v, rows, times, k in ROWS_TIMES_HEADS) for k, v in value.items()}
    return value


def variant_hidden(adapter: LayerAdapter, variants: Sequence[Variant], inputs: Callable[[int], torch.Tensor],
                   calls: Sequence[tuple[tuple, dict]]) -> torch.Tensor:
    """The last decoder layer's output for each variant (sorted by layer), stacked by rows in their order.

    `inputs(l)` is the unchanged model's input of layer l, `calls[l]` that layer's other arguments (a
    `PrefixCache` batch). Variant v's rows enter at its layer through its own copy; from the next depth on
    they go through the shared layers together with every other variant's rows, one call per depth. A
    decoder layer treats rows independently, so each variant's rows get what they would get alone."""
    stack: torch.Tensor | None = None
    count = rows = 0
    for depth in range(variants[0].layer, adapter.num_layers):
        args, kwargs = calls[depth]
        if stack is not None:
            stack = _first(adapter.layers[depth](stack, *repeat_rows(args, rows, count),
                                                 **repeat_rows(kwargs, rows, count)))
        own = [v.module for v in variants if v.layer == depth]
        if own:
            x = inputs(depth)
            rows = len(x)
            outputs = [_first(module(x, *args, **kwargs)) for module in own]
            stack = torch.cat(outputs if stack is None else [stack, *outputs])
            count += len(own)
    assert stack is not None and count == len(variants), "variants must be sorted by layer"
    return stack


def prefix_of(model: nn.Module, ids: torch.Tensor, layers: Sequence[int]) -> PrefixCache:
    """The unchanged model's inputs of `layers` (and every layer's arguments) for one batch of training rows:
    one no-grad forward, shared by all the variants of a step."""
    return PrefixCache(model, types.SimpleNamespace(batches=[training_batch(ids)]), keep_layers=layers)


def in_groups(items: Sequence, size: int) -> list[list]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def finetune_variants(model: nn.Module, variants: Sequence[Variant], batches: Iterable[torch.Tensor], steps: int,
                      *, grad_clip: float, eval_every: int, group: int,
                      evaluate: Callable[[int, Callable[[], None]], None], description: str,
                      progress: ProgressCallback | None = None) -> None:
    """Train every variant on the same batches, `group` variants per forward and backward (the rest of a step's
    variants follow in further groups on the same frozen prefix), appending each variant's loss per step.

    `evaluate(step, beat)` runs after noise (step 0), every `eval_every` steps and after the last; it calls
    `beat()` between its batches (`heartbeat`), as the loop does between groups, so a Stop is heard within one
    evaluation batch or group. The model's own weights are never changed (its flags, mode and grads come
    back as they were)."""
    adapter = LayerAdapter(model)
    layers = sorted({v.layer for v in variants})
    scaler = grad_scaler(model)
    with trainable_only(model, []), torch.enable_grad():
        evaluate(0, heartbeat(progress, 0, steps, description))
        for step, ids in zip(track(range(1, steps + 1), description, progress, total=steps), batches):
            prefix = prefix_of(model, ids, layers)
            targets = ids[:, 1:].flatten()
            for part in in_groups(variants, group):
                for v in part:
                    v.optimizer.zero_grad(set_to_none=True)
                with attention_for_training(model):
                    hidden = variant_hidden(adapter, part, lambda layer: prefix.inputs[0][layer], prefix.calls[0])
                    logits = adapter.logits(hidden)
                    losses = [token_cross_entropy(rows.flatten(0, 1), targets) for rows in logits.split(len(ids))]
                    scaler.scale(torch.stack(losses).sum()).backward()
                for v, loss in zip(part, losses):
                    clipped_step(v.optimizer, scaler, v.module.parameters(), grad_clip)
                    v.losses.append(float(loss.detach()))
                scaler.update()
                del hidden, logits, losses
                heartbeat(progress, step - 1, steps, description)()
            if step % eval_every == 0 or step == steps:
                evaluate(step, heartbeat(progress, step, steps, description))
    for v in variants:
        v.optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def variant_perplexities(cache: PrefixCache, eval_set: EvalSet, variants: Sequence[Variant], group: int,
                         beat: Callable[[], None] = lambda: None) -> list[PPLResult]:
    """The PPL of the model with each variant's layer in place of its own, `group` variants per pass over an
    evaluation batch, from the evaluation set's prefix cache (layers below a variant's are unchanged)."""
    sums = [TextNLL(cache.adapter, eval_set, len(cache.batches)) for _ in variants]
    for b, batch in enumerate(cache.batches):
        for part, part_sums in zip(in_groups(variants, group), in_groups(sums, group)):
            hidden = variant_hidden(cache.adapter, part, lambda layer: cache.inputs[b][layer], cache.calls[b])
            for rows, total in zip(hidden.split(len(batch.input_ids)), part_sums):
                total.add(rows, batch)
        beat()
    return [total.result() for total in sums]


@dataclass(frozen=True)
class VariantPlan:
    """How a recovery's variants are trained: `passes` (lists of (layer, sigma), each trained from start to
    end before the next; a layer's variants in one pass), `group` of a pass's variants per forward and
    backward, and the memory that decided it."""

    passes: list[list[tuple[int, float]]]
    group: int
    weight_bytes: int  # per variant: its layer copy, gradient and AdamW moments
    activation_bytes: int  # per variant, the most of a training step or an evaluation batch
    budget: int

    def describe(self, layers: Sequence[int]) -> str:
        """The progress line of a pass: which layers, how many variants, how many per step and why."""
        count = sum(len(p) for p in self.passes)
        return (f"fine-tune layers {','.join(map(str, layers))}: {count} variants, {self.group} per batch "
                f"(memory: {self.activation_bytes / 2**20:.0f} MiB of activations and "
                f"{self.weight_bytes / 2**20:.0f} MiB of weights per variant, budget {self.budget / 2**30:.1f} GiB)")


def variant_bytes(model: nn.Module, layer: int, tokens: int, eval_tokens: int) -> tuple[int, int]:
    """(weights, activations) one variant of `layer` holds, in bytes at float32: its layer copy with the
    gradient and AdamW's two moments (4 x its parameters); the larger of a training step of `tokens` tokens
    (what layers layer..N-1 keep for the backward, and the logits, their log-softmax and its gradient, 3 x the
    vocabulary per token) and an evaluation batch of `eval_tokens` (one layer's worth at a time, no backward)."""
    adapter = LayerAdapter(model)
    config = text_config(model)
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", None) or 4 * hidden)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    per_layer = ACTIVATION_PER_HIDDEN * hidden + ACTIVATION_PER_INTERMEDIATE * intermediate
    params = sum(p.numel() for p in adapter.layers[layer].parameters())
    train = tokens * ((adapter.num_layers - layer) * per_layer + 3 * vocab)
    evaluation = eval_tokens * (per_layer + 2 * vocab // 8)  # the head runs on at most HEAD_ROWS rows at a time
    return 16 * params, 4 * max(train, evaluation)


def variant_plan(model: nn.Module, specs: Sequence[tuple[int, float]], tokens: int, eval_tokens: int,
                 cap: int | None = None, budget: int | None = None) -> VariantPlan:
    """How many variants train together. A pass holds as many variants as half the memory budget holds the
    weights of (whole layers per pass); what the pass's weights leave of the budget holds the activations of a
    group (at most `cap`), groups of a pass evened out (26 variants that fit 15 at a time go 13 and 13)."""
    if budget is None:
        budget = int(available_memory(offload.input_device(model)) * TRAIN_MEMORY_SHARE)
    sizes = [variant_bytes(model, layer, tokens, eval_tokens) for layer, _ in specs]
    weights, activations = max(s[0] for s in sizes), max(s[1] for s in sizes)
    per_pass = max(1, budget // 2 // weights)
    passes: list[list[tuple[int, float]]] = []
    for layer in dict.fromkeys(layer for layer, _ in specs):
        mine = [spec for spec in specs if spec[0] == layer]
        if not passes or len(passes[-1]) + len(mine) > per_pass:
            passes.append([])
        passes[-1] += mine
    largest = max(map(len, passes))
    group = max(1, min(largest, (budget - largest * weights) // activations, cap or largest))
    group = -(-largest // -(-largest // group))  # as many groups as needed, of even size
    return VariantPlan(passes, group, weights, activations, budget)
