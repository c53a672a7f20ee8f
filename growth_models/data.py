"""Training data for the growth runs: corpus split -> byte-level BPE tokenizer -> token chunks.

Tokenizer choice: a byte-level BPE trained with `tokenizers` on the training split only.
The embedded SmolLM2 tokenizer has 49,152 entries: with hidden 256 its tied embedding alone
would be 12.6M parameters, more than all 12 decoder layers (9.44M), and the LM-head matmul over
49k logits would dominate a CPU training step. A 4,096-entry BPE costs 1.05M parameters, fits
Shakespeare's spelling, and never sees held-out text. Byte-level means no unknown tokens.
The tokenizer is cached (keyed by the training text and vocabulary size) and saved with every
checkpoint as a `PreTrainedTokenizerFast`, so `AutoTokenizer.from_pretrained(ckpt)` loads it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from anatomy.corpus import CorpusSplit, token_chunks
from anatomy.disk import cache_dir
from anatomy.errors import AnatomyError

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on `texts` (the training split), cached under the project cache folder."""
    key = hashlib.sha256()
    for t in texts:
        key.update(hashlib.sha256(t.encode()).digest())
    key.update(f"bpe-{vocab_size}-v1".encode())
    folder = cache_dir() / "growth-tokenizers" / key.hexdigest()[:16]
    path = folder / "tokenizer.json"
    if path.exists():
        tok = Tokenizer.from_file(str(path))
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"tokenizer.{id(tok)}.tmp"
        tok.save(str(tmp))
        tmp.replace(path)  # atomic: parallel runs never read a half-written file
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


@dataclass
class TokenData:
    """Token chunks [n, seq_len] per split, and the tokenizer that made them."""

    tokenizer: PreTrainedTokenizerFast
    train: torch.Tensor
    validation: torch.Tensor
    test: torch.Tensor

    def describe(self) -> str:
        return ", ".join(f"{k}: {getattr(self, k).numel():,} tokens" for k in ("train", "validation", "test"))


def prepare_data(split: CorpusSplit, vocab_size: int, seq_len: int, max_train_chars: int | None = None) -> TokenData:
    """Tokenizer from the training split, then chunks of every split (EOS between documents).

    `max_train_chars` keeps only the start of the training text (the tiny preset uses it to
    stay fast); held-out splits are never cut, so their losses stay comparable across runs.
    """
    train_texts = list(split.train.values())
    if max_train_chars is not None:
        kept, left = [], max_train_chars
        for t in train_texts:
            if left <= 0:
                break
            kept.append(t[:left])
            left -= len(kept[-1])
        train_texts = kept
    if not any(t.strip() for t in train_texts):
        raise AnatomyError("The training split has no text. Pass a --train-file with more text.")
    tok = train_tokenizer(train_texts, vocab_size)
    eos = tok.convert_tokens_to_ids(EOS)
    chunks = {name: token_chunks(texts, tok, seq_len, separator_id=eos)
              for name, texts in (("train", train_texts), ("validation", list(split.validation.values())),
                                  ("test", list(split.test.values())))}
    return TokenData(tokenizer=tok, **chunks)
