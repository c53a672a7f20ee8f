"""Layer pruning: criteria choose the right layers, removal restores, saved folders load back and generate."""

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM

from anatomy.errors import AnatomyError
from anatomy.experiment import Result
from anatomy.experiments.importance import ImportanceConfig, run_importance
from anatomy.experiments.prune import (EXPERIMENT, PruneConfig, choose, comparison_table, prune_report, run_prune,
                                       save_pruned)
from anatomy.interventions import fingerprint
from anatomy.run import resolve_needs
from anatomy.surgery import kept_layers, layer_stack
from anatomy.texts import default_eval_texts
from tests.conftest import make_tiny_model


def test_choose_takes_the_lowest_scores():
    scores = pd.DataFrame({"layer": range(5), "alpha": [-3.0, -9.0, -1.0, -9.0, -2.0], "last": [0, -1, -2, -3, -4]})
    assert choose(scores, "alpha", 2) == [1, 3]
    assert choose(scores, "last", 2) == [3, 4]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_run_prune_rows_and_restore(arch, tiny_eval_set):
    model = make_tiny_model(arch, layers=6)
    fp = fingerprint(model)
    result = run_prune(model, tiny_eval_set, PruneConfig(ks=(1, 2)),
                       importance=run_importance(model, tiny_eval_set, ImportanceConfig(mode="skip")))
    df = result.table
    assert fingerprint(model) == fp and model.config.num_hidden_layers == 6
    assert len(df) == 1 + 2 * 4 and df.loc[df.criterion == "last", "removed"].tolist() == ["5", "4,5"]
    scores = result["scores"]
    ablation_pick = int(scores.sort_values(["ablation", "layer"]).iloc[0]["layer"])
    assert df[(df.criterion == "ablation") & (df.k == 1)]["removed"].iloc[0] == str(ablation_pick)
    # skip-mode ablation of one layer is its removal: the ablation D and the pruned PPL agree
    row = df[(df.criterion == "ablation") & (df.k == 1)].iloc[0]
    assert row["degradation_pct"] == pytest.approx(scores.loc[ablation_pick, "ablation"], rel=1e-4, abs=1e-4)
    table = comparison_table(df)
    assert set(table["criterion"]) == {"alpha", "block_influence", "ablation", "last"}
    ppl = df[df.k > 0].set_index(["criterion", "k"])["ppl"]
    for criterion, row in table.set_index("criterion").iterrows():
        for k in (1, 2):  # > 1 where the criterion prunes better than dropping the last layers
            assert row[f"last_over_k{k}"] == pytest.approx(ppl["last", k] / ppl[criterion, k])
    assert "Comparison" in prune_report(result, "#")


def test_saved_pruned_model_matches_the_in_memory_one(tiny_eval_set, tiny_tokenizer, tmp_path):
    model = make_tiny_model("gpt2", layers=6)
    df = run_prune(model, tiny_eval_set, PruneConfig(ks=(2,), criteria=("alpha",))).table
    [folder] = save_pruned(model, tiny_tokenizer, df, tmp_path / "pruned")
    removed = [int(i) for i in df.iloc[1]["removed"].split(",")]
    ids = tiny_tokenizer("The river flows to the sea", return_tensors="pt")["input_ids"]
    with layer_stack(model, kept_layers(6, removed)), torch.no_grad():
        expected = model(input_ids=ids, use_cache=False).logits
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert loaded.config.num_hidden_layers == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, use_cache=False).logits, expected)
        cached = loaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=0)
        plain = loaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(cached, plain)


def test_bad_k_and_criteria(tiny_eval_set):
    model = make_tiny_model("llama")
    with pytest.raises(AnatomyError, match="K must be"):
        run_prune(model, tiny_eval_set, PruneConfig(ks=(6,)))
    with pytest.raises(AnatomyError, match="Unknown criteria"):
        run_prune(model, tiny_eval_set, PruneConfig(criteria=("random",)))
    with pytest.raises(AnatomyError, match="K must be"):  # the CLI and the app, before the importance map
        EXPERIMENT.check(PruneConfig(ks=(6,)), model)


def test_the_importance_map_is_computed_with_the_ablation_mode_and_only_when_a_criterion_reads_it():
    computed = []
    compute = lambda needed, config=None: computed.append(config) or Result("importance", pd.DataFrame())  # noqa: E731
    assert resolve_needs(EXPERIMENT, {}, compute=compute, config=PruneConfig(criteria=("alpha", "last"))) == \
        {"importance": None} and computed == []
    resolve_needs(EXPERIMENT, {}, compute=compute, config=PruneConfig(ablation_mode="zero"))
    assert computed == [ImportanceConfig(mode="zero")]


@pytest.mark.slow
@pytest.mark.embedded
def test_prune_cli_saves_a_loadable_model(tmp_path):
    from transformers import AutoTokenizer

    from anatomy.cli import main
    from anatomy.load import load_model

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(default_eval_texts()[:6]))
    assert main(["prune", "-k", "3", "--by", "alpha", "--text-file", str(texts), "--max-length", "32",
                 "--out", str(tmp_path / "run"), "--save", str(tmp_path / "model")]) == 0
    removed = [int(i) for i in pd.read_csv(tmp_path / "run" / "prune.csv").iloc[1]["removed"].split(",")]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert loaded.config.num_hidden_layers == 27
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    original = load_model("embedded").model
    with layer_stack(original, kept_layers(30, removed)), torch.no_grad():
        expected = original(input_ids=ids, use_cache=False).logits
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, use_cache=False).logits, expected)
        cached = loaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
        plain = loaded.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, plain)
