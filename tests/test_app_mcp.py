"""The app as MCP tools: a real server (`launch(mcp_server=True)`, as `python app.py` serves it), read and called
through the MCP client SDK over streamable HTTP, as an AI agent's client would."""

from __future__ import annotations

import json

import anyio
import pytest

pytest.importorskip("mcp")

from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

from conftest import free_port  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.embedded]


@pytest.fixture(scope="module")
def mcp_url():
    from space import build_demo

    demo = build_demo("embedded")
    # A port of its own: on a port taken between Gradio's check and its bind, Gradio tries the next one, but the MCP
    # session manager it already started cannot start twice, so every later port fails too.
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            mcp_server=True)
    try:
        yield url.rstrip("/") + "/gradio_api/mcp/"
    finally:
        demo.close()


async def session_run(url: str, calls: list[tuple[str, dict]]) -> tuple[list, list, list[tuple[float, str]]]:
    """The tool list, each call's result and every progress notification the calls got."""
    progress: list[tuple[float, str]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message or ""))

    async with streamablehttp_client(url, timeout=30, sse_read_timeout=600) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            results = [await session.call_tool(name, args, progress_callback=on_progress) for name, args in calls]
    return tools, results, progress


def test_each_experiment_is_a_described_tool_and_importance_runs_on_the_embedded_model(mcp_url):
    args = {"model": "embedded", "n_sentences": 2, "max_length": 32, "layers": "3-4"}
    tools, (result,), progress = anyio.run(session_run, mcp_url, [("importance", args)])
    named = {tool.name: tool for tool in tools}
    assert {"importance", "plans", "prune", "recovery", "manipulate", "study", "generate"} <= set(named)
    assert {"stop_importance", "painters", "load_model", "publish_importance"} <= set(named)  # the endpoints' names
    importance = named["importance"]
    assert importance.description.startswith("Importance map: per-layer ablation importance map")
    assert "mode: " in importance.description  # the fields' help, from the declaration
    schema = importance.inputSchema["properties"]
    assert {"model", "n_sentences", "layers", "mode"} <= set(schema)
    assert not result.isError, result.content
    text = "\n".join(part.text for part in result.content if part.type == "text")
    assert "Baseline PPL" in text, text[:2000]  # the headline, beside the table and the figure
    assert progress and any("importance" in message for _, message in progress)  # progress reached the client
    json.dumps([part.model_dump() for part in result.content])  # the result is plain JSON-able content



def test_a_budget_tool_call_reads_the_importance_table_an_earlier_tool_call_returned(mcp_url):
    """gradio's MCP server calls the app through one client: every agent's tool calls share one session, whose
    latest importance run is whichever agent ran last. An agent passes its own run's table, as its importance
    call's answer shows it, and budget reads that one: 3 layers here, not the 2 of the later run."""
    eval_args = {"model": "embedded", "n_sentences": 2, "max_length": 32}
    _, (mine, _), _ = anyio.run(session_run, mcp_url, [("importance", {**eval_args, "layers": "3-5"}),
                                                       ("importance", {**eval_args, "layers": "3-4"})])
    table = next(part.text for part in mine.content if part.type == "text" and "'headers'" in part.text)
    _, (given, latest), _ = anyio.run(session_run, mcp_url, [
        ("budget", {"importance": table, "without_recovery": True}), ("budget", {"without_recovery": True})])
    assert not given.isError and not latest.isError, (given.content, latest.content)
    headline = next(part.text for part in given.content if part.type == "text")
    assert headline.startswith("Total ") and "of 600 uniform steps" in headline  # 3 layers of 200 steps
    assert "of 400 uniform steps" in next(part.text for part in latest.content if part.type == "text")
    assert "importance table given as JSON" in "\n".join(part.text for part in given.content if part.type == "text")
