"""Structured claims: verdict vocabulary, the bootstrap interval, and the round trip through results.json."""

import json

import numpy as np
import pytest

from anatomy.claims import RULES_VERSION, Claim, bootstrap_mean, claims_markdown, load_claims
from anatomy.errors import AnatomyError


def claim(**kw) -> Claim:
    base = dict(finding="x.y", statement="s", study=0.9, ours=0.1, ours_low=0.05, ours_high=0.2, interval="i",
                control="c", control_value=0.95, control_low=0.9, control_high=0.99,
                verdict="explained by a control", explanation="e")
    return Claim(**{**base, **kw})


def test_verdicts_are_a_fixed_vocabulary():
    with pytest.raises(AnatomyError, match="verdict"):
        claim(verdict="probably fine")


def test_bootstrap_mean_interval_covers_the_mean_and_narrows_with_data():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1, 1, 10), rng.normal(1, 1, 1000)
    m, lo, hi = bootstrap_mean(small)
    assert lo < m < hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_mean(large)
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_mean([np.nan, 2.0]) == (2.0, 2.0, 2.0)


def test_claims_round_trip_through_both_results_layouts(tmp_path):
    claims = [claim(), claim(finding="g", control_value=float("nan"), control_low=float("nan"),
                             control_high=float("nan"), verdict="does not hold")]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps({"results": {"claims": [c.as_dict() for c in claims]}}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps({"claims": [c.as_dict() for c in claims]}))
    for folder in ("a", "b"):
        got = load_claims(tmp_path / folder)
        assert got[0] == claims[0] and np.isnan(got[1].control_value) and got[1].verdict == "does not hold"
    text = claims_markdown(claims)
    assert "0.1 [0.05, 0.2]" in text and "n/a" in text
    with pytest.raises(AnatomyError, match="no such file"):
        load_claims(tmp_path / "missing")


def test_a_results_file_of_the_older_rules_reads_in_todays_words(tmp_path):
    """Version 1 wrote `reproduced`, `not reproduced`, `explained by the control` and no rules version."""
    old = {k: v for k, v in claim().as_dict().items() if k != "rules"}
    words = ["reproduced", "not reproduced", "explained by the control"]
    (tmp_path / "results.json").write_text(json.dumps({"claims": [{**old, "verdict": w} for w in words]}))
    got = load_claims(tmp_path)
    assert [c.verdict for c in got] == ["holds", "does not hold", "explained by a control"]
    assert {c.rules for c in got} == {1} and claim().rules == RULES_VERSION > 1
