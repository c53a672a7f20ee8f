"""The Space's README front matter agrees with requirements.txt and the app (the Hub reads only that header)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from anatomy.load import ONLINE_DEFAULT

ROOT = Path(__file__).resolve().parents[1]


def pinned(package: str) -> str:
    """The exact version requirements.txt pins for `package`."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(rf"{re.escape(package)}(\[[\w,]+\])?==([\w.]+)\s*(#.*)?", line.strip(), flags=re.I)
        if match:
            return match.group(2)  # an extra such as gradio[mcp] pins the same package
    raise AssertionError(f"requirements.txt does not pin {package}")


@pytest.fixture(scope="module")
def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    assert match, "README.md must start with the Space's YAML front matter between --- lines"
    return yaml.safe_load(match.group(1))


def test_front_matter_describes_a_gradio_space_matching_the_requirements(front_matter):
    assert front_matter["sdk"] == "gradio"
    assert str(front_matter["sdk_version"]) == pinned("gradio")
    assert (ROOT / front_matter["app_file"]).is_file()
    assert front_matter["suggested_hardware"] == "t4-small"
    assert ONLINE_DEFAULT in front_matter["models"]
    assert 0 < len(front_matter["short_description"]) <= 60  # the Hub's limit
    assert re.fullmatch(r"3\.\d+", str(front_matter["python_version"]))


def test_python_version_matches_the_dockerfile(front_matter):
    base = re.search(r"^FROM python:(\d+\.\d+)", (ROOT / "Dockerfile").read_text(), flags=re.M)
    assert base and base.group(1) == str(front_matter["python_version"])


def test_requirements_carry_what_a_zero_gpu_space_imports():
    assert pinned("torch") and pinned("spaces") and pinned("gradio_client")
