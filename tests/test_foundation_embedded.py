"""Integration on the embedded SmolLM2-135M: the loader, the adapter and the full 30-layer importance map."""

import numpy as np
import pytest

from anatomy import interventions as iv
from anatomy.evaluate import PrefixCache, perplexity
from anatomy.experiments.importance import ImportanceConfig, run_importance
from anatomy.layers import COMPONENTS, LayerAdapter

pytestmark = pytest.mark.embedded


def test_embedded_is_smollm2_135m(embedded):
    assert type(embedded.model).__name__ == "LlamaForCausalLM"
    assert embedded.num_parameters == 134_515_008
    adapter = LayerAdapter(embedded.model)
    assert adapter.num_layers == 30 and adapter.components == COMPONENTS
    assert embedded.model.generation_config is not None


@pytest.mark.slow
def test_importance_map_on_embedded(embedded, embedded_eval_set):
    model = embedded.model
    before = iv.fingerprint(model)
    result = run_importance(model, embedded_eval_set, ImportanceConfig())
    df = result.table
    assert len(df) == 30 and list(df["layer"]) == list(range(30))
    assert np.isfinite(result["baseline"]["ppl"]) and 1 < result["baseline"]["ppl"] < 1000
    assert np.isfinite(df["degradation_pct"]).all()
    assert iv.fingerprint(model) == before
    # The study's most important layer: ablating layer 11 is catastrophic, not a 10% effect.
    assert df.loc[11, "class"] == "Critical"


def test_prefix_cache_on_embedded(embedded, embedded_eval_set):
    model = embedded.model
    adapter = LayerAdapter(model)
    cache = PrefixCache(model, embedded_eval_set)
    with iv.neighbour_mean(adapter, 14):
        full = perplexity(model, embedded_eval_set).ppl
        cached = perplexity(model, embedded_eval_set, cache, 14).ppl
    assert abs(cached / full - 1) < 1e-4
