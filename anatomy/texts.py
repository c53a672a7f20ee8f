"""Where evaluation text comes from: the shipped default set, a user's file, or (online) a Hub dataset."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import AnatomyError, shown
from .evaluate import EvalSet
from .offload import input_device
from .options import build_config, option

DEFAULT_EVAL_NAME = "default (48 sentences shipped in anatomy/data/eval_sentences.txt)"


@dataclass
class EvalTextOptions:
    """The evaluation text's size, declared once with its ranges: the CLI's --batch-size/--max-length and the
    app's text inputs are parsed by the same fields, and a public app holds them to the public ceilings (the
    logits of one batch, batch x tokens x vocabulary floats, are what a long text makes large)."""

    batch_size: int = option(16, "texts per forward pass", minimum=1, maximum=1024, public_maximum=16)
    max_length: int = option(256, "tokens kept per text", label="Max tokens per text", minimum=1, maximum=32_768,
                             public_maximum=256)
    n_sentences: int = option(48, "default sentences used", label="Default sentences used", minimum=1, maximum=48)
    texts: int = option(10_000, "evaluation texts", label="Your own texts", minimum=1, maximum=100_000,
                        public_maximum=200)
    characters: int = option(10_000_000, "characters of evaluation text", label="Characters of your own text",
                             minimum=1, maximum=100_000_000, public_maximum=50_000)

    @classmethod
    def checked(cls, public: bool = False, where: dict[str, str] | None = None, **values: object
                ) -> EvalTextOptions:
        """The options from raw values, each within its range (`where`: the name an error gives each field)."""
        names = where or {}
        return build_config(cls, values, where=lambda p: names.get(p.name, p.label), public=public)


def build_eval_set(texts: list[str], name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 sizes: EvalTextOptions, seed: int = 0, public: bool = False) -> EvalSet:
    """The one builder of an evaluation set, for the CLI and the app alike: the text's size checked, its batches
    on the device the model's inputs go to (under offload, the first layer's, not `model.device`)."""
    check_text_size(texts, public)
    return EvalSet.from_texts(texts, tokenizer, name=name, batch_size=sizes.batch_size, max_length=sizes.max_length,
                              device=input_device(model), seed=seed)


def check_text_size(texts: list[str], public: bool = False) -> None:
    """Refuse more texts or characters than EvalTextOptions allows, before anything is tokenised."""
    EvalTextOptions.checked(public, texts=len(texts), characters=max(1, sum(map(len, texts))))


def default_eval_texts() -> list[str]:
    """48 short, diverse, modern English sentences (facts, definitions, descriptions), one per line."""
    text = resources.files("anatomy").joinpath("data/eval_sentences.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def split_texts(text: str) -> list[str]:
    """Blank-line separated paragraphs, or lines when the text has no blank lines."""
    text = text.replace("\r\n", "\n").strip()
    parts = text.split("\n\n") if "\n\n" in text else text.split("\n")
    return [" ".join(p.split()) for p in parts if p.strip()]


def read_text_file(path: str | Path) -> list[str]:
    """Evaluation texts from a plain-text file (paragraphs, or one text per line)."""
    path = Path(path)
    if not path.is_file():
        raise AnatomyError(f"Text file {shown(path, 120)} does not exist.")
    texts = split_texts(path.read_text(encoding="utf-8", errors="replace"))
    if not texts:
        raise AnatomyError(f"Text file {shown(path, 120)} is empty: give at least one non-empty line of text.")
    return texts


def hub_dataset_texts(spec: str, *, column: str = "text", limit: int = 200, token: str | None = None) -> list[str]:
    """Texts from one file of a Hub dataset, given as `owner/name:path/in/repo.{txt,jsonl,json,csv}`."""
    import pandas as pd
    from huggingface_hub import hf_hub_download

    repo_id, _, filename = spec.partition(":")
    if not filename:
        raise AnatomyError(f"Dataset {shown(spec)} needs a file: use owner/name:path/to/file.jsonl "
                           "(or .txt/.json/.csv).")
    try:
        local = Path(hf_hub_download(repo_id, filename, repo_type="dataset", token=token))
    except Exception as err:  # noqa: BLE001 - every Hub failure becomes the same actionable message
        raise AnatomyError(f"Could not download {shown(filename)} from dataset {shown(repo_id)} "
                           f"({type(err).__name__}): "
                           "check the id and the path, or use --text-file offline.") from err
    if local.suffix == ".txt":
        texts = split_texts(local.read_text(encoding="utf-8", errors="replace"))
    else:
        readers = {".jsonl": lambda p: pd.read_json(p, lines=True), ".json": pd.read_json, ".csv": pd.read_csv}
        if local.suffix not in readers:
            raise AnatomyError(f"Unsupported dataset file type '{local.suffix}': use .txt, .jsonl, .json or .csv.")
        frame = readers[local.suffix](local)
        if column not in frame.columns:
            columns = shown(", ".join(map(str, frame.columns)), 200)
            raise AnatomyError(f"Dataset file has no column '{column}'; it has {columns}.")
        texts = [" ".join(str(t).split()) for t in frame[column].dropna()]
    texts = [t for t in texts if t][:limit]
    if not texts:
        raise AnatomyError(f"Dataset {shown(spec)} gave no text in column '{column}'.")
    return texts


def resolve_eval_texts(text_file: str | None = None, dataset: str | None = None,
                       texts: list[str] | None = None) -> tuple[list[str], str]:
    """Pick the evaluation texts and a name for them (recorded in every report)."""
    if texts is not None:
        cleaned = [" ".join(t.split()) for t in texts if t and t.strip()]
        if not cleaned:
            raise AnatomyError("The evaluation text is empty: give at least one sentence.")
        return cleaned, f"{len(cleaned)} user texts"
    if text_file:
        return read_text_file(text_file), f"file {text_file}"
    if dataset:
        return hub_dataset_texts(dataset), f"dataset {dataset}"
    return default_eval_texts(), DEFAULT_EVAL_NAME

