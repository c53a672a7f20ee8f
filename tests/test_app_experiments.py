"""The weight-space, recovery and layer tabs through a real server, on a tiny model registered in the app's cache."""

from __future__ import annotations

import json
import re
import time
import zipfile
from pathlib import Path

import pytest
from gradio_client import Client

from anatomy.experiments.budget import RANGES as RANGE_FIELDS, BudgetConfig
from anatomy.interventions import fingerprint
from anatomy.layers import LayerAdapter
from anatomy.load import LoadedModel
from anatomy.options import params
from anatomy.plans import VARIANTS
from space.models import CACHE
from space.tabs import ManipulateInputs, PruneInputs
from tests.conftest import make_tiny_model

RANGES = {p.name: p.text(p.default) for p in params(BudgetConfig) if p.name in RANGE_FIELDS}  # as typed

ENDPOINTS = {"/structure", "/spectral", "/predictability", "/recovery",
             "/stop_structure", "/stop_spectral", "/stop_predictability", "/stop_recovery",
             "/manipulate", "/stop_manipulate", "/prune", "/stop_prune",
             "/plans", "/stop_plans", "/painters", "/stop_painters", "/budget", "/study", "/stop_study", "/study_offer"}
TINY_EVAL = ("tiny", 6, "", 32)


@pytest.fixture(scope="module")
def client(tiny_tokenizer, app_url):
    CACHE.put("tiny", LoadedModel(make_tiny_model("llama", layers=6), tiny_tokenizer, "tiny llama", "test"))
    return Client(app_url, verbose=False)


def tiny_fingerprint() -> str:
    with CACHE.use("tiny") as loaded:
        return fingerprint(loaded.model)


@pytest.mark.slow
def test_weight_space_tabs_give_plots_tables_and_a_run_zip(client):
    before = tiny_fingerprint()
    headline, *figures, table, markdown, archive = client.predict("tiny", 10, 0, api_name="/structure")
    assert len(figures) == 3 and all(figures) and "delta" in markdown.lower() and archive.endswith(".zip")
    assert "control" in headline
    assert len(table["data"]) >= 7  # one row per component, plus the whole layer
    headline, *figures, table, markdown, archive = client.predict("tiny", 4, api_name="/spectral")
    assert len(figures) == 2 and all(figures) and table["data"] and archive.endswith(".zip")
    assert "matrices; layer mean alpha" in headline and table["headers"][0] == "component"  # the summary per component
    headline, *figures, table, markdown, archive = client.predict(*TINY_EVAL, 200, 1.0, 2, api_name="/predictability")
    assert len(figures) == 2 and all(figures) and table["data"] and archive.endswith(".zip")
    assert "- replacing 2 layers" in headline and "mean_r2" in table["headers"]
    for name in ("structure", "spectral", "predictability", "recovery"):
        client.predict(api_name=f"/stop_{name}")
    assert tiny_fingerprint() == before


def test_recovery_runs_here_restores_the_weights_and_is_refused_on_zero_gpu(client, monkeypatch, shakespeare):
    before = tiny_fingerprint()
    headline, figure, table, markdown, archive = client.predict(*TINY_EVAL, "1", 2, 1, 0.5, 1e-3, 0,
                                                                api_name="/recovery")
    assert figure and [row[0] for row in table["data"]] == [1] and archive.endswith(".zip")
    assert tiny_fingerprint() == before
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    with pytest.raises(Exception, match="ZeroGPU"):
        client.predict(*TINY_EVAL, "1", 2, 1, 0.5, 1e-3, 0, api_name="/recovery")


def test_manipulation_uses_typed_layers_or_the_sessions_importance_run(client):
    before = tiny_fingerprint()
    strategies = ["zero", "clone", "blend", "lowrank", "scale"]
    headline, figure, table, markdown, archive = client.predict(*TINY_EVAL, "1,4", 10, strategies, "0.5", 0, "",
                                                                ManipulateInputs.GIVEN, api_name="/manipulate")
    assert [row[0] for row in table["data"]] == ["baseline (none)", *strategies[:4], "scale 0.5"]
    assert figure and "layers.1, layers.4" in markdown and archive.endswith(".zip")
    with pytest.raises(Exception, match="run the Importance tab first"):
        Client(client.src, verbose=False).predict(*TINY_EVAL, "", 10, ["zero"], "0.5", 0, "",
                                                  ManipulateInputs.FROM_RUN, api_name="/manipulate")
    client.predict(*TINY_EVAL, "skip", "one-neighbour", "all", api_name="/importance")
    headline, figure, table, markdown, archive = client.predict(*TINY_EVAL, "", 1e9, ["zero"], "0.5", 0, "",
                                                                ManipulateInputs.FROM_RUN, api_name="/manipulate")
    assert table["data"][1][:2] == ["zero", "0,1,2,3,4,5"] and "from the importance run" in markdown
    assert tiny_fingerprint() == before


def test_pruning_removes_layers_by_each_criterion_and_puts_them_back(client):
    before = tiny_fingerprint()
    headline, figure, table, markdown, archive = client.predict(*TINY_EVAL, "1,2", ["alpha", "ablation", "last"],
                                                                "skip", "", PruneInputs.COMPUTE, api_name="/prune")
    rows = {(row[0], row[1]): row[2] for row in table["data"]}
    assert rows[("last", 2)] == "4,5" and rows[("baseline (none)", 0)] == "" and len(rows) == 7
    assert figure and "last_over_k1" in markdown and archive.endswith(".zip")
    with pytest.raises(Exception, match="K must be between 1 and 5"):
        client.predict(*TINY_EVAL, "6", ["last"], "skip", "", PruneInputs.COMPUTE, api_name="/prune")
    client.predict(*TINY_EVAL, "zero", "one-neighbour", "all", api_name="/importance")
    _, _, table, markdown, _ = client.predict(*TINY_EVAL, "1", ["ablation"], "skip", "", PruneInputs.FROM_RUN,
                                              api_name="/prune")
    assert len(table["data"]) == 2 and "zero ablation" in markdown
    assert tiny_fingerprint() == before


def test_layer_plans_give_every_variant_and_the_users_plan_with_the_weights_untouched(client):
    before = tiny_fingerprint()
    fast = (2, 0, 1, 2, True, True)  # loops, seed, timed runs, decode tokens, batched, tasks
    _, ppl, latency, table, markdown, archive = client.predict(*TINY_EVAL, list(VARIANTS), "2", "0,[1-3]x2,5\n",
                                                               *fast, api_name="/plans")
    assert [row[0] for row in table["data"]] == ["baseline", *VARIANTS, "custom"]
    assert table["data"][-1][3] == "0,[1-3]x2,5" and ppl and latency and archive.endswith(".zip")
    assert "Layers as painters" in markdown and "acc_facts" in table["headers"]
    for plans, message in (("0-99", "layer 99 does not exist"), ("", "Nothing to run")):
        with pytest.raises(Exception, match=message):
            client.predict(*TINY_EVAL, list(VARIANTS), "", plans, *fast, api_name="/painters")  # the alias
    assert tiny_fingerprint() == before


def test_budget_reads_the_sessions_importance_and_recovery_runs(client, shakespeare):
    user = Client(client.src, verbose=False)  # a session of its own: no earlier runs

    def budget(class_only: bool) -> list:
        return user.predict(class_only, 100, *RANGES.values(), 1.0, 10, True, True, api_name="/budget")

    with pytest.raises(Exception, match="run the Importance tab first"):
        budget(False)
    user.predict(*TINY_EVAL, "skip", "one-neighbour", "all", api_name="/importance")
    with pytest.raises(Exception, match="run the Recovery tab first.*Class-only"):
        budget(False)
    headline, figure, table, markdown, archive, schedule = budget(True)
    assert {row[3] for row in table["data"]} == {"not measured"} and figure and "recovery run: `none`" in markdown
    user.predict(*TINY_EVAL, "1", 2, 1, 0.5, 1e-3, 0, api_name="/recovery")
    headline, figure, table, markdown, archive, schedule = budget(False)
    measured = [row[0] for row in table["data"] if row[3] != "not measured"]
    layers = json.loads(Path(schedule).read_text())["layers"]
    assert measured == [1] and [entry["layer"] for entry in layers] == list(range(6))
    assert "budget.json" in zipfile.ZipFile(archive).namelist()
    table = budget(True)[2]  # a session with a recovery run may still budget by class only
    assert {row[3] for row in table["data"]} == {"not measured"}


def test_an_api_client_without_a_session_gets_a_budget_from_the_tables_it_sends(client, shakespeare):
    """A client without a session of its own (plain HTTP, MCP tools) sends the tables /importance and /recovery
    returned; anything else sent is refused in one line before any work."""
    runs = Client(client.src, verbose=False)  # the session that ran them
    *_, importance, _, _ = runs.predict(*TINY_EVAL, "skip", "one-neighbour", "all", api_name="/importance")
    *_, recovery, _, _ = runs.predict(*TINY_EVAL, "1", 2, 1, 0.5, 1e-3, 0, api_name="/recovery")

    def budget(**sent) -> list:
        return Client(client.src, verbose=False).predict(**sent, api_name="/budget")  # a new session each call

    headline, figure, table, markdown, archive, schedule = budget(importance=json.dumps(importance),
                                                                  recovery=json.dumps(recovery))
    assert [row[0] for row in table["data"]] == list(range(6)) and figure and archive.endswith(".zip")
    assert [row[0] for row in table["data"] if row[3] != "not measured"] == [1]  # recovery measured layer 1 only
    assert "Importance run: `importance table given as JSON`" in markdown
    records = [dict(zip(importance["headers"], row)) for row in importance["data"]]  # pandas' orient="records"
    _, _, by_class, *_ = budget(importance=json.dumps(records), without_recovery=True)
    assert {row[3] for row in by_class["data"]} == {"not measured"} and len(by_class["data"]) == 6
    with pytest.raises(Exception, match="run the Importance tab first.*or give its table as JSON in 'importance'"):
        budget(without_recovery=True)
    without_class = {**importance, "headers": ["klass" if h == "class" else h for h in importance["headers"]]}
    for sent, message in ((str(Path(archive).with_suffix("")), "is not JSON"), ('{"a": 1}', "must be a table"),
                          ("[" * 100_000, "is not JSON"), (json.dumps(without_class), "has no column 'class'"),
                          (json.dumps({**importance, "data": importance["data"] * 2}), "names a layer twice"),
                          (json.dumps({**importance, "data": [["../x", *importance["data"][0][1:]]]}),
                           "column 'layer' must be a layer number")):
        with pytest.raises(Exception, match=message) as refused:
            budget(importance=sent, without_recovery=True)
        assert "Traceback" not in str(refused.value) and "\n" not in str(refused.value).strip()
    with pytest.raises(Exception, match="You gave a recovery run and ticked 'Class-only"):
        budget(importance=json.dumps(importance), recovery=json.dumps(recovery), without_recovery=True)


def stopped(client: Client, api_name: str, *args) -> None:
    """Start a long job, press its Stop once the progress bar moves, and expect the 'Stopped' message."""
    job = client.submit(*args, api_name=api_name)
    deadline = time.monotonic() + 120
    while not job.status().progress_data and not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.predict(api_name=f"/stop_{api_name[1:]}").startswith("**Stopped.** The run ends")  # the tab says
    with pytest.raises(Exception, match="Stopped"):
        job.result()


def test_stop_ends_layer_jobs_and_restores_weights_and_layers(client):
    before = tiny_fingerprint()
    many = ",".join(str(a / 1000) for a in range(1000))
    stopped(client, "/manipulate", *TINY_EVAL, "1-4", 10, ["scale"], many, 0, "", ManipulateInputs.GIVEN)
    stopped(client, "/plans", *TINY_EVAL, list(VARIANTS), "2", "", 2, 0, 20, 16, True, False)
    client.predict(api_name="/stop_prune")
    with CACHE.use("tiny") as loaded:
        assert len(LayerAdapter(loaded.model).layers) == loaded.model.config.num_hidden_layers == 6
    assert tiny_fingerprint() == before


def test_every_endpoint_is_covered_by_a_test(client):
    from tests.test_app_hub import HUB_ENDPOINTS
    from tests.test_app_server import ENDPOINTS as SERVER_ENDPOINTS
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert named == ENDPOINTS | SERVER_ENDPOINTS | HUB_ENDPOINTS


def test_the_api_page_reads_from_the_declarations(client):
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    plans = api["/plans"]
    assert plans["description"].startswith("Layer plans: ") and "latency_repeats: timed runs per row" in \
        plans["description"]
    assert api["/painters"]["description"].startswith("The same as /plans")
    inputs = {p["parameter_name"]: p for p in plans["parameters"]}
    assert all(p["parameter_has_default"] for p in inputs.values())  # every input optional, at the tab's value
    assert not inputs["custom_text"]["parameter_default"] and inputs["n_sentences"]["type"]["type"] == "integer"
    assert inputs["latency_repeats"]["parameter_default"] == 3  # the tab's default, cheaper than the CLI's 5
    labels = [r["label"] for r in plans["returns"]]
    assert "Headline" in labels and "Report" in labels and not any(label.startswith("value_") for label in labels)


def test_locally_the_study_tab_offers_the_full_study_with_its_estimate(client):
    depth, line = client.predict("not/loaded-yet", 6, "", 32, api_name="/study_offer")
    assert depth == "Full" and "the estimate comes when the study starts" in line  # nothing loaded to time
    depth, line = client.predict(*TINY_EVAL, api_name="/study_offer")
    minutes = re.fullmatch(r"Full study: about ([\d.]+) min on this machine; quick: about ([\d.]+) min\.", line)
    assert depth == "Full" and minutes, line  # locally nothing is refused, so Full is offered whatever it costs
    assert float(minutes[1]) >= float(minutes[2])


@pytest.mark.slow
def test_the_quick_study_runs_from_the_study_tab(client):
    glance, claims, markdown, page, md, archive = client.predict(*TINY_EVAL, "Quick", api_name="/study")
    assert glance is not None and archive.endswith(".zip")
    assert claims["value"]["headers"] == ["finding", "verdict", "ours", "study", "reason", "conditions"]
    assert claims["label"].startswith("QUICK study: claims") and claims["label"].endswith("(tiny llama)")
    findings = [row[0] for row in claims["value"]["data"]]
    assert "importance range" in findings and "Table 1 rank agreement" in findings
    assert "QUICK (reduced)" in markdown and "## Claims of the study" in markdown
    assert open(page, encoding="utf-8").read().startswith("<!doctype html>")
    assert open(md, encoding="utf-8").read().startswith("# Study of tiny llama")
