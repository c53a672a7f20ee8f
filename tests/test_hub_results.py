"""Results on the Hub: a run folder pushed as a dataset repo with its card, a second push beside the first, the
atlas of a repo, a stored run reused by `--from-hub`, and one line for every bad input. Only the HTTP hop is
replaced (tests/hub_fake.py); the runs are real, on a tiny random model saved as a local folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from huggingface_hub import DatasetCard, constants

from anatomy import cli
from anatomy.hub_card import LICENSE, results_card
from anatomy.texts import default_eval_texts
from tests.conftest import make_tiny_model
from tests.hub_fake import SHA, FakeHub, FakeRepo, config_json

TOKEN, READER = "hf_writer_secret", "hf_reader_only"
REPO = "alice/anatomy-results"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    make_tiny_model("llama", layers=3).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def hub(monkeypatch, tmp_path):
    fake = FakeHub({"alice/tiny": FakeRepo({"config.json": config_json()})}, writers={TOKEN})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    fake.install(monkeypatch)
    yield fake
    fake.uninstall()


def importance(model_dir: Path, texts: Path, out: Path, *extra: str) -> list[str]:
    return ["importance", "--model", str(model_dir), "--text-file", str(texts), "--max-length", "24",
            "--batch-size", "4", "--out", str(out), *extra]


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_run_is_pushed_with_its_files_and_a_card_the_hub_classes_parse(hub, model_dir, texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(importance(model_dir, texts, run, "--push-to-hub", REPO)) == 0
    assert [body["repoType"] for body in hub.validated] == ["dataset"]  # the Hub's own check of the card's YAML
    stored = hub.datasets[REPO].files
    local = files_of(run)
    assert set(stored) - {"README.md"} == {f"tiny-llama/importance/{name}" for name in local}
    for name, data in local.items():  # the same files, the publisher's paths named by their last part
        named = data.replace(str(model_dir).encode(), b"tiny-llama").replace(str(texts).encode(), b"texts.txt")
        assert stored[f"tiny-llama/importance/{name}"] == named, name
    assert str(model_dir).encode() in local["report.md"]  # the run folder on disk keeps its paths
    assert not [k for k, v in stored.items() if str(tmp_path.parent).encode() in v]
    card = DatasetCard.load(Path(tmp_path / "README.md").write_bytes(stored["README.md"]) and tmp_path / "README.md")
    payload = json.loads((run / "results.json").read_text())
    assert card.data.license == LICENSE and "transformer-anatomy" in card.data.tags
    assert card.data.analysed_model == "tiny-llama" and card.data.eval_set["sha256"] == payload["eval_set"]["sha256"]
    assert card.data.eval_set["name"] == "file texts.txt"
    assert card.data.anatomy_version == payload["environment"]["anatomy"]
    assert "## Headline" in card.text and "tiny-llama/importance/importance.png" in card.text
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and f"datasets/{REPO}/commit" in out.out


def test_the_card_round_trips_through_datasetcarddata(model_dir, texts, tmp_path):
    run = tmp_path / "run"
    assert cli.main(importance(model_dir, texts, run)) == 0
    payload = json.loads((run / "results.json").read_text())
    card = results_card(run, payload, "tiny-llama/importance", ["tiny-llama/importance"])
    card.save(tmp_path / "README.md")
    back = DatasetCard.load(tmp_path / "README.md")
    assert back.data.to_dict() == card.data.to_dict()
    assert back.data.analysed_model_source == "folder" and back.data.latest == "tiny-llama/importance"


def test_a_second_push_keeps_the_first_and_the_atlas_lists_both(hub, model_dir, texts, tmp_path, capsys):
    assert cli.main(importance(model_dir, texts, tmp_path / "a", "--push-to-hub", REPO)) == 0
    assert cli.main(["spectral", "--model", str(model_dir), "--out", str(tmp_path / "b")]) == 0
    assert cli.main(["push", str(tmp_path / "b"), REPO]) == 0
    names = set(hub.datasets[REPO].files)
    assert {"tiny-llama/importance/results.json", "tiny-llama/spectral/results.json"} <= names
    (_, added, deleted), = hub.commits[1:]  # the second commit adds its folder and the card, deletes nothing
    assert deleted == [] and all(p.startswith("tiny-llama/spectral/") or p == "README.md" for p in added)
    assert "- `tiny-llama/importance/`" in hub.datasets[REPO].files["README.md"].decode()
    capsys.readouterr()
    assert cli.main(["atlas", REPO]) == 0
    listed = capsys.readouterr().out
    assert "tiny-llama/importance" in listed and "tiny-llama/spectral" in listed and "spectral" in listed


def test_from_hub_shows_the_stored_tables_and_refuses_other_settings(hub, model_dir, texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(importance(model_dir, texts, run, "--push-to-hub", REPO)) == 0
    requests = len(hub.requests)
    again = tmp_path / "again"
    assert cli.main(importance(model_dir, texts, again, "--from-hub", REPO)) == 0
    assert (again / "importance.csv").read_bytes() == (run / "importance.csv").read_bytes()
    assert json.loads((again / "results.json").read_text())["tables"] == json.loads((run / "results.json").read_text())[
        "tables"]
    pd.testing.assert_frame_equal(pd.read_csv(again / "importance.csv"), pd.read_csv(run / "importance.csv"))
    assert "stored result from" in capsys.readouterr().out and len(hub.requests) > requests
    assert cli.main(importance(model_dir, texts, tmp_path / "other", "--from-hub", REPO, "--mode", "zero")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the download's progress bar
    assert 'config mode: stored "neighbour-mean", asked "zero"' in err and "drop --from-hub" in err
    assert not (tmp_path / "other").exists()
    assert cli.main(importance(model_dir, texts, tmp_path / "other", "--from-hub", REPO, "--dtype", "bfloat16")) == 2
    assert 'dtype: stored "torch.float32", asked "torch.bfloat16"' in capsys.readouterr().err
    assert cli.main(["spectral", "--model", str(model_dir), "--out", str(tmp_path / "s"), "--from-hub", REPO]) == 2
    assert "holds no tiny-llama/spectral/" in capsys.readouterr().err


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and TOKEN not in err, err
    return err


@pytest.mark.parametrize("repo, why", [("not-a-repo", "not a Hub repo id"),
                                       ("https://hf.co/datasets/a/b", "OWNER/NAME"),
                                       ("datasets/alice/x", "not a Hub repo id"), ("alice/../x", "not a Hub repo id"),
                                       ("alice/tiny", "is a model repo")])
def test_bad_repo_ids_are_refused_before_the_model_loads(hub, texts, tmp_path, capsys, repo, why):
    never = tmp_path / "never-loaded"
    assert cli.main(importance(never, texts, tmp_path / "run", "--push-to-hub", repo)) == 2
    err = one_line(capsys)
    assert why in err and "nothing was computed" in err and "python -m anatomy push" in err


def test_no_token_unreachable_hub_and_read_only_token_each_get_one_line(hub, monkeypatch, model_dir, texts, tmp_path,
                                                                       capsys):
    monkeypatch.delenv("HF_TOKEN")
    assert cli.main(importance(tmp_path / "never", texts, tmp_path / "run", "--push-to-hub", REPO)) == 2
    assert "No Hugging Face token" in one_line(capsys)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.unreachable = True
    assert cli.main(importance(tmp_path / "never", texts, tmp_path / "run", "--push-to-hub", REPO)) == 2
    assert "unreachable" in one_line(capsys)
    hub.unreachable = False
    monkeypatch.setenv("HF_TOKEN", READER)
    run = tmp_path / "kept"
    assert cli.main(importance(model_dir, texts, run, "--push-to-hub", REPO)) == 2  # the push at the end fails
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "refused the token" in err and f"python -m anatomy push {run} {REPO}" in err and READER not in err
    assert (run / "results.json").is_file()


def test_atlas_and_push_refuse_what_they_cannot_read(hub, tmp_path, capsys):
    assert cli.main(["atlas", "alice/tiny"]) == 2
    assert "a model repo, not a results (dataset) repo" in one_line(capsys)
    assert cli.main(["atlas", "alice/none"]) == 2
    one_line(capsys)
    asked = len(hub.requests)
    assert cli.main(["push", str(tmp_path), REPO]) == 2
    assert "not a finished run or study folder" in one_line(capsys) and len(hub.requests) == asked


@pytest.mark.slow
def test_a_study_is_pushed_whole_and_reused_by_study_from_hub(hub, model_dir, texts, tmp_path, capsys):
    study = ["study", "--model", str(model_dir), "--text-file", str(texts), "--max-length", "24",
             "--experiments", "importance,spectral,prune"]  # prune's K=4 cannot run on 3 layers
    assert cli.main([*study, "--out", str(tmp_path / "s"), "--push-to-hub", REPO]) == 0
    prefix = "tiny-llama/study/"
    pushed = {k.removeprefix(prefix) for k in hub.datasets[REPO].files if k.startswith(prefix)}
    assert pushed == set(files_of(tmp_path / "s"))
    card = hub.datasets[REPO].files["README.md"].decode()
    assert "## Headline" in card and "| finding" in card and "- study" in card  # the claims table; the tag
    capsys.readouterr()
    assert cli.main([*study, "--out", str(tmp_path / "again"), "--from-hub", REPO]) == 0
    local = (tmp_path / "s" / "study.md").read_text()
    assert (tmp_path / "again" / "study.md").read_text() == local.replace(str(model_dir), "tiny-llama").replace(
        str(texts), "texts.txt") and str(model_dir) in local
    assert "Could not run on this model: prune" in (tmp_path / "again" / "study.md").read_text()
    assert "stored study from" in capsys.readouterr().out
    other = tmp_path / "other.txt"
    other.write_text("\n".join(default_eval_texts()[4:6]), encoding="utf-8")
    assert cli.main([*study, "--out", str(tmp_path / "o"), "--from-hub", REPO, "--text-file", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "study's importance" in err and "eval_sha256: stored" in err and not (tmp_path / "o").exists()


LOAD_BACK = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
assert not any(p.endswith('{repo}') for p in sys.path), sys.path
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tokenizer("The river", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
print(model.config.num_hidden_layers, out.shape[1] - ids.shape[1])
"""


@pytest.mark.slow
def test_a_pruned_model_is_pushed_with_a_model_card_and_loads_back_alone(hub, model_dir, texts, tmp_path, capsys):
    import subprocess
    import sys

    from huggingface_hub import ModelCard

    run, saved = tmp_path / "prune", tmp_path / "pruned"
    assert cli.main(["prune", "--model", str(model_dir), "--text-file", str(texts), "--max-length", "24", "-k", "1",
                     "--by", "last", "--save", str(saved), "--out", str(run)]) == 0
    assert cli.main(["push-model", str(run), "alice/tiny-pruned"]) == 0
    files = hub.repos["alice/tiny-pruned"].files
    assert set(files) == {"README.md", *files_of(saved)}
    assert [body["repoType"] for body in hub.validated] == ["model"]
    (tmp_path / "card.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "card.md")
    baseline = json.loads((run / "results.json").read_text())["results"]["baseline"]
    row = pd.read_csv(run / "prune.csv").query("k == 1").iloc[0]
    assert card.data.eval_results[0].metric_type == "perplexity"
    assert card.data.eval_results[0].metric_value == pytest.approx(row.ppl)
    assert f"| before | {baseline['ppl']:.3f} [{baseline['ppl_low']:.3f}, {baseline['ppl_high']:.3f}] |" in card.text
    assert "removed layers 2" in card.text and "layer_range: [0, 2]" in card.text
    assert "merge_method: passthrough" in card.text
    assert "model: tiny-llama" in card.text and str(model_dir) not in card.text and str(texts) not in card.text
    loaded = tmp_path / "downloaded"
    for name, data in files.items():
        (loaded / name).parent.mkdir(parents=True, exist_ok=True)
        (loaded / name).write_bytes(data)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-I", "-c", LOAD_BACK.replace("{repo}", root.name), str(loaded)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "4"]


def test_push_model_refuses_a_run_that_saved_no_model(hub, model_dir, texts, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(importance(model_dir, texts, run)) == 0
    capsys.readouterr()
    assert cli.main(["push-model", str(run), "alice/x"]) == 2
    assert "saved no model" in one_line(capsys)


def test_a_card_the_hub_refuses_is_one_line_and_the_run_stays(hub, model_dir, texts, tmp_path, capsys, monkeypatch):
    from anatomy import hub_card

    run = tmp_path / "run"
    assert cli.main(importance(model_dir, texts, run)) == 0
    capsys.readouterr()
    monkeypatch.setattr(hub_card, "LICENSE", "no-such-license")
    assert cli.main(["push", str(run), REPO]) == 2
    err = one_line(capsys)
    assert "refused the card" in err and "license" in err and f"python -m anatomy push {run} {REPO}" in err
    assert (run / "results.json").is_file() and "tiny-llama/importance/results.json" not in hub.datasets[REPO].files


def test_a_saved_layer_plan_is_pushed_with_its_plan_and_ppl(hub, model_dir, texts, tmp_path, capsys):
    from huggingface_hub import ModelCard

    run, saved = tmp_path / "plans", tmp_path / "planned"
    assert cli.main(["plans", "--model", str(model_dir), "--text-file", str(texts), "--max-length", "24",
                     "--variants", "skip", "--block-sizes", "1", "--plan", "0,2,1", "--no-tasks", "--latency-repeats",
                     "1", "--latency-tokens", "2", "--save", str(saved), "--out", str(run)]) == 0
    assert cli.main(["push-model", str(run), "alice/tiny-plan"]) == 0
    (tmp_path / "card.md").write_bytes(hub.repos["alice/tiny-plan"].files["README.md"])
    card = ModelCard.load(tmp_path / "card.md")
    row = pd.read_csv(run / "plans.csv").query("variant == 'custom'").iloc[0]
    assert "layer plan 0,2-1" in card.text and "mergekit" not in card.text
    assert card.data.eval_results[0].metric_value == pytest.approx(row.ppl)


def test_a_hub_models_run_is_filed_under_its_id_with_its_commit_and_reused_at_that_commit(hub, model_dir, texts,
                                                                                          tmp_path, capsys):
    hub.repos["alice/tiny-full"] = FakeRepo({p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()})
    run = tmp_path / "run"
    assert cli.main(importance("alice/tiny-full", texts, run, "--push-to-hub", REPO)) == 0
    files = hub.datasets[REPO].files
    assert "alice--tiny-full/importance/results.json" in files
    (tmp_path / "README.md").write_bytes(files["README.md"])
    card = DatasetCard.load(tmp_path / "README.md")
    assert card.data.analysed_model == "alice/tiny-full" and card.data.analysed_model_revision == SHA
    assert cli.main(importance("alice/tiny-full", texts, tmp_path / "again", "--from-hub", REPO)) == 0
    assert (tmp_path / "again" / "importance.csv").read_bytes() == (run / "importance.csv").read_bytes()
    stored = json.loads(files["alice--tiny-full/importance/results.json"])
    stored["model"]["revision"] = "f" * 40  # measured at another commit than the one the id resolves to now
    files["alice--tiny-full/importance/results.json"] = json.dumps(stored).encode()
    capsys.readouterr()
    assert cli.main(importance("alice/tiny-full", texts, tmp_path / "old", "--from-hub", REPO)) == 2
    assert f'revision: stored "{"f" * 40}", asked "{SHA}"' in capsys.readouterr().err


def test_from_hub_refuses_a_run_measured_on_other_max_length_or_seed(hub, model_dir, texts, tmp_path, capsys):
    assert cli.main(importance(model_dir, texts, tmp_path / "run", "--push-to-hub", REPO)) == 0
    for flag, value, stored in (("--max-length", "16", "24"), ("--seed", "3", "0")):
        capsys.readouterr()
        assert cli.main(importance(model_dir, texts, tmp_path / "x", "--from-hub", REPO, flag, value)) == 2
        name = flag.removeprefix("--").replace("-", "_")
        assert f"eval_{name}: stored {stored}, asked {value}" in capsys.readouterr().err


def test_push_model_picks_one_of_several_saved_models_by_folder(hub, model_dir, texts, tmp_path, capsys):
    run, saved = tmp_path / "prune", tmp_path / "pruned"
    assert cli.main(["prune", "--model", str(model_dir), "--text-file", str(texts), "--max-length", "24", "-k", "1,2",
                     "--by", "last", "--save", str(saved), "--out", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["push-model", str(run), "alice/tiny-pruned"]) == 2
    assert "name one with --folder" in one_line(capsys)
    assert cli.main(["push-model", str(run), "alice/tiny-pruned", "--folder", str(saved / "last-k2")]) == 0
    card = hub.repos["alice/tiny-pruned"].files["README.md"].decode()
    assert "removed layers 1,2 (criterion last, K=2)" in card and "layer_range: [0, 1]" in card


def test_a_hub_models_pruned_copy_links_its_base_and_keeps_its_license(hub, model_dir, texts, tmp_path):
    from huggingface_hub import ModelCard

    files = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    hub.repos["alice/tiny-full"] = FakeRepo(files, license="apache-2.0")
    run = tmp_path / "prune"
    assert cli.main(["prune", "--model", "alice/tiny-full", "--text-file", str(texts), "--max-length", "24", "-k", "1",
                     "--by", "last", "--save", str(tmp_path / "pruned"), "--out", str(run)]) == 0
    assert cli.main(["push-model", str(run), "alice/tiny-pruned"]) == 0
    (tmp_path / "card.md").write_bytes(hub.repos["alice/tiny-pruned"].files["README.md"])
    card = ModelCard.load(tmp_path / "card.md")
    assert card.data.base_model == "alice/tiny-full" and card.data.base_model_revision == SHA
    assert card.data.license == "apache-2.0" and "model: alice/tiny-full" in card.text  # the mergekit source


def test_from_hub_writes_into_out_without_removing_what_else_is_there(hub, model_dir, texts, tmp_path):
    assert cli.main(importance(model_dir, texts, tmp_path / "run", "--push-to-hub", REPO)) == 0
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(importance(model_dir, texts, out, "--from-hub", REPO)) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "importance.csv").is_file()


def test_from_hub_compares_the_importance_run_a_prune_read(hub, model_dir, texts, tmp_path, capsys):
    assert cli.main(importance(model_dir, texts, tmp_path / "skip", "--mode", "skip")) == 0
    assert cli.main(importance(model_dir, texts, tmp_path / "zero", "--mode", "zero")) == 0
    prune = ["prune", "--model", str(model_dir), "--text-file", str(texts), "--max-length", "24", "-k", "1"]
    assert cli.main([*prune, "--importance", str(tmp_path / "skip"), "--out", str(tmp_path / "p"),
                     "--push-to-hub", REPO]) == 0
    stored = json.loads(hub.datasets[REPO].files["tiny-llama/prune/results.json"])
    assert stored["needs"]["importance"]["run"] == "skip" and stored["needs"]["importance"]["config"]["mode"] == "skip"
    # no --importance: the map prune would compute now (skip mode, this model and text) is the one it read
    assert cli.main([*prune, "--out", str(tmp_path / "computed"), "--from-hub", REPO]) == 0
    assert cli.main([*prune, "--importance", str(tmp_path / "skip"), "--out", str(tmp_path / "same"),
                     "--from-hub", REPO]) == 0
    capsys.readouterr()
    assert cli.main([*prune, "--importance", str(tmp_path / "zero"), "--out", str(tmp_path / "z"),
                     "--from-hub", REPO]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "importance's config mode: stored \"skip\", asked \"zero\"" in err and not (tmp_path / "z").exists()
    del stored["needs"]  # as a run pushed before runs recorded their needs
    hub.datasets[REPO].files["tiny-llama/prune/results.json"] = json.dumps(stored).encode()
    assert cli.main([*prune, "--out", str(tmp_path / "old"), "--from-hub", REPO]) == 2
    assert "does not record which importance result it read" in capsys.readouterr().err
    assert cli.main([*prune, "--by", "last", "--out", str(tmp_path / "last"), "--from-hub", REPO]) == 2
    assert "criteria" in capsys.readouterr().err  # a config that reads no importance: the config itself differs


def test_a_budget_run_is_filed_under_the_model_of_its_importance_run(hub, model_dir, texts, tmp_path):
    assert cli.main(importance(model_dir, texts, tmp_path / "imp")) == 0
    assert cli.main(["budget", "--importance", str(tmp_path / "imp"), "--out", str(tmp_path / "b"),
                     "--push-to-hub", REPO]) == 0
    files = hub.datasets[REPO].files
    assert "tiny-llama/budget/results.json" in files and not [f for f in files if f.startswith("no-model/")]
    pushed = files["tiny-llama/budget/results.json"].decode()
    assert json.loads(pushed)["needs"]["importance"]["model"]["name"] == "tiny-llama"
    assert str(tmp_path) in (tmp_path / "b" / "results.json").read_text() and str(tmp_path) not in pushed
    (tmp_path / "README.md").write_bytes(files["README.md"])
    assert DatasetCard.load(tmp_path / "README.md").data.analysed_model == "tiny-llama"  # the card files it so too
